"""Instruction data written from known facts: what teaches the default VLM to describe an image.

LLaVA wrote its instruction data with a text-only model given each image's captions and boxes. Here
the facts are known by construction (`scenes.py`; easy-vqa's shape and colour), so a writer turns them
into answers directly: every sentence states facts of the image, and the variety comes from many
phrasings, a random order of the kinds of sentences (objects, met in reading order each after its place;
spatial relations, sizes, counting, the word, the empty space, the layout by rows), and general remarks
that claim nothing about the image. `grounding.check` then rejects any answer that names a false fact
or repeats itself.

    write(scene, kind, rng) -> (prompt, answer)    kind: "detail" | "question" | "brief"
    instruction_samples(sources, seed)             the kept samples with the checker's verdict
"""
from __future__ import annotations

import random

from .grounding import check, word_repetition
from .prompts import BRIEF_SUFFIXES, DETAIL_PROMPTS, DETAIL_SUFFIXES, LONG_ANSWER, QUESTION_SUFFIXES
from .scenes import CELLS, Scene

NUMBER = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KINDS = ("detail", "question", "brief")

_WHERE = {
    "top left": ("in the top left corner", "in the upper left corner", "at the top left"),
    "top": ("at the top", "at the top of the image", "along the top edge", "in the top middle"),
    "top right": ("in the top right corner", "in the upper right corner", "at the top right"),
    "left": ("on the left side", "at the left", "on the left, halfway down"),
    "center": ("in the center", "in the middle of the image", "right in the center"),
    "right": ("on the right side", "at the right", "on the right, halfway down"),
    "bottom left": ("in the bottom left corner", "in the lower left corner", "at the bottom left"),
    "bottom": ("at the bottom", "at the bottom of the image", "along the bottom edge"),
    "bottom right": ("in the bottom right corner", "in the lower right corner", "at the bottom right"),
}
# Every sentence names a fact of its image, so no sentence recurs verbatim across images: a target
# taught sentences that fit any image would recite them, and a draft would copy the recital.
_SHAPE_NOTES = {
    "circle": ("The {c} circle's outline is perfectly round.", "The {c} circle is a smooth, round disc with no corners.",
               "Being round, the {c} circle has no corners or straight edges at all."),
    "rectangle": ("The {c} rectangle is wider than it is tall.", "The four straight sides of the {c} rectangle meet at right angles.",
                  "The {c} rectangle lies flat, with its long sides horizontal."),
    "triangle": ("The {c} triangle points upward and rests on a flat base.",
                 "The {c} triangle has three straight sides and a sharp tip pointing up.",
                 "The apex of the {c} triangle points up while its base sits level."),
    "star": ("The {c} star has five sharp points.", "The five points of the {c} star radiate from its middle.",
             "The {c} star is drawn as a classic five-pointed star."),
    "diamond": ("The {c} diamond stands on one of its corners.", "The {c} diamond is taller than it is wide, with four corners.",
                "The four corners of the {c} diamond point up, down, left and right."),
}
_FILL_NOTES = ("The {c} of the {s} is solid, with no outline, gradient or texture.", "The {s} is filled with one flat {c}.",
               "There is no shading on the {c} {s}; its fill is uniform.",
               "The edges of the {c} {s} are crisp against the {bg} background.")
