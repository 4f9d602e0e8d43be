"""GPU check: is our decoder near the hardware's floor, what does verification cost, how fast is the default world?

Five measurements, each written to <out>/gpu_check.json as it finishes (a measurement that fails records its
error and the others still run; nothing is written that was not measured on this machine):

1. copy bandwidth: a large device tensor copied into another (bytes read + written / time, median);
2. a 7B-shaped Llama LM (LlamaConfig: hidden 4096, 32 layers, intermediate 11008, 32 heads, vocab
   32000; random weights, bf16): our `decode_vanilla` per-token time against the memory-bandwidth
   floor (weight bytes / copy bandwidth), and transformers' `generate` per-token time beside it;
3. the same model's draft-verify cycle in our loop (random EAGLE-2 draft, paper tree): draft and verify
   time per cycle, and the speedup it implies at acceptance tau;
4. the same model's verify-cost curve: one forward over n tree tokens after a 1024-token prefix;
(--profile-cycle) the same cycle under torch.profiler, the prefill left out: the top 25 ops by self
   device time and by self CPU time, and per cycle the host-device synchronisations, copies and
   kernel launches, to <out>/profile_cycle.txt (a summary into the JSON);
5. the default world's benchmark (`python -m vispec_core bench --target default --tree auto ...`, shipped
   drafts) to <out>/bench_default.jsonl with tables and figures under <out>/ (resumable: a rerun
   continues where a timed-out one stopped).

Within 15 minutes on one H200 (one run of at most 10 minutes, leaving time to rerun):

    python scripts/gpu_check.py --out results/gpu            # about 1 min setup + 1 min for 1-4 + bench

It needs a CUDA build of torch, transformers 5, the assets of `make setup` (SmolLM2 cache, projector,
shipped drafts in data/drafts/default/) for measurement 5, whose size is set by --bench-prompts (per
task), --bench-tokens and --bench-tasks; the defaults (2 prompts x 5 tasks x T=0,1 x 128 tokens, seven
methods, plus the auto trees) are sized for about 5 minutes. `--skip-bench` runs 1-4 only.
Measurement 5 needs the default target's 98 MB GGUF on that machine, more than one device call
carries (64 MiB): scripts/gpu_payload.sh takes it there in three calls, and `--bench-only`
runs measurement 5 alone (results/gpu/README.md, run 5).

On a CPU, `--small` runs everything at a tiny shape (a 2-layer Llama, tiny:llava_next with random
drafts), which tests/test_gpu_script.py does so this script cannot rot. Without CUDA and without
--small it refuses to run: a CPU number must never stand in for a GPU figure.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core.decoding.decode import Clock, decode_vanilla, prefill          # noqa: E402
from vispec_core.targets.base import Target, TargetInputs                       # noqa: E402
from vispec_core.evaluation.tree_search import VERIFY_SIZES, verify_cost_curve  # noqa: E402

LLAMA_7B = dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=11008, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=1000, max_position_embeddings=4096)


class PlainLMTarget(Target):
    """A text-only Llama behind the Target interface, fed prompt token ids; no EOS (runs to max)."""

    family = "plain_lm"

    def __init__(self, model):
        super().__init__(model, None, model.model, model.lm_head, model.config, [])

    def prepare(self, ids, images=None) -> TargetInputs:
        ids = torch.as_tensor(ids, device=self.device).view(1, -1)
        return TargetInputs(ids, self.embed(ids), torch.arange(ids.shape[1], device=self.device).view(1, -1))


def copy_bandwidth(device, nbytes: int, repeats: int = 10) -> dict:
    x = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    y = torch.empty_like(x)
    clock, times = Clock(device), []
    for r in range(repeats + 1):
        clock.lap()
        y.copy_(x)
        if r:
            times.append(clock.lap())
    t = statistics.median(times)
    del x, y
    return {"bytes_copied": nbytes, "median_s": t, "bytes_per_s": 2 * nbytes / t,
            "note": "read + write bytes per second of a device-to-device copy"}


def build_llama(shape: dict, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, tie_word_embeddings=False)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    return model.eval().requires_grad_(False)


def vanilla_vs_floor(target, bandwidth: float, prompt_len: int, new_tokens: int, repeats: int) -> dict:
    weight_bytes = sum(p.numel() * p.element_size() for p in target.model.parameters())
    ids = torch.randint(0, target.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(0))
    inputs = target.prepare(ids)
    ours, hf = [], []
    decode_vanilla(target, inputs, 4)                                    # warm-up
    for _ in range(repeats):
        tokens, stats = decode_vanilla(target, inputs, new_tokens)
        assert len(tokens) == new_tokens
        ours.append(stats["decode_time_s"] / (new_tokens - 1))
    clock = Clock(target.device)
    gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
               attention_mask=torch.ones(1, prompt_len, dtype=torch.long, device=target.device))
    with torch.inference_mode():
        target.model.generate(inputs.input_ids, **dict(gen, max_new_tokens=4, min_new_tokens=4))
        for _ in range(repeats):
            clock.lap()
            target.model.generate(inputs.input_ids, **dict(gen, max_new_tokens=1, min_new_tokens=1))
            prefill_s = clock.lap()
            target.model.generate(inputs.input_ids, **gen)
            hf.append((clock.lap() - prefill_s) / (new_tokens - 1))
    floor = weight_bytes / bandwidth
    return {"weight_bytes": weight_bytes, "floor_token_s": floor, "prompt_tokens": prompt_len, "new_tokens": new_tokens,
            "ours_token_s": statistics.median(ours), "ours_runs_token_s": ours,
            "hf_generate_token_s": statistics.median(hf), "hf_runs_token_s": hf,
            "ours_over_floor": statistics.median(ours) / floor, "hf_over_floor": statistics.median(hf) / floor,
            "note": "per-token decode time (prefill excluded; HF: generate(n) minus generate(1), per extra token)"}


def speculative_cycle(target, vanilla_token_s: float | None, prompt_len: int, new_tokens: int) -> dict:
    """One draft-verify cycle of our loop on this model (random EAGLE-2 draft, paper tree 30/3/8, T=0):
    the time of drafting the tree and of verifying + committing it, per cycle. A random draft accepts
    ~nothing, so this is the cycle's cost; the speedup a trained draft would give at acceptance tau is
    (1 + tau) x vanilla time per token / cycle time."""
    from vispec_core.decoding.decode import decode_speculative
    from vispec_core.drafts import load_draft

    draft = load_draft("random:eagle2", target)
    ids = torch.randint(0, target.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(2))
    inputs = target.prepare(ids)
    decode_speculative(target, draft, inputs, 4)                         # warm-up
    _, st = decode_speculative(target, draft, inputs, new_tokens)
    cycle = st["decode_time_s"] / st["cycles"]
    out = {"tree": "30/3/8", "cycles": st["cycles"], "tau": st["tau"], "draft_s_per_cycle": st["draft_time_s"] / st["cycles"],
           "verify_s_per_cycle": st["verify_time_s"] / st["cycles"], "cycle_s": cycle}
    if vanilla_token_s:
        out["projected_speedup_at_tau"] = {str(t): (1 + t) * vanilla_token_s / cycle for t in (1.0, 2.0, 3.0)}
    return out


SYNC_AND_COPY_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                       "cudaMemcpyAsync")
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
HOST_READS = ("aten::_local_scalar_dense", "aten::item", "aten::nonzero")   # reads that make the host wait


def profile_cycle(target, prompt_len: int, cycles: int, text_path: Path) -> dict:
    """`cycles` draft-verify cycles of speculative_cycle's setting under torch.profiler, from the
    loop's first draft tree on (prefill and the draft's prompt pass left out). Counts are per cycle;
    cudaDeviceSynchronize includes the loop's two timing marks per cycle (Clock)."""
    import vispec_core.decoding.decode as decode
    from torch.profiler import ProfilerActivity, profile
    from vispec_core.drafts import load_draft

    draft = load_draft("random:eagle2", target)
    ids = torch.randint(0, target.vocab_size, (prompt_len,), generator=torch.Generator().manual_seed(2))
    inputs = target.prepare(ids)
    decode.decode_speculative(target, draft, inputs, 4)                         # warm-up
    cuda = target.device.type == "cuda"
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
    build, started = decode.draft_tree, []

    def draft_tree(*args, **kwargs):                 # the loop's first tree starts the recording
        if not started:
            started.append(prof.start())
        return build(*args, **kwargs)

    decode.draft_tree = draft_tree
    try:
        _, st = decode.decode_speculative(target, draft, inputs, cycles + 1)   # a random draft: 1 token a cycle
    finally:
        decode.draft_tree = build
        if started:
            prof.stop()
    n = st["cycles"]
    events = prof.key_averages()
    count = {e.key: e.count for e in events}
    device_us = lambda e: getattr(e, "self_device_time_total", 0)     # noqa: E731  (self CUDA time, in us)
    per_cycle = {k: count.get(k, 0) / n for k in SYNC_AND_COPY_CALLS + HOST_READS + ("aten::_assert_async",)}
    per_cycle["kernel_launches"] = sum(count.get(k, 0) for k in LAUNCH_CALLS) / n
    per_cycle["aten_ops_all_levels"] = sum(c for k, c in count.items() if k.startswith("aten::")) / n
    per_cycle.update({k: c / n for k, c in count.items() if k.startswith("Memcpy")})   # device-side copies by kind

    def top(key):
        rows = sorted(events, key=key, reverse=True)[:25]
        return [{"op": e.key, "self_us_per_cycle": key(e) / n, "calls_per_cycle": e.count / n} for e in rows]

    by_device = top(device_us) if cuda else []
    by_cpu = top(lambda e: e.self_cpu_time_total)
    lines = [f"profile of {n} draft-verify cycles (random EAGLE-2 draft, tree 30/3/8, T=0) on "
             f"{torch.cuda.get_device_name(target.device) if cuda else 'cpu'}, torch {torch.__version__}",
             f"profiled decode time per cycle: {st['decode_time_s'] / n * 1e3:.2f} ms (profiler overhead included)", "",
             "per cycle (on a CPU, aten::item also counts torch._assert_async, a kernel on CUDA):"]
    lines += [f"  {k:40s} {v:10.2f}" for k, v in per_cycle.items()]
    for title, rows in ((f"top 25 ops by self {'CUDA' if cuda else 'device (none: CPU run)'} time", by_device),
                        ("top 25 ops by self CPU time", by_cpu)):
        lines += ["", title, f"  {'op':60s} {'self us/cycle':>14s} {'calls/cycle':>12s}"]
        lines += [f"  {r['op'][:60]:60s} {r['self_us_per_cycle']:14.1f} {r['calls_per_cycle']:12.2f}" for r in rows]
    text_path.write_text("\n".join(lines) + "\n")
    return {"cycles": n, "text": str(text_path), "per_cycle": per_cycle,
            "profiled_cycle_s": st["decode_time_s"] / n, "top_self_device": by_device[:10], "top_self_cpu": by_cpu[:10]}


