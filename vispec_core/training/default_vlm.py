"""Instruction tuning of the default VLM: its projector and LoRA adapters on SmolLM2, taught on answers
written from each image's known facts (`data/instructions.py`), as LLaVA's second stage tunes its LM.

    python -m vispec_core.training.default_vlm [--work DIR] [--steps N] [--out data/default_vlm]

Stages, each resumable (`--work`, default `$VISPEC_CACHE/default_vlm_build`; kill it and rerun):
  features  frozen EfficientNet-Lite0 features and each cell's pixels of the training images
            (procedural scenes with seeds below HELD_OUT_SCENE_SEED, easy-vqa's train split), in chunk files.
  data      the writer's samples, checked (`grounding.check`), as conversations about one image
            (`--turns` samples each, default 1: a detailed description, a question with its
            explanation or a brief question, each read from the image alone).
  train     LoRA (peft) on every linear layer of SmolLM2 plus the projector, starting from the shipped
            projector, to which it adds the cell-pixel MLP (at zero) and per-cell positions (a grid code of
            each cell's row and column, `dv.grid_code`); loss on the assistant turns and their
            `<|im_end|>`; AdamW, warm-up, cosine; a checkpoint every `--save-every` steps (adapters,
            projector, optimizer, data order).
  export    the adapters (bf16) and the projector into `--out`; `load_vlm` merges the adapters into
            SmolLM2's weights at load, so decoding costs what it did.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..assets import cache_dir
from ..data import grounding, instructions, scenes as sc
from ..data.easyvqa import easyvqa_facts, easyvqa_image
from ..data.prompts import HELD_OUT_SCENE_SEED
from ..targets import default_vlm as dv

LORA_RANK, LORA_ALPHA = 16, 32
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MAX_ANSWER_TOKENS = 420
POSITION_NORM = 100.0       # the per-cell position code's norm, against image tokens' ~440


# -- training images and their frozen features --------------------------------------------------
def training_sources(n_scenes: int, n_evqa: int, seed: int = 0) -> list[tuple[str, sc.Scene]]:
    """(key, facts) of the training images: scenes 0 .. n_scenes-1, then n_evqa easy-vqa train images."""
    if n_scenes > HELD_OUT_SCENE_SEED:
        raise ValueError(f"--scenes {n_scenes}: training scenes must stay below the held-out seed {HELD_OUT_SCENE_SEED}.")
    facts = easyvqa_facts("train")
    ids = sorted(facts)
    random.Random(seed).shuffle(ids)
    out = [(f"scene-{s}", sc.sample_scene(s)) for s in range(n_scenes)]
    return out + [(f"evqa-{i}", grounding.scene_facts(facts[i]["shape"], facts[i]["color"])) for i in sorted(ids[:n_evqa])]


def load_image(key: str):
    kind, num = key.rsplit("-", 1)
    return easyvqa_image("train", int(num)) if kind == "evqa" else sc.render(sc.sample_scene(int(num)))


def extract_features(encoder, keys: list[str], folder: Path, chunk: int = 32, log=print) -> None:
    """Frozen features [n, 196, 1280] (bf16) and each cell's pixels [n, 196, 48] (fp16, `dv.cell_pixels`)
    in chunk files; finished chunks are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for c in range(0, len(keys), chunk):
        path = folder / f"{c // chunk:05d}.pt"
        part = keys[c:c + chunk]
        if path.exists():
            done = torch.load(path, weights_only=True)
            if done["keys"] == part and "pixels" in done:
                continue
        with torch.inference_mode():
            x = dv.preprocess([load_image(k) for k in part])
            feats = encoder.extract_features(x).flatten(2).transpose(1, 2).to(torch.bfloat16)
        torch.save({"keys": part, "features": feats.clone(), "pixels": dv.cell_pixels(x).half()}, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
        log(f"features {c + len(part)}/{len(keys)} ({(c + len(part)) / (time.time() - t0):.2f} img/s this run)")


def load_features(folder: Path, pixels: bool = True) -> dict[str, torch.Tensor]:
    """key -> the image's features [196, 1280], with its cell pixels after them ([196, 1328]) if `pixels`."""
    out = {}
    for path in sorted(folder.glob("*.pt")):
        d = torch.load(path, weights_only=True)
        if pixels and "pixels" not in d:
            raise ValueError(f"{path} holds no cell pixels: run the features stage again (it adds them).")
        feats = torch.cat([d["features"], d["pixels"].to(d["features"].dtype)], -1) if pixels else d["features"]
        out.update(zip(d["keys"], feats))
    return out


# -- conversations ---------------------------------------------------------------------------------
def _subject(sentence: str) -> tuple[str, str] | None:
    """The object a sentence is about: its first "colour shape" mention, or its only colour and only
    shape word ("The circle at the top left is red.")."""
    m = grounding.MENTION.search(sentence.lower())
    if m:
        return m.group(2), grounding.SHAPE_WORDS[m.group(3)]
    colors = {w.lower() for w in re.findall(rf"\b(?i:{'|'.join(grounding.COLOR_WORDS)})\b", sentence)}
    shapes = {grounding.SHAPE_WORDS[w.lower()] for w in re.findall(rf"\b(?i:{'|'.join(grounding.SHAPE_WORDS)})\b", sentence)}
    return (colors.pop(), shapes.pop()) if len(colors) == 1 and len(shapes) == 1 else None


def _new_fact_words(text: str, asked: set[str], said: set) -> list[tuple[int, int]]:
    """Character spans of the fact words (`grounding.FACT_WORDS`) that `text` states for the first time
    about their sentence's object; `said` is updated. A word asked in a prompt can be copied, and so
    can a word said before about the same object; "blue" said of the circle is new of the star."""
    spans = []
    for sentence in re.finditer(r"[^.!?\n]+[.!?]?", text):
        subject = _subject(sentence.group())
        for m in grounding.FACT_WORDS.finditer(sentence.group()):
            word = m.group().lower()
            if word not in asked and (word, subject) not in said:
                spans.append((sentence.start() + m.start(), sentence.start() + m.end()))
                said.add((word, subject))
    return spans


def conversation_ids(tokenizer, turns: list[tuple[str, str]]) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Ids of one conversation about one image (the image in the first user turn), the (start, end) of
    every assistant answer, its `<|im_end|>` included (the spans the loss is taken on), and the
    positions of the answer tokens that state a fact of the image for the first time (`_new_fact_words`):
    only those must be read from the image, the rest the question or the conversation so far gives."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids, spans, facts, asked, said = [], [], [], set(), set()
    for i, (prompt, answer) in enumerate(turns):
        asked |= {m.group().lower() for m in grounding.FACT_WORDS.finditer(prompt)}
        if i == 0:
            ids += dv.prompt_ids(tokenizer, prompt, 1)
        else:
            ids += tokenizer("\n<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n",
                             add_special_tokens=False)["input_ids"]
        enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
        a = enc["input_ids"][:MAX_ANSWER_TOKENS]
        words = _new_fact_words(answer, asked, said)
        facts += [len(ids) + j for j, (s, e) in enumerate(enc["offset_mapping"][:len(a)])
                  if any(s < we and ws < e for ws, we in words)]
        spans.append((len(ids), len(ids) + len(a) + 1))
        ids += a + [end]
    return ids, spans, facts


def write_conversations(sources, tokenizer, path: Path, seed: int = 0, mix: dict | None = None, turns: int = 1) -> dict:
    """The checked samples (`mix`: how many of each kind per image) as conversations (JSONL) of at most
    `turns` samples about one image, in a random order; returns the writer's report. With one turn
    (the default) every answer is read from the image alone: in a longer conversation an answer can
    copy the facts an earlier turn stated, and a binding learned by copying is not learned."""
    samples, report = instructions.instruction_samples(sources, seed=seed, mix=mix)
    rng = random.Random(seed)
    by_key: dict[str, list[dict]] = {}
    for s in samples:
        by_key.setdefault(s["key"], []).append(s)
    tmp = path.with_suffix(".tmp")
    lengths, n = [], 0
    with tmp.open("w") as fh:
        for key, group in by_key.items():
            rng.shuffle(group)
            for c in range(0, len(group), turns):
                part = group[c:c + turns]
                ids, spans, facts = conversation_ids(tokenizer, [(g["prompt"], g["answer"]) for g in part])
                lengths += [b - a for a, b in spans]
                n += 1
                fh.write(json.dumps({"key": key, "ids": ids, "spans": spans, "facts": facts,
                                     "kinds": [g["kind"] for g in part]}) + "\n")
    os.replace(tmp, path)
    report.update({"conversations": n, "turns": turns, "answer_tokens": int(sum(lengths)),
                   "median_detail_tokens": float(np.median([len(tokenizer(s["answer"])["input_ids"])
                                                            for s in samples if s["kind"] == "detail"]))})
    return report


# -- the model ------------------------------------------------------------------------------------
def lora_config():
    from peft import LoraConfig
    return LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules=list(LORA_MODULES))