_OPENERS = (
    "The image shows {count} on a plain {bg} background.",
    "This is a simple picture: {count} set against a flat {bg} background.",
    "In this image, {count} appear on a {bg} background.",
    "The picture contains {count}, drawn on a plain {bg} background.",
    "What we see here is a {bg} background with {count} on it.",
    "At first glance, the image is a clean composition of {count} on a {bg} background.",
    "The image is a minimalist graphic with {count} on a uniform {bg} background.",
    "This image presents {count} against a solid {bg} background.",
)
# A description walks the cells in reading order and names each cell before what is in it, so that
# every object line asks the question the binding checks ask: what is at this place?
_ONE_OBJECT_LINES = (
    "{Where}, there is {a} {size} {color} {shape}.", "{Where} we find {a} {size} {color} {shape}.",
    "{Where} sits {a} {size} {color} {shape}.", "{Where} is {a} {size} {color} {shape}.",
    "{Where}, the image shows {a} {size} {color} {shape}.", "{Where}, {a} {size} {color} {shape} can be seen.",
    "Looking {where}, one sees {a} {size} {color} {shape}.",
)
_NEXT = ("Next to that,", "Besides that,", "In addition,", "Moving on,", "Elsewhere in the image,", "Then,", "Also,")
_WORD_LINES = (
    'The word "{word}" is written in {ink} capital letters {where}.',
    '{Where}, the word "{word}" appears in {ink} letters.',
    'There is also some text: "{word}", printed in {ink} {where}.',
    'A single word, "{word}", is written {where} in {ink}.',
)
_EMPTY_LINES = ("The {cells} {verb} empty {bg} space.", "Nothing is drawn {where_list}, where only the {bg} background shows.",
                "The {cells} {verb} left blank, plain {bg}.")
