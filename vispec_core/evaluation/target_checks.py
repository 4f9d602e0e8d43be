"""Does the default target see and write? Its checks on held-out images, with `grounding.check`.

    describe   held-out scenes + the benchmark's detailed-description prompt: grounded (>= 3 true claims,
               no false one anywhere), 4-gram repetition, length, ended on its own (EOS before the cap)
    binding    "What colour is the <shape> <where>?" / "What shape is <where>?" on held-out scenes, and
               the other way round, "Where is the <colour> <shape>?"
    easyvqa    easy-vqa's test split: the shape and the colour of its one shape
    dependence the same scenes' facts checked against answers about a blank image and another scene's image
    style      shapes drawn by other code (no grid, white background, any size): grounded as in `describe`
    variety    corpus distinct-2 of the descriptions against SmolLM2's own answers to the benchmark's
               text-only prompts; the largest share of answers that hold one same sentence
    photos     what it says about a few real photos (out of domain: printed, never scored)

    python -m vispec_core.evaluation.target_checks --scenes 100 --out results/default_vlm/checks.json
"""
from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import grounding, scenes as sc
from ..data.easyvqa import EVQA_COLORS, EVQA_SHAPES, easyvqa_facts
from ..data.prompts import CAPTION, TARGET_CHECK_SCENE_SEED
from .records import portable
from .textstats import corpus_distinct_n, repetition

COLOR_QUESTION = "What colour is the {shape} {where}?"
SHAPE_QUESTION = "What shape is {where}?"
WHERE_QUESTION = "Where is the {colour} {shape}?"
STYLE_COLORS = {"red": (225, 35, 35), "green": (35, 165, 60), "blue": (35, 75, 225), "yellow": (245, 205, 25)}


def held_out_scenes(n: int, start: int = 0) -> list[sc.Scene]:
    """Scenes no training or benchmark run draws (seeds from TARGET_CHECK_SCENE_SEED)."""
    return [sc.sample_scene(TARGET_CHECK_SCENE_SEED + start + i) for i in range(n)]


