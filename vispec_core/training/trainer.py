"""One trainer for every draft (ViSpec, EAGLE-2, Medusa, and the ablation variants), on `accelerate`.

The target runs teacher-forced over a synthesized (prompt + answer) and gives f, its last hidden
states, and p_i, its token distributions. The draft runs teacher-forced on (f, e) pairs, unrolled K
more steps on its own hidden states f' (multi-token prediction, paper Sec. 4.3; K=0 is the
shortcut-prone setting), and the loss is the paper's soft cross-entropy on answer tokens:

    L = sum_k w_k CE(p_i, p'_{k,i}) / sum_k w_k,   CE(p, p') = -sum_v p(v) log p'(v),   w_k = unroll_weight^k

Batches are global: a step averages the per-sample losses of `batch_size` samples, split evenly over
the processes (DDP averages their gradients), so 1 or N processes follow the same trajectory.
Stage 1 trains on text-only data; stage 2 on multimodal data, usually from a stage-1 draft (--init).
The target's passes are cached on disk (OUT/fcache, in the target's dtype: lossless); on the default
VLM this made later epochs 2.4x faster (measured), on the tiny targets it changes nothing.
Unlike the official code: the paper's soft CE (not L1 + top-10 ranking), no noise on f.
--draft-vocab N gives the draft a reduced vocabulary (EAGLE-3): the N most frequent answer tokens of
the training data (`frequent_tokens`); see `sample_loss` for what its loss leaves out.

    python -m vispec_core train --target tiny:llava_next --kind vispec --data DIR --stage 2 --out OUT
    accelerate launch --multi_gpu --num_processes 2 -m vispec_core train ...   # the same, data-parallel
    (on a CPU-only machine `--multi_gpu` starts torchrun workers that join with gloo; `--cpu` alone is one process)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..targets.base import TargetInputs

# lr: the paper's Sec. 7 (ViSpec 3e-6, EAGLE-2 and Medusa 3e-5); betas and clipping: the official code.
PROFILES = {
    "paper": dict(lr={"vispec": 3e-6, "eagle2": 3e-5, "medusa": 3e-5}, batch_size=8, epochs=20, max_length=2048),
    # The embedded default VLM on one CPU core (measured): the target's pass ~0.5 s per sample (once,
    # cached on disk) and its labels (once, kept in memory); then ~0.29 s per sample per epoch for ViSpec
    # (K=1), ~0.13 for EAGLE-2. 10 epochs (the shipped drafts': 3-4 left every loss still falling) over a
    # few hundred samples, so a larger lr than the paper's 20 epochs over 68k samples.
    "cpu": dict(lr={"vispec": 3e-4, "eagle2": 3e-4, "medusa": 1e-3}, batch_size=8, epochs=10, max_length=768),
}
DEFAULT_UNROLL = {"vispec": 1, "eagle2": 0, "medusa": 0}   # official ViSpec: one extra step; EAGLE-2: none


@dataclass
class TrainConfig:
    target: str
    kind: str
    data: str
    out: str
    stage: int = 2
    profile: str = "cpu"
    lr: float | None = None              # None: the profile's lr for this kind
    batch_size: int | None = None
    epochs: int | None = None
    max_length: int | None = None
    max_steps: int | None = None         # stop early (total steps of the schedule stay epochs x steps/epoch)
    warmup_steps: int | None = None      # None: one epoch
    unroll: int | None = None            # K; None: DEFAULT_UNROLL[kind]
    unroll_weight: float = 1.0           # w_k = unroll_weight ** k
    grad_clip: float = 0.5
    betas: tuple = (0.9, 0.95)
    weight_decay: float = 0.0
    seed: int = 0
    save_every: int = 100
    f_cache: str = "disk"                # disk: keep each sample's target pass under out/fcache (measured: pays
                                         # from epoch 2); none: rerun the target every time
    init: str | None = None              # a saved draft to start from (stage 2 after stage 1)
    draft_options: dict = field(default_factory=dict)   # DraftConfig overrides: num_compressed, use_compression, ...
    draft_vocab: int | None = None       # N: the draft scores the N most frequent answer tokens; None: all
    dtype: str | None = None

    def resolved(self) -> "TrainConfig":
        if self.profile not in PROFILES:
            raise ValueError(f"Unknown profile {self.profile!r}; choose one of {sorted(PROFILES)}.")
        from ..drafts import KINDS, DraftConfig
        if self.kind not in KINDS:
            raise ValueError(f"Unknown draft kind {self.kind!r}; choose one of {KINDS}.")
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 (text-only) or 2 (multimodal), got {self.stage}.")
        if self.f_cache not in ("none", "disk"):
            raise ValueError(f"f_cache must be 'none' or 'disk', got {self.f_cache!r}.")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr (--lr) must be a finite number > 0, got {self.lr}.")
        for k in ("batch_size", "epochs", "max_length", "max_steps", "save_every", "draft_vocab"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                raise ValueError(f"{k} (--{k.replace('_', '-')}) must be >= 1, got {getattr(self, k)}.")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps (--warmup-steps) must be >= 0, got {self.warmup_steps}.")
        DraftConfig.check_options(self.draft_options)
        for k in ("num_heads", "num_compressed"):
            if self.draft_options.get(k) is not None and self.draft_options[k] < 1:
                raise ValueError(f"{k} (--{k.replace('_', '-')}) must be >= 1, got {self.draft_options[k]}.")
        p = PROFILES[self.profile]
        c = TrainConfig(**{**asdict(self), "betas": tuple(self.betas)})
        c.lr = p["lr"][self.kind] if c.lr is None else c.lr
        for k in ("batch_size", "epochs", "max_length"):
            if getattr(c, k) is None:
                setattr(c, k, p[k])
        c.unroll = DEFAULT_UNROLL[self.kind] if c.unroll is None else c.unroll
        if c.unroll < 0:
            raise ValueError(f"unroll must be >= 0, got {c.unroll}.")
        return c


# -- one training example: the target's pass over prompt + answer ------------------------------------
@dataclass
class Example:
    inputs: TargetInputs      # the full sequence, float32 embeddings
    f: torch.Tensor           # [1, N, D] the target's last hidden states (float32)
    prompt_len: int           # P: answer tokens are indices P..N-1

    @property
    def length(self) -> int:
        return self.inputs.length


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A normal (not inference-mode) copy; floating tensors in float32 for the draft's training."""
    x = x.detach().clone()
    return x.float() if x.is_floating_point() else x


