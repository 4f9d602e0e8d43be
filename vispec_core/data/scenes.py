"""Procedurally generated scenes whose facts are known by construction.

A scene is a background colour, a few objects on a 3 x 3 grid (shape, colour, size, cell) and, in
some scenes, a rendered word (an OCR-like task). `make_scene(seed)` is deterministic; `describe`
turns the facts into words (what the text-only LM is told when it writes a long, grounded answer);
`questions` gives short question/answer pairs. Pure PIL + numpy.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 448
COLORS = {"red": (220, 30, 30), "green": (40, 170, 50), "blue": (30, 70, 220), "yellow": (240, 210, 20),
          "teal": (0, 150, 150), "brown": (130, 80, 30), "gray": (128, 128, 128), "black": (15, 15, 15),
          "orange": (250, 140, 0), "purple": (140, 40, 170)}
BACKGROUNDS = {"white": (250, 250, 250), "light gray": (205, 205, 205), "beige": (240, 225, 190),
               "light blue": (190, 215, 245), "dark gray": (60, 60, 60)}
SHAPES = ("circle", "rectangle", "triangle", "star", "diamond")
CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
WORDS = ("STOP", "OPEN", "EXIT", "CAFE", "HOTEL", "PARK", "SALE", "BOOK", "TAXI", "BANK", "ZOO", "FISH",
         "MILK", "RAIN", "STAR", "GOLD", "LOVE", "HELLO", "SPEED", "BUS")


@dataclass
class SceneObject:
    shape: str
    color: str
    size: str        # "small" or "large"
    position: str    # one of CELLS


@dataclass
class SceneText:
    word: str
    color: str
    position: str


@dataclass
class Scene:
    seed: int
    background: str
    objects: list[SceneObject] = field(default_factory=list)
    text: SceneText | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def sample_scene(seed: int, max_objects: int = 4, text_prob: float = 0.35) -> Scene:
    """Facts of one scene; objects have distinct colours and cells, none the background's colour."""
    rng = np.random.default_rng(seed)
    background = str(rng.choice(list(BACKGROUNDS)))
    colors = [c for c in COLORS if not (background == "dark gray" and c in ("black", "gray"))
              and not (background == "light gray" and c == "gray")]
    n = int(rng.integers(1, max_objects + 1))
    cells = list(rng.permutation(CELLS))
    picked = rng.permutation(colors)[:n]
    objects = [SceneObject(str(rng.choice(SHAPES)), str(c), str(rng.choice(["small", "large"])), str(cells[i]))
               for i, c in enumerate(picked)]
    text = None
    if rng.random() < text_prob and n < 9:
        ink = "white" if background == "dark gray" else "black"
        text = SceneText(str(rng.choice(WORDS)), ink, str(cells[n]))
    return Scene(seed, background, objects, text)


def _cell_center(position: str) -> tuple[float, float]:
    i = CELLS.index(position)
    step = SIZE / 3
    return (i % 3 + 0.5) * step, (i // 3 + 0.5) * step


def _star(cx, cy, r):
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def render(scene: Scene) -> Image.Image:
    rng = np.random.default_rng(scene.seed + 1)
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        cx, cy = _cell_center(obj.position)
        r = rng.uniform(50, 64) if obj.size == "large" else rng.uniform(20, 34)
        room = max(4.0, SIZE / 6 - r - 6)          # anywhere in its cell, never across the cell's edge
        cx, cy = cx + rng.uniform(-room, room), cy + rng.uniform(-room, room)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif obj.shape == "rectangle":
            w, h = r * rng.uniform(0.8, 1.0), r * rng.uniform(0.55, 0.9)
            draw.rectangle([cx - w, cy - h, cx + w, cy + h], fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
        elif obj.shape == "star":
            draw.polygon(_star(cx, cy, r), fill=fill)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)], fill=fill)
    if scene.text is not None:
        cx, cy = _cell_center(scene.text.position)
        font = ImageFont.load_default(size=60 if len(scene.text.word) <= 4 else 48)
        ink = (255, 255, 255) if scene.text.color == "white" else (0, 0, 0)
        draw.text((cx, cy), scene.text.word, fill=ink, font=font, anchor="mm")
    return img


def make_scene(seed: int) -> tuple[Image.Image, Scene]:
    scene = sample_scene(seed)
    return render(scene), scene


def _where(position: str) -> str:
    return "in the center" if position == "center" else (
        f"at the {position}" if position in ("top", "bottom", "left", "right") else f"in the {position} corner")


def describe(scene: Scene) -> str:
    """The scene's facts in plain sentences."""
    n = len(scene.objects)
    s = [f"The image has a plain {scene.background} background with {n} shape{'s' if n > 1 else ''} on it."]
    for o in scene.objects:
        s.append(f"There is a {o.size} {o.color} {o.shape} {_where(o.position)}.")
    if scene.text is not None:
        t = scene.text
        s.append(f'The word "{t.word}" is written in {t.color} letters {_where(t.position)}.')
    return " ".join(s)


def questions(scene: Scene, rng: np.random.Generator, k: int = 2) -> list[tuple[str, str]]:
    """k short (question, answer) pairs about the scene, answers as one sentence."""
    pool = []
    n = len(scene.objects)
    pool.append(("How many shapes are in the image?", f"There {'is' if n == 1 else 'are'} {n} "
                                                      f"shape{'s' if n > 1 else ''}."))
    pool.append(("What color is the background?", f"The background is {scene.background}."))
    for o in scene.objects:
        pool.append((f"What color is the {o.shape}?" if sum(p.shape == o.shape for p in scene.objects) == 1
                     else f"What color is the {o.shape} {_where(o.position)}?", f"It is {o.color}."))
        pool.append((f"What shape is the {o.color} object?", f"It is a {o.shape}."))
        pool.append((f"Where is the {o.color} {o.shape}?", f"It is {_where(o.position)}."))
    if scene.text is not None:
        pool.append(("What word is written in the image?", f'It says "{scene.text.word}".'))
        pool.append(("What does the text say?", f'The text says "{scene.text.word}".'))
    idx = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
    return [pool[i] for i in idx]