def trainable_vlm(init: Path | None = None, position_norm: float | None = None):
    """The VLM in fp32 with LoRA adapters on SmolLM2 (peft) and a trainable projector: fresh adapters on
    the shipped projector, or (`init`) an export's adapters and projector to train on from. A projector
    without the cell-pixel MLP gets it, starting at zero; one without per-cell positions gets them as
    `dv.grid_code` of norm POSITION_NORM, and `position_norm` restarts an export's positions so."""
    from peft import PeftModel, get_peft_model
    projector = dv.SHIPPED if init is None else Path(init) / "projector.safetensors"
    vlm = dv.load_vlm(dtype=torch.float32, projector=projector, adapter=None)
    if init is None:
        vlm.lm = get_peft_model(vlm.lm, lora_config())
    else:
        if not (Path(init) / dv.ADAPTER / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--init {init}: no {dv.ADAPTER}/adapter_config.json there; pass a folder that "
                                    "`export` wrote.")
        vlm.lm = PeftModel.from_pretrained(vlm.lm, str(Path(init) / dv.ADAPTER), is_trainable=True)
        for p in vlm.lm.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    if not vlm.projector.wants_pixels:
        vlm.projector.add_pixels()
    if vlm.projector.position is None or position_norm is not None:
        vlm.projector.add_positions(dv.IMAGE_TOKENS, POSITION_NORM if position_norm is None else position_norm)
    vlm.projector.requires_grad_(True)
    return vlm