def make_example(target, record: dict, max_length: int) -> Example:
    """Re-run the target over a record's prompt + answer (truncated to max_length tokens)."""
    inputs = target.prepare(record["prompt"], record["images"] or None)
    if inputs.input_ids[0].tolist() != list(record["prompt_ids"]):
        raise ValueError(f"Sample {record['index']}: the target tokenises its prompt differently from the dataset "
                         "(made with another target or tokenizer); synthesize data with this target.")
    room = max_length - inputs.length
    if room < 2:
        raise ValueError(f"Sample {record['index']}: its prompt has {inputs.length} tokens, max_length is {max_length}; "
                         "raise max_length.")
    answer = torch.tensor(list(record["answer_ids"])[:room], dtype=torch.long, device=target.device)
    with torch.inference_mode():
        ids = torch.cat([inputs.input_ids, answer[None]], 1)
        embeds = torch.cat([inputs.inputs_embeds, target.embed(answer)[None]], 1)
        pos = torch.cat([inputs.position_ids, target.positions(inputs.length, torch.arange(len(answer), device=target.device),
                                                               inputs.rope_delta)], -1)
        f = target.forward(embeds, pos, target.new_cache(ids.shape[1]))
    full = TargetInputs(_plain(ids), _plain(embeds), _plain(pos), list(inputs.image_spans),
                        [_plain(v) for v in inputs.image_embeds], inputs.rope_delta)
    return Example(full, _plain(f), inputs.length)


class Examples:
    """Examples by dataset index, from the target on the fly or from a disk cache of its passes."""

    def __init__(self, target, dataset, max_length: int, cache_dir: Path | None = None):
        self.target, self.dataset, self.max_length, self.cache_dir = target, dataset, max_length, cache_dir

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Example:
        path = self.cache_dir / f"{i:07d}.pt" if self.cache_dir else None
        if path is not None and path.is_file():
            return _cast(torch.load(path, weights_only=False), torch.float32)
        ex = make_example(self.target, self.dataset[i], self.max_length)
        if path is not None:      # in the target's dtype: lossless (every float came out of the target so)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            torch.save(_cast(ex, self.target.dtype), tmp)
            os.replace(tmp, path)
        return ex


