"""The paper's own numbers (transcribed in data/paper/, see its README) beside ours, and one explicit
rule per claim that turns measured numbers into a verdict: reproduced / not reproduced /
inconclusive / not measurable here. A rule never looks at the paper's numbers to decide; the paper's
numbers pass every rule (tests/test_paper.py), so each rule states what the paper shows, not a looser
wish. Measured numbers carry noise: the rule is applied to every bootstrap resample of the prompts as
well, and `stats.decide` turns the share of resamples where it holds into the verdict.

Measured numbers come in one long format, `measured_frame(summary)` of `report.summarise` (or of
`stats.task_means` of a resample): method (prompt_lookup | medusa | eagle2 | vispec), task, temperature, tau, speedup,
new_tokens, each a mean over the prompts; task 'all' is the mean of the task means (the paper's 'Avg').
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..assets import data_root
from . import stats

PAPER_TASKS = ("SQA", "MM-Vet", "TextVQA", "MME", "COCO Caps", "VizWiz", "GQA", "SEED-Bench")
PAPER_MODELS = ("LLaVA-1.6-7B", "LLaVA-1.6-13B", "Qwen2.5-VL-3B", "Qwen2.5-VL-7B")
METHODS = ("medusa", "eagle2", "vispec")
# The main table's rows: the paper's methods, and prompt lookup (a weightless draft copying n-grams of
# the prompt and the answer so far), which shows how far an answer's repetitions alone carry.
TABLE_METHODS = ("prompt_lookup",) + METHODS
_METHOD = {"Medusa": "medusa", "EAGLE-2": "eagle2", "ViSpec": "vispec"}
# Our held-out tasks (tasks.py) and the paper benchmark each is closest to in kind; not the same data.
ANALOGUE = {"caption": "COCO Caps", "vqa": "GQA", "ocr": "TextVQA", "photo": "MME", "text": None, "all": "Avg"}
ABLATION_TASKS = ("caption", "vqa", "photo")        # stand-ins for Tables 1-2's COCO Captions, GQA, MME
TABLE2_STEPS = ("baseline", "+image embedding compression", "+global visual injection", "+dataset generation")

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = stats.REPRODUCED, stats.NOT_REPRODUCED, stats.INCONCLUSIVE
NOT_MEASURABLE = "not measurable here"


# -- the transcribed tables ------------------------------------------------------------------------
def _read(name: str) -> pd.DataFrame:
    path = data_root() / "paper" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the paper's numbers live in paper/ under the data root (see its README).")
    return pd.read_csv(path)


def main_table(model: str | None = None) -> pd.DataFrame:
    """The main table, long: model, temperature, method (medusa|eagle2|vispec), task, tau, speedup."""
    df = _read("main_table.csv")
    df["method"] = df["method"].map(_METHOD)
    if model is not None:
        if model not in PAPER_MODELS:
            raise ValueError(f"Unknown paper model {model!r}; choose one of {PAPER_MODELS}.")
        df = df[df["model"] == model].reset_index(drop=True)
    return df


def table1() -> pd.DataFrame:
    """Table 1: compressed_tokens, task, tau, speedup (ViSpec, LLaVA-1.6-7B, T=0)."""
    return _read("table1_compressed_tokens.csv")


def table2() -> pd.DataFrame:
    """Table 2: components, task, tau, speedup (cumulative steps from the EAGLE-2 baseline)."""
    return _read("table2_ablation.csv")


def table3() -> pd.DataFrame:
    return _read("table3_high_resolution.csv")


def table4() -> pd.DataFrame:
    return _read("table4_video.csv")


def paper_frame(model: str = "LLaVA-1.6-7B") -> pd.DataFrame:
    """The main table of one model in the measured format (task 'Avg' -> 'all')."""
    df = main_table(model).copy()
    df["task"] = df["task"].replace({"Avg": "all"})
    return df[["method", "task", "temperature", "tau", "speedup"]]


# -- our numbers in the same shape ---------------------------------------------------------------------
def measured_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """report.summarise(...) or stats.task_means(...) -> method, task, temperature, tau, speedup, new_tokens
    (means over prompts; prompt lookup and the paper-tree drafts), and where the summary has them: prompts, the 95%
    intervals (tau_lo, tau_hi, speedup_lo, speedup_hi), same_as_vanilla, and vanilla's median 4-gram
    repetition on the same task and temperature (loops flatter every draft)."""
    s = summary[summary["method"].isin(TABLE_METHODS) & (summary["variant"] == summary["method"])]
    out = pd.DataFrame({"method": s["method"], "task": s["task"], "temperature": s["temperature"].astype(float),
                        "tau": s["mean_tau"], "speedup": s["mean_speedup"], "new_tokens": s["mean_new_tokens"]})
    for ours, theirs in (("prompts", "prompts"), ("tau_lo", "mean_tau_lo"), ("tau_hi", "mean_tau_hi"),
                         ("speedup_lo", "mean_speedup_lo"), ("speedup_hi", "mean_speedup_hi"),
                         ("same_as_vanilla", "same_as_vanilla")):
        if theirs in s.columns:
            out[ours] = s[theirs]
    if "median_repetition_4" in summary.columns:
        v = summary[summary["method"] == "vanilla"].set_index(["task", "temperature"])["median_repetition_4"]
        out["vanilla_repetition_4"] = [v.get((k, t), np.nan) for k, t in zip(s["task"], s["temperature"])]
    return out.reset_index(drop=True)


def side_by_side(measured: pd.DataFrame, model: str = "LLaVA-1.6-7B") -> pd.DataFrame:
    """Our tau/speedup per method, task, temperature (with their intervals and exactness where measured)
    beside the paper's on the analogous benchmark."""
    paper = paper_frame(model).rename(columns={"task": "paper_task", "tau": "paper_tau", "speedup": "paper_speedup"})
    m = measured.copy()
    m["paper_task"] = m["task"].map(ANALOGUE).fillna("-").replace({"all": "Avg"})
    paper["paper_task"] = paper["paper_task"].replace({"all": "Avg"})
    out = m.merge(paper, on=["method", "temperature", "paper_task"], how="left")
    cols = [c for c in ("temperature", "method", "task", "prompts", "tau", "tau_lo", "tau_hi", "speedup", "speedup_lo",
                        "speedup_hi", "paper_task", "paper_tau", "paper_speedup", "same_as_vanilla", "vanilla_repetition_4")
            if c in out.columns]
    order = {k: i for i, k in enumerate(TABLE_METHODS)}
    return out[cols].sort_values(["temperature", "task", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                                 kind="stable").reset_index(drop=True)


# -- claims and their rules ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    name: str
    paper: str                 # what the paper says
    rule: str                  # the explicit rule applied to measured numbers
    table: str                 # which input it needs: main | table1 | table2 | table3 | table4 | length | prefill
    check: Callable            # frame -> (measured value as text, bool) ; raises LookupError if data is missing


def _get(df, col, **where) -> float:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    vals = sel[col].to_numpy(dtype=float)
    if len(vals) != 1 or not np.isfinite(vals[0]):
        raise LookupError(f"no single finite {col} for {where}")
    return float(vals[0])


def _temps(df) -> list[float]:
    temps = sorted(set(df["temperature"].astype(float)))
    if not temps:
        raise LookupError("no temperatures")
    return temps


def _tau_ratio(df):
    ratios = {t: _get(df, "tau", method="vispec", task="all", temperature=t) /
              max(_get(df, "tau", method="eagle2", task="all", temperature=t), 1e-9) for t in _temps(df)}
    return ", ".join(f"T={t:g}: {r:.2f}x" for t, r in ratios.items()), all(r >= 1.4 for r in ratios.values())


def _fastest_everywhere(df):
    bad, n = [], 0
    for t in _temps(df):
        for task in sorted(set(df[df["temperature"] == t]["task"]) - {"all"}):
            v = _get(df, "speedup", method="vispec", task=task, temperature=t)
            others = [_get(df, "speedup", method=m, task=task, temperature=t) for m in ("eagle2", "medusa")]
            n += 1
            if not v > max(others):
                bad.append(f"{task}@T={t:g}")
    if n == 0:
        raise LookupError("no per-task rows")
    return f"fastest on {n - len(bad)}/{n} task x temperature cells" + (f" (not: {', '.join(bad)})" if bad else ""), not bad


def _substantial(df):
    v = _get(df, "speedup", method="vispec", task="all", temperature=0.0)
    return f"{v:.2f}x", v >= 1.5


def _medusa_below_one(df):
    taus = {t: _get(df, "tau", method="medusa", task="all", temperature=t) for t in _temps(df)}
    return ", ".join(f"T={t:g}: {v:.2f}" for t, v in taus.items()), all(v < 1 for v in taus.values())


def _eagle_over_medusa(df):
    pairs = {t: (_get(df, "tau", method="eagle2", task="all", temperature=t),
                 _get(df, "tau", method="medusa", task="all", temperature=t)) for t in _temps(df)}
    return ", ".join(f"T={t:g}: {a:.2f} vs {b:.2f}" for t, (a, b) in pairs.items()), all(a > b for a, b in pairs.values())


def _sampling_costs(df):
    t0 = _get(df, "speedup", method="vispec", task="all", temperature=0.0)
    t1 = _get(df, "speedup", method="vispec", task="all", temperature=1.0)
    return f"T=0 {t0:.2f}x, T=1 {t1:.2f}x", t1 < t0


def _means(df, key):
    if df.empty:
        raise LookupError("no rows")
    return df.groupby(key, sort=False)[["tau", "speedup"]].mean()


def _tau_flat(df):
    if not (df["tau"] > 0).any():
        raise LookupError("tau is 0 for every count: no draft token accepted, nothing to compare")
    rows = []
    for task, g in df.groupby("task"):
        if g["tau"].isna().any() or len(g) < 2:
            raise LookupError(f"incomplete rows for {task}")
        spread = g["tau"].max() - g["tau"].min()
        rows.append((task, 0.0 if spread == 0 else spread / g["tau"].mean()))
    if not rows:
        raise LookupError("no rows")
    counts = "/".join(str(c) for c in sorted(df["compressed_tokens"].unique()))
    return f"counts {counts}; " + ", ".join(f"{t}: {s:.0%}" for t, s in rows), all(s <= 0.10 for _, s in rows)


def _more_tokens_slower(df):
    m = _means(df, "compressed_tokens")
    lo, hi = m.index.min(), m.index.max()
    if lo == hi or not np.isfinite(m.loc[[lo, hi], "speedup"]).all():
        raise LookupError("need the smallest and largest counts")
    a, b = m.loc[lo, "speedup"], m.loc[hi, "speedup"]
    return f"{lo}: {a:.2f}x, {hi}: {b:.2f}x", b <= a


def _steps_rise(col):
    def check(df):
        m = _means(df, "components")
        missing = [s for s in TABLE2_STEPS if s not in m.index or not np.isfinite(m.loc[s, col])]
        if missing:
            raise LookupError(f"missing steps {missing}")
        vals = [m.loc[s, col] for s in TABLE2_STEPS]
        return " -> ".join(f"{v:.2f}" for v in vals), all(b > a for a, b in zip(vals, vals[1:]))
    return check


def _length_trend(df):
    slopes = {}
    for t in _temps(df):            # one line per temperature: sampling changes both length and speedup
        g = df[(df["method"] == "vispec") & (df["task"] != "all") & (df["temperature"] == t)].dropna(
            subset=["new_tokens", "speedup"])
        if len(g) < 3 or g["new_tokens"].nunique() < 2:
            raise LookupError(f"need at least 3 tasks with different lengths at T={t:g}")
        slopes[t] = np.polyfit(g["new_tokens"].astype(float), g["speedup"].astype(float), 1)[0]
    return ", ".join(f"T={t:g}: {b * 100:+.3f}x per 100 tokens" for t, b in slopes.items()), all(b > 0 for b in slopes.values())


def _prefill_unchanged(df):
    ratio = df["prefill_ratio"].dropna()
    if ratio.empty:
        raise LookupError("no prefill ratios")
    med = float(ratio.median())
    return f"median ViSpec/vanilla prefill time {med:.2f}", abs(med - 1) <= 0.10


def _per_dataset_tau_ratio(df):
    ratios = {}
    for keys, g in df.groupby([c for c in ("model", "dataset") if c in df.columns]):
        ratios[" ".join(map(str, keys if isinstance(keys, tuple) else (keys,)))] = (
            _get(g, "tau", method="ViSpec") / max(_get(g, "tau", method="EAGLE-2"), 1e-9))
    if not ratios:
        raise LookupError("no rows")
    return ", ".join(f"{k}: {r:.2f}x" for k, r in ratios.items()), all(r >= 1.4 for r in ratios.values())


CLAIMS = (
    Claim("vispec_tau_over_eagle2", "ViSpec's tau far exceeds EAGLE-2's (LLaVA-7B T=0: 2.98 vs 1.31; every model and temperature: >= 1.43x)",
          "ViSpec mean tau >= 1.4 x EAGLE-2's, at every temperature", "main", _tau_ratio),
    Claim("vispec_fastest_every_task", "ViSpec consistently outperforms Medusa and EAGLE-2 across all tasks and models",
          "ViSpec's speedup > both baselines' on every task at every temperature", "main", _fastest_everywhere),
    Claim("vispec_substantial_speedup", "The first substantial VLM speedup: 2.58x average (LLaVA-7B, T=0), >= 1.80x on every model",
          "ViSpec's average speedup at T=0 >= 1.5x", "main", _substantial),
    Claim("medusa_tau_below_one", "Medusa accepts fewer than one draft token per cycle (tau 0.49-0.82 on average)",
          "Medusa's mean tau < 1 at every temperature", "main", _medusa_below_one),
    Claim("eagle2_tau_over_medusa", "EAGLE-2 accepts more than Medusa (average tau, every model and temperature)",
          "EAGLE-2 mean tau > Medusa's at every temperature", "main", _eagle_over_medusa),
    Claim("sampling_lowers_speedup", "Speedups are lower at T=1 than at T=0 (ViSpec LLaVA-7B: 2.14x vs 2.58x)",
          "ViSpec's average speedup at T=1 < at T=0", "main", _sampling_costs),
    Claim("compressed_count_tau_flat", "Table 1: 1 to 64 compressed embeddings give nearly the same tau",
          "per task, (max - min) tau over the counts <= 10% of its mean", "table1", _tau_flat),
    Claim("compressed_count_costs_speed", "Table 1: more compressed embeddings reduce the speedup (64 is slowest on average)",
          "mean speedup with the most tokens <= with the fewest", "table1", _more_tokens_slower),
    Claim("ablation_steps_raise_tau", "Table 2: compression, global injection, dataset generation each raise tau",
          "mean tau over the tasks rises at every step", "table2", _steps_rise("tau")),
    Claim("ablation_steps_raise_speedup", "Table 2: each component raises the speedup (+30%, +7%, +30%)",
          "mean speedup over the tasks rises at every step", "table2", _steps_rise("speedup")),
    Claim("longer_outputs_faster", "Longer outputs give higher speedups (output length vs speedup)",
          "least-squares slope of ViSpec's task-mean speedup on task-mean output length > 0, fitted per temperature, "
          "at every temperature", "length", _length_trend),
    Claim("prefill_unchanged", "The vision adaptor leaves prefill latency unchanged (within noise)",
          "median per-prompt ViSpec/vanilla prefill time within 1 +- 0.10", "prefill", _prefill_unchanged),
    Claim("high_resolution_tau", "Table 3: on high-resolution images ViSpec keeps a high tau where EAGLE-2's collapses",
          "ViSpec tau >= 1.4 x EAGLE-2's on every (model, dataset)", "table3", _per_dataset_tau_ratio),
    Claim("video_tau", "Table 4: a draft trained on images only still beats EAGLE-2 on video",
          "ViSpec tau >= 1.4 x EAGLE-2's on every video dataset", "table4", _per_dataset_tau_ratio),
)


def verdicts(inputs: dict[str, pd.DataFrame | None], trained: bool | dict = True,
             resamples: dict[str, list[pd.DataFrame]] | None = None) -> pd.DataFrame:
    """One row per claim: the rule, the measured value, the verdict and, where the input has resamples,
    the share of them in which the rule held (`holds_in_resamples`, e.g. "98.7% of 1000"; "-" without).

    inputs: {'main': measured_frame, 'table1': compressed_tokens/task/tau/speedup, 'table2':
    components/task/tau/speedup, 'length': measured_frame, 'prefill': frame with prefill_ratio};
    a missing or None input makes its claims "not measurable here". resamples: the same frames
    computed on bootstrap resamples of the prompts ({input: [frame, ...]}); with them the verdict is
    `stats.decide`'s (reproduced / not reproduced / inconclusive), without them (the paper's own
    numbers) the rule's on the figures alone. trained: whether the drafts behind each input were
    trained (bool for all, or {input: bool}); untrained (random) drafts make every claim not
    measurable: their numbers exercise the pipeline, they test nothing."""
    rows = []
    for c in CLAIMS:
        ok_trained = trained.get(c.table, False) if isinstance(trained, dict) else trained
        df = inputs.get(c.table)
        reps = (resamples or {}).get(c.table) or []
        value, verdict, why, share = "", NOT_MEASURABLE, "", "-"
        if df is None or len(df) == 0:
            why = f"no measurements for {c.table}"
        else:
            try:
                value, passed = c.check(df)
            except LookupError as e:
                why = f"incomplete measurements: {e}"
            else:
                if not ok_trained:
                    why = "drafts are untrained (random): the rule ran on pipeline-test numbers"
                elif reps:
                    holds = [_holds(c, r) for r in reps]
                    share, verdict = f"{np.mean(holds):.1%} of {len(holds)}", stats.decide(holds)
                else:
                    verdict = REPRODUCED if passed else NOT_REPRODUCED
        rows.append({"claim": c.name, "paper": c.paper, "rule": c.rule, "measured": value, "verdict": verdict,
                     "holds_in_resamples": share, "why": why})
    return pd.DataFrame(rows)


def _holds(claim: Claim, frame: pd.DataFrame) -> bool:
    try:
        return bool(claim.check(frame)[1])
    except LookupError:          # a resample that lost what the rule compares: the rule did not hold there
        return False


def paper_inputs(model: str = "LLaVA-1.6-7B") -> dict[str, pd.DataFrame]:
    """The paper's own numbers in the measured shapes (the rules' self-check)."""
    t1 = table1()
    t2 = table2()
    return {"main": paper_frame(model), "table1": t1[["compressed_tokens", "task", "tau", "speedup"]],
            "table2": t2[["components", "task", "tau", "speedup"]], "table3": table3(), "table4": table4()}


def prefill_frame(runs: pd.DataFrame, method: str = "vispec") -> pd.DataFrame:
    """report.paired(records) -> per prompt: vanilla and method prefill seconds and their ratio."""
    key = ["task", "prompt_id", "temperature"]
    a = runs[runs["method"] == "vanilla"][key + ["prefill_time_s"]].rename(columns={"prefill_time_s": "vanilla_prefill_s"})
    b = runs[runs["variant"] == method][key + ["prefill_time_s"]].rename(columns={"prefill_time_s": f"{method}_prefill_s"})
    out = a.merge(b, on=key)
    out["prefill_ratio"] = out[f"{method}_prefill_s"] / out["vanilla_prefill_s"]
    return out


# -- output length vs speedup (the paper's figure, on our runs) ----------------------------------------
def length_table(runs: pd.DataFrame) -> pd.DataFrame:
    """report.paired(records) -> per method, temperature and task: mean output length (vanilla's new
    tokens, the same answer every method must give at T=0), mean speedup, tau, prompts."""
    spec = runs[runs["method"].isin(METHODS) & (runs["variant"] == runs["method"]) & runs["speedup"].notna()]
    g = spec.groupby(["method", "temperature", "task"], sort=False)
    return g.agg(output_tokens=("vanilla_tokens", "mean"), speedup=("speedup", "mean"), tau=("tau", "mean"),
                 prompts=("speedup", "size")).reset_index()


def trend_fit(table: pd.DataFrame) -> pd.DataFrame:
    """Least-squares line speedup = a + b * output_tokens per method and temperature, over task means;
    slope NaN where fewer than 2 distinct lengths (no line to fit)."""
    rows = []
    for (m, t), g in table.groupby(["method", "temperature"], sort=False):
        x, y = g["output_tokens"].to_numpy(float), g["speedup"].to_numpy(float)
        ok = len(g) >= 2 and np.unique(x).size >= 2
        b, a = np.polyfit(x, y, 1) if ok else (np.nan, np.nan)
        r = float(np.corrcoef(x, y)[0, 1]) if ok and np.std(y) > 0 else np.nan
        rows.append({"method": m, "temperature": t, "tasks": len(g), "slope_per_100_tokens": b * 100,
                     "intercept": a, "pearson_r": r})
    return pd.DataFrame(rows)
