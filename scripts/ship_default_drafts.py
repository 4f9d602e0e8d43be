"""Copy the default world's trained drafts into data/drafts/default/ (bf16) and their training logs into
results/raw/train_logs/, where load_draft and notebook 03 find them. The runs are those of
data/drafts/default/README.md.

    python scripts/ship_default_drafts.py --runs ~/.cache/vispec/runs/default

A run folder without stage-1 runs (stage 2 continued from the shipped drafts) ships the stage-2 drafts and logs and leaves the shipped stage-1 logs as they are.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vispec_core import load_target                                                           # noqa: E402
from vispec_core.training.plan import draft_dir, export_train_log, ship_draft, training_plan  # noqa: E402

# plan name -> (stage-1 run, stage-2 run) folder names under --runs
RUNS = {"vispec": ("vispec_s1", "vispec_s2"), "eagle2": ("eagle2_s1", "eagle2_s2"),
        "medusa": ("medusa_s1", "medusa_s2"),
        "ablations/compression_global": (None, "abl_compression_global_s2"),
        "ablations/compression": (None, "abl_compression_s2")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", required=True, type=Path)
    p.add_argument("--logs", default="results/raw/train_logs", type=Path)
    a = p.parse_args(argv)
    target = load_target("default")
    plan = {r.name: r for r in training_plan()}
    total = 0
    for name, (stage1, stage2) in RUNS.items():
        if not (a.runs / stage2 / "draft" / "config.json").is_file():
            print(f"{name}: no finished run at {a.runs / stage2}, skipped")
            continue
        if stage1 and (a.runs / stage1).is_dir():
            export_train_log(a.runs / stage1, a.logs, name, 1, notebook="scripts/ship_default_drafts.py")
        elif stage1:      # stage 2 warm-started from a shipped draft: the stage-1 log already shipped stays
            print(f"{name}: no stage-1 run at {a.runs / stage1}; {a.logs} keeps the stage-1 log it has")
        export_train_log(a.runs / stage2, a.logs, name, 2, notebook="scripts/ship_default_drafts.py")
        dest = ship_draft(a.runs / stage2 / "draft", target, draft_dir("default", plan[name]))
        size = sum(f.stat().st_size for f in dest.iterdir())
        total += size
        print(f"{name}: {dest} ({size / 1e6:.1f} MB)")
    print(f"total {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
