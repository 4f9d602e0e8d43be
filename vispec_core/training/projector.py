"""Training the default VLM's projector: data, long grounded answers, the loop, and its checks.

Stages (each resumable; everything lands under `--work`, default `$VISPEC_CACHE/projector_build`):
  features  frozen EfficientNet-Lite0 features of easy-vqa training images and procedural scenes,
            computed once (the encoder is frozen) and stored in bf16 chunks.
  answers   long, grounded answers: the text-only LM is told the image's facts in words and writes
            a long answer (sampled, batched, left-padded); the VLM later learns to write it from the
            image alone. This is what makes "Write long" work; short VQA answers make "See" work.
  train     projector only (LM and encoder frozen), loss on answer tokens (+ `<|im_end|>` when the
            answer is complete), AdamW + warm-up + cosine, checkpoint every few steps.
  eval      "See" (easy-vqa test shape/colour accuracy vs a blank image) and "Write long" (answer
            length, grounding of the first sentences).

    python -m vispec_core.training.projector all --out data/default_vlm/projector.safetensors
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import prompts, scenes as sc
from ..data.prompts import COLORS_QUESTION, LONG_PROMPTS, SHORT
from ..data.easyvqa import EVQA_COLORS, EVQA_SHAPES, easyvqa_facts, easyvqa_image  # noqa: F401
from ..targets import default_vlm as dv, many_rows_dtype, packed_linears
from .default_vlm import extract_features, load_features, load_image  # noqa: F401  (shared with the instruction tuning)

EXPLAIN = " " + prompts.EXPLAIN


def easyvqa_describe(f: dict) -> str:
    return f"The image has a plain white background with one {f['color']} {f['shape']} on it."


def easyvqa_short(f: dict, rng, p_shape: float = 0.4) -> tuple[str, str]:
    """One short question about the shape or the colour, with a one-sentence answer."""
    kind = rng.random()
    if kind < p_shape:
        return rng.choice(["What shape is in the image?", f"What is the {f['color']} shape?",
                           "What shape does the image contain?"]), f"It is a {f['shape']}."
    if kind < 0.8:
        return rng.choice(["What color is the shape?", f"What color is the {f['shape']}?"]), \
            f"The {f['shape']} is {f['color']}."
    other = rng.choice([c for c in EVQA_COLORS if c != f["color"]])
    c = rng.choice([f["color"], other])
    return f"Is there a {c} shape in the image?", ("Yes." if c == f["color"] else "No.") + \
        f" The shape is {f['color']}."


# -- image sources and frozen features ----------------------------------------------------------
def image_sources(n_evqa: int, n_scenes: int, seed: int = 0) -> list[tuple[str, dict]]:
    """(key, facts) of the training images: easy-vqa images with inferred facts, then scenes."""
    facts = easyvqa_facts("train")
    ids = sorted(facts)
    random.Random(seed).shuffle(ids)
    out = [(f"evqa-{i}", {"kind": "evqa", **facts[i]}) for i in sorted(ids[:n_evqa])]
    out += [(f"scene-{s}", {"kind": "scene", **sc.sample_scene(s).to_dict()}) for s in range(n_scenes)]
    return out


# -- long grounded answers -------------------------------------------------------------------
def describe_facts(facts: dict) -> str:
    if facts["kind"] == "evqa":
        return easyvqa_describe(facts)
    return sc.describe(_scene(facts))


def long_prompt(facts: dict, rng) -> str:
    if rng.random() < 0.5:
        return rng.choice(LONG_PROMPTS)
    if facts["kind"] == "evqa":
        q, _ = easyvqa_short(facts, rng)
    else:
        q, _ = sc.questions(_scene(facts), np.random.default_rng(rng.randrange(1 << 30)), 1)[0]
    return q + EXPLAIN


def _scene(facts: dict) -> sc.Scene:
    return sc.Scene(facts["seed"], facts["background"], [sc.SceneObject(**o) for o in facts["objects"]],
                    sc.SceneText(**facts["text"]) if facts["text"] else None)


def writer_prompt(facts: dict, prompt: str) -> str:
    """What the text-only LM sees: the facts, then the user's request about the image."""
    return f"You are looking at an image. {describe_facts(facts)}\n\n{prompt}"


def opening(facts: dict, prompt: str) -> str:
    """The grounded first sentences of a long answer, written from the facts. SmolLM2-135M told the
    facts still drifts from them at once (it invents objects), so the answer starts with the facts
    and the LM writes the long rest after them."""
    head = ""
    if prompt.endswith(EXPLAIN):
        q = prompt[:-len(EXPLAIN)]
        if facts["kind"] == "evqa":
            pairs = [(q, a) for q, a in [easyvqa_short(facts, random.Random(s)) for s in range(40)]]
        else:
            pairs = sc.questions(_scene(facts), np.random.default_rng(0), 99)
        head = next((a for qq, a in pairs if qq == q), "") + " "
    return head + describe_facts(facts)


