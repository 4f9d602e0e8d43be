"""Command line: `python -m vispec_core generate|synthesize|train|bench ...` (--json for machine-readable output)."""
from __future__ import annotations

import argparse
import json
import sys


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="default", help="'default', 'tiny:llava_next', 'tiny:qwen2_5_vl' or a checkpoint folder")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: the target's own)")


def add_tree_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", default="auto",
                   help="'auto' (default: the tree predicted fastest for this target, draft, device and temperature, "
                        "searched once and cached; no draft where none wins), 'paper' (30/3/8) or TOTAL/DEPTH/TOP_K")
    p.add_argument("--total-tokens", type=int, default=None, help="tree size, root included (paper: 30); sets the tree")
    p.add_argument("--depth", type=int, default=None,
                   help="expansions after the root pass; a cycle accepts up to depth + 1 draft tokens (paper: 3)")
    p.add_argument("--top-k", type=int, default=None, help="children per expanded node (paper: 8)")


def cmd_generate(args) -> int:
    from . import generate, load_draft, load_target

    target = load_target(args.target, device=args.device, dtype=args.dtype)
    draft = load_draft(args.draft, target=target) if args.draft else None
    gen = generate(target, args.prompt, images=args.image, draft=draft, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, seed=args.seed, top_p=args.top_p,
                   total_tokens=args.total_tokens, depth=args.depth, top_k=args.top_k, tree=args.tree)
    if args.json:
        print(json.dumps({"text": gen.text, "token_ids": gen.token_ids, "prompt_ids": gen.prompt_ids,
                          "stats": gen.stats}))
    else:
        print(gen.text)
        s = gen.stats
        tree = f", tree {s['tree']} ({s['tree_source']})" if s.get("tree") else ""
        if s.get("tree_choice") and not s["tree_choice"]["tree"]:
            tree = (f"; decoded without the draft: no tree predicted to beat it here (best {s['tree_choice']['best']}, "
                    f"{s['tree_choice']['predicted_speedup']:.2f}x)")
        print(f"\n[{s['method']}] {s['new_tokens']} tokens in {s['wall_time_s']:.2f} s "
              f"({s['tokens_per_s']:.1f} tokens/s), tau {s['tau']:.2f}{tree}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vispec_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="answer a prompt about images, optionally with a draft")
    add_target_args(g)
    g.add_argument("--prompt", required=True, help="the user prompt; '<image>' marks where each image goes")
    g.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    g.add_argument("--draft", default=None, help="'vispec', 'eagle2', 'medusa', 'prompt_lookup', 'random:<kind>' or a draft folder; none = plain decoding")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    add_tree_args(g)
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=cmd_generate)

    from .evaluation.bench import add_bench_parser
    from .data.synthesis import add_synthesize_parser
    from .training.trainer import add_train_arguments

    add_synthesize_parser(sub)
    add_train_arguments(sub.add_parser("train", help="train a draft (stage 1 text-only, stage 2 multimodal)"))
    add_bench_parser(sub, add_target_args)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
