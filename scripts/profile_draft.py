"""The draft's share of a speculative cycle, with its weights prepacked (packed.linear) and without.

    python scripts/profile_draft.py --draft vispec --tree 4/1/8 --tokens 96 --threads 2

The target runs on prepacked weights in both; only the draft's are switched (VISPEC_PREPACK is read
at every draft matmul), run after run, interleaved, so both see the same machine. Per cycle: the
draft's tree building (`draft_s`), the target's verification plus the draft's extend over the
accepted tokens (`verify_s`, as decode.py clocks them), and the whole decode per token. The greedy
tokens of every run must be equal (packing is bitwise). Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core import load_draft, load_target             # noqa: E402
from vispec_core.decoding.decode import decode_speculative  # noqa: E402
from vispec_core.data.tasks import task_prompts             # noqa: E402
from vispec_core.cpu.packed import is_packed                # noqa: E402
from vispec_core.evaluation.tree_search import parse_tree   # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="default")
    p.add_argument("--draft", default="vispec")
    p.add_argument("--tree", default="4/1/8", help="total_tokens/depth/top_k")
    p.add_argument("--tokens", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default=None, help="the target's (and so the draft's) dtype; default: the target's own")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    tree = parse_tree(a.tree)
    target = load_target(a.target, dtype=a.dtype)
    draft = load_draft(a.draft, target=target)
    prompt = task_prompts("caption", 1, seed=0)[0]
    inputs = target.prepare(prompt.prompt, prompt.images)

    rows, tokens, before = {"packed": [], "not packed": []}, set(), os.environ.get("VISPEC_PREPACK")
    for r in range(a.repeats + 1):                      # the first round warms up, not counted
        for mode, env in (("packed", "auto"), ("not packed", "0")):
            os.environ["VISPEC_PREPACK"] = env
            out, stats = decode_speculative(target, draft, inputs, a.tokens, total_tokens=tree.total_tokens,
                                             depth=tree.depth, top_k=tree.top_k)
            tokens.add(tuple(out))
            if r:
                n, c = len(out), stats["cycles"]
                rows[mode].append(dict(draft_ms=1e3 * stats["draft_time_s"] / c, verify_ms=1e3 * stats["verify_time_s"] / c,
                                       decode_ms_per_token=1e3 * stats["decode_time_s"] / n))
    if before is None:
        os.environ.pop("VISPEC_PREPACK")
    else:
        os.environ["VISPEC_PREPACK"] = before
    if not any(is_packed(w) for n, w in draft.named_parameters() if n.endswith("weight") and w.dim() == 2):
        raise SystemExit(f"The draft's weights were never packed ({target.dtype} on {target.device}): nothing to compare.")
    if len(tokens) != 1:
        raise SystemExit("The runs emitted different tokens: packing must be bitwise; report this as a bug.")
    result = dict(target=a.target, draft=a.draft, tree=a.tree, tokens=a.tokens, threads=a.threads,
                  median={m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in rows.items()},
                  runs=rows)
    for m, v in result["median"].items():
        print(f"{m:>11}: draft {v['draft_ms']:.2f} ms/cycle, verify+extend {v['verify_ms']:.2f} ms/cycle, "
              f"{v['decode_ms_per_token']:.2f} ms/token")
    ratio = result["median"]["not packed"]["decode_ms_per_token"] / result["median"]["packed"]["decode_ms_per_token"]
    print(f"decode speed, packed draft / unpacked: {ratio:.3f}x")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
