"""Does the tree search's offline tau estimate match real runs at T>0? Calibrate on sampled answers and
replay a tree (tree_search.calibrate + estimate_tau), then run real speculative decoding with the same
tree on the same prompts, for several seeds, and print both pooled over positions / cycles.

    python scripts/tree_estimate_check.py --draft eagle2 --tree 4/1/8 --temperature 1 --seeds 8

The estimate is unbiased when the runs are lossless (tree_search.py says why); the two figures differ
by sampling noise only, which shrinks with --seeds.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core import load_draft, load_target                                     # noqa: E402
from vispec_core.data.prompts import CALIBRATION_OFFSET                             # noqa: E402
from vispec_core.decoding.decode import decode_speculative                          # noqa: E402
from vispec_core.data.tasks import task_prompts                                     # noqa: E402
from vispec_core.evaluation.tree_search import calibrate, estimate_tau, parse_tree  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="default")
    p.add_argument("--draft", default="eagle2")
    p.add_argument("--tree", default="4/1/8")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--tasks", default="vqa,caption,text")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    target = load_target(a.target)
    draft = load_draft(a.draft, target=target)
    tree = parse_tree(a.tree)
    prompts = [q for k in a.tasks.split(",") for q in task_prompts(k, 1, 0, CALIBRATION_OFFSET)]
    estimated, real = [], []
    for seed in range(a.seeds):
        cal = calibrate(target, draft, prompts, a.tokens, depths=(tree.depth,), top_ks=(tree.top_k,),
                        max_total=max(tree.total_tokens, 2), temperature=a.temperature, seed=seed)
        for lengths in estimate_tau(cal, tree)[1]:
            estimated += lengths
        for i, q in enumerate(prompts):
            inputs = target.prepare(q.prompt, q.images)
            _, stats = decode_speculative(target, draft, inputs, a.tokens, temperature=a.temperature,
                                          total_tokens=tree.total_tokens, depth=tree.depth, top_k=tree.top_k,
                                          generator=torch.Generator().manual_seed(1000 * seed + i))
            real += stats["accept_lengths"]
        print(f"seeds 0-{seed}: estimate {sum(estimated) / len(estimated):.3f} ({len(estimated)} positions), "
              f"real runs {sum(real) / len(real):.3f} ({len(real)} cycles)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
