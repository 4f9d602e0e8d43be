"""The benchmark runs of the paper's experiments: the arguments `bench.run_bench` takes, the drafts a
run measures, and the ablation tables (Tables 1-2) read from the reports' summaries."""
from __future__ import annotations

from pathlib import Path

from ..drafts import shipped_root
from . import stats
from .bench import BenchConfig
from ..training.plan import DraftRun


def bench_args(target: str, out, methods=("vanilla", "medusa", "eagle2", "vispec"), tasks="all", temperatures=(0, 1),
               n_prompts: int = 5, max_new_tokens: int = 256, drafts: str = "shipped", dtype=None, device=None,
               seed: int = 0, threads: int | None = None, tree: str | None = None) -> BenchConfig:
    """The `BenchConfig` of a notebook's benchmark: lists where the command line takes commas."""
    return BenchConfig(target=target, out=str(out), methods=",".join(methods),
                       tasks=tasks if isinstance(tasks, str) else ",".join(tasks),
                       temperature=",".join(f"{t:g}" for t in temperatures), n_prompts=n_prompts,
                       max_new_tokens=max_new_tokens, seed=seed, tree=tree, drafts=drafts, dtype=dtype, device=device,
                       threads=threads)


def ablation_table(rows: dict[str, str], summaries: dict, plan: list[DraftRun], tasks) -> "pd.DataFrame":
    """{row label: run name} + {run name: summary (report.summarise, or stats.task_means of a resample)}
    -> label, task, mean tau, mean speedup at T=0 on `tasks`
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
        out += [{"label": label, "run": name, "task": r["task"], "tau": r["mean_tau"], "speedup": r["mean_speedup"]}
                for _, r in s.iterrows()]
    return pd.DataFrame(out, columns=["label", "run", "task", "tau", "speedup"])


def ablation_resamples(rows: dict[str, str], runs: dict, plan: list[DraftRun], tasks, n: int = stats.N_RESAMPLES,
                       seed: int = 0) -> list["pd.DataFrame"]:
    """`ablation_table` on `n` paired bootstrap resamples of the runs ({run name: report.paired frame}):
    the benchmarks share their prompts, so each resample draws the same prompts in every file."""
    means = {name: stats.replicates(r, n, seed) for name, r in runs.items()}
    return [ablation_table(rows, {name: m[i] for name, m in means.items()}, plan, tasks) for i in range(n)]


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


def bench_drafts_folder(family: str, name: str, root: Path | None = None) -> str:
    """What `bench --drafts` takes for a run: 'shipped' for the main drafts, else the folder above <kind>/."""
    return "shipped" if "/" not in name else str(Path(root or shipped_root()) / family / name)


def export_train_log(run_out: str | Path, logs_dir: str | Path, name: str, stage: int, notebook: str) -> Path:
    """A training run's log (run_out/log.jsonl) as results/raw/train_logs/<name>__stage<k>.jsonl, the
    records notebook 03 reads, with the run's config in the metadata."""
    import json

    from ..training.trainer import read_log
    from .records import write_jsonl

    config = json.loads(Path(run_out, "train_config.json").read_text())
    return write_jsonl(Path(logs_dir) / f"{name.replace('/', '--')}__stage{stage}.jsonl", read_log(run_out),
                       notebook=notebook, run=name, kind=config["kind"], stage=stage, config=config)
