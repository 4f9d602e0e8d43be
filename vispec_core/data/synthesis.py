"""Training data for the drafts (paper Sec. 4.3): prompts rewritten to ask for long answers, answers
written by the target itself (sampled, temperature 1 by default), stored as a self-contained
Hugging Face dataset of parquet shards.

Sources: `easy_vqa` (training questions and their images), `scenes` (procedural scenes, a question or
a caption request), `text` (stage 1: a templated instruction set, TOPICS x FORMS, since there is no
ShareGPT offline). Sample i of a run is a pure function of (source, seed, i): its prompt, its image
and its sampling seed `sample_seed(seed, i)`. Shard k holds samples [k S, (k+1) S) and is written to a
temporary file then renamed, so a run killed at any moment and rerun with the same command continues
from the first missing shard: no sample lost, none duplicated, the same records as an uninterrupted run.

    python -m vispec_core synthesize --target tiny:llava_next --source easy_vqa --n 64 --out DIR
    datasets.load_dataset("parquet", data_files=f"{DIR}/data/*.parquet", split="train")   # or load_synthesized(DIR)
"""
from __future__ import annotations

import argparse
import io
import json
import math
import numbers
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .prompts import CAPTION, EXPLAIN, FORMS, HELD_OUT_SCENE_SEED, LONG_ANSWER, SUFFIXES, TOPICS

SOURCES = ("easy_vqa", "scenes", "text")
ENGINES = ("auto", "batch1", "hf_batched")
FORMAT = 1
MANIFEST = "vispec_data.json"

@dataclass(frozen=True)
class Settings:
    """What a dataset is made of; a rerun into the same folder must match (n may grow)."""

    target: str
    source: str
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    shard_size: int = 16
    engine: str = "batch1"        # resolved: batch1 (vispec's generate) or hf_batched
    batch_size: int = 8
    dtype: str = ""
    format: int = FORMAT
    target_weights: str = ""      # Target.weights_id: another projector or checkpoint is another dataset


@dataclass
class Prompt:
    prompt: str
    images: list            # PNG bytes, one per image
    source_ref: str         # where it came from (question id, scene seed, template)


