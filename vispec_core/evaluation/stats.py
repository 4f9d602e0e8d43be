"""How sure a benchmark's figures are: means over prompts, a paired bootstrap, and the verdict it decides.

Each figure of a table is a mean over the prompts of a task, per variant and temperature; the task
'all' is the mean of the tasks' means, as the paper's 'Avg' is. Its 95% interval comes from drawing
each task's prompts again with replacement, `N_RESAMPLES` times. The draw depends only on the task,
the temperature and the number of its prompts (taken in the order of their ids), so every method, and
every benchmark file over the same prompts, is drawn alike: a difference between two methods keeps its
pairing by prompt.

A claim's rule is applied to the measured figures and to each resample: "reproduced" where it holds in
at least 97.5% of the resamples (the one-sided 95% interval of what it compares lies on the claim's
side), "not reproduced" where it holds in at most 2.5%, "inconclusive" in between: the noise decides.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd

N_RESAMPLES = 1000
LEVEL = 0.95
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
GROUP = ["variant", "temperature"]
MEANS = {"tau": "mean_tau", "speedup": "mean_speedup", "decode_speedup": "mean_decode_speedup",
         "new_tokens": "mean_new_tokens"}


def task_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant, temperature and task: prompts and the means of tau, speedup, decode speedup and new
    tokens over the prompts; then per variant and temperature the row 'all', the mean of the task rows."""
    cols = [c for c in MEANS if c in runs.columns]
    keep = [c for c in ("method", "tree") if c in runs.columns]
    g = runs.groupby(GROUP + ["task"], sort=False)
    per_task = g[cols].mean().rename(columns=MEANS)
    per_task["prompts"] = g.size()
    per_task = per_task.join(g[keep].first()).reset_index()
    a = per_task.groupby(GROUP, sort=False)
    avg = a[[MEANS[c] for c in cols]].mean().join(a["prompts"].sum()).join(a[keep].first()).reset_index()
    avg["task"] = "all"
    return pd.concat([per_task, avg], ignore_index=True)[GROUP + keep + ["task", "prompts"] + [MEANS[c] for c in cols]]


def _draw(task: str, temperature: float, n: int, seed: int, replicate: int) -> np.ndarray:
    rng = np.random.default_rng([seed, replicate, zlib.crc32(str(task).encode()), int(round(float(temperature) * 1000))])
    return rng.integers(0, n, n)


def resample(runs: pd.DataFrame, seed: int = 0, replicate: int = 0) -> pd.DataFrame:
    """`runs` with each (task, temperature)'s prompts drawn again with replacement (every variant's rows of
    a drawn prompt come along, as often as it is drawn)."""
    parts = []
    for (task, t), g in runs.groupby(["task", "temperature"], sort=False):
        ids = np.array(sorted(set(g["prompt_id"])))
        rows = {pid: gp.index.to_numpy() for pid, gp in g.groupby("prompt_id")}
        parts += [rows[ids[i]] for i in _draw(task, t, len(ids), seed, replicate)]
    return runs.loc[np.concatenate(parts)] if parts else runs.iloc[:0]


def _resampled_means(runs: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, list[str], np.ndarray]:
    """task_means(runs), its mean columns, and those columns on `n` resamples: [n, rows, columns], the
    same numbers as `task_means(resample(runs, seed, r))` row for row, from counts (no frame per resample)."""
    point = task_means(runs)
    cols = [MEANS[c] for c in MEANS if c in runs.columns]
    is_task = (point["task"] != "all").to_numpy()
    task_rows = {k: i for i, k in enumerate(zip(*(point.loc[is_task, c] for c in GROUP + ["task"])))}
    code = np.array([task_rows[k] for k in zip(*(runs[c] for c in GROUP + ["task"]))])
    vals = runs[[c for c in MEANS if c in runs.columns]].to_numpy(float)
    known, vals = ~np.isnan(vals), np.nan_to_num(vals)
    of_avg = [np.flatnonzero(is_task & (point[GROUP[0]] == v).to_numpy() & (point[GROUP[1]] == t).to_numpy())
              for v, t in zip(point.loc[~is_task, GROUP[0]], point.loc[~is_task, GROUP[1]])]
    position = pd.Series(np.arange(len(runs)), index=runs.index)
    groups = []
    for (task, t), g in runs.groupby(["task", "temperature"], sort=False):
        ids = sorted(set(g["prompt_id"]))
        rows = {pid: position[gp.index].to_numpy() for pid, gp in g.groupby("prompt_id")}
        groups.append((task, t, [rows[i] for i in ids]))
    n_tasks = int(is_task.sum())
    out = np.full((n, len(point), len(cols)), np.nan)
    for r in range(n):
        pos = np.concatenate([rows[i] for task, t, rows in groups for i in _draw(task, t, len(rows), seed, r)])
        c = code[pos]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.stack([np.bincount(c, weights=vals[pos, j], minlength=n_tasks)
                              / np.bincount(c, weights=known[pos, j], minlength=n_tasks) for j in range(len(cols))], 1)
            out[r, is_task] = means
            out[r, ~is_task] = [np.nanmean(means[rows], 0) if len(rows) else np.nan for rows in of_avg]
    return point, cols, out


def replicates(runs: pd.DataFrame, n: int = N_RESAMPLES, seed: int = 0, summary=None) -> list[pd.DataFrame]:
    """`summary` of `n` resamples of `runs` (default: `task_means`, from counts)."""
    if summary is not None:
        return [summary(resample(runs, seed, r)) for r in range(n)]
    point, cols, values = _resampled_means(runs, n, seed)
    return [point.assign(**{c: v[:, j] for j, c in enumerate(cols)}) for v in values]


def with_intervals(runs: pd.DataFrame, n: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL,
                   cols=("mean_tau", "mean_speedup")) -> pd.DataFrame:
    """task_means(runs) with `<col>_lo` and `<col>_hi` after each of `cols`: the percentile interval over
    `n` paired resamples."""
    point, names, values = _resampled_means(runs, n, seed)
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2], axis=0)
    order = []
    for c in point.columns:
        order.append(c)
        if c in cols:
            j = names.index(c)
            point[f"{c}_lo"], point[f"{c}_hi"] = lo[:, j], hi[:, j]
            order += [f"{c}_lo", f"{c}_hi"]
    return point[order]


def decide(holds: Sequence[bool], level: float = LEVEL) -> str:
    """The verdict from whether a rule held in each resample (see the module's docstring)."""
    if len(holds) == 0:
        raise ValueError("decide needs at least one resample")
    share, tail = float(np.mean(holds)), (1 - level) / 2
    return REPRODUCED if share >= 1 - tail else NOT_REPRODUCED if share <= tail else INCONCLUSIVE