def loss_on(vlm, batch: list[dict], feats: dict[str, torch.Tensor], fact_weight: float = 1.0) -> tuple[torch.Tensor, int]:
    """Cross-entropy over the answer tokens of a right-padded batch of conversations, a weighted mean:
    the tokens that state a fact new about its object weigh `fact_weight` (the grounding signal among
    many tokens that the answers' phrasing or the conversation so far predicts without the image)."""
    T = max(len(b["ids"]) for b in batch)
    pad, device = vlm.tokenizer.pad_token_id, vlm.projector.linear_1.weight.device
    ids = torch.full((len(batch), T), pad, dtype=torch.long)
    mask = torch.zeros(len(batch), T, dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, :len(b["ids"])] = torch.tensor(b["ids"])
        mask[i, :len(b["ids"])] = 1
    ids, mask = ids.to(device), mask.to(device)
    image = vlm.project(torch.stack([feats[b["key"]] for b in batch]).to(device).float())
    embeds = vlm.embed(ids, image)
    base = vlm.lm.get_base_model()
    hidden = base.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    rows, cols, labels, weights = [], [], [], []
    for i, b in enumerate(batch):
        facts = set(b.get("facts", ()))
        for a, e in b["spans"]:
            rows += [i] * (e - a)
            cols += list(range(a - 1, e - 1))
            labels += b["ids"][a:e]
            weights += [fact_weight if t in facts else 1.0 for t in range(a, e)]
    logits = base.lm_head(hidden[rows, cols])
    w = torch.tensor(weights, device=device)
    loss = (F.cross_entropy(logits.float(), torch.tensor(labels, device=device), reduction="none") * w).sum() / w.sum()
    return loss, len(labels)


def batches(rows: list[dict], batch: int, seed: int, epoch: int) -> list[list[int]]:
    """Index batches of similar length (less padding), in a random order fixed by seed and epoch."""
    rng = random.Random(seed * 1000 + epoch)
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]["ids"]), rng.random()))
    groups = [order[i:i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(groups)
    return groups


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1))))


def _trainable(vlm) -> dict[str, torch.Tensor]:
    return {n: p for n, p in vlm.named_parameters() if p.requires_grad}


