"""Where does the default VLM lose the binding of a colour or shape to an object of a scene?

Linear probes (softmax regression) on the VLM's hidden states, layer by layer (0: the input
embeddings, i.e. the projector's output on image tokens):
  *@image_cell       the image token of the cell the object covers most: is the fact there at all?
  *@question_last    the last token of "What colour is the <shape> <where>?" / "What shape is <where>?":
                     has the LM fetched the fact of the object the question names?
Trained on the objects of the first 3/4 of the scenes, tested on the rest; scenes from seeds no
training or benchmark run draws. A fact present at the image cell but absent at the question's last
token was not retrieved; a fact weak at the image cell was lost before the LM.

    python scripts/probe_binding.py --export data/default_vlm/instruction_tuned --scenes 120 \
        --out results/default_vlm/binding_probe.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core.data import scenes as sc                                              # noqa: E402
from vispec_core.data.prompts import TARGET_CHECK_SCENE_SEED                           # noqa: E402
from vispec_core.evaluation.records import portable                                    # noqa: E402
from vispec_core.evaluation.target_checks import COLOR_QUESTION, SHAPE_QUESTION        # noqa: E402
from vispec_core.targets.default_vlm import ADAPTER, GRID, load_default_target         # noqa: E402

SEED_OFFSET = 5000      # past the target checks' own scenes


def object_cell(image, color: str) -> int:
    """Index (row-major, GRID x GRID) of the 32-px cell the object of `color` covers most."""
    px = np.asarray(image).astype(int)
    mask = np.abs(px - np.array(sc.COLORS[color])).sum(-1) == 0
    side = px.shape[0] // GRID
    return int(mask.reshape(GRID, side, GRID, side).mean((1, 3)).argmax())


def hidden_states(target, prompt: str, image) -> tuple[torch.Tensor, int]:
    """Every layer's hidden states [layers + 1, T, D] on the prompt, and where the image starts."""
    inputs = target.prepare(prompt, [image])
    with torch.inference_mode():
        hs = target.vlm.lm.model(inputs_embeds=inputs.inputs_embeds, output_hidden_states=True).hidden_states
    return torch.stack([h[0] for h in hs]).float(), inputs.image_spans[0][0]


def probe(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, l2: float = 1e-2) -> float:
    """Test accuracy of a softmax regression fitted on the `train` rows (features standardised on them)."""
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-5
    x = (x - mu) / sd
    w = torch.zeros(x.shape[1], int(y.max()) + 1, requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x[train] @ w + b, y[train]) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((x[~train] @ w + b).argmax(-1) == y[~train]).float().mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, default=None,
                   help="a build's export (projector.safetensors and adapter/); default: the shipped default target")
    p.add_argument("--scenes", type=int, default=120)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    if a.scenes < 8:
        p.error(f"--scenes must be at least 8 (a quarter of them are the test set), got {a.scenes}")
    if a.export is not None and not (a.export / "projector.safetensors").is_file():
        p.error(f"--export {a.export}: no projector.safetensors there; pass a folder the build's export wrote")
    t0 = time.time()
    kw = {} if a.export is None else {"projector": a.export / "projector.safetensors", "adapter": a.export / ADAPTER}
    target = load_default_target(dtype=torch.float32, **kw)
    colors, shapes = list(sc.COLORS), list(sc.SHAPES)
    feats = {k: [] for k in ("colour@question_last", "shape@question_last", "image_cell")}
    colour, shape, scene_of = [], [], []
    for i in range(a.scenes):
        scene = sc.sample_scene(TARGET_CHECK_SCENE_SEED + SEED_OFFSET + i)
        image = sc.render(scene)
        for o in scene.objects:
            where = sc._where(o.position)
            h, start = hidden_states(target, COLOR_QUESTION.format(shape=o.shape, where=where), image)
            feats["colour@question_last"].append(h[:, -1])
            feats["image_cell"].append(h[:, start + object_cell(image, o.color)])
            h, _ = hidden_states(target, SHAPE_QUESTION.format(where=where), image)
            feats["shape@question_last"].append(h[:, -1])
            colour.append(colors.index(o.color))
            shape.append(shapes.index(o.shape))
            scene_of.append(i)
    x = {k: torch.stack(v) for k, v in feats.items()}                    # [objects, layers + 1, D]
    colour, shape = torch.tensor(colour), torch.tensor(shape)
    train = torch.tensor(scene_of) < int(a.scenes * 0.75)
    layers = []
    for layer in range(x["image_cell"].shape[1]):
        layers.append({"layer": layer,
                       "colour@image_cell": probe(x["image_cell"][:, layer], colour, train),
                       "colour@question_last": probe(x["colour@question_last"][:, layer], colour, train),
                       "shape@image_cell": probe(x["image_cell"][:, layer], shape, train),
                       "shape@question_last": probe(x["shape@question_last"][:, layer], shape, train)})
        print(json.dumps(layers[-1]), flush=True)
    result = {"export": portable(str(a.export)) if a.export else "shipped", "scenes": a.scenes,
              "objects": len(scene_of), "test_objects": int((~train).sum()),
              "chance": {"colour": 1 / len(colors), "shape": 1 / len(shapes)}, "layers": layers,
              "minutes": (time.time() - t0) / 60}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
