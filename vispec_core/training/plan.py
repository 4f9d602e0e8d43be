"""The paper's training plan as data: which drafts are trained on what (Sec. 5.1, Tables 1-2) and
where they are saved; how a stage-2 run starts from a stage-1 draft and how a trained draft is shipped.
Notebook 03 walks these lists (evaluation/experiments.py holds the benchmark runs that measure them).

Training data names:
  text    stage 1: text-only dialogue answered by the target (the stand-in for ShareGPT)
  synth   stage 2: the multimodal source with rewritten prompts, answered by the target (sampled)
  plain   stage 2: the same images with the source's own short answers, no target generation (the
          stand-in for the LLaVA-pretrain LCS captions the paper's baselines were fine-tuned on)

Saved drafts: the three main ones where `load_draft("<kind>", target)` finds them
(data/drafts/<family>/<kind>/), ablation variants under data/drafts/<family>/ablations/<name>/<kind>/,
a folder that `bench --drafts` takes directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..drafts import shipped_root


@dataclass(frozen=True)
class DraftRun:
    name: str                     # "vispec", "eagle2", "medusa" or "ablations/<variant>"
    kind: str
    data: str                     # stage-2 data: "synth" | "plain"
    options: dict = field(default_factory=dict)     # DraftConfig overrides (num_compressed, use_compression, ...)
    table: str = "main"           # main | table1 | table2
    label: str = ""               # its row in the paper's table


def training_plan(baseline_data: str = "plain", compressed_counts=(1, 4, 16, 64)) -> list[DraftRun]:
    """Every draft of the paper: the three methods, then Table 1's counts and Table 2's steps.
    Rows that are the main drafts themselves (Table 1's count 1, Table 2's baseline and last step)
    are not trained twice: `ablation_rows` maps them back."""
    if baseline_data not in ("plain", "synth"):
        raise ValueError(f"baseline_data must be 'plain' (the paper's setting) or 'synth', got {baseline_data!r}.")
    plan = [DraftRun("vispec", "vispec", "synth", label="ViSpec"),
            DraftRun("eagle2", "eagle2", baseline_data, label="EAGLE-2"),
            DraftRun("medusa", "medusa", baseline_data, label="Medusa")]
    plan += [DraftRun(f"ablations/compressed_{n}", "vispec", "synth", {"num_compressed": n}, "table1", str(n))
             for n in compressed_counts if n != 1]
    plan += [DraftRun("ablations/compression", "vispec", baseline_data, {"use_global_injection": False}, "table2",
                      "+image embedding compression"),
             DraftRun("ablations/compression_global", "vispec", baseline_data, {}, "table2", "+global visual injection")]
    return plan


def ablation_rows(plan: list[DraftRun]) -> dict[str, dict[str, str]]:
    """{table: {row label: draft run name}} including the rows taken from the main drafts."""
    rows = {"table1": {"1": "vispec"}, "table2": {"baseline": "eagle2"}}
    for r in plan:
        if r.table != "main":
            rows[r.table][r.label] = r.name
    rows["table2"]["+dataset generation"] = "vispec"
    order = ("baseline", "+image embedding compression", "+global visual injection", "+dataset generation")
    rows["table2"] = {k: rows["table2"][k] for k in order if k in rows["table2"]}
    rows["table1"] = dict(sorted(rows["table1"].items(), key=lambda kv: int(kv[0])))
    return rows


def draft_dir(family: str, run: DraftRun | str, root: Path | None = None) -> Path:
    """Where a trained draft is saved: data/drafts/<family>/<kind>/ or .../ablations/<name>/<kind>/."""
    name = run if isinstance(run, str) else run.name
    kind = name if "/" not in name else (run.kind if not isinstance(run, str) else "vispec")
    root = shipped_root() if root is None else root
    return Path(root) / family / name if "/" not in name else Path(root) / family / name / kind


def init_from(stage1: str | Path, target, out: Path, kind: str, **options) -> Path:
    """A fresh draft with `options` that takes every weight of the stage-1 draft whose name and shape
    match (the adaptor of another compressed-token count starts fresh): the --init of a stage-2 run."""
    from ..drafts import load_draft, variant_of

    done = load_draft(str(stage1), target)
    if done.config.kind != kind:
        raise ValueError(f"{stage1} holds a {done.config.kind} draft, not a {kind} one.")
    variant_of(done, target, **options).save_pretrained(out)
    return Path(out)


def ship_draft(final: str | Path, target, dest: str | Path) -> Path:
    """Save a trained draft where `load_draft` finds it, in the target's dtype (bf16 for the default
    target: half the bytes of the fp32 training copy), replacing what was there."""
    import shutil

    from ..drafts import load_draft

    draft = load_draft(str(final), target)
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    draft.save_pretrained(dest)
    return dest