def sample_seed(seed: int, index: int) -> int:
    """The sampling seed of sample `index`: independent of shards, batches and interruptions."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


# -- prompt sources ------------------------------------------------------------------------------
class TextSource:
    def __len__(self) -> int:
        return len(TOPICS) * len(FORMS) * len(SUFFIXES)

    def __call__(self, seed: int, index: int) -> Prompt:
        rng = np.random.default_rng([seed, index, 1])
        t, o = rng.choice(len(TOPICS), size=2, replace=False)
        f, s = int(rng.integers(len(FORMS))), int(rng.integers(len(SUFFIXES)))
        text = FORMS[f].format(topic=TOPICS[t], other=TOPICS[o])
        return Prompt(f"{text} {SUFFIXES[s]}".strip(), [], f"text:{t}:{f}:{o}:{s}")


class EasyVQASource:
    """easy-vqa's training questions in a seeded order, each rewritten to ask for a long answer."""

    def __init__(self):
        try:
            from easy_vqa import get_train_image_paths, get_train_questions
        except ImportError as e:
            raise ModuleNotFoundError("The easy_vqa source needs the PyPI package `easy-vqa`: pip install easy-vqa") from e
        self.questions, _, self.image_ids = get_train_questions()
        self.paths = get_train_image_paths()

    def __len__(self) -> int:
        return len(self.questions)

    def __call__(self, seed: int, index: int) -> Prompt:
        order = np.random.default_rng([seed, index // len(self), 2]).permutation(len(self))
        q = int(order[index % len(self)])
        suffix = (EXPLAIN, LONG_ANSWER)[int(np.random.default_rng([seed, index, 3]).integers(2))]
        question = self.questions[q][:1].upper() + self.questions[q][1:]
        image = Path(self.paths[self.image_ids[q]]).read_bytes()
        return Prompt(f"{question} {suffix}", [image], f"easy_vqa:train:q{q}:img{self.image_ids[q]}")


class SceneSource:
    """A procedural scene per sample: a caption request, or one of its questions made long."""

    def __len__(self) -> int:
        return 2 ** 31

    def __call__(self, seed: int, index: int) -> Prompt:
        from . import scenes

        rng = np.random.default_rng([seed, index, 4])
        scene_seed = int(rng.integers(HELD_OUT_SCENE_SEED))   # benchmark scenes use the seeds above
        image, scene = scenes.make_scene(scene_seed)
        kind = int(rng.integers(3))
        if kind == 0:
            text = CAPTION
        else:
            question = scenes.questions(scene, rng, k=1)[0][0]
            text = f"{question} {(EXPLAIN, LONG_ANSWER)[kind - 1]}"
        return Prompt(text, [_png(image)], f"scenes:{scene_seed}:{kind}")


def prompt_source(source: str):
    if source == "text":
        return TextSource()
    if source == "easy_vqa":
        return EasyVQASource()
    if source == "scenes":
        return SceneSource()
    raise ValueError(f"Unknown source {source!r}; choose one of {SOURCES}.")


# -- answering: batch 1 through vispec's own decoder, or batched through the HF model's generate ----
def _images(prompt: Prompt) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("RGB") for b in prompt.images]


def answer_batch1(target, prompts: list[Prompt], seeds: list[int], s: Settings) -> list[tuple[list, list]]:
    from ..decoding.decode import generate

    out = []
    for p, seed in zip(prompts, seeds):
        g = generate(target, p.prompt, _images(p), max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                     seed=seed, top_p=s.top_p)
        out.append((g.prompt_ids, g.token_ids))
    return out


def causal_lm(target):
    """The HF model whose `generate` takes left-padded inputs_embeds with 1-D positions, or None (M-RoPE)."""
    if getattr(target, "mrope", False):
        return None
    vlm = getattr(target, "vlm", None)       # the embedded default VLM wraps a LlamaForCausalLM
    return vlm.lm if vlm is not None else target.model


class _RowSampler:
    """A logits processor that draws each row's token with that row's own generator (the same draw
    as vispec's `generate`), so a sample's answer does not depend on its batch neighbours."""

    def __init__(self, generators, temperature: float, top_p: float):
        self.generators, self.temperature, self.top_p = generators, temperature, top_p

    def __call__(self, input_ids, scores):
        from ..decoding.decode import pick

        out = torch.full_like(scores, float("-inf"))
        for b, gen in enumerate(self.generators):
            out[b, pick(scores[b], self.temperature, self.top_p, gen)] = 0.0
        return out


@torch.inference_mode()
def answer_hf_batched(target, prompts: list[Prompt], seeds: list[int], s: Settings) -> list[tuple[list, list]]:
    from transformers import LogitsProcessorList

    from ..targets import packed_linears

    lm = causal_lm(target)
    if lm is None:
        raise ValueError(f"The hf_batched engine needs 1-D positions; the {target.family} target uses M-RoPE: "
                         "use --engine batch1.")
    inputs = [target.prepare(p.prompt, _images(p)) for p in prompts]
    width = max(x.length for x in inputs)
    d = target.hidden_size
    embeds = torch.zeros(len(inputs), width, d, dtype=target.dtype, device=target.device)
    mask = torch.zeros(len(inputs), width, dtype=torch.long, device=target.device)
    for b, x in enumerate(inputs):                                  # left padding
        embeds[b, width - x.length:] = x.inputs_embeds[0]
        mask[b, width - x.length:] = 1
    eos = sorted(target.eos_token_ids)
    pad = target.tokenizer.pad_token_id if target.tokenizer.pad_token_id is not None else eos[0]
    gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    with packed_linears(lm):
        new = lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=s.max_new_tokens, do_sample=False,
                          logits_processor=LogitsProcessorList([_RowSampler(gens, s.temperature, s.top_p)]),
                          eos_token_id=eos, pad_token_id=pad, temperature=None, top_p=None, top_k=None)
    out = []
    for x, row in zip(inputs, new.tolist()):
        cut = next((i + 1 for i, t in enumerate(row) if t in target.eos_token_ids), len(row))
        out.append((x.input_ids[0].tolist(), row[:cut]))
    return out


ANSWER = {"batch1": answer_batch1, "hf_batched": answer_hf_batched}


