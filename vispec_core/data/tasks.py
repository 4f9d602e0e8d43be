"""Benchmark tasks: held-out prompts of the kinds the paper measures (Sec. 5.1 and its appendix).

    vqa      easy-vqa *test* split questions + "Please answer with an explanation."   (VQA prompt)
    caption  generated scenes + "Provide a detailed description of the given image." (captioning prompt)
    ocr      generated scenes that carry a rendered word + the paper's OCR prompt
    photo    real photos from `skimage.data` with captioning / VQA-style prompts
    text     text-only questions asking for long answers

`task_prompts(task, n, seed, offset)` is deterministic: the same arguments give the same prompts,
images included. Held out from training: easy-vqa's test split (training reads the train split) and
scene seeds >= HELD_OUT_SCENE_SEED (training draws scene seeds below it; `scenes.py` users that
generate training data must stay under it). The tree search calibrates on `offset=CALIBRATION_OFFSET`,
i.e. other prompts than the benchmark's first n (the small photo and text pools may repeat).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .prompts import (CALIBRATION_OFFSET, CAPTION, EXPLAIN, HELD_OUT_SCENE_SEED, OCR_PROMPT, PHOTO_PROMPTS,  # noqa: F401
                      PHOTOS, TEXT_TEMPLATES, TEXT_TOPICS)


@dataclass
class TaskPrompt:
    task: str
    prompt_id: str                     # stable across runs: the key of a benchmark record
    prompt: str                        # images (if any) precede the text in the user turn
    images: list[Image.Image] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def _rng(task: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, sorted(TASKS).index(task)])


def vqa_prompts(n: int, seed: int = 0, offset: int = 0) -> list[TaskPrompt]:
    import easy_vqa

    questions, answers, image_ids = easy_vqa.get_test_questions()
    paths = easy_vqa.get_test_image_paths()
    order = _rng("vqa", seed).permutation(len(questions))[offset:offset + n]
    out = []
    for i in order.tolist():
        q = questions[i][0].upper() + questions[i][1:]
        with Image.open(paths[image_ids[i]]) as im:
            image = im.convert("RGB")
        out.append(TaskPrompt("vqa", f"vqa:test-q{i}", f"{q} {EXPLAIN}", [image],
                              {"image": f"easy_vqa:test/{image_ids[i]}", "answer": answers[i]}))
    return out


def _scene_seeds(task: str, seed: int, needed: int, want_text: bool):
    from .scenes import sample_scene

    rng = _rng(task, seed)
    while needed > 0:
        s = int(rng.integers(HELD_OUT_SCENE_SEED, 2**31 - 1))
        if not want_text or sample_scene(s).text is not None:
            needed -= 1
            yield s


def scene_prompts(task: str, n: int, seed: int = 0, offset: int = 0) -> list[TaskPrompt]:
    from .scenes import describe, make_scene

    prompt = OCR_PROMPT if task == "ocr" else CAPTION
    out = []
    for s in list(_scene_seeds(task, seed, offset + n, want_text=task == "ocr"))[offset:]:
        image, scene = make_scene(s)
        out.append(TaskPrompt(task, f"{task}:scene-{s}", prompt, [image], {"scene_seed": s, "facts": describe(scene)}))
    return out


def photo_prompts(n: int, seed: int = 0, offset: int = 0) -> list[TaskPrompt]:
    from skimage import data

    pool = [(p, q) for p in PHOTOS for q in range(len(PHOTO_PROMPTS))]
    order = _rng("photo", seed).permutation(len(pool))
    out = []
    for j in range(offset, offset + n):
        name, q = pool[order[j % len(pool)]]
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        out.append(TaskPrompt("photo", f"photo:{name}-p{q}", PHOTO_PROMPTS[q], [image], {"image": f"skimage:{name}"}))
    return out


def text_prompts(n: int, seed: int = 0, offset: int = 0) -> list[TaskPrompt]:
    pool = [(t, k) for t in range(len(TEXT_TOPICS)) for k in range(len(TEXT_TEMPLATES))]
    order = _rng("text", seed).permutation(len(pool))
    out = []
    for j in range(offset, offset + n):
        t, k = pool[order[j % len(pool)]]
        out.append(TaskPrompt("text", f"text:t{t}-k{k}", TEXT_TEMPLATES[k].format(TEXT_TOPICS[t], EXPLAIN)))
    return out


TASKS = {
    "vqa": vqa_prompts,
    "caption": lambda n, seed=0, offset=0: scene_prompts("caption", n, seed, offset),
    "ocr": lambda n, seed=0, offset=0: scene_prompts("ocr", n, seed, offset),
    "photo": photo_prompts,
    "text": text_prompts,
}


def parse_tasks(spec: str) -> list[str]:
    """'vqa,caption' -> ['vqa', 'caption']; 'all' -> every task."""
    names = list(TASKS) if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise ValueError(f"Unknown task(s) {bad or spec!r}; choose from {sorted(TASKS)} or 'all'.")
    return list(dict.fromkeys(names))


def task_prompts(task: str, n: int, seed: int = 0, offset: int = 0) -> list[TaskPrompt]:
    """The prompts offset .. offset+n-1 of `task`'s deterministic sequence for `seed`."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose from {sorted(TASKS)}.")
    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be >= 0, got n={n}, offset={offset}.")
    return TASKS[task](n, seed, offset)