def other_style(seed: int) -> tuple[Image.Image, sc.Scene]:
    """1-3 circles, squares or triangles in red, green, blue or yellow, drawn with numpy (not the scene
    renderer) anywhere on white, of any size. A shape near a cell's border gets no cell (unverifiable)."""
    rng = np.random.default_rng([seed, 7])
    size, third = sc.SIZE, sc.SIZE / 3
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.full((size, size, 3), 255, np.uint8)
    placed, objects = [], []
    colors = list(rng.permutation(list(STYLE_COLORS)))
    for color in colors[:int(rng.integers(1, 4))]:
        for _ in range(100):
            r = float(rng.uniform(22, 70))
            cx, cy = rng.uniform(r + 4, size - r - 4, 2)
            if all(np.hypot(cx - x, cy - y) > r + q + 10 for x, y, q in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        shape = str(rng.choice(["circle", "square", "triangle"]))
        if shape == "circle":
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        elif shape == "square":
            inside = (abs(xx - cx) <= r * 0.8) & (abs(yy - cy) <= r * 0.8)
        else:   # upright triangle: below the two slanted edges, above the base
            h = r * 1.6
            top, base = cy - h / 2, cy + h / 2
            half = (yy - top) / h * r
            inside = (yy >= top) & (yy <= base) & (abs(xx - cx) <= half)
        img[inside] = STYLE_COLORS[color]
        near = min(abs(cx - k * third) for k in (1, 2)) < 24 or min(abs(cy - k * third) for k in (1, 2)) < 24
        position = None if near else sc.CELLS[int(cy // third) * 3 + int(cx // third)]
        objects.append(sc.SceneObject("rectangle" if shape == "square" else shape, str(color), None, position))
    return Image.fromarray(img), sc.Scene(-1, "white", objects, None)


def answer(target, prompt: str, image, temperature: float = 0.0, max_new_tokens: int = 320, seed: int = 0) -> dict:
    from ..decoding.decode import generate
    g = generate(target, prompt, images=[image] if image is not None else None, max_new_tokens=max_new_tokens,
                 temperature=temperature, seed=seed)
    ended = len(g.token_ids) < max_new_tokens or (g.token_ids and g.token_ids[-1] in target.eos_token_ids)
    return {"text": g.text, "ids": g.token_ids, "tokens": len(g.token_ids), "ended": bool(ended),
            "tokens_per_s": g.stats["tokens_per_s"]}


def scored(rec: dict, scene: sc.Scene) -> dict:
    c = grounding.check(rec["text"], scene)
    return {**rec, "grounded": c.grounded(), "true_claims": c.n_true, "false_claims": [" ".join(map(str, f)) for f in c.false],
            "repetition_4": repetition(rec["ids"], 4) if len(rec["ids"]) >= 4 else 0.0}


def summary(records: list[dict]) -> dict:
    if not records:
        return {}
    return {"n": len(records), "grounded": float(np.mean([r["grounded"] for r in records])),
            "mean_true_claims": float(np.mean([r["true_claims"] for r in records])),
            "with_false_claim": float(np.mean([bool(r["false_claims"]) for r in records])),
            "median_repetition_4": float(np.median([r["repetition_4"] for r in records])),
            "median_tokens": float(np.median([r["tokens"] for r in records])),
            "ended": float(np.mean([r["ended"] for r in records]))}


def describe(target, scenes: list[sc.Scene], temperature: float = 0.0, max_new_tokens: int = 320,
             images: list | None = None, log=print) -> list[dict]:
    """Each scene described (its own image unless `images` says otherwise) and checked against its facts."""
    out = []
    for i, scene in enumerate(scenes):
        image = sc.render(scene) if images is None else images[i]
        out.append({"seed": scene.seed, **scored(answer(target, CAPTION, image, temperature, max_new_tokens, seed=i), scene)})
        if log and (i + 1) % 10 == 0:
            log(f"  {i + 1}/{len(scenes)} described, grounded so far {np.mean([r['grounded'] for r in out]):.2f}")
    return out


def _first(text: str, names) -> str | None:
    hits = [(m.start(), m.group(1)) for m in re.finditer(rf"\b({'|'.join(names)})s?\b", text.lower())]
    return min(hits)[1] if hits else None


def binding(target, scenes: list[sc.Scene]) -> dict:
    """Colour of the shape at a position, the shape at a position, and the other way round the position
    of a shape of a colour (what a description must know to place what it names), on every object."""
    colour, shape, place = [], [], []
    for scene in scenes:
        image = sc.render(scene)
        for o in scene.objects:
            where = sc._where(o.position)
            a = answer(target, COLOR_QUESTION.format(shape=o.shape, where=where), image, max_new_tokens=24)
            colour.append(_first(a["text"], sc.COLORS) == o.color)
            a = answer(target, SHAPE_QUESTION.format(where=where), image, max_new_tokens=24)
            shape.append(_first(a["text"], grounding.SHAPE_WORDS) in (o.shape, o.shape + "s"))
            a = answer(target, WHERE_QUESTION.format(colour=o.color, shape=o.shape), image, max_new_tokens=24)
            c = grounding.check(a["text"], scene)
            place.append(("position", o.color, o.shape, o.position) in c.true
                         and not any(f[0] == "position" for f in c.false))
    return {"colour_at_position": float(np.mean(colour)), "shape_at_position": float(np.mean(shape)),
            "position_of_object": float(np.mean(place)), "questions": len(colour)}


def easyvqa(target, n: int) -> dict:
    from ..data.easyvqa import easyvqa_image
    facts = easyvqa_facts("test")
    ids = sorted(facts)[:n]
    shape = [grounding.SHAPE_WORDS.get(_first(answer(target, "What shape is in the image?", easyvqa_image("test", i),
                                                     max_new_tokens=16)["text"], EVQA_SHAPES) or "", "")
             == facts[i]["shape"] for i in ids]
    colour = [_first(answer(target, "What color is the shape?", easyvqa_image("test", i), max_new_tokens=16)["text"],
                     EVQA_COLORS) == facts[i]["color"] for i in ids]
    return {"shape": float(np.mean(shape)), "colour": float(np.mean(colour)), "images": len(ids)}


def variety(descriptions: list[dict], lm_answers: list[dict]) -> dict:
    """Corpus distinct-2 (token bigrams, equal token budgets) and the most shared sentence."""
    budget = min(sum(r["tokens"] for r in descriptions), sum(r["tokens"] for r in lm_answers))

    def cut(records):
        out, left = [], budget
        for r in records:
            out.append(r["ids"][:left])
            left -= len(out[-1])
        return [o for o in out if o]

    d_ours, d_lm = corpus_distinct_n(cut(descriptions), 2), corpus_distinct_n(cut(lm_answers), 2)
    sentences = Counter(s for r in descriptions for s in {x.strip() for x in re.split(r"(?<=[.!?])\s+", r["text"]) if len(x.split()) >= 4})
    top, count = sentences.most_common(1)[0] if sentences else ("", 0)
    return {"corpus_distinct_2": d_ours, "lm_corpus_distinct_2": d_lm, "ratio": d_ours / d_lm if d_lm else float("nan"),
            "tokens_compared": budget, "most_shared_sentence": top, "most_shared_fraction": count / max(len(descriptions), 1)}


def text_answers(target, n: int, max_new_tokens: int = 320) -> list[dict]:
    from ..data.tasks import task_prompts
    return [answer(target, p.prompt, None, max_new_tokens=max_new_tokens) for p in task_prompts("text", n)]


def photos(target, names=("astronaut", "rocket", "coffee", "chelsea", "horse"), max_new_tokens: int = 96) -> list[dict]:
    from skimage import data
    out = []
    for name in names:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        out.append({"photo": name, "answer": answer(target, CAPTION, image, max_new_tokens=max_new_tokens)["text"]})
    return out


def run_checks(target, n_scenes: int = 100, n_side: int = 32, n_easyvqa: int = 100, max_new_tokens: int = 320,
               log=print) -> dict:
    """Every check above; `n_side` scenes for the T=1, dependence and style checks. Returns the records too."""
    t0 = time.time()
    scenes = held_out_scenes(n_scenes)
    out: dict = {"max_new_tokens": max_new_tokens, "prompt": CAPTION, "records": {}}
    log(f"describe: {n_scenes} held-out scenes, T=0")
    r0 = describe(target, scenes, 0.0, max_new_tokens, log=log)
    log(f"describe: {n_side} held-out scenes, T=1")
    r1 = describe(target, scenes[:n_side], 1.0, max_new_tokens, log=log)
    side = scenes[:n_side]
    blank = [Image.new("RGB", (sc.SIZE, sc.SIZE), (255, 255, 255))] * len(side)
    other = [sc.render(held_out_scenes(1, n_scenes + i)[0]) for i in range(len(side))]
    log("dependence: blank and other images")
    rb = describe(target, side, 0.0, max_new_tokens, images=blank, log=None)
    ro = describe(target, side, 0.0, max_new_tokens, images=other, log=None)
    log("style: shapes drawn by other code")
    styled = [other_style(i) for i in range(n_side)]
    rs = [{"seed": i, **scored(answer(target, CAPTION, im, 0.0, max_new_tokens), s)} for i, (im, s) in enumerate(styled)]
    log("binding, easy-vqa, variety, photos")
    out.update({"describe_T0": summary(r0), "describe_T1": summary(r1),
                "describe_T0_same_scenes": summary(r0[:n_side]),
                "blank_image": summary(rb), "other_scene_image": summary(ro), "other_style": summary(rs),
                "binding": binding(target, scenes[:n_side]), "easyvqa": easyvqa(target, n_easyvqa)})
    lm = text_answers(target, 20, max_new_tokens)
    out["variety"] = variety(r0, lm)
    out["photos"] = photos(target)
    out["vanilla_tokens_per_s"] = float(np.median([r["tokens_per_s"] for r in r0]))
    out["records"] = {"describe_T0": r0, "describe_T1": r1, "blank_image": rb, "other_scene_image": ro, "other_style": rs}
    for recs in out["records"].values():
        for r in recs:
            r.pop("ids", None)
    out["minutes"] = (time.time() - t0) / 60
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vispec_core.evaluation.target_checks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="default")
    p.add_argument("--export", type=Path, default=None,
                   help="check the default VLM with this folder's projector.safetensors and adapter/ (what "
                        "`python -m vispec_core.training.default_vlm export --out DIR` wrote)")
    p.add_argument("--scenes", type=int, default=100)
    p.add_argument("--side", type=int, default=32, help="scenes for the T=1, dependence, style and binding checks")
    p.add_argument("--easyvqa", type=int, default=100)
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.add_argument("--out", type=Path, default=None, help="JSON file for the figures and every answer")
    a = p.parse_args(argv)
    for name in ("scenes", "side", "easyvqa", "max_new_tokens"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(a, name)}")
    if a.side > a.scenes:
        p.error(f"--side {a.side} is larger than --scenes {a.scenes}")
    from ..targets import load_target
    if a.export is not None:
        from ..targets.default_vlm import ADAPTER, load_default_target
        for need in (a.export / "projector.safetensors", a.export / ADAPTER / "adapter_config.json"):
            if not need.is_file():
                p.error(f"--export {a.export}: {need} is missing; pass a folder the build's export wrote")
        target = load_default_target(projector=a.export / "projector.safetensors", adapter=a.export / ADAPTER)
    else:
        target = load_target(a.target)
    result = run_checks(target, a.scenes, a.side, a.easyvqa, a.max_new_tokens)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(portable(result), indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("records", "photos")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
