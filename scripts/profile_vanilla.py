"""Where a vanilla decode step's time goes: ours against transformers' `generate`, same model, same prompt.

    python scripts/profile_vanilla.py --target default --tokens 64 --threads 2 --out results/default_vlm/profile_vanilla.json

Each decoder runs `--tokens` greedy tokens (prefill excluded: the profile starts after a first
token) under torch.profiler; operators are grouped into matmuls by weight shape (the LM head apart),
attention, and everything else, and reported in ms per generated token. The wall time per token of
each decoder is measured without the profiler, beside it: ours on prepacked weights
(cpu/packed.py), ours on the modules' own weights (VISPEC_PREPACK=0), transformers' generate.
Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from skimage import data as skdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core import load_target                     # noqa: E402
from vispec_core.decoding.decode import decode_vanilla  # noqa: E402


MATMULS = ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "mkldnn::_linear_pointwise")


def group(prof, tokens: int, target_vocab: int) -> dict:
    """ms per token of self CPU time per operator group."""
    out = defaultdict(float)
    for e in prof.key_averages(group_by_input_shape=True):
        name, shapes = e.key, str(e.input_shapes)
        if name in MATMULS and str(target_vocab) in shapes:
            key = "LM head matmul"
        elif name in MATMULS:
            key = "layer matmuls"
        elif "attention" in name or "softmax" in name or name == "aten::bmm":
            key = "attention"
        else:
            key = "other (norms, rotary, cache, sampling, Python glue)"
        out[key] += e.self_cpu_time_total / 1e3 / tokens
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="default")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    target = load_target(a.target)
    photo = Image.fromarray(skdata.astronaut())
    inputs = target.prepare("Provide a detailed description of the given image.", [photo])
    n = a.tokens
    hf_kw = dict(inputs_embeds=inputs.inputs_embeds, attention_mask=torch.ones(1, inputs.length, dtype=torch.long),
                 do_sample=False, pad_token_id=0, eos_token_id=None)
    lm = target.model if hasattr(target.model, "generate") else target.vlm.lm

    def ours(prepack: bool = True):
        os.environ["VISPEC_PREPACK"] = "auto" if prepack else "0"
        target.packed_weights(refresh=True)
        _, stats = decode_vanilla(target, inputs, n + 1)
        return stats["decode_time_s"] / n

    @torch.inference_mode()
    def hf():
        t0 = time.perf_counter()
        lm.generate(**hf_kw, max_new_tokens=1, min_new_tokens=1)
        t1 = time.perf_counter()
        lm.generate(**hf_kw, max_new_tokens=n + 1, min_new_tokens=n + 1)
        t2 = time.perf_counter()
        return ((t2 - t1) - (t1 - t0)) / n

    report = {"target": a.target, "tokens": n, "threads": a.threads, "prompt_tokens": inputs.length,
              "dtype": str(target.dtype), "torch": torch.__version__}
    for name, fn in (("ours", ours), ("ours_not_prepacked", lambda: ours(False)), ("hf_generate", hf)):
        fn()                                                   # warm-up
        times = sorted(fn() for _ in range(a.repeats))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            fn()
        report[name] = {"ms_per_token": 1e3 * times[len(times) // 2], "runs_ms": [1e3 * t for t in times],
                        "profile_ms_per_token": group(prof, n, target.vocab_size)}
    report["hf_over_ours"] = report["hf_generate"]["ms_per_token"] / report["ours"]["ms_per_token"]
    report["not_prepacked_over_ours"] = report["ours_not_prepacked"]["ms_per_token"] / report["ours"]["ms_per_token"]
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
