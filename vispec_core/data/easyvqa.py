"""easy-vqa (MIT, on PyPI): 4,000 train / 1,000 test images of one coloured shape, with questions.

The package ships no per-image labels; `easyvqa_facts` infers each image's shape and colour from its
questions. Training reads the train split; the test split is held out for evaluation.
"""
from __future__ import annotations

import re

from PIL import Image

EVQA_COLORS = ("red", "green", "blue", "yellow", "teal", "brown", "gray", "black")
EVQA_SHAPES = ("circle", "rectangle", "triangle")


def easyvqa_facts(split: str = "train") -> dict[int, dict]:
    """easy-vqa ships no labels per image: infer each image's colour and shape from its questions
    (negated questions included); images with a missing or conflicting fact are left out."""
    import easy_vqa
    qs, answers, ids = (easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions())
    found: dict[int, dict[str, set]] = {}
    for q, a, i in zip(qs, answers, ids):
        f = found.setdefault(i, {"color": set(), "shape": set(), "no_color": set(), "no_shape": set()})
        words = re.findall(r"[a-z]+", q)
        if a in EVQA_COLORS:
            f["color"].add(a)
        elif a in EVQA_SHAPES:
            f["shape"].add(a)
        present = (a == "yes") != ("not" in words or "no" in words)
        if a in ("yes", "no") and present:
            for w in words:
                if w in EVQA_COLORS:
                    f["color"].add(w)
                if w in EVQA_SHAPES:
                    f["shape"].add(w)
        if a in ("yes", "no") and not present:
            f["no_color"].update(w for w in words if w in EVQA_COLORS)
            f["no_shape"].update(w for w in words if w in EVQA_SHAPES)
        if a in EVQA_SHAPES:
            f["color"].update(w for w in words if w in EVQA_COLORS)
        if a in EVQA_COLORS:
            f["shape"].update(w for w in words if w in EVQA_SHAPES)
    for f in found.values():   # by elimination: all but one colour (shape) absent
        for k, names in (("color", EVQA_COLORS), ("shape", EVQA_SHAPES)):
            rest = set(names) - f["no_" + k]
            if not f[k] and len(rest) == 1:
                f[k] = rest
            if f[k] & f["no_" + k]:
                f[k] = set()
    return {i: {"color": next(iter(f["color"])), "shape": next(iter(f["shape"]))}
            for i, f in sorted(found.items()) if len(f["color"]) == 1 and len(f["shape"]) == 1}


def easyvqa_image(split: str, image_id: int) -> Image.Image:
    import easy_vqa
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    return Image.open(paths[image_id]).convert("RGB")
