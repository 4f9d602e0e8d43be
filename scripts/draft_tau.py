"""Compare drafts by acceptance alone, without timing: tau (accepted draft tokens per cycle) that each
draft would reach with given trees on held-out prompts, replayed from one greedy (or sampled) walk of
the target per prompt (tree_search.calibrate + estimate_tau; exact at T=0, unbiased at T>0).

    python scripts/draft_tau.py --drafts vispec,~/.cache/vispec/runs/default5/vispec_s2/draft \\
        --trees 4/2/2,30/3/8 --tasks all --n-prompts 2 --tokens 192

A draft is anything load_draft takes (a shipped kind or a saved folder). The prompts are the
benchmark's own (tasks.task_prompts, held out from every training set), so the figures sit beside
its measured tau. Needs no idle machine: nothing is timed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core import load_draft, load_target                                     # noqa: E402
from vispec_core.data.tasks import parse_tasks, task_prompts                        # noqa: E402
from vispec_core.decoding.decode import max_tree_depth                              # noqa: E402
from vispec_core.evaluation.tree_search import calibrate, estimate_tau, parse_tree  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="default")
    p.add_argument("--projector", default=None, help="the default target with this projector checkpoint instead")
    p.add_argument("--drafts", required=True, help="comma-separated load_draft specs")
    p.add_argument("--trees", default="4/2/2,30/3/8", help="comma-separated total_tokens/depth/top_k")
    p.add_argument("--tasks", default="all")
    p.add_argument("--n-prompts", type=int, default=2)
    p.add_argument("--tokens", type=int, default=192)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.projector:
        from vispec_core.targets.default_vlm import load_default_target
        if a.target != "default":
            p.error("--projector applies to --target default only")
        target = load_default_target(projector=a.projector)
    else:
        target = load_target(a.target)
    trees = [parse_tree(t) for t in a.trees.split(",")]
    prompts = [q for k in parse_tasks(a.tasks) for q in task_prompts(k, a.n_prompts, a.seed)]
    rows = []
    for spec in a.drafts.split(","):
        draft = load_draft(str(Path(spec).expanduser()) if "/" in spec else spec, target=target)
        cal = calibrate(target, draft, prompts, a.tokens, depths=sorted({t.depth for t in trees}),
                        top_ks=sorted({t.top_k for t in trees}), max_total=max(t.total_tokens for t in trees),
                        temperature=a.temperature, seed=a.seed)
        limit = max_tree_depth(draft)
        for tree in trees:
            if limit is not None and tree.depth > limit:
                print(f"{spec}  {tree.label}: deeper than this draft builds (Medusa: heads - 1), skipped")
                continue
            tau, per_prompt = estimate_tau(cal, tree)
            rows.append(dict(draft=spec, tree=tree.label, tau=tau, cycles=sum(map(len, per_prompt)),
                             prompt_taus=[sum(x) / len(x) if x else 0.0 for x in per_prompt]))
            print(f"{spec}  {tree.label}: tau {tau:.3f} over {rows[-1]['cycles']} cycles", flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(dict(target=a.target, projector=a.projector,
                                               target_weights=target.weights_id(), temperature=a.temperature, tokens=a.tokens,
                                               prompts=[q.prompt_id for q in prompts], rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
