"""Raw benchmark records (JSONL) -> tables (CSV + Markdown) and figures (PNG). Nothing but the records.

    python -m vispec_core.evaluation.report results/raw/default.jsonl [--results results]

Speedup is paired per prompt: vanilla's time per token / the method's time per token on the same
(task, prompt, temperature), wall time from prompt preparation to the last token (decode speedup:
the same with the time after the first token only, what the tree search predicts). tau is the mean
number of accepted draft tokens per cycle (bonus token not counted), one value per run. Tables give
means over prompts with 95% bootstrap intervals (`stats`; the task 'all' is the mean of the task
means, as the paper's 'Avg'), the median speedup and tokens/s.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import stats
from .records import latest_runs, read_records
from .textstats import repetition
from .tree_choice import decide
from .tree_search import ceiling, tau_needed

KEY = ["task", "prompt_id", "temperature"]
WANTED_SPEEDUP = 2.0        # the trees table's `tau_for_2x`: about the paper's speedups


def load_records(path) -> list[dict]:
    records = read_records(Path(path))
    if not records:
        raise ValueError(f"No benchmark records in {path}.")
    return records


def paired(records: list[dict]) -> pd.DataFrame:
    """One row per run with `speedup` against vanilla on the same task, prompt and temperature (NaN if
    vanilla did not run there)."""
    runs = pd.DataFrame(latest_runs(records))
    if runs.empty:
        raise ValueError("No run records to report on.")
    runs["tree"] = runs["tree"].map(lambda t: t["label"] if isinstance(t, dict) else "")
    runs["decode_tpt"] = runs["decode_time_s"] / (runs["new_tokens"] - 1).clip(lower=1)   # after the first token
    # loops flatter every drafting method: how repetitive the answer was, beside its speedup
    tokens = runs["tokens"] if "tokens" in runs else pd.Series([None] * len(runs), index=runs.index)
    runs["repetition_4"] = tokens.map(lambda t: repetition(t, 4) if isinstance(t, list) else np.nan)
    vanilla = runs[runs["method"] == "vanilla"][KEY + ["time_per_token_s", "decode_tpt", "new_tokens"]]
    vanilla = vanilla.rename(columns={"time_per_token_s": "vanilla_tpt", "decode_tpt": "vanilla_decode_tpt",
                                      "new_tokens": "vanilla_tokens"})
    runs = runs.merge(vanilla, on=KEY, how="left")
    runs["speedup"] = runs["vanilla_tpt"] / runs["time_per_token_s"]
    runs["decode_speedup"] = runs["vanilla_decode_tpt"] / runs["decode_tpt"]
    return runs


def _extras(g: pd.DataFrame) -> dict:
    s, exact = g["speedup"].dropna(), g["same_as_vanilla"].dropna()
    return {"median_speedup": s.median() if len(s) else np.nan, "tokens_per_s": g["tokens_per_s"].median(),
            "median_repetition_4": g["repetition_4"].median(),
            "same_as_vanilla": exact.astype(float).mean() if len(exact) else np.nan}


def summarise(records: list[dict], n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """Per variant, task and temperature (and the task 'all', the mean of the task means, as the paper's
    'Avg'): the means of tau and of the paired speedup over the prompts with their 95% bootstrap
    intervals (`stats`), the median speedup, tokens/s, repetition and exactness."""
    runs = paired(records)
    table = stats.with_intervals(runs, n_resamples, seed)
    extras = [{"variant": v, "temperature": t, "task": task, **_extras(g)}
              for (v, t), gv in runs.groupby(["variant", "temperature"], sort=False)
              for task, g in [*gv.groupby("task", sort=False), ("all", gv)]]
    df = table.merge(pd.DataFrame(extras), on=["variant", "temperature", "task"], how="left")
    order = {m: i for i, m in enumerate(["vanilla", "hf", "hf_prompt_lookup", "prompt_lookup", "medusa", "eagle2", "vispec"])}
    df["_m"] = df["method"].map(order)
    return df.sort_values(["temperature", "task", "_m", "variant"], kind="stable").drop(columns="_m").reset_index(drop=True)


def tree_table(records: list[dict], summary: pd.DataFrame, wanted: float = WANTED_SPEEDUP) -> pd.DataFrame:
    """--tree auto: each searched tree beside the paper's 30/3/8, predicted and measured (all tasks).
    A search calibrated at temperature T is set beside the runs at T (files from before searches
    recorded their temperature were calibrated at 0 and are set beside every temperature).
    `ceiling_speedup` is the tree's speedup with its longest path always accepted and `tau_for_<wanted>x` the
    tau its measured cycle needs for the wanted speedup (tree_search.ceiling, tau_needed)."""
    rows = []
    for r in (r for r in records if r.get("type") == "tree_search"):
        m, calibrated = r["method"], r.get("temperature")
        for which, name in (("chosen", f"{m}@auto"), ("paper", m)):
            c = r.get(which)
            if c is None:
                continue
            if which == "chosen" and decide(r) is None:      # no tree predicted to win: decoded without the draft
                c = dict(label="no draft", nodes=1, tau=0.0, speedup=1.0, depth=0, draft_s=0.0, extend_s=0.0,
                         verify_s=r["vanilla_token_s"])
            meas = summary[(summary["variant"] == name) & (summary["task"] == "all")]
            if calibrated is not None:
                meas = meas[meas["temperature"] == calibrated]
            for _, row in (meas.iterrows() if len(meas) else [(None, None)]):
                rows.append({"method": m, "tree": "auto" if which == "chosen" else "paper", "config": c["label"],
                             "nodes": c["nodes"], "calibrated_at": 0.0 if calibrated is None else calibrated,
                             "predicted_tau": c["tau"], "predicted_speedup": c["speedup"],
                             "ceiling_speedup": ceiling(c, r["vanilla_token_s"]),
                             f"tau_for_{wanted:g}x": tau_needed(c, r["vanilla_token_s"], wanted),
                             "temperature": None if row is None else row["temperature"],
                             "measured_tau": np.nan if row is None else row["mean_tau"],
                             "measured_speedup": np.nan if row is None else row["mean_speedup"],
                             "measured_decode_speedup": np.nan if row is None else row["mean_decode_speedup"]})
    return pd.DataFrame(rows)


def plot_length_vs_speedup(runs: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure      # no pyplot: a notebook's inline backend stays as it is

    spec = runs[(runs["method"] != "vanilla") & runs["speedup"].notna()]
    fig = Figure(figsize=(6 * max(spec["temperature"].nunique(), 1), 4.2))
    axes = fig.subplots(1, max(spec["temperature"].nunique(), 1), squeeze=False)
    colors = {v: f"C{i}" for i, v in enumerate(dict.fromkeys(spec["variant"]))}   # same colour in every panel
    for ax, (t, g) in zip(axes[0], spec.groupby("temperature")):
        for variant, gv in g.groupby("variant", sort=False):
            color = colors[variant]
            ax.scatter(gv["vanilla_tokens"], gv["speedup"], s=12, alpha=0.35, color=color)
            means = gv.groupby("task")[["vanilla_tokens", "speedup"]].mean()
            ax.scatter(means["vanilla_tokens"], means["speedup"], s=60, color=color, edgecolor="k", label=variant)
        ax.axhline(1.0, color="gray", lw=0.8, ls="--")
        ax.set(xlabel="output length (vanilla's new tokens)", ylabel="speedup vs vanilla (per token, wall)",
               title=f"temperature {t:g} (dots: prompts, big: task means)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_verify_cost(records: list[dict], path: Path) -> bool:
    from matplotlib.figure import Figure

    searches = [r for r in records if r.get("type") == "tree_search"]
    if not searches:
        return False
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for i, r in enumerate(searches):     # the target's cost, measured once per draft's search: repeats show noise
        curve = {int(n): s for n, s in r["verify_curve_s"].items()}
        ns = sorted(curve)
        ax.plot(ns, [curve[n] / curve[1] for n in ns], "o-", ms=3, color=f"C{i}", label=f"measured ({r['method']} search)")
        for which, marker in (("chosen", "*"), ("paper", "s")):
            c = r.get(which)
            if c:
                ax.scatter([c["nodes"]], [c["verify_s"] / curve[1]], marker=marker, s=90, color=f"C{i}",
                           edgecolor="k", label=f"{r['method']} {which} {c['label']}")
    ax.axhline(1.0, ls="--", color="gray", label="free verification (ideal GPU)")
    ax.set(xlabel="tokens verified in one forward", ylabel="time / one-token forward", title="verification cost")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def plot_predicted_vs_measured(trees: pd.DataFrame, path: Path) -> bool:
    """The tree search's calibrated predictions against the benchmark's measured speedups (all tasks)."""
    from matplotlib.figure import Figure

    trees = trees.dropna(subset=["measured_speedup"]) if len(trees) else trees
    if trees.empty:
        return False
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    markers = {"auto": "*", "paper": "s"}
    for i, (m, g) in enumerate(trees.groupby("method", sort=False)):
        for _, r in g.iterrows():
            ax.scatter(r["predicted_speedup"], r["measured_speedup"], marker=markers[r["tree"]], s=80, color=f"C{i}",
                       edgecolor="k", label=f"{m} {r['tree']}")
            ax.annotate(f"{r['config']} T={r['temperature']:g}", (r["predicted_speedup"], r["measured_speedup"]),
                        fontsize=6, xytext=(4, -8), textcoords="offset points")
    hi = max(trees["predicted_speedup"].max(), trees["measured_speedup"].max()) * 1.1
    ax.plot([0, hi], [0, hi], color="gray", lw=0.8, ls="--", label="predicted = measured")
    ax.axhline(1.0, color="gray", lw=0.5)
    handles, labels = ax.get_legend_handles_labels()
    keep = dict(zip(labels, handles))
    ax.legend(keep.values(), keep.keys(), fontsize=7)
    ax.set(xlabel="predicted speedup (tree search, calibrated)", ylabel="measured speedup (mean over prompts)",
           xlim=(0, hi), ylim=(0, hi), title="tree search: predicted against measured")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def write_report(raw_path, results_dir="results") -> list[Path]:
    """Write tables/<name>_summary.{csv,md}, tables/<name>_trees.{csv,md} and figures/<name>_*.png."""
    raw_path, results = Path(raw_path), Path(results_dir)
    name = raw_path.stem
    records = load_records(raw_path)
    summary = summarise(records)
    runs = paired(records)
    (results / "tables").mkdir(parents=True, exist_ok=True)
    (results / "figures").mkdir(parents=True, exist_ok=True)
    written = []
    headers = [r for r in records if r.get("type") == "header"]
    note = (f"Source: {raw_path} ({len(runs)} runs; target {headers[0]['config']['target']}, "
            f"{headers[0]['device']}, {headers[0]['dtype']}, commit {str(headers[0]['git_commit'])[:10]}).\n\n"
            if headers else "")
    trees = tree_table(records, summary)
    for label, df in (("summary", summary), ("trees", trees)):
        if df.empty:
            continue
        csv, md = results / "tables" / f"{name}_{label}.csv", results / "tables" / f"{name}_{label}.md"
        df.to_csv(csv, index=False)
        md.write_text(note + df.to_markdown(index=False, floatfmt=".3g") + "\n")
        written += [csv, md]
    fig = results / "figures" / f"{name}_length_vs_speedup.png"
    plot_length_vs_speedup(runs, fig)
    written.append(fig)
    fig = results / "figures" / f"{name}_verify_cost.png"
    if plot_verify_cost(records, fig):
        written.append(fig)
    fig = results / "figures" / f"{name}_predicted_vs_measured.png"
    if plot_predicted_vs_measured(trees, fig):
        written.append(fig)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vispec_core.evaluation.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw", nargs="+", help="JSONL files written by `python -m vispec_core bench`")
    p.add_argument("--results", default="results", help="folder that gets tables/ and figures/")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        written = [str(w) for raw in args.raw for w in write_report(raw, args.results)]
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"written": written}) if args.json else "\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