def _cast(ex: Example, dtype: torch.dtype) -> Example:
    x = ex.inputs
    inputs = TargetInputs(x.input_ids, x.inputs_embeds.to(dtype), x.position_ids, x.image_spans,
                          [v.to(dtype) for v in x.image_embeds], x.rope_delta)
    return Example(inputs, ex.f.to(dtype), ex.prompt_len)


# -- the labels: the target's distribution over answer tokens ---------------------------------------
class Labels(NamedTuple):
    p: torch.Tensor           # [A, V or N] the label of answer token P+a (restricted and renormalised)
    top1: torch.LongTensor    # [A] the target's own argmax over the whole vocabulary
    mass: float               # mean target mass inside the draft vocabulary (1.0 without one)


@torch.no_grad()
def target_labels(ex: Example, head: torch.Tensor, vocab: torch.LongTensor | None = None) -> Labels:
    """softmax(lm_head(f)) at answer positions; the full head's product is most of a small draft's
    training step (measured: 0.24 s of 0.6 s per scene sample), so train() keeps these per sample."""
    P, N = ex.prompt_len, ex.length
    p = torch.softmax(F.linear(ex.f[0, P - 1:N - 1], head).float(), -1)      # [A, V]: tokens P..N-1
    top1, mass = p.argmax(-1), 1.0
    if vocab is not None:
        p = p[:, vocab]
        mass = float(p.sum(-1).mean())
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-30)
    return Labels(p, top1, mass)


class LabelCache:
    """target_labels per dataset index, kept in memory up to max_bytes (the rest recomputed each time)."""

    def __init__(self, head: torch.Tensor, vocab: torch.LongTensor | None, max_bytes: int = 4 << 30):
        self.head, self.vocab, self.max_bytes, self.bytes, self.kept = head, vocab, max_bytes, 0, {}

    def __call__(self, i: int, ex: Example) -> Labels:
        if i in self.kept:
            return self.kept[i]
        labels = target_labels(ex, self.head, self.vocab)
        size = labels.p.numel() * labels.p.element_size()
        if self.bytes + size <= self.max_bytes:
            self.kept[i], self.bytes = labels, self.bytes + size
        return labels


# -- the loss --------------------------------------------------------------------------------------
def sample_loss(model, head: torch.Tensor, target, ex: Example, kind: str, unroll: int, unroll_weight: float,
                vocab: torch.LongTensor | None = None, vocab_head: torch.Tensor | None = None,
                labels: Labels | None = None):
    """(loss, per-step CE list, per-step top-1 agreement list, vocabulary mass) of one example.

    Step k's row at pair index t predicts token t+2 (Medusa: head k predicts t+2+k); its label is the
    target's distribution at index t+1 (+k), softmax(lm_head(f)). Only answer tokens count.

    vocab (the draft vocabulary's ids, N): the label is the target's distribution restricted to
    those ids and renormalised, and the draft's log-softmax runs over the same N logits. What is
    lost: the target's mass outside the vocabulary (1 - the returned mass, the mean over answer
    tokens of sum_{v in vocab} p(v)); the draft cannot propose those tokens, so every cycle in which
    the target picks one ends at the bonus token. The CE is then over N tokens, not comparable with
    a full-vocabulary draft's; the top-1 agreement is against the target's real argmax, so it is.
    vocab_head: head[vocab], computed once by the caller (else here, per sample).
    labels: target_labels(ex, head, vocab), when the caller keeps them across epochs."""
    out = model(ex.f, ex.inputs, unroll=unroll, return_logits=False)        # hidden [S, L, D]
    t, P, N = out.pair_index, ex.prompt_len, ex.length
    p, top1, mass = target_labels(ex, head, vocab) if labels is None else labels
    if vocab is not None:
        head = head[vocab] if vocab_head is None else vocab_head
    total, weights, ces, accs = 0.0, 0.0, [], []
    for k in range(out.hidden.shape[0]):
        predicted = t + 2 + (k if kind == "medusa" else 0)                 # token index each row predicts
        keep = (t >= 0) & (predicted >= P) & (predicted <= N - 1)
        if not bool(keep.any()):       # a short answer: nothing this far ahead
            ces.append(float("nan"))
            accs.append(float("nan"))
            continue
        q = torch.log_softmax(F.linear(out.hidden[k, keep], head).float(), -1)   # [n, V or N]
        y = p[predicted[keep] - P]
        ce = -(y * q).sum(-1).mean()
        w = unroll_weight ** k
        total, weights = total + w * ce, weights + w
        ces.append(float(ce.detach()))
        guess = q.argmax(-1) if vocab is None else vocab[q.argmax(-1)]
        accs.append(float((guess == top1[predicted[keep] - P]).float().mean()))
    if weights == 0:
        raise ValueError("A sample has no answer token to train on; check max_length and the dataset.")
    return total / weights, ces, accs, mass