@torch.inference_mode()
def write_long_answers(lm, tokenizer, items: list[dict], path: Path, batch: int = 16,
                       max_new_tokens: int = 144, min_new_tokens: int = 144, temperature: float = 0.7,
                       seed: int = 0, log=print) -> None:
    """Append {key, prompt, answer, finished} per item to JSONL; items already written are skipped.
    The writer may not end before min_new_tokens: left alone, SmolLM2 stops right after the facts."""
    done = {json.loads(l)["key"] for l in path.read_text().splitlines()} if path.exists() else set()
    todo = [it for it in items if it["key"] not in done]
    tokenizer.padding_side = "left"
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    t0, n_tok = time.time(), 0
    for b in range(0, len(todo), batch):
        part = todo[b:b + batch]
        starts = [opening(it["facts"], it["prompt"]) for it in part]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": writer_prompt(it["facts"], it["prompt"])}],
                                               tokenize=False, add_generation_prompt=True) + st
                 for it, st in zip(part, starts)]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed + len(done) + b)
        out = lm.generate(**enc, do_sample=True, temperature=temperature, top_p=0.9, max_new_tokens=max_new_tokens,
                          min_new_tokens=min_new_tokens, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id or eos, repetition_penalty=1.1)
        new = out[:, enc["input_ids"].shape[1]:]
        with path.open("a") as fh:
            for it, st, ids in zip(part, starts, new.tolist()):
                finished = eos in ids
                ids = ids[:ids.index(eos)] if finished else ids
                n_tok += len(ids)
                fh.write(json.dumps({"key": it["key"], "prompt": it["prompt"],
                                     "answer": st + " " + tokenizer.decode(ids, skip_special_tokens=True).strip(),
                                     "finished": finished, "tokens": len(ids)}) + "\n")
        log(f"answers {len(done) + b + len(part)}/{len(items)} ({n_tok / (time.time() - t0):.1f} tok/s)")


# -- training samples ----------------------------------------------------------------------
def image_colors(facts: dict) -> set[str]:
    """Every colour name that is true of the image: its objects', its text's and its background's."""
    if facts["kind"] == "evqa":
        return {facts["color"], "white"}
    words = set(facts["background"].split()) | ({facts["text"]["color"]} if facts["text"] else set())
    return {o["color"] for o in facts["objects"]} | {w for w in words if w in sc.COLORS or w == "white"}


def color_tokens(tokenizer, answer: str, colors: set[str]) -> tuple[list[int], list[int]]:
    """(answer ids, indices of the ids that spell one of `colors` as a word)."""
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    spans = [m.span() for c in colors for m in re.finditer(rf"\b{c}\b", answer, re.IGNORECASE)]
    heavy = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if any(a < e and s < b for s, e in spans)]
    return enc["input_ids"], heavy