def save_checkpoint(work: Path, step: int, vlm, optimizer) -> None:
    tmp, final = work / "checkpoint.tmp", work / "checkpoint.pt"
    torch.save({"step": step, "init": getattr(vlm, "init", None),
                "weights": {n: p.detach().cpu().clone() for n, p in _trainable(vlm).items()},
                "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, tmp)
    os.replace(tmp, final)


def bf16_arithmetic() -> bool:
    """Whether this machine multiplies bf16 natively (a CUDA GPU that does, or a CPU with AVX-512 bf16 or AMX)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return any(getattr(torch.cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def train(work: Path, steps: int, batch: int = 4, lr: float = 4e-4, projector_lr: float = 1e-4, warmup: int = 20,
          save_every: int = 10, seed: int = 0, stop_after: int | None = None, init: Path | None = None,
          fact_weight: float = 1.0, mixed_precision: str = "auto", added_lr: float = 1e-3,
          position_norm: float | None = None, log=print) -> Path:
    """Train (or continue) to `steps` optimizer steps; returns the checkpoint path. A new run starts
    from fresh adapters on the shipped projector, or from an export (`init`). `mixed_precision` "bf16"
    runs the forward and backward under torch's bf16 autocast (fp32 weights and optimizer; not accelerate's
    mixed precision, a process-wide setting that a second trainer in the same notebook could not change),
    "auto" where the machine has bf16 arithmetic (2 AVX-512 bf16 cores: a step 1.5x faster, its loss
    within 0.5% of fp32's). The projector's added parts (`Projector.added_parameters`) learn at `added_lr`."""
    from accelerate import Accelerator
    if mixed_precision == "auto":
        mixed_precision = "bf16" if bf16_arithmetic() else "no"
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if not (work / "conversations.jsonl").is_file():
        raise FileNotFoundError(f"{work / 'conversations.jsonl'} is missing: run the data stage first "
                                "(`python -m vispec_core.training.default_vlm data --work ...`).")
    rows = [json.loads(line) for line in (work / "conversations.jsonl").read_text().splitlines()]
    feats = load_features(work / "features")
    missing = [r["key"] for r in rows if r["key"] not in feats]
    if missing:
        raise ValueError(f"{len(missing)} conversations have no features in {work / 'features'} "
                         f"(e.g. {missing[0]}); run the features stage first.")
    torch.manual_seed(seed)
    vlm = trainable_vlm(init, position_norm)
    vlm.init = None if init is None else str(init)
    params = _trainable(vlm)
    added = {id(p) for p in vlm.projector.added_parameters()}
    groups = [{"params": [p for n, p in params.items() if not n.startswith("projector.")], "lr": lr, "base": lr},
              {"params": [p for n, p in params.items() if n.startswith("projector.") and id(p) not in added],
               "lr": projector_lr, "base": projector_lr},
              {"params": [p for p in params.values() if id(p) in added], "lr": added_lr, "base": added_lr}]
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0)
    vlm, optimizer = accelerator.prepare(vlm, optimizer)
    trained = list(_trainable(vlm).values())
    ckpt, step = work / "checkpoint.pt", 0
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        with torch.no_grad():
            for n, p in _trainable(vlm).items():
                p.copy_(state["weights"][n].to(p.device))
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
        log_path = work / "train_log.jsonl"
        if log_path.is_file():   # steps after the checkpoint are trained again: their lines go
            kept = [l for l in log_path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
            log_path.write_text("".join(l + "\n" for l in kept))
        log(f"resumed at step {step}")
    per_epoch = math.ceil(len(rows) / batch)
    log(f"training to step {steps} from step {step}, mixed precision: {mixed_precision}")
    vlm.train()
    t0, done_here = time.time(), 0
    with (work / "train_log.jsonl").open("a") as fh:
        while step < steps and (stop_after is None or done_here < stop_after):
            epoch, k = divmod(step, per_epoch)
            idx = batches(rows, batch, seed, epoch)[k]
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, steps, g["base"], warmup)
            with torch.autocast(accelerator.device.type, torch.bfloat16, enabled=mixed_precision == "bf16"):
                loss, n_tok = loss_on(vlm, [rows[i] for i in idx], feats, fact_weight)
            accelerator.backward(loss)
            norm = torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step, done_here = step + 1, done_here + 1
            rec = {"step": step, "epoch": epoch, "loss": round(loss.item(), 4), "tokens": n_tok,
                   "grad_norm": round(float(norm), 3), "lr": optimizer.param_groups[0]["lr"],
                   "s_per_step": round((time.time() - t0) / done_here, 2), "mixed_precision": mixed_precision}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            if step % save_every == 0 or step == steps:
                save_checkpoint(work, step, vlm, optimizer)
            if step % 10 == 0 or step == steps:
                log(f"step {step}/{steps} loss {rec['loss']:.3f} ({rec['s_per_step']:.1f} s/step)")
    return ckpt


def export(work: Path, out: Path) -> dict:
    """The checkpoint's adapters (bf16, peft's format) and projector into `out`."""
    from safetensors.torch import save_file
    state = torch.load(work / "checkpoint.pt", weights_only=False)
    vlm = trainable_vlm(state.get("init"))
    with torch.no_grad():
        for n, p in _trainable(vlm).items():
            p.copy_(state["weights"][n])
    out.mkdir(parents=True, exist_ok=True)
    adapter = out / dv.ADAPTER
    tmp = out / (dv.ADAPTER + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vlm.lm.save_pretrained(tmp)
    (tmp / "README.md").unlink(missing_ok=True)          # peft's model-card template
    config = json.loads((tmp / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = dv.LM_NAME       # not this machine's cache path
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    weights = tmp / "adapter_model.safetensors"
    from safetensors.torch import load_file
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(str(weights)).items()}, str(weights),
              {"format": "pt", "steps": str(state["step"])})
    shutil.rmtree(adapter, ignore_errors=True)
    os.replace(tmp, adapter)
    dv.save_projector(vlm.projector, out / "projector.safetensors", {"steps": state["step"], "adapter": dv.ADAPTER})
    return {"steps": state["step"], "adapter_bytes": (adapter / "adapter_model.safetensors").stat().st_size}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vispec_core.training.default_vlm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", default="all", choices=("features", "data", "train", "export", "all"))
    p.add_argument("--work", type=Path, default=None, help="work folder (default $VISPEC_CACHE/default_vlm_build)")
    p.add_argument("--out", type=Path, default=None, help="where export writes (default: the data root's default_vlm/)")
    p.add_argument("--scenes", type=int, default=1600)
    p.add_argument("--evqa", type=int, default=640)
    p.add_argument("--steps", type=int, default=560)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--added-lr", type=float, default=1e-3,
                   help="learning rate of the projector's cell-pixel MLP and per-cell positions")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps in this run")
    p.add_argument("--fact-weight", type=float, default=1.0,
                   help="loss weight of the answer tokens that state a fact new about its object")
    p.add_argument("--init", type=Path, default=None, help="a new run starts from this export's adapters and projector")
    p.add_argument("--position-norm", type=float, default=None,
                   help=f"restart the projector's per-cell positions as a grid code of this norm (a fresh "
                        f"projector gets {POSITION_NORM:g}; an --init export keeps its own unless this is given)")
    p.add_argument("--mix", default="detail=1,question=1,brief=1",
                   help="samples of each kind per image in a conversation, e.g. detail=1,question=1,brief=6")
    p.add_argument("--turns", type=int, default=1,
                   help="samples per conversation (1: every answer is read from the image alone)")
    p.add_argument("--mixed-precision", choices=("auto", "no", "bf16"), default="auto",
                   help="bf16 autocast in training (auto: where the machine has bf16 arithmetic)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        mix = {k: int(v) for k, v in (part.split("=") for part in a.mix.split(","))}
    except ValueError:
        p.error(f"--mix {a.mix!r}: write kind=count pairs separated by commas, e.g. detail=1,question=1,brief=6")
    if set(mix) - set(instructions.KINDS) or any(v < 0 for v in mix.values()) or not any(mix.values()):
        p.error(f"--mix {a.mix!r}: kinds are {', '.join(instructions.KINDS)}, counts >= 0, at least one above 0")
    for name in ("scenes", "evqa", "steps", "batch", "turns"):
        if getattr(a, name) < (1 if name in ("steps", "batch", "turns") else 0):
            p.error(f"--{name} must be positive, got {getattr(a, name)}")
    if a.position_norm is not None and a.position_norm < 0:
        p.error(f"--position-norm must be >= 0 (0 starts the positions at zero), got {a.position_norm}")
    if a.fact_weight <= 0:
        p.error(f"--fact-weight must be positive, got {a.fact_weight}")
    if a.init is not None and not ((a.init / dv.ADAPTER / "adapter_config.json").is_file()
                                   and (a.init / "projector.safetensors").is_file()):
        p.error(f"--init {a.init}: needs {dv.ADAPTER}/adapter_config.json and projector.safetensors there "
                "(a folder the export stage wrote)")
    work = a.work or cache_dir() / "default_vlm_build"
    work.mkdir(parents=True, exist_ok=True)
    sources = training_sources(a.scenes, a.evqa, a.seed)
    if a.stage in ("features", "all"):
        extract_features(dv.load_encoder(), [k for k, _ in sources], work / "features")
    if a.stage in ("data", "all"):
        _, tokenizer = dv.load_language_model(dtype=torch.float32)
        report = write_conversations(sources, tokenizer, work / "conversations.jsonl", a.seed, mix, a.turns)
        (work / "data_report.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report))
    if a.stage in ("train", "all"):
        train(work, a.steps, a.batch, a.lr, seed=a.seed, stop_after=a.stop_after, init=a.init,
              fact_weight=a.fact_weight, mixed_precision=a.mixed_precision, added_lr=a.added_lr,
              position_norm=a.position_norm)
    if a.stage in ("export", "all"):
        print(json.dumps(export(work, a.out or dv.projector_path().parent)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
