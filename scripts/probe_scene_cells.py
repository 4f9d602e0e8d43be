"""Do the frozen encoder's features say what colour and shape each object of a scene is, where it is?

A linear probe (softmax regression) on the feature cell at each object's centre (the 14 x 14 map of
EfficientNet-Lite0 at 448 px: 32 px a cell), trained on the objects of the first scenes and tested on
the objects of the later ones. High accuracy here and near-chance answers from the default VLM
("See (scenes)" in notebook 00) place the missing colour-object binding after the encoder: in the
projector and the frozen LM, not in the features.

    python scripts/probe_scene_cells.py --out results/default_vlm/scene_cell_probe.json

Needs the projector build's features (`python -m vispec_core.training.projector features --n-scenes 2000`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core.data import scenes as sc                 # noqa: E402
from vispec_core.training.projector import load_features  # noqa: E402
from vispec_core.targets import default_vlm as dv         # noqa: E402


def object_cells(feats: dict[str, torch.Tensor], seeds, transpose: bool = False) -> tuple[torch.Tensor, list[str], list[str]]:
    """The feature cell under each object's centre, with the object's colour and shape (transpose: the
    cell with row and column swapped, mostly off the object: the control)."""
    x, colors, shapes = [], [], []
    for s in seeds:
        f = feats[f"scene-{s}"].float()
        side = int(f.shape[0] ** 0.5)
        for o in sc.sample_scene(s).objects:
            cx, cy = sc._cell_center(o.position)
            if transpose:
                cx, cy = cy, cx
            col, row = int(cx / sc.SIZE * side), int(cy / sc.SIZE * side)
            x.append(f[row * side + col])
            colors.append(o.color)
            shapes.append(o.shape)
    return torch.stack(x), colors, shapes


def probe(x_tr, y_tr, x_te, y_te, epochs: int = 300, wd: float = 1e-3) -> float:
    names = sorted(set(y_tr) | set(y_te))
    a, b = (torch.tensor([names.index(v) for v in y]) for y in (y_tr, y_te))
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    lin = torch.nn.Linear(x_tr.shape[1], len(names))
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=wd)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(lin(x_tr), a).backward()
        opt.step()
    with torch.no_grad():
        return (lin(x_te).argmax(-1) == b).float().mean().item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-scenes", type=int, default=1500)
    p.add_argument("--test-scenes", type=int, default=500)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    feats = load_features(dv.cache_dir() / "projector_build" / "features")
    n = a.train_scenes + a.test_scenes
    missing = [s for s in range(n) if f"scene-{s}" not in feats]
    if missing:
        sys.exit(f"{len(missing)} of scenes 0..{n - 1} have no features; run "
                 f"`python -m vispec_core.training.projector features --n-scenes {n}` first.")
    x_tr, c_tr, s_tr = object_cells(feats, range(a.train_scenes))
    x_te, c_te, s_te = object_cells(feats, range(a.train_scenes, n))
    t_tr, t_te = object_cells(feats, range(a.train_scenes), True)[0], object_cells(feats, range(a.train_scenes, n), True)[0]
    res = {"train_objects": len(c_tr), "test_objects": len(c_te), "feature_dim": x_tr.shape[1],
           "color": probe(x_tr, c_tr, x_te, c_te), "shape": probe(x_tr, s_tr, x_te, s_te),
           "control_transposed_color": probe(t_tr, c_tr, t_te, c_te), "control_transposed_shape": probe(t_tr, s_tr, t_te, s_te),
           "color_majority": max(c_te.count(c) for c in set(c_te)) / len(c_te),
           "shape_majority": max(s_te.count(c) for c in set(s_te)) / len(s_te)}
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
