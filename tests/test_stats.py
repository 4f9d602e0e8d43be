"""The benchmark's statistics: task means and the paper's 'Avg', the paired bootstrap, its intervals, and
the verdicts it decides on synthetic records whose answer is known (a clear rise, a flat series, noise)."""
import numpy as np
import pandas as pd
import pytest

from vispec_core.evaluation import paper, stats


def runs_of(values: dict, tasks=("caption", "vqa"), temperature=0.0) -> pd.DataFrame:
    """{variant: [tau of prompt 0, 1, ...]} -> runs (report.paired's columns) on each task; speedup = 1 + tau / 4."""
    rows = []
    for variant, taus in values.items():
        for task in tasks:
            for i, tau in enumerate(taus):
                rows.append(dict(variant=variant, method=variant.split("#")[0], tree="30/3/8", temperature=temperature,
                                 task=task, prompt_id=f"{task}:{i}", tau=tau, speedup=1 + tau / 4, new_tokens=100))
    return pd.DataFrame(rows)


def test_all_is_the_mean_of_the_task_means_not_of_the_prompts():
    runs = pd.concat([runs_of({"vispec": [1.0]}, tasks=("caption",)),
                      runs_of({"vispec": [3.0, 3.0, 3.0]}, tasks=("vqa",))], ignore_index=True)
    m = stats.task_means(runs).set_index("task")
    assert m.loc["caption", "mean_tau"] == 1.0 and m.loc["vqa", "mean_tau"] == 3.0
    assert m.loc["all", "mean_tau"] == pytest.approx(2.0)          # the paper's Avg; pooled prompts would give 2.5
    assert m.loc["all", "prompts"] == 4 and m.loc["caption", "prompts"] == 1


def test_the_resample_is_paired_and_repeatable():
    rng = np.random.default_rng(0)
    a = runs_of({"eagle2": list(rng.normal(1, 0.5, 12)), "vispec": list(rng.normal(2, 0.5, 12))})
    b = runs_of({"vispec#other_file": list(rng.normal(2, 0.5, 12))})          # another benchmark over the same prompts
    for r in range(5):
        ra, rb = stats.resample(a, 3, r), stats.resample(b, 3, r)
        drawn = {v: list(g["prompt_id"]) for v, g in ra.groupby("variant")}
        assert drawn["eagle2"] == drawn["vispec"] == list(rb["prompt_id"])   # every method drawn alike
        assert len(ra) == len(a) and len(set(drawn["vispec"])) < 24           # with replacement
        assert stats.resample(a, 3, r).equals(ra)
    assert not stats.resample(a, 3, 0).equals(stats.resample(a, 3, 1))
    key = ["variant", "temperature", "task"]
    for fast, slow in zip(stats.replicates(a, 5, seed=3), stats.replicates(a, 5, seed=3, summary=stats.task_means)):
        pd.testing.assert_frame_equal(fast.sort_values(key).reset_index(drop=True),      # counts = the frames' means
                                      slow.sort_values(key).reset_index(drop=True), check_dtype=False)


def test_intervals_hold_the_mean_and_narrow_with_less_noise():
    rng = np.random.default_rng(1)
    widths = []
    for sd in (1.0, 0.1, 0.0):
        runs = runs_of({"vispec": list(2 + rng.normal(0, sd, 20))})
        t = stats.with_intervals(runs, 300)
        assert (t["mean_tau_lo"] <= t["mean_tau"] + 1e-12).all() and (t["mean_tau"] <= t["mean_tau_hi"] + 1e-12).all()
        widths.append(float((t["mean_tau_hi"] - t["mean_tau_lo"]).max()))
    assert widths[0] > 3 * widths[1] > 0 and widths[2] == pytest.approx(0.0)


def test_decide():
    assert stats.decide([True] * 98 + [False] * 2) == stats.REPRODUCED
    assert stats.decide([True] * 2 + [False] * 98) == stats.NOT_REPRODUCED
    assert stats.decide([True] * 50 + [False] * 50) == stats.INCONCLUSIVE
    with pytest.raises(ValueError):
        stats.decide([])


def table2_of(runs: pd.DataFrame) -> pd.DataFrame:
    m = stats.task_means(runs)
    m = m[m["task"] != "all"]
    return pd.DataFrame({"components": m["variant"], "task": m["task"], "tau": m["mean_tau"], "speedup": m["mean_speedup"]})


def ablation_verdict(step_means, sd, n=10, seed=0):
    rng = np.random.default_rng(seed)
    runs = runs_of({step: list(mu + rng.normal(0, sd, n)) for step, mu in zip(paper.TABLE2_STEPS, step_means)})
    reps = stats.replicates(runs, 400, summary=table2_of)
    v = paper.verdicts({"table2": table2_of(runs)}, resamples={"table2": reps}).set_index("claim")
    share = v.loc["ablation_steps_raise_tau", "holds_in_resamples"]
    assert share.endswith(" of 400")
    return v.loc["ablation_steps_raise_tau", "verdict"], float(share.split("%")[0]) / 100


def test_verdicts_decided_by_the_bootstrap():
    assert ablation_verdict([1.0, 1.5, 2.0, 2.5], sd=0.1)[0] == paper.REPRODUCED          # a clear rise
    assert ablation_verdict([2.5, 2.0, 1.5, 1.0], sd=0.1)[0] == paper.NOT_REPRODUCED      # a clear fall
    verdict, share = ablation_verdict([1.0, 1.02, 1.04, 1.06], sd=0.5)                     # a rise inside the noise
    assert verdict == paper.INCONCLUSIVE and 0.025 < share < 0.975
    verdict, share = ablation_verdict([1.0, 1.0, 1.0, 1.0], sd=0.5, seed=3)                # flat, noisy
    assert verdict != paper.REPRODUCED
    # without resamples (the paper's own numbers) the rule decides on the figures alone
    rng = np.random.default_rng(0)
    noisy = runs_of({s: list(mu + rng.normal(0, 0.5, 10)) for s, mu in zip(paper.TABLE2_STEPS, [1.0, 1.02, 1.04, 1.06])})
    assert paper.verdicts({"table2": table2_of(noisy)}).set_index("claim").loc[
        "ablation_steps_raise_tau", "verdict"] in (paper.REPRODUCED, paper.NOT_REPRODUCED)


def test_a_ratio_claim_near_its_threshold_is_inconclusive():
    def verdict(vispec_mean, sd):
        rng = np.random.default_rng(5)
        frames = []
        for t in (0.0, 1.0):
            r = runs_of({"medusa": list(0.5 + rng.normal(0, 0.01, 10)), "eagle2": list(1.0 + rng.normal(0, 0.01, 10)),
                         "vispec": list(vispec_mean + rng.normal(0, sd, 10))}, temperature=t)
            frames.append(r)
        runs = pd.concat(frames, ignore_index=True)
        main = paper.measured_frame(stats.task_means(runs))
        reps = [paper.measured_frame(r) for r in stats.replicates(runs, 400)]
        return paper.verdicts({"main": main}, resamples={"main": reps}).set_index("claim").loc["vispec_tau_over_eagle2", "verdict"]

    assert verdict(3.0, 0.1) == paper.REPRODUCED
    assert verdict(1.4, 0.4) == paper.INCONCLUSIVE
    assert verdict(1.0, 0.1) == paper.NOT_REPRODUCED