# -- the dataset on disk -----------------------------------------------------------------------
def features():
    from datasets import Features, Image as ImageFeature, List, Value

    return Features({
        "index": Value("int64"), "prompt": Value("string"), "images": List(ImageFeature()),
        "prompt_ids": List(Value("int32")), "answer_ids": List(Value("int32")), "answer": Value("string"),
        "source": Value("string"), "source_ref": Value("string"), "seed": Value("int64"),
        "finished": Value("bool"), "generation": Value("string"),
    })


def shard_path(out: Path, k: int) -> Path:
    return out / "data" / f"train-{k:05d}.parquet"


def shard_rows(path: Path) -> int:
    """Rows in a shard; -1 for a shard that cannot be read (cut by a killed run, or damaged), which a
    resumed run writes again."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pyarrow.ArrowException):
        return -1


def check_manifest(out: Path, settings: Settings, n: int) -> None:
    """Refuse a folder holding another dataset; record this run's settings (n may grow)."""
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        mine, theirs = asdict(settings), {**asdict(Settings("", "")), **old.get("settings", {})}
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds a dataset made with other settings "
                             f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diff.items())}); "
                             "use another --out folder or the same settings.")
        if n < old.get("n", 0):
            raise ValueError(f"{out} already holds {old['n']} samples; ask for n >= {old['n']} (a dataset only grows) "
                             "or use another --out folder.")
    elif out.is_dir() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no {MANIFEST}: not a vispec dataset folder; use an empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps({"settings": asdict(settings), "n": n}, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(path: Path, records: list[dict]) -> None:
    from datasets import Dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    buf = io.BytesIO()
    quiet = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        Dataset.from_list(records, features=features()).to_parquet(buf)
    finally:
        if not quiet:
            enable_progress_bars()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, buf.getvalue())


def resolve_engine(engine: str, target) -> str:
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; choose one of {ENGINES}.")
    if engine == "auto":   # measured (see synthesize's docstring): batched wins where it applies
        return "hf_batched" if causal_lm(target) is not None else "batch1"
    return engine


