"""The checker: which claims of an answer are true of an image whose facts are known.

An answer is read sentence by sentence, clause by clause, for the claims this domain makes:
    binding    "a large red circle", "the blue star"     an object with that colour and shape (and size)
    position   "... in the top left corner"               the object mentioned in the clause is there
    relation   "the red circle is above the blue star"    rows / columns / sizes compare that way
    count      "three shapes"                             the number of objects
    background "a light blue background"                  the background's colour
    word       '"STOP"'                                   the rendered word
    presence   any colour or shape word                   something of that colour / shape is in the image
A clause with a negation ("no", "not", ...) claims absence: "there are no stars" is checked as such.
Words the checker does not know are neither true nor false. `check(answer, scene)` counts the distinct
true claims and lists the false ones; `grounded` asks for at least `min_true` true claims and no false
one. Facts that an image does not have (easy-vqa images carry no size, cell or background) make the
claims about them unverifiable, never false.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .scenes import CELLS, COLORS, Scene

SHAPE_WORDS = {"circle": "circle", "circles": "circle", "rectangle": "rectangle", "rectangles": "rectangle",
               "square": "rectangle", "squares": "rectangle", "triangle": "triangle", "triangles": "triangle",
               "star": "star", "stars": "star", "diamond": "diamond", "diamonds": "diamond"}
COLOR_WORDS = tuple(COLORS) + ("white", "grey")
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
NUMBERS = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}
NUMBERS.update({str(i): i for i in range(10)})
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_FACT_VOCAB = "|".join(COLOR_WORDS + tuple(SHAPE_WORDS) + tuple(SIZE_WORDS) + NUMBER_WORDS + (
    "beige", "top", "upper", "bottom", "lower", "left", "right", "center", "centre", "middle", "above", "below",
    "larger", "smaller"))
FACT_WORDS = re.compile(rf"\b(?:(?i:{_FACT_VOCAB})|[A-Z]{{2,}})\b")   # the words an answer's facts are stated in
NEGATION = re.compile(r"\b(no|not|none|neither|nor|without|never|nothing|isn't|aren't)\b")

_color = "|".join(sorted(COLOR_WORDS, key=len, reverse=True))
_shape = "|".join(sorted(SHAPE_WORDS, key=len, reverse=True))
_size = "|".join(SIZE_WORDS)
MENTION = re.compile(rf"\b(?:({_size})\s+)?(?:(?:bright|solid|vivid|deep|pale)\s+)?({_color})\s+({_shape})\b")
_pos = r"(?:top|upper|bottom|lower)[ -](?:left|right)|top|upper|bottom|lower|left|right|center|centre|middle"
POSITION = re.compile(rf"\b(?:in|at|on|near|toward|towards|along|occupies|occupying|fills|filling) the ({_pos})(?!\s+row)"
                      rf"(?:\s+(?:corner|side|edge|part|half|area|region|cell|of the (?:image|picture|frame|canvas)))*\b")
RELATION = re.compile(r"\b(?:is|sits|lies|stands|appears|rests|floats|is placed|is located)?\s*(?:directly |just |slightly |somewhat )?"
                      r"(above|below|beneath|under|over|to the left of|to the right of|left of|right of|"
                      r"larger than|bigger than|smaller than)\s+")
COUNT = re.compile(rf"\b({'|'.join(NUMBERS)})\s+(?:(?:simple|geometric|colou?red|different|distinct|solid|flat|"
                   rf"separate|bright|basic|plain)\s+)*(shapes|objects|figures|shape|object|figure)\b")
BACKGROUND = re.compile(rf"\b((?:light|dark|pale)\s+)?({_color}|beige)\s+(?:background|backdrop)\b")
QUOTED = re.compile(r"[\"“”']([A-Za-z]{2,})[\"“”']")
NO_SHAPE = re.compile(rf"\bno\s+(?:({_color})\s+)?({_shape})\b")


def _cell(position: str | None) -> tuple[int, int] | None:
    return None if position is None else divmod(CELLS.index(position), 3)   # (row, column)


def _position_name(word: str) -> str:
    w = word.replace("-", " ").replace("upper", "top").replace("lower", "bottom")
    return "center" if w in ("centre", "middle") else w


@dataclass
class Check:
    true: set = field(default_factory=set)        # distinct true claims, e.g. ("binding", "red", "circle")
    false: list = field(default_factory=list)     # false claims, in the order found
    unverifiable: int = 0

    @property
    def n_true(self) -> int:
        return len(self.true)

    def grounded(self, min_true: int = 3) -> bool:
        return self.n_true >= min_true and not self.false


class _Facts:
    def __init__(self, scene: Scene):
        self.scene = scene
        self.objects = scene.objects
        words = set(scene.background.split()) if scene.background else set()
        ink = {scene.text.color} if scene.text else set()
        self.colors = {o.color for o in self.objects} | {w for w in words | ink if w in COLOR_WORDS}
        if "gray" in self.colors:
            self.colors.add("grey")
        self.shapes = {o.shape for o in self.objects}

    def find(self, size, color, shape) -> list:
        color = "gray" if color == "grey" else color
        return [o for o in self.objects if o.color == color and o.shape == shape
                and (size is None or o.size is None or o.size == size)]


def _mentions(clause: str) -> list[tuple[int, int, str | None, str, str]]:
    return [(m.start(), m.end(), SIZE_WORDS.get(m.group(1)) if m.group(1) else None, m.group(2), SHAPE_WORDS[m.group(3)])
            for m in MENTION.finditer(clause)]


def check(answer: str, scene: Scene) -> Check:
    """Every claim of `answer` about `scene` found true or false (see the module's docstring)."""
    facts, out = _Facts(scene), Check()
    words = [w for w in re.split(r"(?<=[.!?])\s+|\n+", answer) if w.strip()]
    for sentence in words:
        for m in QUOTED.finditer(sentence):
            _word(m.group(1), scene, out)
        s = QUOTED.sub(" ", sentence).lower()
        clauses = [c for c in re.split(r"[,;:()]|\s+(?:and|but|while|whereas|which|where)\s+", s) if c.strip()]
        pending = None       # a position phrase waiting for the next clause's only object
        previous = None      # the previous clause's only object
        for clause in clauses:
            if NEGATION.search(clause):
                for m in NO_SHAPE.finditer(clause):
                    present = [o for o in facts.objects if o.shape == SHAPE_WORDS[m.group(2)]
                               and (m.group(1) is None or o.color == m.group(1))]
                    (out.false.append(("absence", m.group(0))) if present else out.true.add(("absence", m.group(0))))
                pending = previous = None
                continue
            mentions = _mentions(clause)
            objs = []
            for _, _, size, color, shape in mentions:
                found = facts.find(size, color, shape)
                if found:
                    out.true.add(("binding", color, shape))
                    if size and found[0].size:
                        out.true.add(("size", color, shape, size))
                else:
                    out.false.append(("binding", " ".join(x for x in (size, color, shape) if x)))
                objs.append(found[0] if len(found) == 1 else None)
            rest = clause
            for rel in RELATION.finditer(clause):
                left = [k for k, m in enumerate(mentions) if m[1] <= rel.start()]
                right = [k for k, m in enumerate(mentions) if m[0] >= rel.end()]
                if left and right:
                    _relation(rel.group(1), objs[left[-1]], objs[right[0]], out)
                    rest = rest.replace(rel.group(0), " ")
            for m in COUNT.finditer(clause):
                n = NUMBERS[m.group(1)]
                (out.true.add(("count", n)) if n == len(facts.objects) else out.false.append(("count", m.group(0))))
            for m in BACKGROUND.finditer(clause):
                _background(((m.group(1) or "") + m.group(2)).strip(), scene, out)
            rest = BACKGROUND.sub(" ", rest)
            for w in re.findall(rf"\b({_color})\b", rest):
                if w not in facts.colors and not any(w == c for _, _, _, c, _ in mentions):
                    out.false.append(("colour", w))
            for w in re.findall(rf"\b({_shape})\b", rest):
                if SHAPE_WORDS[w] not in facts.shapes and not any(SHAPE_WORDS[w] == sh for *_, sh in mentions):
                    out.false.append(("shape", w))
            positions = [_position_name(m.group(1)) for m in POSITION.finditer(rest)
                         if not re.search(r"to the (left|right) of", rest[m.start():m.end() + 4])]
            only = objs[0] if len(objs) == 1 else None
            if positions and len(positions) == 1:
                target = only if mentions else (previous if previous is not None else None)
                if target is not None:
                    _position(positions[0], target, out)
                elif not mentions:
                    pending = positions[0]
            elif only is not None and pending is not None:
                _position(pending, only, out)
                pending = None
            previous = only if len(mentions) == 1 else None
    return out


def _word(word: str, scene: Scene, out: Check) -> None:
    if scene.seed < 0 and scene.text is None and scene.background is None:
        out.unverifiable += 1
    elif scene.text is not None and word.upper() == scene.text.word:
        out.true.add(("word", scene.text.word))
    elif word.isupper() or scene.text is None:
        out.false.append(("word", word))


def _background(name: str, scene: Scene, out: Check) -> None:
    if scene.background is None:
        out.unverifiable += 1
    elif name.replace("grey", "gray") == scene.background:
        out.true.add(("background", scene.background))
    else:
        out.false.append(("background", name))


def _position(name: str, obj, out: Check) -> None:
    if obj.position is None:
        out.unverifiable += 1
    elif name == obj.position:
        out.true.add(("position", obj.color, obj.shape, name))
    else:
        out.false.append(("position", f"{obj.color} {obj.shape} {name}"))


def _relation(word: str, a, b, out: Check) -> None:
    if a is None or b is None:
        return
    if word in ("larger than", "bigger than", "smaller than"):
        if a.size is None or b.size is None:
            out.unverifiable += 1
            return
        ok = (a.size, b.size) == (("large", "small") if word != "smaller than" else ("small", "large"))
    else:
        ca, cb = _cell(a.position), _cell(b.position)
        if ca is None or cb is None:
            out.unverifiable += 1
            return
        ok = {"above": ca[0] < cb[0], "over": ca[0] < cb[0], "below": ca[0] > cb[0], "beneath": ca[0] > cb[0],
              "under": ca[0] > cb[0]}.get(word, ca[1] < cb[1] if "left" in word else ca[1] > cb[1])
    claim = ("relation", a.color, a.shape, word, b.color, b.shape)
    out.true.add(claim) if ok else out.false.append(claim)


def word_repetition(text: str, n: int = 4) -> float:
    """Share of the answer's word n-grams already seen earlier in it (0: none repeats; a loop: near 1)."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def scene_facts(shape: str, color: str) -> Scene:
    """The facts of an easy-vqa image (one shape of one colour; no size, cell or background known)."""
    from .scenes import SceneObject
    return Scene(-1, None, [SceneObject(shape, color, None, None)], None)
