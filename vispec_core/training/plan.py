"""The paper's experiments as data: which drafts are trained on what (Sec. 5.1, Tables 1-2), where
they are saved, and the benchmark runs that measure them. Notebooks 03 and 04 walk these lists.

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

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .drafts import SHIPPED


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


def draft_dir(family: str, run: DraftRun | str, root: Path = SHIPPED) -> Path:
    """Where a trained draft is saved: data/drafts/<family>/<kind>/ or .../ablations/<name>/<kind>/."""
    name = run if isinstance(run, str) else run.name
    kind = name if "/" not in name else (run.kind if not isinstance(run, str) else "vispec")
    return Path(root) / family / name if "/" not in name else Path(root) / family / name / kind


def bench_drafts_folder(family: str, name: str, root: Path = SHIPPED) -> str:
    """What `bench --drafts` takes for a run: 'shipped' for the main drafts, else the folder above <kind>/."""
    return "shipped" if "/" not in name else str(Path(root) / family / name)


def init_from(stage1: str | Path, target, out: Path, kind: str, **options) -> Path:
    """A fresh draft with `options` that takes every weight of the stage-1 draft whose name and shape
    match (the adaptor of another compressed-token count starts fresh): the --init of a stage-2 run."""
    from .drafts import load_draft, variant_of

    done = load_draft(str(stage1), target)
    if done.config.kind != kind:
        raise ValueError(f"{stage1} holds a {done.config.kind} draft, not a {kind} one.")
    variant_of(done, target, **options).save_pretrained(out)
    return Path(out)


def ship_draft(final: str | Path, target, dest: str | Path) -> Path:
    """Save a trained draft where `load_draft` finds it, in the target's dtype (bf16 for the default
    target: half the bytes of the fp32 training copy), replacing what was there."""
    import shutil

    from .drafts import load_draft

    draft = load_draft(str(final), target)
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    draft.save_pretrained(dest)
    return dest


def export_train_log(run_out: str | Path, logs_dir: str | Path, name: str, stage: int, notebook: str) -> Path:
    """A training run's log (run_out/log.jsonl) as results/raw/train_logs/<name>__stage<k>.jsonl, the
    records notebook 03 reads, with the run's config in the metadata."""
    import json

    from .records import write_jsonl
    from .train import read_log

    config = json.loads(Path(run_out, "train_config.json").read_text())
    return write_jsonl(Path(logs_dir) / f"{name.replace('/', '--')}__stage{stage}.jsonl", read_log(run_out),
                       notebook=notebook, run=name, kind=config["kind"], stage=stage, config=config)


# -- the "plain" stage-2 data: the source's own short answers, no generation ------------------------
def write_plain(target, target_spec: str, n: int, out, seed: int = 0, shard_size: int = 64) -> Path:
    """Scenes with their ground-truth caption (`scenes.describe`) or one short question/answer pair
    (`scenes.questions`), prompts not rewritten, answers not generated: the "dataset generation off"
    data of Table 2 and the paper's baselines. Same scene draw as data.SceneSource; same format as
    data.synthesize, so `train` reads it. Short answers are the point: that is what the paper's
    baselines had."""
    from . import scenes
    from .data import CAPTION, Settings, _png, check_manifest, shard_path, write_shard
    from .tasks import HELD_OUT_SCENE_SEED

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


# -- benchmark runs ----------------------------------------------------------------------------------
def bench_args(target: str, out, methods=("vanilla", "medusa", "eagle2", "vispec"), tasks="all", temperatures=(0, 1),
               n_prompts: int = 5, max_new_tokens: int = 256, drafts: str = "shipped", dtype=None, device=None,
               seed: int = 0, threads: int | None = None, tree: str | None = None) -> argparse.Namespace:
    """The arguments `bench.run_bench` takes, without going through the command line."""
    return argparse.Namespace(target=target, device=device, dtype=dtype, methods=",".join(methods),
                              tasks=tasks if isinstance(tasks, str) else ",".join(tasks),
                              temperature=",".join(f"{t:g}" for t in temperatures), top_p=1.0, n_prompts=n_prompts,
                              max_new_tokens=max_new_tokens, seed=seed, tree=tree, drafts=drafts,
                              calibration_prompts=1, calibration_tokens=64, threads=threads, out=str(out), json=False)


def ablation_table(rows: dict[str, str], summaries: dict, plan: list[DraftRun], tasks) -> "pd.DataFrame":
    """{row label: run name} + {run name: report summary} -> label, task, tau, speedup at T=0 on `tasks`
    (the EAGLE-2 baseline row reads the eagle2 method, every other row vispec); runs not measured are left out."""
    import pandas as pd

    kinds = {r.name: r.kind for r in plan} | {"vispec": "vispec", "eagle2": "eagle2", "medusa": "medusa"}
    out = []
    for label, name in rows.items():
        s = summaries.get(name)
        if s is None:
            continue
        s = s[(s["method"] == kinds[name]) & (s["variant"] == kinds[name]) & (s["temperature"] == 0)
              & s["task"].isin(list(tasks))]
        out += [{"label": label, "run": name, "task": r["task"], "tau": r["median_tau"], "speedup": r["median_speedup"]}
                for _, r in s.iterrows()]
    return pd.DataFrame(out, columns=["label", "run", "task", "tau", "speedup"])


def prompt_rewrites(source: str, n: int, seed: int = 0) -> list[dict]:
    """The first n prompts of a synthesis source: the dataset's own request beside the rewritten one
    (the paper's long-answer suffixes, data.LONG_ANSWER / data.EXPLAIN, or a caption request)."""
    from .data import CAPTION, EXPLAIN, LONG_ANSWER, prompt_source

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


def family_of(target_spec: str) -> str:
    """The target family a spec loads, without loading it: 'default', the tiny family, or the
    checkpoint's model_type (the folder name under data/drafts/)."""
    import json

    if target_spec == "default":
        return "default"
    if target_spec.startswith("tiny:"):
        return target_spec.split(":")[1]
    config = Path(target_spec) / "config.json"
    if not config.is_file():
        raise ValueError(f"Unknown target {target_spec!r}: 'default', 'tiny:<family>' or a checkpoint folder.")
    return json.loads(config.read_text())["model_type"]


def bench_drafts_spec(drafts: str, family: str) -> str:
    """`bench --drafts` for the main drafts: 'shipped' / 'random' as they are, or a root laid out like
    data/drafts (<root>/<family>/<kind>/) -> <root>/<family>."""
    return drafts if drafts in ("shipped", "random") else str(Path(drafts) / family)