def synthesize(target_spec: str, source: str, n: int, out, temperature: float = 1.0, max_new_tokens: int = 256,
               seed: int = 0, top_p: float = 1.0, shard_size: int = 16, engine: str = "auto", batch_size: int = 8,
               device=None, dtype=None, progress: bool = True, target=None) -> Path:
    """Write samples 0..n-1 of `source` answered by the target, resuming whatever `out` already holds.

    Engines: `batch1` runs vispec's `generate` one prompt at a time; `hf_batched` left-pads
    `batch_size` prompts' input embeddings into the HF model's `generate` (1-D positions only), each
    row drawing with its own seeded generator (in fp32 both engines give the same answers). Measured,
    one CPU thread, CPU time: tiny LLaVA-NeXT 354 (batch1) vs 746 (hf_batched, 8) answer tokens/s; the
    default VLM 11 vs 30 tokens/s. `auto` picks hf_batched where it applies, batch1 otherwise (M-RoPE).
    hf_batched runs transformers' modules with their linears on the CPU's packed form (`packed_linears`):
    on an AVX2-only CPU (2 threads, 8 scenes, batch 8) 19.3 -> 50.8 answer tokens/s; 64 at batch 32."""
    from tqdm.auto import tqdm

    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; choose one of {SOURCES}.")
    if n < 1 or shard_size < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("n, shard_size, batch_size and max_new_tokens must all be >= 1.")
    if not (math.isfinite(temperature) and temperature >= 0) or not 0 < top_p <= 1:
        raise ValueError(f"temperature must be >= 0 and finite (0: greedy), and top_p in (0, 1]; "
                         f"got {temperature}, {top_p}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**31:
        raise ValueError(f"seed must be an integer in [0, 2**31), got {seed!r}.")
    out = Path(out)
    if target is None:
        from ..targets import load_target
        target = load_target(target_spec, device=device, dtype=dtype)
    prompts = prompt_source(source)
    if source != "text" and target.image_token_id is None:
        raise ValueError(f"Target {target_spec!r} takes no images; use --source text.")
    settings = Settings(target_spec, source, float(temperature), float(top_p), int(max_new_tokens), int(seed),
                        int(shard_size), resolve_engine(engine, target), int(batch_size), str(target.dtype).split(".")[-1],
                        target_weights=target.weights_id(images=source != "text"))
    check_manifest(out, settings, n)
    answer = ANSWER[settings.engine]
    generation = json.dumps({k: getattr(settings, k) for k in
                             ("target", "temperature", "top_p", "max_new_tokens", "engine", "dtype")}
                            | {"target_describe": target.describe()})
    shards = range((n + shard_size - 1) // shard_size)
    want = {k: min(shard_size, n - k * shard_size) for k in shards}
    done = {k for k in shards if shard_path(out, k).is_file() and shard_rows(shard_path(out, k)) == want[k]}
    for k in shards:
        if k not in done and shard_path(out, k).is_file() and progress:
            print(f"{shard_path(out, k)} is incomplete or unreadable: writing it again", file=sys.stderr)
    bar = tqdm(total=n, initial=sum(want[k] for k in done), desc=f"synthesize {source}", unit="sample",
               disable=not progress)
    t0, new_tokens, new_samples = time.perf_counter(), 0, 0
    for k in shards:
        if k in done:
            continue
        records = []
        for b in range(k * shard_size, k * shard_size + want[k], batch_size):
            idx = list(range(b, min(b + batch_size, k * shard_size + want[k])))
            batch = [prompts(seed, i) for i in idx]
            seeds = [sample_seed(seed, i) for i in idx]
            for i, p, s_i, (pids, aids) in zip(idx, batch, seeds, answer(target, batch, seeds, settings)):
                records.append(dict(index=i, prompt=p.prompt, images=[{"bytes": b_, "path": None} for b_ in p.images],
                                    prompt_ids=pids, answer_ids=aids, answer=target.decode_text(aids), source=source,
                                    source_ref=p.source_ref, seed=s_i,
                                    finished=bool(aids) and aids[-1] in target.eos_token_ids, generation=generation))
                new_tokens += len(aids)
            bar.update(len(idx))
        write_shard(shard_path(out, k), records)
        new_samples += len(records)
    bar.close()
    for stale in (out / "data").glob(".*.tmp*"):     # partial files of killed runs
        stale.unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    if new_samples:
        print(f"{new_samples} samples, {new_tokens} answer tokens in {dt:.1f} s: {new_samples / dt:.2f} samples/s, "
              f"{new_tokens / dt:.1f} tokens/s ({settings.engine})", file=sys.stderr)
    return out


def folders(spec) -> list[Path]:
    """Dataset folders from one path, a list, or paths joined by commas ("DIR_A,DIR_B")."""
    if isinstance(spec, (str, os.PathLike)):
        parts = str(spec).split(",")
    else:
        parts = [str(p) for p in spec]
    paths = [Path(p.strip()) for p in parts if p.strip()]
    if not paths:
        raise ValueError(f"{spec!r} names no dataset folder.")
    return paths


def load_synthesized(spec):
    """The dataset(s) as one `datasets.Dataset`, in the order given (only `datasets` is needed:
    parquet shards under data/). Several folders must hold data answered by the same target."""
    from datasets import concatenate_datasets, load_dataset

    parts, targets = [], set()
    for out in folders(spec):
        if not (out / MANIFEST).is_file():
            raise FileNotFoundError(f"{out} holds no {MANIFEST}: not a dataset written by vispec_core.data.")
        files = sorted(str(p) for p in (out / "data").glob("train-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{out}/data holds no shards yet.")
        bad = [f for f in files if shard_rows(Path(f)) < 0]
        if bad:
            raise ValueError(f"{bad[0]} cannot be read (cut by a killed run, or damaged): run the same "
                             "`synthesize` command again to write it anew.")
        parts.append(load_dataset("parquet", data_files=files, split="train"))
        targets.add(settings_of(out)["settings"]["target"])
    if len(targets) > 1:
        raise ValueError(f"{spec} mixes datasets answered by different targets ({sorted(targets)}); "
                         "train a draft on one target's answers.")
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def check_weights(spec, target) -> None:
    """Refuse data answered by other weights of the same target (e.g. another projector): a draft
    trained on it learns another model's answers."""
    for out in folders(spec):
        s = settings_of(out)["settings"]
        recorded, now = s.get("target_weights", ""), target.weights_id(images=s["source"] != "text")
        if recorded and now and recorded != now:
            raise ValueError(f"{out} was answered by target weights {recorded}, but the loaded target has {now}; "
                             "synthesize the data again with this target (or load the target that wrote it).")


def data_has_images(spec) -> bool:
    """Whether any dataset of spec has images: a draft trained on it learned the target's vision path too."""
    return any(settings_of(out)["settings"]["source"] != "text" for out in folders(spec))


def settings_of(out) -> dict:
    return json.loads((Path(out) / MANIFEST).read_text())


# -- the "plain" stage-2 data: the source's own short answers, no generation ------------------------
def write_plain(target, target_spec: str, n: int, out, seed: int = 0, shard_size: int = 64) -> Path:
    """Scenes with their ground-truth caption (`scenes.describe`) or one short question/answer pair
    (`scenes.questions`), prompts not rewritten, answers not generated: the "dataset generation off"
    data of Table 2 and the paper's baselines. Same scene draw as SceneSource; same format as
    synthesize, so `train` reads it. Short answers are the point: that is what the paper's
    baselines had."""
    from . import scenes

    out = Path(out)
    settings = Settings(target_spec, "scenes_plain", temperature=-1.0, max_new_tokens=0, seed=seed,
                        shard_size=shard_size, engine="none", batch_size=1, dtype=str(target.dtype).split(".")[-1])
    check_manifest(out, settings, n)
    eos = target.tokenizer.eos_token_id
    eos = eos if eos in target.eos_token_ids else min(target.eos_token_ids)
    for k in range((n + shard_size - 1) // shard_size):
        if shard_path(out, k).is_file():
            continue
        records = []
        for i in range(k * shard_size, min(n, (k + 1) * shard_size)):
            rng = np.random.default_rng([seed, i, 4])
            scene_seed = int(rng.integers(HELD_OUT_SCENE_SEED))
            image, scene = scenes.make_scene(scene_seed)
            kind = int(rng.integers(3))
            prompt, answer = (CAPTION, scenes.describe(scene)) if kind == 0 else scenes.questions(scene, rng, k=1)[0]
            inputs = target.prepare(prompt, [image])
            ids = target.tokenizer(answer, add_special_tokens=False).input_ids + [eos]
            records.append(dict(index=i, prompt=prompt, images=[{"bytes": _png(image), "path": None}],
                                prompt_ids=inputs.input_ids[0].tolist(), answer_ids=ids, answer=answer,
                                source="scenes_plain", source_ref=f"scenes:{scene_seed}:{kind}", seed=0,
                                finished=True, generation='{"engine": "none (ground truth)"}'))
        write_shard(shard_path(out, k), records)
    return out


def prompt_rewrites(source: str, n: int, seed: int = 0) -> list[dict]:
    """The first n prompts of a synthesis source: the dataset's own request beside the rewritten one
    (the paper's long-answer suffixes, prompts.LONG_ANSWER / prompts.EXPLAIN, or a caption request)."""
    from ..data.synthesis import CAPTION, EXPLAIN, LONG_ANSWER, prompt_source

    src, rows = prompt_source(source), []
    for i in range(n):
        p = src(seed, i)
        suffix = next((s for s in (LONG_ANSWER, EXPLAIN) if p.prompt.endswith(s)), "")
        original = p.prompt[: len(p.prompt) - len(suffix)].strip() if suffix else p.prompt
        if p.prompt == CAPTION:
            original, suffix = "(caption the image)", CAPTION
        rows.append({"source": source, "index": i, "source_ref": p.source_ref, "original": original,
                     "added": suffix, "rewritten": p.prompt, "images": len(p.images)})
    return rows


# -- command line ------------------------------------------------------------------------------
def add_synthesize_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("synthesize", help="write target-answered training data (resumable)")
    p.add_argument("--target", required=True, help="'default', 'tiny:llava_next', 'tiny:qwen2_5_vl' or a checkpoint folder")
    p.add_argument("--source", required=True, help=f"one of {SOURCES}")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="dataset folder (rerun the same command to resume)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy, the ablation)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--engine", default="auto", help=f"one of {ENGINES}")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per hf_batched generate call")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.set_defaults(func=cmd_synthesize)
    return p


def cmd_synthesize(args) -> int:
    synthesize(args.target, args.source, args.n, args.out, temperature=args.temperature,
               max_new_tokens=args.max_new_tokens, seed=args.seed, top_p=args.top_p, shard_size=args.shard_size,
               engine=args.engine, batch_size=args.batch_size, device=args.device, dtype=args.dtype)
    return 0
