"""The side-by-side benchmark: every method on every prompt, interleaved, one JSONL record per run.

    python -m vispec_core bench --target default --methods vanilla,hf,hf_prompt_lookup,medusa,eagle2,vispec \\
        --tasks all --temperature 0,1 --n-prompts 10 --max-new-tokens 256 --out results/raw/default.jsonl

Methods: `vanilla` (our token-by-token decoder), `hf` (transformers' own `generate` on the same model),
`hf_prompt_lookup` (its `prompt_lookup_num_tokens=10`), `prompt_lookup` (the same rule as a draft of
our decoder: the pair separates the algorithm from the forward), and the drafts `medusa`, `eagle2`, `vispec`
(EAGLE-2 dynamic tree, lossless verification). `--tree auto` searches a tree for this device per draft
and temperature (tree_search.py) and runs it as '<draft>@auto' beside the paper's 30/3/8.

Fairness rules (each guards against a flaw of the official code's timing):
the same prompt ids and images for every method, the same max_new_tokens, the same stop rule (the
target's eos_token_ids, given to transformers' `generate` explicitly), token counts taken from token
ids (never re-tokenised text), the device synchronised around every timed region, warm-ups first, and
the method order rotated from prompt to prompt. Timed: prompt preparation (image encoding included)
to the last token, for every method. At temperature 0 each record says whether its tokens equal
vanilla's and, if not, where they first differ (bf16 near-ties can flip; this is reported, not hidden).
Rerunning the same command skips the (prompt, temperature) groups already in the file; a group that
lacks a variant (one added to --methods) runs again whole, so every speedup is measured side by side.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..data.tasks import CALIBRATION_OFFSET, parse_tasks, task_prompts
from .records import REPO, append_records, drop_partial_tail, latest_runs, portable, read_records
from ..decoding.decode import max_tree_depth
from .tree_choice import decide, device_name
from .tree_search import PAPER_TREE, TreeConfig, parse_tree, search_tree

METHODS = ("vanilla", "hf", "hf_prompt_lookup", "prompt_lookup", "medusa", "eagle2", "vispec")
SPECULATIVE = ("medusa", "eagle2", "vispec")
# Settings that must match to resume (a target given as a folder, relative to the repository). Which
# drafts were measured is the weights digest's to say, since their folder differs from clone to clone;
# which machine, the header's device and weight form.
FIXED = ("target", "dtype", "device", "max_new_tokens", "seed", "top_p", "tree")
# What a record means beyond the settings, raised whenever the same settings come to measure something
# else. Version 2: a tree of depth d drafts d + 1 levels; scene objects lie anywhere in their cell. A
# file of another version is set aside and measured again, never resumed onto.
RECORDS_VERSION = 2


@dataclass
class BenchConfig:
    """What one benchmark measures: the command line's `bench` options, or a notebook's
    (`experiments.bench_args`). Comma-separated strings as on the command line."""
    target: str
    out: str
    methods: str = ",".join(METHODS)
    tasks: str = "all"
    temperature: str = "0"
    n_prompts: int = 5
    max_new_tokens: int = 256
    seed: int = 0
    top_p: float = 1.0
    tree: str | None = None
    drafts: str = "shipped"
    dtype: str | None = None
    device: str | None = None
    threads: int | None = None
    calibration_prompts: int = 1
    calibration_tokens: int = 64

    @classmethod
    def from_args(cls, args) -> "BenchConfig":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Variant:
    """A method as benchmarked: speculative methods carry their tree ('vispec@auto' for the searched one)."""
    name: str
    method: str
    tree: TreeConfig | None = None
    tree_source: str | None = None      # 'paper', 'given', 'auto', 'capped' (Medusa's heads) or 'vanilla'
                                        # (auto found no tree predicted to win: decoded without the draft)


def parse_methods(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"Unknown method(s) {bad or spec!r}; choose from {', '.join(METHODS)}.")
    return list(dict.fromkeys(names))


def parse_temperatures(spec: str) -> list[float]:
    try:
        temps = [float(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--temperature takes comma-separated numbers such as '0,1', got {spec!r}.") from None
    if not temps or any(t < 0 or t != t for t in temps):
        raise ValueError(f"--temperature needs one or more numbers >= 0 (0 = greedy), got {spec!r}.")
    return list(dict.fromkeys(temps))


# -- transformers' own generate -----------------------------------------------------------------
class _Stamps:
    """A `generate` streamer that timestamps every batch of new tokens (device synchronised)."""

    def __init__(self, sync, prompt_len: int):
        self.sync, self.prompt_len, self.times, self.counts = sync, prompt_len, [], []

    def put(self, value):
        if not self.counts and not self.times and value.shape[-1] == self.prompt_len:
            self.prompt_len = -1                 # the prompt itself, put once before the first forward
            return
        self.sync()
        self.times.append(time.perf_counter())
        self.counts.append(int(value.numel()))

    def end(self):
        pass


def _first_step_no_candidates(prompt_len: int):
    """transformers 5.x verifies prompt-lookup candidates wrongly in the first (prefill) step of a VLM
    prompt: LLaVA counts copied image placeholders as extra image tokens, and with `inputs_embeds` the
    candidates are dropped from the forward. Its lookup tests candidates by running the logits
    processors on all-ones logits; this processor forbids every candidate there in the first step
    only and leaves real logits untouched, so the first step is a plain prefill."""
    from transformers import LogitsProcessor

    class NoFirstStepCandidates(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] <= prompt_len and bool((scores == 1).all()):
                return torch.full_like(scores, -float("inf"))
            return scores

    return NoFirstStepCandidates()


def hf_generate(target, prompt: str, images, max_new_tokens: int, temperature: float, top_p: float,
                seed: int, prompt_lookup: bool = False) -> tuple[list[int], dict]:
    """transformers' `generate` on the same model, prompt and images: for LLaVA-NeXT / Qwen2.5-VL the
    processor's outputs, for the default target the LM with the prepared `inputs_embeds` (+ `input_ids`
    for prompt lookup to search). Neutral sampling settings are set explicitly, so a checkpoint's own
    generation_config (repetition penalty, top-k) cannot change the distribution."""
    from transformers import LogitsProcessorList

    sync = torch.cuda.synchronize if target.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    if target.family == "default":
        inputs = target.prepare(prompt, images)
        model = target.model.lm
        kwargs = dict(input_ids=inputs.input_ids, inputs_embeds=inputs.inputs_embeds,
                      attention_mask=torch.ones_like(inputs.input_ids))
    else:
        _, enc = target.encode(prompt, images)
        model = target.model
        kwargs = {k: v.to(target.device, target.dtype) if v.is_floating_point() else v.to(target.device)
                  for k, v in enc.items()}
    prompt_len = kwargs["input_ids"].shape[1]
    sync()
    prepare_s = time.perf_counter() - t0
    stamps = _Stamps(sync, prompt_len)
    eos = sorted(target.eos_token_ids)
    options = dict(max_new_tokens=max_new_tokens, min_new_tokens=0, eos_token_id=eos, pad_token_id=eos[0],
                   do_sample=temperature > 0, repetition_penalty=1.0, no_repeat_ngram_size=0, num_beams=1,
                   streamer=stamps)
    if temperature > 0:
        options.update(temperature=temperature, top_p=top_p, top_k=0)     # top_k=0: no default top-50 cut
    if prompt_lookup:
        options.update(prompt_lookup_num_tokens=10,
                       logits_processor=LogitsProcessorList([_first_step_no_candidates(prompt_len)]))
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**kwargs, **options)
    sync()
    end = time.perf_counter()
    tokens = out[0, prompt_len:].tolist()
    first = stamps.times[0] if stamps.times else end
    accept = [c - 1 for c in stamps.counts[1:]] if prompt_lookup else []
    return tokens, dict(wall_time_s=end - t0, prepare_time_s=prepare_s, prefill_time_s=first - t0 - prepare_s,
                        decode_time_s=end - first, accept_lengths=accept, cycles=max(len(stamps.counts) - 1, 0),
                        tau=sum(accept) / len(accept) if accept else 0.0, prompt_tokens=prompt_len)


# -- one run ----------------------------------------------------------------------------------------
def peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"kind": "cuda_max_allocated_bytes", "bytes": int(torch.cuda.max_memory_allocated(device))}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {"kind": "cpu_process_max_rss_bytes (high-water mark of the whole process, not of this run)",
            "bytes": int(rss)}


def run_variant(target, drafts: dict, variant: Variant, p, temperature: float, top_p: float, seed: int,
                max_new_tokens: int) -> tuple[list[int], dict]:
    from ..decoding.decode import generate

    if target.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target.device)
    if variant.method in ("hf", "hf_prompt_lookup"):
        tokens, stats = hf_generate(target, p.prompt, p.images, max_new_tokens, temperature, top_p, seed,
                                    prompt_lookup=variant.method == "hf_prompt_lookup")
    else:        # '<draft>@auto' where no tree was predicted to win decodes without the draft, as generate's auto
        draft = None if variant.tree_source == "vanilla" else drafts.get(variant.method)
        gen = generate(target, p.prompt, p.images, draft, max_new_tokens, temperature, seed, top_p,
                       tree=variant.tree or PAPER_TREE)
        tokens, stats = gen.token_ids, dict(gen.stats, prompt_tokens=len(gen.prompt_ids))
    stats["peak_memory"] = peak_memory(target.device)
    return tokens, stats


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def make_record(p, variant: Variant, temperature: float, seed: int, tokens: list[int], stats: dict,
                eos, max_new_tokens: int) -> dict:
    n = len(tokens)
    keys = ("wall_time_s", "prepare_time_s", "prefill_time_s", "decode_time_s", "draft_time_s", "verify_time_s",
            "cycles", "tau", "accept_lengths", "prompt_tokens", "peak_memory")
    rec = dict(type="run", task=p.task, prompt_id=p.prompt_id, variant=variant.name, method=variant.method,
               temperature=temperature, seed=seed, max_new_tokens=max_new_tokens, new_tokens=n)
    rec.update({k: stats.get(k) for k in keys})
    rec.update(time_per_token_s=rec["wall_time_s"] / max(n, 1), tokens_per_s=n / rec["wall_time_s"],
               ended_by="eos" if tokens and tokens[-1] in eos else "max_new_tokens",
               tree=dict(total_tokens=None, depth=None, top_k=None, label="no draft", source="vanilla")
               if variant.tree_source == "vanilla" else None if variant.tree is None else dict(
                   total_tokens=variant.tree.total_tokens, depth=variant.tree.depth, top_k=variant.tree.top_k,
                   label=variant.tree.label, source=variant.tree_source),
               same_as_vanilla=None, first_divergence=None, tokens=tokens)
    return rec


# -- the machine and the weights ---------------------------------------------------------------
def environment(target) -> dict:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    import numpy
    import transformers

    device = device_name(target.device)
    packed = target.packed_weights()
    return dict(git_commit=git("rev-parse", "HEAD"), git_dirty=bool(git("status", "--porcelain")),
                versions=dict(python=platform.python_version(), torch=torch.__version__,
                              transformers=transformers.__version__, numpy=numpy.__version__),
                device=device, dtype=str(target.dtype).replace("torch.", ""), weights=packed.mode if packed else "plain",
                rows_computed_alike=packed is not None and packed.rows_alike,
                threads=torch.get_num_threads(),
                host_cpus=os.cpu_count())


def load_drafts(target, methods, source: str) -> dict:
    from ..drafts import load_draft

    drafts = {}
    for m in methods:
        if m in SPECULATIVE:
            spec = f"random:{m}" if source == "random" else m if source == "shipped" else str(Path(source) / m)
            drafts[m] = load_draft(spec, target=target)
        elif m == "prompt_lookup":
            drafts[m] = load_draft(m, target=target)
    return drafts


def weights_digest(target, drafts: dict) -> str:
    """Names the weights a benchmark measured (the target's, each draft's): a rerun after retraining
    starts over instead of resuming onto figures of other weights."""
    h = hashlib.sha256(target.weights_id().encode())
    for m in sorted(drafts):
        for k, v in sorted(drafts[m].state_dict().items()):
            h.update(f"{m}.{k}".encode() + v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# -- the benchmark ------------------------------------------------------------------------------------
def _set_aside(old: list[dict], fixed: dict, env: dict, out: Path, log) -> bool:
    """Records of other weights or of another machine (or weight form) are never resumed onto: the file
    is kept beside as <name>.before-<time>.jsonl and the benchmark starts over. True if it was set aside."""
    headers = [h for h in old if h.get("type") == "header"]
    why = ("an older version of the benchmark" if any(h["config"].get("records_version") != RECORDS_VERSION
                                                       for h in headers)
           else "other target or draft weights" if any(h["config"].get("weights") != fixed["weights"] for h in headers)
           else f"another machine or weight form than {env['device']}, {env['weights']}"
           if any((h.get("device"), h.get("weights")) != (env["device"], env["weights"]) for h in headers) else None)
    if why:
        kept = out.with_name(f"{out.stem}.before-{time.strftime('%Y%m%dT%H%M%S')}{out.suffix}")
        out.replace(kept)
        log(f"{out} was measured with {why}: kept as {kept}, starting over")
    return why is not None


def _check_resumable(old: list[dict], fixed: dict, out: Path) -> None:
    """The same weights on the same machine with other settings: a user error, not a reason to start over."""
    for h in (r for r in old if r.get("type") == "header"):
        diff = {k: (h["config"].get(k), fixed[k]) for k in FIXED if h["config"].get(k) != fixed[k]}
        if diff:
            raise ValueError(f"{out} holds a benchmark with other settings {diff} (file, now); "
                             "resume with the same settings or write to another --out.")


def _variants(methods, tree, drafts) -> list[Variant]:
    """The benchmarked variants. A draft that cannot build the tree's depth (Medusa: one level per head,
    the root pass included) runs it at its deepest (source 'capped'); the others take it as given."""
    given = PAPER_TREE if tree == "auto" else tree               # '<m>@auto' joins after the search
    source = "paper" if given == PAPER_TREE else "given"
    variants = []
    for m in methods:
        limit = max_tree_depth(drafts.get(m))
        if m not in SPECULATIVE:
            variants.append(Variant(m, m))
        elif limit is not None and given.depth > limit:
            variants.append(Variant(m, m, TreeConfig(given.total_tokens, limit, given.top_k), "capped"))
        else:
            variants.append(Variant(m, m, given, source))
    return variants


def _auto_trees(args, target, drafts, tasks, temps, old, log) -> tuple[dict, list[dict]]:
    """Per temperature, '<method>@auto' variants: the tree searched for each draft at that temperature
    (sampled calibration answers at T>0), reused from the file when resuming."""
    searched = {(r["method"], r.get("temperature", 0.0)): r for r in old if r.get("type") == "tree_search"}
    variants, new = {t: [] for t in temps}, []
    for t in temps:
        for m in (m for m in drafts if m in SPECULATIVE):
            if (m, t) not in searched:
                calib = [q for k in tasks for q in task_prompts(k, args.calibration_prompts, args.seed, CALIBRATION_OFFSET)]
                log(f"tree search for {m} at T={t:g} on {len(calib)} calibration prompt(s) ...")
                searched[m, t] = dict(type="tree_search", method=m,
                                      **search_tree(target, drafts[m], calib, args.calibration_tokens, log=log,
                                                    temperature=t, top_p=args.top_p, seed=args.seed))
                new.append(searched[m, t])
            c, paper = searched[m, t]["chosen"], searched[m, t]["paper"]
            chosen = decide(searched[m, t])
            log(f"tree for {m} at T={t:g}: auto {chosen.label if chosen else 'no draft'} (best {c['label']}, predicted "
                f"{c['speedup']:.2f}x, tau {c['tau']:.2f})"
                + (f" vs paper {paper['label']} (predicted {paper['speedup']:.2f}x, tau {paper['tau']:.2f})"
                   if paper else ""))
            variants[t].append(Variant(f"{m}@auto", m, chosen, "auto") if chosen
                               else Variant(f"{m}@auto", m, None, "vanilla"))
    return variants, new


def _command() -> str | None:
    """The command line that ran the benchmark, when it was the CLI (a notebook's kernel argv says nothing)."""
    if Path(sys.argv[0]).name in ("__main__.py", "vispec_core", "vispec"):
        return portable(" ".join(["python -m vispec_core", *sys.argv[1:]]))
    return None


def run_bench(args: BenchConfig, log=lambda s: print(s, file=sys.stderr, flush=True)) -> list[dict]:
    """Run (or resume) the benchmark `args` describes; returns all run records in the file."""
    from ..targets import load_target

    methods, tasks = parse_methods(args.methods), parse_tasks(args.tasks)
    temps, tree = parse_temperatures(args.temperature), parse_tree(args.tree)
    if args.n_prompts < 1 or args.max_new_tokens < 1:
        raise ValueError("--n-prompts and --max-new-tokens must be >= 1.")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1 (1 on a shared CPU), got {args.threads}.")
    out = Path(args.out)
    old = read_records(out)             # refuses a file that is not a benchmark file, before touching it
    drop_partial_tail(out)
    fixed = dict(target=portable(args.target), dtype=args.dtype, device=args.device,
                 max_new_tokens=args.max_new_tokens, seed=args.seed, top_p=args.top_p, tree=args.tree or "paper",
                 drafts=portable(args.drafts), records_version=RECORDS_VERSION)

    if args.threads:
        torch.set_num_threads(args.threads)
    target = load_target(args.target, device=args.device, dtype=args.dtype)
    drafts = load_drafts(target, methods, args.drafts)
    fixed["weights"] = weights_digest(target, drafts)
    env = environment(target)
    if _set_aside(old, fixed, env, out, log):
        old = []
    _check_resumable(old, fixed, out)
    done = {(r["task"], r["prompt_id"], r["variant"], r["temperature"]): r for r in old if r.get("type") == "run"}
    prompts = [p for t in tasks for p in task_prompts(t, args.n_prompts, args.seed)]
    variants = _variants(methods, tree, drafts)
    at = {t: variants for t in temps}          # the variants run at each temperature
    header = dict(type="header", started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  config=dict(fixed, methods=methods, tasks=tasks, temperatures=temps, n_prompts=args.n_prompts,
                              command=_command()), **env)
    new_records = [header]
    if tree == "auto":
        auto, searched = _auto_trees(args, target, drafts, tasks, temps, old, log)
        at = {t: variants + auto[t] for t in temps}
        new_records += searched

    # groups (prompt, temperature) with a variant left to run; g numbers the group for the rotation. A
    # group runs whole, every variant again when one was added, so its speedups stay side by side in
    # one sitting; the new records supersede the old ones (`records.latest_runs`).
    todo = [(i * len(temps) + j, p, t) for i, p in enumerate(prompts) for j, t in enumerate(temps)]
    missing = [(g, p, t) for g, p, t in todo if any((p.task, p.prompt_id, v.name, t) not in done for v in at[t])]
    if missing or len(new_records) > 1:
        append_records(out, new_records)
    if missing:
        warm = {(v.method, v.tree): v for t in temps for v in at[t]}
        log(f"warm-up: {len(warm)} method/tree pair(s) ...")
        for v in warm.values():
            run_variant(target, drafts, v, prompts[0], 0.0, args.top_p, args.seed, min(8, args.max_new_tokens))
    for n, (g, p, t) in enumerate(missing):
        seed = (args.seed * 1_000_003 + zlib.crc32(p.prompt_id.encode())) % 2**31     # same for every method
        vs = at[t]
        group = []
        for v in vs[g % len(vs):] + vs[:g % len(vs)]:
            tokens, stats = run_variant(target, drafts, v, p, t, args.top_p, seed, args.max_new_tokens)
            group.append(make_record(p, v, t, seed, tokens, stats, target.eos_token_ids, args.max_new_tokens))
        ref = next((r for r in group if r["method"] == "vanilla"), None)
        for r in group:
            if t == 0 and ref is not None and r["method"] != "vanilla":
                r["first_divergence"] = first_divergence(ref["tokens"], r["tokens"])
                r["same_as_vanilla"] = r["first_divergence"] is None
            done[(p.task, p.prompt_id, r["variant"], t)] = r
        append_records(out, group)      # a whole group at once: vanilla's tokens are known for the comparison
        log(f"[{n + 1}/{len(missing)}] {p.prompt_id} T={t:g}: " + ", ".join(
            f"{r['variant']} {r['tokens_per_s']:.1f} tok/s tau {r['tau']:.2f}" for r in group))
    return latest_runs(read_records(out))


def cmd_bench(args) -> int:
    from .report import summarise

    records = run_bench(BenchConfig.from_args(args))
    table = summarise(records)
    if args.json:
        print(json.dumps({"out": str(args.out), "summary": json.loads(table.to_json(orient="records"))}))
    else:
        print(table.to_markdown(index=False, floatfmt=".3g"))
        print(f"\nraw records: {args.out}; tables and figures: python -m vispec_core.evaluation.report {args.out}",
              file=sys.stderr)
    return 0


def add_bench_parser(subparsers, add_target_args) -> None:
    """Register `bench` (called by __main__); its trees come from --tree."""
    b = subparsers.add_parser("bench", help="benchmark decoding methods side by side (JSONL records, resumable)")
    add_target_args(b)
    b.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from {','.join(METHODS)}")
    b.add_argument("--tasks", default="all", help="comma-separated from vqa,caption,ocr,photo,text, or 'all'")
    b.add_argument("--temperature", default="0", help="comma-separated temperatures, e.g. '0,1'")
    b.add_argument("--top-p", type=float, default=1.0)
    b.add_argument("--n-prompts", type=int, default=5, help="prompts per task")
    b.add_argument("--max-new-tokens", type=int, default=256)
    b.add_argument("--seed", type=int, default=0, help="prompt selection and sampling seed")
    b.add_argument("--tree", default=None,
                   help="'paper' (30/3/8, default), TOTAL/DEPTH/TOP_K, or 'auto': search the best tree for this "
                        "device and run it beside the paper's")
    b.add_argument("--drafts", default="shipped",
                   help="'shipped' (trained drafts in data/drafts/), 'random' (untrained) or a folder with "
                        "<kind>/ subfolders")
    b.add_argument("--calibration-prompts", type=int, default=1, help="--tree auto: prompts per task to calibrate on")
    b.add_argument("--calibration-tokens", type=int, default=64, help="--tree auto: tokens per calibration prompt")
    b.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's). On a shared CPU use 1: with 2 threads and "
                        "other jobs running, OpenMP waits made a draft tree 40x slower here")
    b.add_argument("--out", required=True, help="JSONL file of raw records, e.g. results/raw/default.jsonl")
    b.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    b.set_defaults(func=cmd_bench)