def verify_curve(target, prefix: int, repeats: int) -> dict:
    ids = torch.randint(0, target.vocab_size, (prefix,), generator=torch.Generator().manual_seed(1))
    inputs = target.prepare(ids)
    cache, _ = prefill(target, inputs, prefix + max(VERIFY_SIZES) + 1)
    curve = verify_cost_curve(target, cache, VERIFY_SIZES, repeats)
    return {"prefix_tokens": prefix, "seconds": {str(n): s for n, s in curve.items()},
            "relative_to_one_token": {str(n): s / curve[1] for n, s in curve.items()}}


def bench_default(args, out: Path) -> dict:
    from vispec_core.__main__ import main as cli
    from vispec_core.evaluation.report import write_report

    raw = out / ("bench_small.jsonl" if args.small else "bench_default.jsonl")
    cmd = ["bench", "--target", "tiny:llava_next" if args.small else "default", "--out", str(raw),
           "--methods", "vanilla,hf,hf_prompt_lookup,prompt_lookup,medusa,eagle2,vispec", "--tasks", args.bench_tasks,
           "--temperature", args.bench_temperatures, "--n-prompts", str(args.bench_prompts),
           "--max-new-tokens", str(args.bench_tokens), "--drafts", "random" if args.small else args.drafts,
           "--tree", "paper" if args.small else "auto", "--calibration-tokens", "32"]
    if not args.small:
        cmd += ["--device", "cuda"]
    code = cli(cmd)
    if code:
        raise RuntimeError(f"bench exited with {code}: {' '.join(cmd)}")
    return {"raw": str(raw), "command": "python -m vispec_core " + " ".join(cmd),
            "written": [str(p) for p in write_report(raw, out)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/gpu")
    p.add_argument("--small", action="store_true", help="tiny shapes on whatever device is here (a self-test)")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--bench-only", action="store_true", help="measurement 5 alone (the default world's benchmark)")
    p.add_argument("--profile-cycle", action="store_true",
                   help="also profile ~10 draft-verify cycles (torch.profiler) to <out>/profile_cycle.txt")
    p.add_argument("--drafts", default="shipped", help="measurement 5's drafts: shipped, random or a folder")
    p.add_argument("--bench-tasks", default="all")
    p.add_argument("--bench-temperatures", default="0,1")
    p.add_argument("--bench-prompts", type=int, default=2)
    p.add_argument("--bench-tokens", type=int, default=128)
    args = p.parse_args(argv)
    if not args.small and not torch.cuda.is_available():
        print("error: no CUDA device here; this script measures GPU figures only (use --small for the CPU "
              "self-test).", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"small": args.small, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = out / ("gpu_check_small.json" if args.small else "gpu_check.json")

    def phase(name, fn):
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:                 # record it, keep measuring the rest
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["phase_s"] = time.perf_counter() - t0
        path.write_text(json.dumps(report, indent=1))
        print(f"{name}: {json.dumps(report[name])[:400]}", file=sys.stderr, flush=True)

    if args.bench_only:
        phase("bench", lambda: bench_default(args, out))
        return _finish(report, path)
    phase("bandwidth", lambda: copy_bandwidth(device, (64 << 20) if args.small else (4 << 30)))
    shape = SMALL if args.small else LLAMA_7B
    target = None

    def load():
        nonlocal target
        t0 = time.perf_counter()
        target = PlainLMTarget(build_llama(shape, device, torch.bfloat16))
        return {"config": shape, "dtype": "bfloat16", "weights": "random (seed 0)", "build_s": time.perf_counter() - t0}

    phase("model", load)
    if target is not None and "error" not in report["bandwidth"]:
        phase("vanilla_vs_floor", lambda: vanilla_vs_floor(target, report["bandwidth"]["bytes_per_s"],
                                                           64 if args.small else 512, 8 if args.small else 128,
                                                           2 if args.small else 3))
    if target is not None:
        phase("speculative_cycle", lambda: speculative_cycle(
            target, report.get("vanilla_vs_floor", {}).get("ours_token_s"), 64 if args.small else 512,
            8 if args.small else 64))
        phase("verify_curve", lambda: verify_curve(target, 64 if args.small else 1024, 2 if args.small else 10))
        if args.profile_cycle:
            phase("profile_cycle", lambda: profile_cycle(
                target, 64 if args.small else 512, 10,
                out / ("profile_cycle_small.txt" if args.small else "profile_cycle.txt")))
        target = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.skip_bench:
        phase("bench", lambda: bench_default(args, out))
    return _finish(report, path)


def _finish(report: dict, path: Path) -> int:
    failed = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    print(json.dumps({"written": str(path), "failed_phases": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