@torch.no_grad()
def evaluate(draft, target, examples, indices, kind: str, unroll: int = 0) -> dict:
    """Mean CE and top-1 agreement per step over samples (held-out ones, for a fair comparison)."""
    head = target.lm_head.weight.float()
    vocab = getattr(draft, "vocab_ids", None)          # the draft vocabulary's ids, None: all
    vocab_head = None if vocab is None else head[vocab]
    ces, accs, masses = [], [], []
    for i in indices:
        _, c, a, m = sample_loss(draft, head, target, examples[i], kind, unroll, 1.0, vocab, vocab_head)
        ces.append(c)
        accs.append(a)
        masses.append(m)
    return {"ce": np.nanmean(ces, 0).tolist(), "acc": np.nanmean(accs, 0).tolist(),
            "vocab_mass": float(np.mean(masses))}


# -- checkpoints -----------------------------------------------------------------------------------
def checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(out: Path, step: int, draft, optimizer, scheduler, keep: int = 2) -> None:
    final = out / "checkpoints" / f"step-{step:07d}"
    tmp = out / "checkpoints" / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    draft.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}},
               tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, draft, optimizer, scheduler) -> int:
    from safetensors.torch import load_file

    state = load_file(str(path / "model.safetensors"))
    draft.load_state_dict(state)
    s = torch.load(path / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(s["optimizer"])
    scheduler.load_state_dict(s["scheduler"])
    torch.set_rng_state(s["rng"]["torch"])
    np.random.set_state(s["rng"]["numpy"])
    random.setstate(s["rng"]["python"])
    return int(s["step"])


# -- the trainer -----------------------------------------------------------------------------------
def build_draft(config: TrainConfig, target):
    """A fresh draft, or --init's; with draft_vocab N, over the N most frequent answer tokens of
    config.data, topped up from --init's vocabulary when the data holds fewer (stage 2 on short plain
    captions); an --init draft keeps its own vocabulary unless N is given."""
    from ..data.synthesis import load_synthesized
    from ..drafts import frequent_tokens, load_draft, variant_of

    if config.init:
        draft = load_draft(config.init, target)
        if draft.config.kind != config.kind:
            raise ValueError(f"--init holds a {draft.config.kind} draft, not a {config.kind} one.")
        if config.draft_options:      # a variant: the options, and every weight of --init that fits
            draft = variant_of(draft, target, seed=config.seed, **config.draft_options)
    else:
        draft = load_draft(f"random:{config.kind}", target, seed=config.seed, **config.draft_options)
    if config.draft_vocab:
        stage1 = draft.config.draft_vocab if config.init else None
        ids = frequent_tokens(load_synthesized(config.data), config.draft_vocab, target.eos_token_ids,
                              fill=stage1 or ())
        if len(ids) < config.draft_vocab:
            raise ValueError(
                f"--draft-vocab {config.draft_vocab}: the answers of {config.data} hold only {len(ids)} distinct "
                "tokens" + (f" (with --init's {len(stage1)})" if stage1 else "") + ", and a draft that can "
                "propose only those is crippled, not reduced. Pass a smaller --draft-vocab, more data, or "
                "--init a draft whose vocabulary tops it up.")
        draft.with_vocab(ids)
    return draft.float().train()


def check_stage(dataset, stage: int) -> None:
    import pyarrow.compute as pc

    images = dataset.with_format("arrow").select_columns(["images"])[:]["images"]      # no image decoded
    with_images = int(pc.sum(pc.greater(pc.list_value_length(images), 0)).as_py() or 0)
    if stage == 1 and with_images:
        raise ValueError(f"Stage 1 is text-only but {with_images} samples of the dataset have images; "
                         "use --stage 2 or a --source text dataset.")
    if stage == 2 and not with_images:
        print("warning: stage 2 on a dataset without images (text-only fine-tuning).", file=sys.stderr)


def train(config: TrainConfig, resume: bool = False, target=None, stop_after: int | None = None,
          progress: bool = True) -> Path:
    """Train a draft; return the folder of the final draft (out/draft). stop_after: end this run after
    that many steps (a simulated interruption, for tests) without saving the final draft."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from ..data.synthesis import check_weights, data_has_images, folders, load_synthesized, settings_of

    c = config.resolved()
    out = Path(c.out)
    accelerator = Accelerator(cpu=not torch.cuda.is_available() or (target is not None and target.device.type == "cpu"),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    W, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if c.batch_size % W:
        raise ValueError(f"batch_size {c.batch_size} must be divisible by the {W} processes.")
    for d in folders(c.data):
        data_target = settings_of(d)["settings"]["target"]
        if data_target != c.target:
            raise ValueError(f"The dataset {d} was answered by target {data_target!r}, not {c.target!r}.")
    dataset = load_synthesized(c.data)
    check_stage(dataset, c.stage)
    steps_per_epoch = len(dataset) // c.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"The dataset has {len(dataset)} samples, fewer than one batch of {c.batch_size}.")
    total_steps = steps_per_epoch * c.epochs
    last_step = min(total_steps, c.max_steps or total_steps)

    saved = out / "train_config.json"
    mine = json.loads(json.dumps(asdict(c)))
    if saved.is_file() and (resume or checkpoints(out)):       # every process checks, so all stop together
        old = json.loads(saved.read_text())
        diff = sorted(k for k in mine if old.get(k) != mine[k] and k != "max_steps")
        if diff:
            raise ValueError(f"{out} holds a run with other settings ({diff}); use another --out.")
        if not resume:
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or use another --out.")
    accelerator.wait_for_everyone()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(mine, indent=1))

    torch.manual_seed(c.seed)
    np.random.seed(c.seed)
    random.seed(c.seed)
    if target is None:
        from ..targets import load_target
        target = load_target(c.target, device=accelerator.device, dtype=c.dtype)
    check_weights(c.data, target)
    draft = build_draft(c, target)
    optimizer = torch.optim.AdamW([p for p in draft.parameters() if p.requires_grad], lr=c.lr, betas=c.betas,
                                  weight_decay=c.weight_decay)
    warmup = steps_per_epoch if c.warmup_steps is None else c.warmup_steps
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    step = 0
    if resume and checkpoints(out):
        step = load_checkpoint(checkpoints(out)[-1], draft, optimizer, scheduler)
    model = accelerator.prepare_model(draft) if W > 1 else draft
    examples = Examples(target, dataset, c.max_length, out / "fcache" if c.f_cache == "disk" else None)
    head = target.lm_head.weight.float()
    vocab = getattr(draft, "vocab_ids", None)          # the draft vocabulary's ids, None: all
    vocab_head = None if vocab is None else head[vocab]
    labels = LabelCache(head, vocab)

    log_path = out / "log.jsonl"
    if main:      # the log keeps what the checkpoint covers
        lines = log_path.read_text().splitlines() if log_path.is_file() else []
        log_path.write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= step))
    bar = tqdm(total=last_step, initial=step, desc=f"train {c.kind}", disable=not (progress and main))
    local = c.batch_size // W
    stop = last_step if stop_after is None else min(last_step, step + stop_after)
    while step < stop:
        epoch, within = divmod(step, steps_per_epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(c.seed * 100003 + epoch))
        batch = order[within * c.batch_size:(within + 1) * c.batch_size].tolist()[rank * local:(rank + 1) * local]
        t0, c0, tokens, stats = time.perf_counter(), time.process_time(), 0, []
        for j, i in enumerate(batch):
            ex = examples[i]
            tokens += ex.length - ex.prompt_len
            # DDP averages gradients once per step: on the last sample of the local batch
            with accelerator.no_sync(model) if W > 1 and j < len(batch) - 1 else nullcontext():
                loss, ces, accs, mass = sample_loss(model, head, target, ex, c.kind, c.unroll, c.unroll_weight, vocab,
                                                    vocab_head, labels(i, ex))
                (loss / local).backward()
            stats.append([float(loss.detach()), mass] + ces + accs)
        norm = torch.nn.utils.clip_grad_norm_(draft.parameters(), c.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        device = accelerator.device
        mean = accelerator.reduce(torch.tensor(np.nanmean(stats, 0), device=device), "mean").tolist()
        n_tok = int(accelerator.reduce(torch.tensor(tokens, device=device), "sum"))
        dt = time.perf_counter() - t0
        s = len(mean[2:]) // 2
        record = dict(step=step, epoch=epoch, processes=W, loss=mean[0], ce=mean[2:2 + s], acc=mean[2 + s:],
                      vocab_mass=mean[1],
                      lr=scheduler.get_last_lr()[0], grad_norm=float(norm), samples_per_s=c.batch_size / dt,
                      tokens_per_s=n_tok / dt, cpu_s=time.process_time() - c0, answer_tokens=n_tok)
        if main:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc0=f"{record['acc'][0]:.2f}" if record["acc"] else "")
        if step % c.save_every == 0 or step == last_step:
            if main:
                save_checkpoint(out, step, accelerator.unwrap_model(model), optimizer, scheduler)
            accelerator.wait_for_everyone()
    bar.close()
    final = out / "draft"
    if step >= last_step and main:
        done = accelerator.unwrap_model(model)
        done.config.target_weights = target.weights_id(images=data_has_images(c.data))
        done.save_pretrained(final)
    accelerator.wait_for_everyone()
    return final


def read_log(out) -> list[dict]:
    return [json.loads(l) for l in (Path(out) / "log.jsonl").read_text().splitlines()]


# -- command line ----------------------------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--target", required=True)
    p.add_argument("--kind", required=True, help="vispec | eagle2 | medusa")
    p.add_argument("--data", required=True, help="a dataset folder written by `python -m vispec_core synthesize`, or several joined by commas")
    p.add_argument("--out", required=True)
    p.add_argument("--stage", type=int, default=2, help="1: text-only, 2: multimodal")
    p.add_argument("--profile", default="cpu", help=f"one of {sorted(PROFILES)}")
    p.add_argument("--unroll", type=int, default=None,
                   help="K extra steps on the draft's own hidden states (default: vispec 1, others 0; 0: the shortcut-prone ablation)")
    p.add_argument("--unroll-weight", type=float, default=1.0, help="w_k = unroll_weight ** k")
    p.add_argument("--lr", type=float, default=None, help="default: the profile's lr for the kind")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (split over processes)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: one epoch")
    p.add_argument("--grad-clip", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (and at the end)")
    p.add_argument("--f-cache", default="disk", help="disk (keep the target's passes under OUT/fcache) | none")
    p.add_argument("--init", default=None, help="a saved draft to start from (stage 2 from stage 1)")
    p.add_argument("--num-compressed", type=int, default=None)
    p.add_argument("--no-compression", action="store_true")
    p.add_argument("--no-global-injection", action="store_true")
    p.add_argument("--num-heads", type=int, default=None, help="Medusa heads")
    p.add_argument("--draft-vocab", type=int, default=None,
                   help="N: the draft scores only the N most frequent answer tokens of --data (EAGLE-3); default: all")
    p.add_argument("--dtype", default=None, help="the target's dtype (the draft trains in float32)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    p.set_defaults(func=cmd_train)
    return p


def cmd_train(a) -> int:
    options = {k: v for k, v in dict(num_compressed=a.num_compressed, num_heads=a.num_heads).items() if v is not None}
    if a.no_compression:
        options["use_compression"] = False
    if a.no_global_injection:
        options["use_global_injection"] = False
    config = TrainConfig(target=a.target, kind=a.kind, data=a.data, out=a.out, stage=a.stage, profile=a.profile,
                         lr=a.lr, batch_size=a.batch_size, epochs=a.epochs, max_length=a.max_length,
                         max_steps=a.max_steps, warmup_steps=a.warmup_steps, unroll=a.unroll,
                         unroll_weight=a.unroll_weight, grad_clip=a.grad_clip, seed=a.seed, save_every=a.save_every,
                         f_cache=a.f_cache, init=a.init, draft_options=options, draft_vocab=a.draft_vocab,
                         dtype=a.dtype)
    final = train(config, resume=a.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0