def _listing(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def scene_lists(facts: dict) -> list[tuple[str, str]]:
    """Set-level questions about a scene: which colours and which shapes it holds, with no object's
    colour bound to its shape (the frozen 135M LM binds them poorly even when told the facts in
    words: `evaluate_told`)."""
    objs = facts["objects"]
    counts = {}
    for o in objs:
        counts[o["shape"]] = counts.get(o["shape"], 0) + 1
    number = ("", "a", "two", "three", "four")
    shapes = [f"{number[c]} {s}" + ("s" if c > 1 else "") for s, c in counts.items()]
    shapes = [("an " + x[2:]) if x.startswith("a ") and x[2] in "aeiou" else x for x in shapes]
    colors = _listing([o["color"] for o in objs])
    return [(COLORS_QUESTION, f"{'It is' if len(objs) == 1 else 'They are'} {colors}."),
            ("What shapes are in the image?", f"There {'is' if len(objs) == 1 else 'are'} {_listing(shapes)}.")]


def list_opening(answer: str, facts: dict) -> str:
    """A scene's long answer with its first fact sentence ("... with 4 shapes on it.") also naming the
    shapes' colours, so that the opening names first what the image shows as a whole."""
    n = len(facts["objects"])
    first = f"with {n} shape{'s' if n > 1 else ''} on it."
    colors = _listing([o["color"] for o in facts["objects"]])
    return answer.replace(first, first[:-1] + f", colored {colors}.", 1)


def build_samples(sources: list[tuple[str, dict]], answers_path: Path | None, tokenizer, seed: int = 0,
                  max_answer_tokens: int = 128, short_per_image: int = 1, p_shape: float = 0.4,
                  facts: dict[str, dict] | None = None, scene_lists_p: float = 0.0) -> list[dict]:
    """Tokenised samples {key, ids, n_prompt, color_at}: short VQA answers for every image plus the
    long answers written so far, cut to max_answer_tokens (a cut answer gets no `<|im_end|>`, so the
    model learns to go on, not to stop). `color_at` lists the positions in `ids` of the tokens that
    name a true colour of the image (long answers: when `facts` maps their keys), for `loss_on`'s
    colour weight. With `scene_lists_p` > 0, that share of a scene's short questions are set-level
    (`scene_lists`) and its long answers open with `list_opening`."""
    rng = random.Random(seed)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    facts_of = dict(sources) | (facts or {})
    out = []

    def add(key, prompt, answer, complete, short=False):
        p = dv.prompt_ids(tokenizer, prompt + (SHORT if short else ""), 1)
        a, heavy = color_tokens(tokenizer, answer, image_colors(facts_of[key]) if key in facts_of else set())
        if len(a) > max_answer_tokens:
            a, complete = a[:max_answer_tokens], False
        out.append({"key": key, "ids": p + a + ([eos] if complete else []), "n_prompt": len(p),
                    "color_at": [len(p) + j for j in heavy if j < len(a)]})

    for key, facts in sources:
        for _ in range(short_per_image):
            if facts["kind"] == "evqa":
                q, a = easyvqa_short(facts, rng, p_shape)
            elif scene_lists_p and rng.random() < scene_lists_p:
                q, a = rng.choice(scene_lists(facts))
            else:
                q, a = sc.questions(_scene(facts), np.random.default_rng(rng.randrange(1 << 30)), 1)[0]
            add(key, q, a, True, short=True)
    if answers_path is not None and answers_path.exists():
        for line in answers_path.read_text().splitlines():
            d = json.loads(line)
            if d["tokens"] >= 20:
                f = facts_of.get(d["key"])
                answer = list_opening(d["answer"], f) if scene_lists_p and f and f["kind"] == "scene" else d["answer"]
                add(d["key"], d["prompt"], answer, d["finished"])
    return out


def smoke_setup(keys=("evqa-0", "scene-1")) -> tuple[dv.DefaultVLM, list[dict], dict]:
    """A fresh projector (seeded) and the short-answer samples and frozen features of two training
    images: what a smoke build trains on (notebook 00, the tests); in bf16 where the CPU has bf16
    arithmetic, else in fp32."""
    torch.manual_seed(0)
    vlm = dv.load_vlm(projector=None, dtype=many_rows_dtype())
    evqa = easyvqa_facts("train")
    facts = {k: {"kind": "evqa", **evqa[int(k.split("-")[1])]} if k.startswith("evqa") else
             {"kind": "scene", **sc.sample_scene(int(k.split("-")[1])).to_dict()} for k in keys}
    feats = dict(zip(keys, vlm.encode_images(dv.preprocess([load_image(k) for k in keys]))))
    return vlm, build_samples([(k, facts[k]) for k in keys], None, vlm.tokenizer), feats


def batches(samples: list[dict], batch: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar length (sorted within windows of 8 batches) to waste less padding."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(samples)))
    rng.shuffle(order)
    out = []
    for w in range(0, len(order), batch * 8):
        win = sorted(order[w:w + batch * 8], key=lambda i: len(samples[i]["ids"]))
        out += [win[b:b + batch] for b in range(0, len(win), batch)]
    rng.shuffle(out)
    return out


def loss_on(vlm: dv.DefaultVLM, samples: list[dict], feats: dict[str, torch.Tensor],
            eos_unlikelihood: float = 0.0, color_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the answer tokens given image + prompt (right padding), averaged per sample;
    the tokens that name a true colour of the image (`color_at`) weigh `color_weight` times the others
    in that average (in "The circle is teal." the colour is the one token the image decides, but it is
    one of six in the loss).
    With eos_unlikelihood > 0, plus that weight times the mean of -log(1 - p(`<|im_end|>`)) over every
    answer position whose next token is not the end (Welleck et al.'s unlikelihood loss): the frozen
    LM's habit of ending its turn after one sentence is pushed down where the answer goes on."""
    T = max(len(s["ids"]) for s in samples)
    pad = vlm.tokenizer.pad_token_id or 0
    ids = torch.full((len(samples), T), pad, dtype=torch.long)
    mask = torch.zeros(len(samples), T, dtype=torch.long)
    target = torch.full((len(samples), T), -100, dtype=torch.long)
    for r, s in enumerate(samples):
        n = len(s["ids"])
        ids[r, :n] = torch.tensor(s["ids"])
        mask[r, :n] = 1
        target[r, s["n_prompt"] - 1:n - 1] = ids[r, s["n_prompt"]:n]    # position t predicts t+1
    image = vlm.project(torch.stack([feats[s["key"]] for s in samples]).float())
    embeds = vlm.embed(ids, image)
    hidden = vlm.lm.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    sel = target != -100
    logp = F.log_softmax(vlm.lm.lm_head(hidden[sel]).float(), -1)    # only where there is a label
    labels = target[sel]
    ce = -logp.gather(1, labels[:, None])[:, 0]
    weight = torch.ones(len(samples), T)
    if color_weight != 1.0:
        for r, s in enumerate(samples):
            weight[r, [t - 1 for t in s.get("color_at", [])]] = color_weight   # position t-1 predicts t
    w = weight[sel]
    row = sel.nonzero()[:, 0]                               # each sample weighs the same, long or short
    per_sample = torch.zeros(len(samples)).index_add(0, row, ce * w) / \
        torch.zeros(len(samples)).index_add(0, row, w).clamp(min=1e-6)
    loss = per_sample.mean()
    if eos_unlikelihood:
        eos = vlm.tokenizer.convert_tokens_to_ids("<|im_end|>")
        go_on = labels != eos
        p_eos = logp[go_on, eos].exp().clamp(max=1 - 1e-6)
        loss = loss + eos_unlikelihood * -torch.log1p(-p_eos).mean()
    return loss


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train(vlm: dv.DefaultVLM, samples: list[dict], feats: dict, work: Path, steps: int, batch: int = 8,
          lr: float = 1.5e-3, warmup: int = 20, seed: int = 0, save_every: int = 10, max_minutes: float = 0,
          eos_unlikelihood: float = 0.0, color_weight: float = 1.0, added_lr_scale: float = 1.0, log=print) -> int:
    """Train the projector only; resumes from work/checkpoint.pt. With max_minutes, the step count
    is cut after the first steps to what fits that time (on a shared CPU), and kept on resume.
    The parts added to LLaVA's MLP (`position`, `global_linear`), where the projector has them, learn at
    `added_lr_scale` x lr.
    Returns the number of steps trained."""
    torch.manual_seed(seed)
    proj = vlm.projector.float().train().requires_grad_(True)
    added = proj.added_parameters()
    groups = [{"params": [p for p in proj.parameters() if all(p is not q for q in added)], "lr_scale": 1.0}]
    if added:
        groups.append({"params": added, "lr_scale": added_lr_scale})
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, log_path = work / "checkpoint.pt", work / "train_log.jsonl"
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        proj.load_state_dict(state["projector"])
        opt.load_state_dict(state["optimizer"])
        step, cut = state["step"], state.get("cut")
        steps = min(steps, cut) if cut else steps
        log(f"resumed at step {step} of {steps}")
    first, cut = step, (cut if step else None)
    per_epoch = batches(samples, batch, seed, 0)
    t0, seen = time.time(), 0
    while step < steps:
        epoch, i = divmod(step, len(per_epoch))
        part = [samples[j] for j in batches(samples, batch, seed, epoch)[i]]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup) * g.get("lr_scale", 1.0)
        loss = loss_on(vlm, part, feats, eos_unlikelihood, color_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(proj.parameters(), 1.0)
        opt.step()
        step += 1
        seen += len(part)
        if max_minutes and first == 0 and step == 4:
            per = (time.time() - t0) / 4
            if int(max_minutes * 60 / per) < steps:
                log(f"{per:.1f} s/step: {steps} steps cut to {int(max_minutes * 60 / per)} to fit {max_minutes} min")
                steps = cut = max(int(max_minutes * 60 / per), step)
        rec = {"step": step, "loss": round(loss.item(), 4), "lr": opt.param_groups[0]["lr"],
               "grad_norm": round(float(gnorm), 3), "tokens": sum(len(s["ids"]) for s in part),
               "samples_per_s": round(seen / (time.time() - t0), 3), "time": time.time()}
        with log_path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log(f"step {step}/{steps} loss {rec['loss']:.4f} lr {rec['lr']:.2e} {rec['samples_per_s']} samples/s")
        if step % save_every == 0 or step == steps:
            torch.save({"projector": proj.state_dict(), "optimizer": opt.state_dict(), "step": step, "cut": cut},
                       ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
    proj.eval().requires_grad_(False)
    return steps


# -- checks: "See" and "Write long" -----------------------------------------------------------
@torch.inference_mode()
def generate_batch(vlm: dv.DefaultVLM, prompts: list[str], feats: torch.Tensor | None, max_new_tokens: int,
                   no_eos_before: int = 0) -> list[list[int]]:
    """Greedy answers for (prompt, image features [N, 196, 1280]) pairs, or for text alone when
    `feats` is None; left padding (HF `generate` from inputs_embeds returns only the new tokens)."""
    tok = vlm.tokenizer
    rows = [dv.prompt_ids(tok, p, 0 if feats is None else 1) for p in prompts]
    T = max(map(len, rows))
    pad = tok.pad_token_id or 0
    ids = torch.tensor([[pad] * (T - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    embeds = vlm.embed(ids, None if feats is None else vlm.project(feats.float()))
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    with packed_linears(vlm.lm):        # bf16 over many rows: the CPU's fast form, as synthesis does
        out = vlm.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                              do_sample=False, eos_token_id=eos, pad_token_id=pad, min_new_tokens=no_eos_before)
    res = []
    for r in out.tolist():
        res.append(r[:r.index(eos)] if eos in r else r)
    return res


def _first(text: str, names) -> str | None:
    hits = [(m.start(), n) for n in names for m in re.finditer(rf"\b{n}\b", text.lower())]
    return min(hits)[1] if hits else None


def see_questions(n: int, seed: int = 0) -> list[tuple[str, str, int]]:
    """A fixed subset of easy-vqa test questions that ask for the shape or the colour."""
    import easy_vqa
    qs, ans, ids = easy_vqa.get_test_questions()
    pool = [(q, a, i) for q, a, i in zip(qs, ans, ids) if a in EVQA_COLORS + EVQA_SHAPES]
    random.Random(seed).shuffle(pool)
    return pool[:n]


def evaluate_see(vlm: dv.DefaultVLM, n: int = 200, batch: int = 16, blank: bool = False, seed: int = 0) -> dict:
    """Accuracy on easy-vqa shape / colour questions: the first shape (colour) named must be the answer."""
    qs = see_questions(n, seed)
    feats, right, said = {}, {"shape": [], "color": []}, {}
    blank_feat = vlm.encode_images(dv.preprocess([Image.new("RGB", (64, 64), "white")]))[0] if blank else None
    for b in range(0, len(qs), batch):
        part = qs[b:b + batch]
        for _, _, i in part:
            if not blank and i not in feats:
                feats[i] = vlm.encode_images(dv.preprocess([easyvqa_image("test", i)]))[0]
        f = torch.stack([blank_feat if blank else feats[i] for _, _, i in part])
        outs = generate_batch(vlm, [q[0].capitalize() + SHORT for q in part], f, 12)
        for (q, a, _), o in zip(part, outs):
            kind = "shape" if a in EVQA_SHAPES else "color"
            names = EVQA_SHAPES if kind == "shape" else EVQA_COLORS
            named = _first(vlm.tokenizer.decode(o), names)
            right[kind].append(named == a)
            said.setdefault(a, []).append(named)
    return {k: round(sum(v) / max(1, len(v)), 4) for k, v in right.items()} | {
        "n_shape": len(right["shape"]), "n_color": len(right["color"]), "blank": blank,
        "per_answer": {a: f"{v.count(a)}/{len(v)}" for a, v in sorted(said.items())},
        "confusions": {f"{a}->{b}": v.count(b) for a, v in sorted(said.items()) for b in sorted(set(v) - {a}, key=str)}}


def scene_questions(n: int, seed: int = 0) -> list[tuple[str, str, str, int]]:
    """(question, kind, answer, scene seed): colour and shape questions about single objects of held-out
    scenes (seeds from 200,000 on; training uses 0..n_scenes, the long-answer check 100,000 on)."""
    out, k, rng = [], 0, random.Random(seed)
    while len(out) < n:
        s = sc.sample_scene(200_000 + k)
        colors = [o.color for o in s.objects]
        pool = []
        for q, a in sc.questions(s, np.random.default_rng(seed + k), 99):
            if q.startswith("What color is the ") and "background" not in q:
                pool.append((q, "color", a.removeprefix("It is ").rstrip("."), s.seed))
            elif q.startswith("What shape is the ") and colors.count(q.split()[4]) == 1:    # one object of that colour
                pool.append((q, "shape", a.removeprefix("It is a ").rstrip("."), s.seed))
        out += rng.sample(pool, min(2, len(pool)))
        k += 1
    return out[:n]


def evaluate_see_scenes(vlm: dv.DefaultVLM, n: int = 200, batch: int = 16, seed: int = 0, blank: bool = False) -> dict:
    """Accuracy on short colour / shape questions about one object of a multi-object scene ("What color
    is the star at the top?"): whether the projector resolves the scene, apart from how long answers
    are written. Chance: 1/10 colours, 1/5 shapes."""
    qs = scene_questions(n, seed)
    right, feats = {"shape": [], "color": []}, {}
    white = vlm.encode_images(dv.preprocess([Image.new("RGB", (64, 64), "white")]))[0] if blank else None
    for b in range(0, len(qs), batch):
        part = qs[b:b + batch]
        for *_, s in part:
            if s not in feats:
                feats[s] = white if blank else vlm.encode_images(dv.preprocess([sc.render(sc.sample_scene(s))]))[0]
        outs = generate_batch(vlm, [q + SHORT for q, *_ in part], torch.stack([feats[s] for *_, s in part]), 12)
        for (q, kind, a, _), o in zip(part, outs):
            names = tuple(sc.COLORS) if kind == "color" else sc.SHAPES
            right[kind].append(_first(vlm.tokenizer.decode(o), names) == a)
    return {k: round(sum(v) / max(1, len(v)), 4) for k, v in right.items()} | {
        "n_shape": len(right["shape"]), "n_color": len(right["color"]), "blank": blank}


def _named_colors(text: str) -> set[str]:
    return {c for c in sc.COLORS if re.search(rf"\b{c}\b", text.lower())}


def evaluate_scene_colors(vlm: dv.DefaultVLM, n: int = 100, batch: int = 16, blank: bool = False,
                          told: bool = False) -> dict:
    """"What colors are the shapes in the image?" on n held-out scenes (seeds from 200,000): the colours
    named against the scene's object colours, with no binding to shapes needed. `exact` counts
    answers that name every object colour and nothing else (the background's colour is neither right
    nor wrong). `told`: the LM alone, the facts in words (`evaluate_told`'s ceiling)."""
    q = COLORS_QUESTION + SHORT
    scenes = [sc.sample_scene(200_000 + k) for k in range(n)]
    white = vlm.encode_images(dv.preprocess([Image.new("RGB", (64, 64), "white")]))[0] if blank else None
    prec, rec, exact = [], [], []
    for b in range(0, n, batch):
        part = scenes[b:b + batch]
        if told:
            outs = generate_batch(vlm, [writer_prompt({"kind": "scene", **s.to_dict()}, q) for s in part], None, 24)
        else:
            feats = torch.stack([white] * len(part)) if blank else vlm.encode_images(dv.preprocess([sc.render(s) for s in part]))
            outs = generate_batch(vlm, [q] * len(part), feats, 24)
        for s, o in zip(part, outs):
            truth = {ob.color for ob in s.objects}
            named = _named_colors(vlm.tokenizer.decode(o)) - (set(s.background.split()) - truth)
            prec.append(len(named & truth) / len(named) if named else 0.0)
            rec.append(len(named & truth) / len(truth))
            exact.append(named == truth)
    return {"precision": round(float(np.mean(prec)), 4), "recall": round(float(np.mean(rec)), 4),
            "exact": round(float(np.mean(exact)), 4), "n": n, "blank": blank, "told": told}


def grounding(text: str, facts: dict) -> dict:
    """Colours and shapes named in the first two sentences vs the image's facts: `colors_ok` when
    they name a true colour and no false one (strict: naming none fails), `no_wrong_colors` when they
    name no false one (naming none passes); the same for shapes. `grounded` reads
    "what the first sentences name matches the image": they name at least one true colour or shape,
    and no false colour or shape."""
    head = " ".join(re.split(r"(?<=[.!?])\s+", text.strip())[:2]).lower()
    if facts["kind"] == "evqa":
        colors, shapes = {facts["color"]}, {facts["shape"]}
        bg = {"white"}
    else:
        colors = {o["color"] for o in facts["objects"]}
        shapes = {o["shape"] for o in facts["objects"]}
        bg = set(facts["background"].split()) | ({facts["text"]["color"]} if facts["text"] else set())
    named_c = _named_colors(head)
    named_s = {s for s in sc.SHAPES + ("square",) if re.search(rf"\b{s}s?\b", head)}
    wrong_c, wrong_s = named_c - colors - bg, named_s - shapes - {"square"}
    return {"colors_ok": bool(named_c & colors) and not wrong_c,
            "shapes_ok": bool(named_s & shapes) and not wrong_s,
            "no_wrong_colors": not wrong_c, "no_wrong_shapes": not wrong_s,
            "grounded": bool(named_c & colors or named_s & shapes) and not wrong_c and not wrong_s,
            "named_colors": sorted(named_c), "named_shapes": sorted(named_s)}


def long_eval_items(n: int, start: int = 0) -> list[tuple[str, Image.Image, dict]]:
    """(prompt, image, facts) of the long-answer check: held-out scenes (even k) and easy-vqa test
    images (odd k), under the paper's two long-answer prompts in turn; k from `start` (a later start
    gives fresh prompts, e.g. to check a difference seen on the first ones)."""
    if start < 0:
        raise ValueError(f"start must be >= 0 (the first long-answer prompt), got {start}.")
    efacts = easyvqa_facts("test")
    items = []
    for k in range(start, start + n):
        if k % 2 == 0:
            s = sc.sample_scene(100_000 + k)
            img, facts = sc.render(s), {"kind": "scene", **s.to_dict()}
            q = "What color is the largest shape?"
        else:
            i = sorted(efacts)[k]
            img, facts = easyvqa_image("test", i), {"kind": "evqa", **efacts[i]}
            q = "What shape is in the image?"
        prompt = LONG_PROMPTS[0] if (k // 2) % 2 == 0 else q + EXPLAIN
        items.append((prompt, img, facts))
    return items


def _long_record(tokenizer, prompt: str, facts: dict, ids: list[int]) -> dict:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return {"prompt": prompt, "kind": facts["kind"], "tokens": len(ids), "text": text, **grounding(text, facts)}


def _long_summary(records: list[dict]) -> dict:
    lengths = sorted(r["tokens"] for r in records)
    out = {"median_tokens": float(np.median(lengths)), "lengths": lengths}
    for k in ("colors_ok", "shapes_ok", "no_wrong_colors", "no_wrong_shapes", "grounded"):
        out[k] = sum(r[k] for r in records) / len(records)
    for kind in ("scene", "evqa"):
        part = [r for r in records if r["kind"] == kind]
        out[f"grounded_{kind}"] = sum(r["grounded"] for r in part) / len(part) if part else float("nan")
        out[f"n_{kind}"] = len(part)
    return out | {"records": records}


def evaluate_long(vlm: dv.DefaultVLM, n: int = 8, max_new_tokens: int = 320, batch: int = 4, start: int = 0) -> dict:
    """Answer length and grounding under the paper's long-answer prompts, on held-out scenes and
    easy-vqa test images (greedy), prompts `start` to `start + n`."""
    items = long_eval_items(n, start)
    records = []
    for b in range(0, len(items), batch):
        part = items[b:b + batch]
        feats = vlm.encode_images(dv.preprocess([im for _, im, _ in part]))
        for (p, _, f), o in zip(part, generate_batch(vlm, [p for p, _, _ in part], feats, max_new_tokens)):
            records.append(_long_record(vlm.tokenizer, p, f, o))
    return _long_summary(records)


def evaluate_told(vlm: dv.DefaultVLM, scene_n: int = 200, long_n: int = 32, max_new_tokens: int = 64,
                  batch: int = 16, long_start: int = 0) -> dict:
    """The frozen LM's ceiling: the same scene questions and long-answer prompts as `evaluate_see_scenes`
    and `evaluate_long`, with no image, the facts told in words instead (`writer_prompt`, what the
    long answers were written from). What the VLM could reach if the projector passed on the whole
    scene as well as words do. Long answers stop at `max_new_tokens`: grounding reads two sentences."""
    out = {}
    if scene_n:
        qs = scene_questions(scene_n)
        right = {"shape": [], "color": []}
        for b in range(0, len(qs), batch):
            part = qs[b:b + batch]
            prompts = [writer_prompt({"kind": "scene", **sc.sample_scene(s).to_dict()}, q + SHORT) for q, *_, s in part]
            for (q, kind, a, _), o in zip(part, generate_batch(vlm, prompts, None, 12)):
                right[kind].append(_first(vlm.tokenizer.decode(o), tuple(sc.COLORS) if kind == "color" else sc.SHAPES) == a)
        out["see_scenes"] = {k: round(sum(v) / max(1, len(v)), 4) for k, v in right.items()} | {
            "n_shape": len(right["shape"]), "n_color": len(right["color"])}
    if long_n:
        items = long_eval_items(long_n, long_start)
        records = []
        for b in range(0, len(items), batch):
            part = items[b:b + batch]
            outs = generate_batch(vlm, [writer_prompt(f, p) for p, _, f in part], None, max_new_tokens)
            for (p, _, f), o in zip(part, outs):
                records.append(_long_record(vlm.tokenizer, p, f, o))
        out["long"] = _long_summary(records)
    return out


def evaluate_speed(target, max_new_tokens: int = 128) -> dict:
    """Tokens/s of the project's vanilla decoder (bf16, CPU) under the long-answer prompts, over three
    images (a skimage photo, a held-out scene, an easy-vqa test image), so that one answer that stops
    early does not leave the figure to prefill. `tokens_per_s` counts prefill and decode;
    `decode_tokens_per_s` counts the token-by-token steps alone."""
    from skimage import data as skdata

    from ..decoding.decode import generate
    photo = Image.fromarray(skdata.astronaut())
    images = [photo, sc.render(sc.sample_scene(100_000)), easyvqa_image("test", sorted(easyvqa_facts("test"))[1])]
    generate(target, "Describe the image.", [photo], max_new_tokens=4)                        # warm-up
    runs = [generate(target, LONG_PROMPTS[k % len(LONG_PROMPTS)], [im], max_new_tokens=max_new_tokens)
            for k, im in enumerate(images)]
    tokens = sum(g.stats["new_tokens"] for g in runs)
    prefill = sum(g.stats["prefill_time_s"] for g in runs)
    decode = sum(g.stats["decode_time_s"] for g in runs)
    return {"tokens_per_s": tokens / (prefill + decode), "decode_tokens_per_s": sum(g.stats["cycles"] for g in runs) / decode,
            "new_tokens": tokens, "answers": len(runs), "per_answer_tokens": [g.stats["new_tokens"] for g in runs],
            "prefill_time_s": prefill / len(runs), "prompt_tokens": len(runs[0].prompt_ids),
            "text": runs[0].text, "dtype": str(target.dtype), "threads": torch.get_num_threads()}


# -- command line ---------------------------------------------------------------------------
def long_items(sources: list[tuple[str, dict]], n_scenes: int, n_evqa: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed + 7)
    scenes = [s for s in sources if s[1]["kind"] == "scene"][:n_scenes]
    evqa = [s for s in sources if s[1]["kind"] == "evqa"][:n_evqa]
    return [{"key": k, "facts": f, "prompt": long_prompt(f, rng)} for k, f in scenes + evqa]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["features", "answers", "train", "eval", "all"])
    ap.add_argument("--work", type=Path, default=None, help="default: $VISPEC_CACHE/projector_build")
    ap.add_argument("--out", type=Path, default=None, help="default: the shipped projector (dv.projector_path())")
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[2] / "results" / "default_vlm")
    ap.add_argument("--n-evqa", type=int, default=900)
    ap.add_argument("--n-scenes", type=int, default=700)
    ap.add_argument("--long-scenes", type=int, default=120)
    ap.add_argument("--long-evqa", type=int, default=60)
    ap.add_argument("--writer-tokens", type=int, default=144)
    ap.add_argument("--max-answer-tokens", type=int, default=192)
    ap.add_argument("--long-repeat", type=int, default=2, help="each long answer appears this often per epoch")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-minutes", type=float, default=0, help="cut the step count to fit (0: no cut)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--stage-name", default="", help="a later training stage (continuing from --init): its run goes "
                    "to work/<name> and its loss log and plot are named after it")
    ap.add_argument("--samples-seed", type=int, default=None, help="seed of the short questions' draw (default: --seed)")
    ap.add_argument("--init", type=Path, default=None, help="projector to start from (default: fresh)")
    ap.add_argument("--short-per-image", type=int, default=1)
    ap.add_argument("--p-shape", type=float, default=0.4, help="share of easy-vqa short questions about shape")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--eos-unlikelihood", type=float, default=0.0,
                    help="weight of -log(1 - p(end of turn)) where the answer goes on (see loss_on)")
    ap.add_argument("--positions", action="store_true",
                    help="add a learned embedding per map cell to the projector (starts at zero)")
    ap.add_argument("--pooled", action="store_true",
                    help="add the image's max-pooled features, mapped by a learned linear, to every image token (starts at zero)")
    ap.add_argument("--added-lr-scale", type=float, default=1.0,
                    help="the lr of the parts --positions and --pooled add, x --lr")
    ap.add_argument("--color-weight", type=float, default=1.0,
                    help="weight of the tokens that name a true colour of the image, vs 1 for the others")
    ap.add_argument("--scene-lists", type=float, default=0.0,
                    help="share of scene short questions that ask which colours / shapes the scene holds; "
                         "above 0 the scenes' long answers also open by naming their colours (list_opening)")
    ap.add_argument("--see-n", type=int, default=200, help="easy-vqa questions for the See check (0: skip it)")
    ap.add_argument("--scene-n", type=int, default=0, help="short colour / shape questions about held-out scenes (0: skip)")
    ap.add_argument("--colors-n", type=int, default=0,
                    help="held-out scenes asked which colours their shapes have (evaluate_scene_colors; 0: skip)")
    ap.add_argument("--long-n", type=int, default=8, help="long-answer prompts (0: skip)")
    ap.add_argument("--long-start", type=int, default=0, help="the first long-answer prompt (a later one: fresh prompts)")
    ap.add_argument("--told", action="store_true",
                    help="also the frozen LM's ceiling: the same scene questions and long prompts with the "
                         "facts told in words instead of the image (evaluate_told)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                    help="of the LM while writing answers, training and evaluating; auto: bf16 where the CPU "
                         "has bf16 arithmetic, else fp32 (bf16 without it runs several times slower)")
    a = ap.parse_args(argv)
    a.out = a.out or dv.projector_path()
    torch.set_num_threads(a.threads)
    work_dtype = many_rows_dtype() if a.dtype == "auto" else getattr(torch, a.dtype)
    work = a.work or dv.cache_dir() / "projector_build"
    work.mkdir(parents=True, exist_ok=True)
    a.results.mkdir(parents=True, exist_ok=True)
    timings = {}

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    sources = image_sources(a.n_evqa, a.n_scenes, a.seed)
    if a.stage in ("features", "all"):
        t = time.time()
        extract_features(dv.load_encoder(), [k for k, _ in sources], work / "features", log=log)
        timings["features_s"] = time.time() - t
    if a.stage in ("answers", "all"):
        t = time.time()
        lm, tok = dv.load_language_model(work_dtype)
        write_long_answers(lm, tok, long_items(sources, a.long_scenes, a.long_evqa, a.seed), work / "answers.jsonl",
                           max_new_tokens=a.writer_tokens, min_new_tokens=a.writer_tokens, seed=a.seed, log=log)
        timings["answers_s"] = time.time() - t
    if a.stage in ("train", "all"):
        t = time.time()
        vlm = dv.load_vlm(projector=a.init, dtype=work_dtype)
        if a.positions and vlm.projector.position is None:
            vlm.projector.add_positions(dv.IMAGE_TOKENS)
        if a.pooled and vlm.projector.global_linear is None:
            vlm.projector.add_pooled()
        feats = load_features(work / "features")
        samples = build_samples([s for s in sources if s[0] in feats], None, vlm.tokenizer,
                                a.seed if a.samples_seed is None else a.samples_seed,
                                short_per_image=a.short_per_image, p_shape=a.p_shape, scene_lists_p=a.scene_lists)
        long = build_samples([], work / "answers.jsonl", vlm.tokenizer, a.seed, a.max_answer_tokens,
                             facts=dict(sources), scene_lists_p=a.scene_lists)
        samples += [s for s in long if s["key"] in feats] * a.long_repeat
        log(f"{len(samples)} samples ({len(long)} long x{a.long_repeat}), {len(feats)} images")
        run = work / a.stage_name if a.stage_name else work
        steps = train(vlm, samples, feats, run, a.steps, a.batch, a.lr, a.warmup, a.seed, max_minutes=a.max_minutes,
                      eos_unlikelihood=a.eos_unlikelihood, color_weight=a.color_weight,
                      added_lr_scale=a.added_lr_scale, log=log)
        meta = {"stage": a.stage_name, "init": str(a.init), "steps": steps, "batch": a.batch, "lr": a.lr, "warmup": a.warmup, "samples": len(samples), "seed": a.seed,
                "eos_unlikelihood": a.eos_unlikelihood, "color_weight": a.color_weight, "added_lr_scale": a.added_lr_scale, "dtype": str(work_dtype).removeprefix("torch."),
                "command": "python -m vispec_core.training.projector " + " ".join(argv or __import__("sys").argv[1:])}
        dv.save_projector(vlm.projector, a.out, meta)
        timings["train_s"] = time.time() - t
        plot_loss(run / "train_log.jsonl", a.results, a.stage_name)
        log(f"saved {a.out}")
    if a.stage in ("eval", "all"):
        t = time.time()
        vlm = dv.load_vlm(projector=a.out, dtype=work_dtype)
        see = blank = None                                                   # each check with n 0 is skipped
        if a.see_n:
            see = evaluate_see(vlm, a.see_n)
            log(f"see {see}")
            blank = evaluate_see(vlm, a.see_n, blank=True)
            log(f"see, blank image {blank}")
        scenes = scenes_blank = None
        if a.scene_n:
            scenes = evaluate_see_scenes(vlm, a.scene_n)
            log(f"see scenes {scenes}")
            scenes_blank = evaluate_see_scenes(vlm, a.scene_n, blank=True)
            log(f"see scenes, blank image {scenes_blank}")
        colors = {}
        if a.colors_n:
            for name, kw in (("image", {}), ("blank", {"blank": True}), ("told", {"told": True})):
                if name != "told" or a.told:
                    colors[name] = evaluate_scene_colors(vlm, a.colors_n, **kw)
            log(f"scene colours {colors}")
        long = evaluate_long(vlm, a.long_n, start=a.long_start) if a.long_n else None
        if long:
            log(f"long: median {long['median_tokens']} tokens, colors_ok {long['colors_ok']}, shapes_ok {long['shapes_ok']}, "
                f"no wrong colour {long['no_wrong_colors']}, no wrong shape {long['no_wrong_shapes']}, grounded {long['grounded']} "
                f"(scenes {long['grounded_scene']:.2f} of {long['n_scene']}, easy-vqa {long['grounded_evqa']:.2f} of {long['n_evqa']})")
        told = evaluate_told(vlm, a.scene_n, a.long_n, long_start=a.long_start) if a.told else None
        if told:
            log("told the facts in words: " + json.dumps({"see_scenes": told.get("see_scenes"), **{
                k: told["long"][k] for k in ("grounded", "grounded_scene", "grounded_evqa", "n_scene", "n_evqa") if "long" in told}}))
        speed = evaluate_speed(dv.load_default_target(projector=a.out))     # the bf16 target users get
        log(f"vanilla decoder: {speed['tokens_per_s']:.1f} tokens/s")
        timings["eval_s"] = time.time() - t
        with (a.results / "eval.json").open("w") as fh:
            json.dump({"see": see, "see_blank": blank, "see_scenes": scenes, "see_scenes_blank": scenes_blank, "scene_colors": colors or None, "long": long, "told": told, "speed": speed, "timings": timings,
                       "dtype": str(work_dtype).removeprefix("torch.")}, fh, indent=1)
    with (a.results / f"timings_{a.stage}.json").open("w") as fh:
        json.dump(timings, fh)


def plot_loss(log_path: Path, out_dir: Path, stage_name: str = "") -> None:
    import shutil
    recs = [json.loads(l) for l in log_path.read_text().splitlines()]
    sfx = f"_{stage_name}" if stage_name else ""
    shutil.copy(log_path, out_dir / f"train_log{sfx}.jsonl")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps, loss = [r["step"] for r in recs], [r["loss"] for r in recs]
    long = [r["tokens"] / 8 > 300 for r in recs]             # batches are grouped by length
    ax.scatter([s for s, l in zip(steps, long) if l], [v for v, l in zip(loss, long) if l], s=6,
               label="batches of long answers")
    ax.scatter([s for s, l in zip(steps, long) if not l], [v for v, l in zip(loss, long) if not l], s=6,
               label="batches of short answers")
    avg = [sum(loss[max(0, i - 9):i + 1]) / len(loss[max(0, i - 9):i + 1]) for i in range(len(loss))]
    ax.plot(steps, avg, lw=1.5, color="k", label="mean of 10 steps")
    ax.legend(fontsize=7)
    ax.set_xlabel("step"), ax.set_ylabel("answer-token cross-entropy"), ax.set_yscale("log")
    ax.set_title("default VLM projector training")
    fig.tight_layout()
    fig.savefig(out_dir / f"loss{sfx}.png", dpi=120)


if __name__ == "__main__":
    main()