_CLOSERS = (
    "Overall, the image is simple and uncluttered: {count} on {bg}, each easy to tell apart.",
    "In summary, it is a clean arrangement of {colors} shapes with a lot of open {bg} space.",
    "The picture has no people, animals or scenery, just {things} on {bg}.",
    "Altogether, the {bg} background and the {colors} shapes make a sparse, tidy composition.",
    "There is no shading or perspective, so the drawing of {things} is flat, like a diagram.",
    "The whole image, {things} on {bg}, looks like a slide used to teach colors and shapes.",
    "Nothing overlaps; {things} each have their own place in the image.",
)
_GENERAL = (
    "A picture like this, with {things}, could teach children the names of colors and shapes, because each "
    "object is clear and separate from the others.",
    "Simple pictures of this kind, here {things} on {bg}, are useful for testing whether a vision system can "
    "find objects, name their colors and tell where they are.",
    "Because the {bg} background is plain, the eye goes straight to {things}.",
    "A designer might use {things} on {bg} as a starting point for a poster or a pattern.",
    "Describing this image well means being precise about {things}: each shape, its color, its size and its place.",
    "Since nothing in the image explains {things}, their meaning is left to the viewer.",
    "The flat {colors} and sharp edges suggest that the image was made on a computer rather than photographed.",
    "One way to read the picture, with {things}, is row by row, from the top to the bottom.",
)


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _count(n: int, rng: random.Random) -> str:
    return f"{NUMBER[n]} {rng.choice(['shapes', 'geometric shapes', 'colored shapes', 'simple shapes'])}" \
        if n > 1 else "one shape"


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _listing(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _object_line(o, rng: random.Random, first: bool) -> str:
    where = rng.choice(_WHERE[o.position])
    line = rng.choice(_ONE_OBJECT_LINES)
    size = o.size
    text = line.format(a=_a(size), size=size, color=o.color, shape=o.shape, where=where, Where=_cap(where))
    if not first and rng.random() < 0.4:
        text = rng.choice(_NEXT) + " " + text[0].lower() + text[1:]
    return text


def _notes(o, rng: random.Random, bg: str | None) -> list[str]:
    notes = []
    if rng.random() < 0.6:
        notes.append(rng.choice(_SHAPE_NOTES[o.shape]).format(c=o.color))
    if rng.random() < 0.25:
        notes.append(rng.choice(_FILL_NOTES[:3] if bg is None else _FILL_NOTES).format(c=o.color, s=o.shape, bg=bg))
    return notes


def _slots(scene: Scene) -> dict:
    objs = scene.objects
    things = _listing([f"the {o.color} {o.shape}" for o in objs])
    return {"things": things, "colors": _listing([o.color for o in objs]), "bg": scene.background or "light",
            "count": f"{NUMBER[len(objs)]} shape{'s' if len(objs) > 1 else ''}"}


def _relation_lines(objs, rng: random.Random, k: int) -> list[str]:
    pairs = [(a, b) for i, a in enumerate(objs) for b in objs[i + 1:]]
    rng.shuffle(pairs)
    out = []
    for a, b in pairs[:k]:
        (ra, ca), (rb, cb) = divmod(CELLS.index(a.position), 3), divmod(CELLS.index(b.position), 3)
        if rng.random() < 0.5:
            a, b, ra, ca, rb, cb = b, a, rb, cb, ra, ca
        if ra != rb and (ca == cb or rng.random() < 0.5):
            rel = "above" if ra < rb else "below"
        else:
            rel = "to the left of" if ca < cb else "to the right of"
        out.append(rng.choice(("The {a} is {rel} the {b}.", "The {a} sits {rel} the {b}.",
                               "Relative to the {b}, the {a} is {rel} it.")).format(
            a=f"{a.color} {a.shape}", b=f"{b.color} {b.shape}", rel=rel).replace("is above it", "is higher up")
            .replace("is below it", "is lower down").replace("is to the left of it", "is further left")
            .replace("is to the right of it", "is further right"))
        if a.size != b.size and rng.random() < 0.5:
            big, small = (a, b) if a.size == "large" else (b, a)
            out.append(rng.choice(("The {x} is larger than the {y}.", "The {y} is smaller than the {x}.")).format(
                x=f"{big.color} {big.shape}", y=f"{small.color} {small.shape}"))
    return out


def _rows(scene: Scene, rng: random.Random) -> list[str]:
    out = []
    for r, name in enumerate(("top row", "middle row", "bottom row")):
        row = [o for o in scene.objects if CELLS.index(o.position) // 3 == r]
        row.sort(key=lambda o: CELLS.index(o.position))
        if row:
            things = _listing([f"the {o.color} {o.shape}" for o in row])
            out.append(rng.choice((f"In the {name} there {'is' if len(row) == 1 else 'are'} {things}.",
                                   f"Reading the {name} from left to right: {things}.")))
    return out


def _empty(scene: Scene, rng: random.Random) -> str | None:
    used = {o.position for o in scene.objects} | ({scene.text.position} if scene.text else set())
    corners = [c for c in ("top left", "top right", "bottom left", "bottom right") if c not in used]
    if not corners:
        return None
    names = [f"{c} corner" for c in corners]
    line = rng.choice(_EMPTY_LINES)
    return line.format(cells=_listing(names), verb="is" if len(names) == 1 else "are",
                       where_list="in the " + _listing(names), bg=scene.background)


def _scene_detail(scene: Scene, rng: random.Random, long: bool) -> str:
    objs = sorted(scene.objects, key=lambda o: CELLS.index(o.position))
    out = [rng.choice(_OPENERS).format(count=_count(len(objs), rng), bg=scene.background)]
    body = []
    for i, o in enumerate(objs):
        body.append(_object_line(o, rng, i == 0))
        body += _notes(o, rng, scene.background)
    out += body
    if scene.text is not None:
        t = scene.text
        where = rng.choice(_WHERE[t.position])
        out.append(rng.choice(_WORD_LINES).format(word=t.word, ink=t.color, where=where, Where=_cap(where)))
    extra = []
    if len(objs) > 1:
        extra += _relation_lines(objs, rng, 2 if not long else 4)
    if long or rng.random() < 0.4:
        extra += _rows(scene, rng)
    e = _empty(scene, rng)
    if e and (long or rng.random() < 0.5):
        extra.append(e)
    if extra:
        out.append(" ".join(extra))
    slots = _slots(scene)
    out += [g.format(**slots) for g in rng.sample(_GENERAL, 3 if long else (1 if rng.random() < 0.5 else 0))]
    out.append(rng.choice(_CLOSERS).format(**slots))
    return _paragraphs(out, rng)


def _paragraphs(sentences: list[str], rng: random.Random) -> str:
    text, out = [], []
    for s in sentences:
        text.append(s)
        if len(text) >= 3 and rng.random() < 0.35:
            out.append(" ".join(text))
            text = []
    if text:
        out.append(" ".join(text))
    return "\n\n".join(out)


def _evqa_detail(scene: Scene, rng: random.Random, long: bool) -> str:
    o = scene.objects[0]
    out = [rng.choice(("The image shows a single {c} {s} on a light, plain background.",
                       "This picture contains one shape: {a} {c} {s}.",
                       "There is only one object in this image, {a} {c} {s}, on a pale background.",
                       "A lone {c} {s} is drawn on a plain, light background.")).format(c=o.color, s=o.shape, a=_a(o.color))]
    out += _notes(o, rng, None) + [rng.choice(_FILL_NOTES[:3]).format(c=o.color, s=o.shape)]
    out.append(rng.choice(("Apart from the {c} {s}, the image is empty.", "Nothing but the {c} {s} appears in the picture.",
                           "There is no text in the image, only the {c} {s}.", "The {c} {s} takes up a good part of the small image."))
               .format(c=o.color, s=o.shape))
    slots = _slots(scene)
    out += [g.format(**slots) for g in rng.sample((_GENERAL[0], _GENERAL[4], _GENERAL[5], _GENERAL[6]), 2 if long else 1)]
    out.append(rng.choice((_CLOSERS[2], _CLOSERS[4])).format(**slots).replace(" on light", ""))
    return _paragraphs(out, rng)


def _questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, short answer, explanation) about the scene's facts."""
    objs, out = scene.objects, []
    n = len(objs)
    evqa = objs[0].position is None
    out.append(("How many shapes are in the image?", f"There {'is' if n == 1 else 'are'} {NUMBER[n]} "
                f"shape{'s' if n > 1 else ''}.", "They are " + _listing([f"{_a(o.color)} {o.color} {o.shape}" for o in objs]) + "."
                if n > 1 else f"It is {_a(objs[0].color)} {objs[0].color} {objs[0].shape}."))
    for o in objs:
        where = None if evqa else rng.choice(_WHERE[o.position])
        where_bare = "" if evqa else " " + where
        unique = sum(p.shape == o.shape for p in objs) == 1
        out.append((rng.choice((f"What color is the {o.shape}{where_bare}?", f"What is the color of the {o.shape}{where_bare}?",
                                f"Which color does the {o.shape}{where_bare} have?")),
                    f"The {o.shape}{where_bare} is {o.color}.",
                    f"It is filled with solid {o.color}." + ("" if evqa else f" It is the only {o.color} shape in the image.")))
        if not evqa:
            out.append((rng.choice((f"What shape is {where}?", f"Which shape can be seen {where}?",
                                    f"What is the object {where}?")),
                        f"It is {_a(o.size)} {o.size} {o.color} {o.shape}.",
                        rng.choice(_SHAPE_NOTES[o.shape]).format(c=o.color)))
            out.append((f"Where is the {o.color} {o.shape}?", f"The {o.color} {o.shape} is {where}.",
                        f"It is {o.size}." + (" " + rng.choice(_relation_lines([o, rng.choice([p for p in objs if p is not o])], rng, 1))
                                              if n > 1 else " It is the only shape in the image.")))
        else:
            out.append((rng.choice(("What shape is in the image?", "Which shape does the image show?", f"What is the {o.color} object?")),
                        f"It is {_a(o.color)} {o.color} {o.shape}.", rng.choice(_SHAPE_NOTES[o.shape]).format(c=o.color)))
        if unique:
            out.append((f"Is there {_a(o.shape)} {o.shape} in the image?", f"Yes, there is {_a(o.color)} {o.color} {o.shape}.",
                        "" if evqa else f"It is {where}."))
    if n > 1 and not evqa:
        big = [o for o in objs if o.size == "large"]
        if big and len(big) < n:
            out.append(("Which shapes are large?", f"The large shape{'s are' if len(big) > 1 else ' is'} "
                        f"{_listing([f'the {o.color} {o.shape}' for o in big])}.",
                        f"The other{'s are' if n - len(big) > 1 else ' is'} small."))
    absent = [s for s in ("circle", "rectangle", "triangle", "star", "diamond") if s not in {o.shape for o in objs}]
    if absent and not (evqa and absent[0] not in ("circle", "rectangle", "triangle")):
        s = rng.choice(absent)
        out.append((f"Is there {_a(s)} {s} in the image?", f"No, there is no {s} in the image.",
                    "The image shows " + _listing([f"{_a(o.color)} {o.color} {o.shape}" for o in objs]) + "."))
    if scene.text is not None:
        t = scene.text
        out.append((rng.choice(("What word is written in the image?", "What does the text in the image say?",
                                "Read the text in this image.")),
                    f'The text says "{t.word}".', f"It is written in {t.color} capital letters {rng.choice(_WHERE[t.position])}."))
    if not evqa and scene.background:
        out.append(("What color is the background?", f"The background is {scene.background}.",
                    "It is a plain, even color with nothing else on it."))
    return out


def write(scene: Scene, kind: str, rng: random.Random) -> tuple[str, str]:
    """(prompt, answer) of one sample of `kind` about `scene`; the prompt carries no <image> tag."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    evqa = scene.objects[0].position is None
    if kind == "detail":
        suffix = rng.choice(DETAIL_SUFFIXES)
        long = LONG_ANSWER in suffix or "thorough" in suffix or "detailed" in suffix
        body = (_evqa_detail if evqa else _scene_detail)(scene, rng, long)
        return rng.choice(DETAIL_PROMPTS) + suffix, body
    q, short, why = rng.choice(_questions(scene, rng))
    if kind == "brief":
        return q + rng.choice(BRIEF_SUFFIXES), short
    extra = [why] if why else []
    if not evqa and rng.random() < 0.6:
        extra.append(" ".join(_scene_detail(scene, rng, False).split("\n\n")[0:1]))
    return q + rng.choice(QUESTION_SUFFIXES), " ".join([short] + extra)


def instruction_samples(sources: list[tuple[str, Scene]], seed: int = 0, mix: dict | None = None,
                        max_repetition: float = 0.12) -> tuple[list[dict], dict]:
    """Samples {key, kind, prompt, answer} for every (key, facts) source, `mix` samples of each kind
    per image (default one detail, one question, one brief), each checked: an answer with a false
    claim, with word 4-gram repetition above `max_repetition`, or (detail answers) with fewer than
    three true claims (two for easy-vqa's one-shape images) is dropped. Returns (kept samples, report)."""
    mix = mix or {"detail": 1, "question": 1, "brief": 1}
    rng = random.Random(seed)
    kept, dropped = [], {"false": 0, "repetition": 0, "few_facts": 0}
    for key, scene in sources:
        for kind, k in mix.items():
            for _ in range(k):
                prompt, answer = write(scene, kind, rng)
                c = check(answer, scene)
                if c.false:
                    dropped["false"] += 1
                elif word_repetition(answer) > max_repetition:
                    dropped["repetition"] += 1
                elif kind == "detail" and c.n_true < (3 if scene.objects[0].position is not None else 2):
                    dropped["few_facts"] += 1
                else:
                    kept.append({"key": key, "kind": kind, "prompt": prompt, "answer": answer, "true_claims": c.n_true})
    total = len(kept) + sum(dropped.values())
    return kept, {"written": total, "kept": len(kept), "kept_fraction": len(kept) / max(total, 1), "dropped": dropped}
