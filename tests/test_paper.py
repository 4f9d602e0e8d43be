"""The transcribed paper tables against the paper's own sentences, the verdict rules (the paper's
numbers pass them, perturbed numbers fail them, missing or untrained inputs are not measurable), the
length trend, the answer-diversity statistics, and the experiment plan / plain data helpers."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from vispec_core.data.synthesis import write_plain
from vispec_core.evaluation import paper, textstats
from vispec_core.evaluation.experiments import ablation_table, bench_args, family_of
from vispec_core.training.plan import ablation_rows, draft_dir, init_from, training_plan

from conftest import tiny_target


# -- transcription ---------------------------------------------------------------------------------
def cell(model, t, method, task, col):
    df = paper.main_table(model)
    row = df[(df["temperature"] == t) & (df["method"] == method) & (df["task"] == task)]
    assert len(row) == 1, (model, t, method, task)
    return float(row[col].iloc[0])


def test_main_table_is_complete():
    df = paper.main_table()
    assert len(df) == 4 * 2 * 3 * 9
    assert df[["tau", "speedup"]].notna().all().all()
    assert set(df["task"]) == set(paper.PAPER_TASKS) | {"Avg"}
    assert (df.groupby(["model", "temperature", "method"]).size() == 9).all()


def test_main_table_matches_the_papers_sentences():
    # headline (LLaVA-1.6-7B, T=0, average) and Qwen2.5-VL-7B's 1.80x
    assert (cell("LLaVA-1.6-7B", 0, "vispec", "Avg", "tau"), cell("LLaVA-1.6-7B", 0, "vispec", "Avg", "speedup")) == (2.98, 2.58)
    assert (cell("LLaVA-1.6-7B", 0, "eagle2", "Avg", "tau"), cell("LLaVA-1.6-7B", 0, "eagle2", "Avg", "speedup")) == (1.31, 1.62)
    assert (cell("LLaVA-1.6-7B", 0, "medusa", "Avg", "tau"), cell("LLaVA-1.6-7B", 0, "medusa", "Avg", "speedup")) == (0.72, 1.42)
    assert cell("Qwen2.5-VL-7B", 0, "vispec", "Avg", "speedup") == 1.80
    # Sec. 5.2: TextVQA (7B, T=0), ScienceQA (13B, T=0 and T=1)
    assert [cell("LLaVA-1.6-7B", 0, m, "TextVQA", "speedup") for m in ("vispec", "eagle2", "medusa")] == [2.90, 1.25, 1.46]
    assert [cell("LLaVA-1.6-13B", 0, m, "SQA", "speedup") for m in ("vispec", "eagle2", "medusa")] == [2.57, 2.12, 1.61]
    assert [cell("LLaVA-1.6-13B", 1, m, "SQA", "speedup") for m in ("vispec", "eagle2", "medusa")] == [2.25, 1.98, 1.41]
    # the quoted ranges of speedups over all models, tasks and temperatures, and the best single 3.22x
    df = paper.main_table()
    df = df[df["task"] != "Avg"]
    for method, lo, hi in (("vispec", 1.37, 3.22), ("eagle2", 1.06, 2.17), ("medusa", 0.95, 1.67)):
        s = df[df["method"] == method]["speedup"]
        assert (s.min(), s.max()) == (lo, hi), method
    assert cell("LLaVA-1.6-7B", 0, "vispec", "COCO Caps", "speedup") == df["speedup"].max() == 3.22


def test_average_column_is_the_mean_of_the_tasks():
    df = paper.main_table()
    means = df[df["task"] != "Avg"].groupby(["model", "temperature", "method"])[["tau", "speedup"]].mean()
    avg = df[df["task"] == "Avg"].set_index(["model", "temperature", "method"])[["tau", "speedup"]]
    assert ((means["tau"] - avg["tau"]).abs() <= 0.01).all()          # rounding only: every row's taus are right
    assert ((means["speedup"] - avg["speedup"]).abs() <= 0.06).all()


def test_tables_1_and_2_agree_with_the_main_table():
    t1, t2 = paper.table1(), paper.table2()
    assert len(t1) == 12 and len(t2) == 12 and sorted(t1["compressed_tokens"].unique()) == [1, 4, 16, 64]
    for task in ("COCO Caps", "GQA", "MME"):
        one = t1[(t1["compressed_tokens"] == 1) & (t1["task"] == task)].iloc[0]
        last = t2[(t2["components"] == "+dataset generation") & (t2["task"] == task)].iloc[0]
        base = t2[(t2["components"] == "baseline") & (t2["task"] == task)].iloc[0]
        for col in ("tau", "speedup"):
            assert one[col] == last[col] == cell("LLaVA-1.6-7B", 0, "vispec", task, col)
            assert base[col] == cell("LLaVA-1.6-7B", 0, "eagle2", task, col)
    assert list(dict.fromkeys(t2["components"])) == list(paper.TABLE2_STEPS)
    assert len(paper.table3()) == 8 and len(paper.table4()) == 4
    assert set(paper.table4()["dataset"]) == {"MSVD-QA", "MVBench"}


# -- verdict rules -----------------------------------------------------------------------------------
def verdict_of(inputs, claim, trained=True):
    v = paper.verdicts(inputs, trained=trained).set_index("claim")
    return v.loc[claim, "verdict"]


@pytest.mark.parametrize("model", paper.PAPER_MODELS)
def test_the_papers_numbers_pass_every_rule(model):
    v = paper.verdicts(paper.paper_inputs(model))
    transcribed = v[~v["claim"].isin(["longer_outputs_faster", "prefill_unchanged"])]
    assert (transcribed["verdict"] == paper.REPRODUCED).all(), transcribed[["claim", "measured", "verdict"]]
    assert (v[v["claim"].isin(["longer_outputs_faster", "prefill_unchanged"])]["verdict"] == paper.NOT_MEASURABLE).all()


def test_rules_fail_on_numbers_that_contradict_the_claims():
    main = paper.paper_frame()
    swapped = main.copy()
    is_v, is_e = swapped["method"] == "vispec", swapped["method"] == "eagle2"
    swapped.loc[is_v, "method"], swapped.loc[is_e, "method"] = "eagle2", "vispec"     # EAGLE-2 now the better one
    v = paper.verdicts({"main": swapped}).set_index("claim")["verdict"]
    assert v["vispec_tau_over_eagle2"] == v["vispec_fastest_every_task"] == paper.NOT_REPRODUCED
    t1 = paper.table1().copy()
    t1.loc[t1["compressed_tokens"] == 64, "tau"] *= 1.5                             # tau not flat any more
    assert verdict_of({"table1": t1}, "compressed_count_tau_flat") == paper.NOT_REPRODUCED
    t2 = paper.table2().copy()
    t2.loc[t2["components"] == "+global visual injection", "tau"] = 1.0               # a step that hurts
    assert verdict_of({"table2": t2}, "ablation_steps_raise_tau") == paper.NOT_REPRODUCED


def test_missing_or_untrained_inputs_are_not_measurable():
    main = paper.paper_frame()
    v = paper.verdicts({"main": main}, trained=False)
    assert (v["verdict"] == paper.NOT_MEASURABLE).all()
    assert v.set_index("claim").loc["vispec_tau_over_eagle2", "why"].startswith("drafts are untrained")
    no_medusa = main[main["method"] != "medusa"]
    v = paper.verdicts({"main": no_medusa}).set_index("claim")
    assert v.loc["medusa_tau_below_one", "verdict"] == paper.NOT_MEASURABLE
    assert "incomplete" in v.loc["medusa_tau_below_one", "why"]
    assert v.loc["vispec_tau_over_eagle2", "verdict"] == paper.REPRODUCED
    assert verdict_of({"table2": paper.table2().iloc[:6]}, "ablation_steps_raise_tau") == paper.NOT_MEASURABLE
    assert verdict_of({}, "prefill_unchanged") == paper.NOT_MEASURABLE


def length_runs(lengths_speedups):
    rows = []
    for task, (n, s) in lengths_speedups.items():
        for method in paper.METHODS:
            rows.append(dict(task=task, prompt_id=f"{task}:0", temperature=0.0, method=method, variant=method,
                             vanilla_tokens=n, speedup=s, tau=1.0))
        rows.append(dict(task=task, prompt_id=f"{task}:0", temperature=0.0, method="vanilla", variant="vanilla",
                         vanilla_tokens=n, speedup=1.0, tau=0.0))
    return pd.DataFrame(rows)


def test_length_trend_and_its_claim():
    table = paper.length_table(length_runs({"a": (100, 1.2), "b": (200, 1.4), "c": (300, 1.6)}))
    assert set(table["method"]) == set(paper.METHODS) and len(table) == 9
    fit = paper.trend_fit(table).set_index("method")
    assert fit.loc["vispec", "slope_per_100_tokens"] == pytest.approx(0.2)
    assert fit.loc["vispec", "intercept"] == pytest.approx(1.0) and fit.loc["vispec", "pearson_r"] == pytest.approx(1.0)
    measured = table.rename(columns={"output_tokens": "new_tokens"})
    assert verdict_of({"length": measured}, "longer_outputs_faster") == paper.REPRODUCED
    measured["speedup"] = measured["speedup"].to_numpy()[::-1]
    assert verdict_of({"length": measured}, "longer_outputs_faster") == paper.NOT_REPRODUCED
    flat = paper.trend_fit(paper.length_table(length_runs({"a": (6, 1.0), "b": (6, 2.0)})))
    assert flat["slope_per_100_tokens"].isna().all()             # no line through one length


def test_prefill_claim():
    runs = pd.DataFrame([dict(task="t", prompt_id=str(i), temperature=0.0, method=m, variant=m, prefill_time_s=p)
                         for i in range(3) for m, p in (("vanilla", 1.0), ("vispec", 1.0 + 0.02 * i))])
    pre = paper.prefill_frame(runs)
    assert len(pre) == 3 and pre["prefill_ratio"].median() == pytest.approx(1.02)
    assert verdict_of({"prefill": pre}, "prefill_unchanged") == paper.REPRODUCED
    pre["prefill_ratio"] = 1.5
    assert verdict_of({"prefill": pre}, "prefill_unchanged") == paper.NOT_REPRODUCED


def test_side_by_side_maps_our_tasks_to_the_papers():
    measured = pd.DataFrame([dict(method="vispec", task="caption", temperature=0.0, tau=1.0, speedup=1.1, new_tokens=50),
                             dict(method="vispec", task="text", temperature=0.0, tau=1.0, speedup=1.1, new_tokens=50),
                             dict(method="vispec", task="all", temperature=0.0, tau=1.0, speedup=1.1, new_tokens=50)])
    s = paper.side_by_side(measured).set_index("task")
    assert s.loc["caption", "paper_task"] == "COCO Caps" and s.loc["caption", "paper_speedup"] == 3.22
    assert s.loc["all", "paper_tau"] == 2.98
    assert math.isnan(s.loc["text", "paper_tau"])               # no text-only benchmark in the paper


def test_main_table_shows_prompt_lookup_beside_the_drafts():
    runs = [dict(method=m, variant=m, task="caption", temperature=0.0, mean_tau=1.0, mean_speedup=1.0,
                 mean_new_tokens=9.0) for m in ("vanilla", "vispec", "prompt_lookup", "eagle2", "hf")]
    s = paper.side_by_side(paper.measured_frame(pd.DataFrame(runs)))
    assert list(s["method"]) == ["prompt_lookup", "eagle2", "vispec"]    # no vanilla, no transformers' generate
    assert math.isnan(s.set_index("method").loc["prompt_lookup", "paper_tau"])   # not in the paper


# -- answer diversity ----------------------------------------------------------------------------------
def test_textstats_on_known_sequences():
    assert textstats.distinct_n([1, 2, 3, 4], 2) == 1.0
    assert textstats.distinct_n([5, 6, 5, 6, 5, 6], 2) == pytest.approx(2 / 5)
    assert textstats.repetition([1, 2, 3, 4, 1, 2, 3, 4], 4) == pytest.approx(1 - 4 / 5)
    assert math.isnan(textstats.distinct_n([1], 2))
    assert textstats.longest_loop([9, 8, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == 9
    assert textstats.longest_loop([1, 2, 3, 4, 5]) == 0
    assert textstats.corpus_distinct_n([[1, 2, 3], [1, 2, 3]], 2) == pytest.approx(0.5)
    s = textstats.answer_stats([1, 2, 3, 1, 2, 3])
    assert s["length"] == 6 and s["end_loop_tokens"] == 6 and s["distinct_1"] == 0.5
    with pytest.raises(ValueError):
        textstats.ngrams([1, 2], 0)


# -- the plan, the plain data, stage-2 initialisation --------------------------------------------------
def test_training_plan_covers_every_table_row():
    plan = training_plan("plain", (1, 4, 16, 64))
    names = [r.name for r in plan]
    assert names[:3] == ["vispec", "eagle2", "medusa"] and len(set(names)) == len(names) == 8
    rows = ablation_rows(plan)
    assert list(rows["table1"]) == ["1", "4", "16", "64"] and rows["table1"]["1"] == "vispec"
    assert list(rows["table2"]) == list(paper.TABLE2_STEPS)
    assert rows["table2"]["baseline"] == "eagle2" and rows["table2"]["+dataset generation"] == "vispec"
    by = {r.name: r for r in plan}
    assert by["eagle2"].data == by["medusa"].data == by["ablations/compression"].data == "plain"
    assert by["vispec"].data == "synth" and by["ablations/compression"].options == {"use_global_injection": False}
    assert training_plan("synth")[1].data == "synth"
    with pytest.raises(ValueError):
        training_plan("greedy")
    assert draft_dir("default", by["vispec"]).parts[-3:] == ("drafts", "default", "vispec")
    assert draft_dir("default", by["ablations/compressed_4"]).parts[-4:] == ("default", "ablations", "compressed_4", "vispec")
    assert family_of("default") == "default" and family_of("tiny:qwen2_5_vl") == "qwen2_5_vl"


def test_bench_args_are_the_command_lines():
    import argparse

    from vispec_core.__main__ import add_target_args
    from vispec_core.evaluation.bench import add_bench_parser

    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"), add_target_args)
    from dataclasses import asdict

    from vispec_core.evaluation.bench import BenchConfig

    args = parser.parse_args(["bench", "--out", "x.jsonl"])
    mine = asdict(bench_args("tiny:llava_next", "x.jsonl"))
    assert set(vars(args)) - {"command", "func", "json"} == set(mine)     # --json: how to print, not what to measure
    assert asdict(BenchConfig.from_args(args)).keys() == mine.keys()
    assert mine["temperature"] == "0,1" and mine["methods"] == "vanilla,medusa,eagle2,vispec"


def test_ablation_table_reads_the_right_method():
    def summary(method, tau):
        return pd.DataFrame([dict(variant=method, method=method, temperature=0.0, task=t, mean_tau=tau,
                                  mean_speedup=1.0) for t in ("caption", "vqa", "text")])
    plan = training_plan()
    rows = ablation_rows(plan)["table2"]
    main = pd.concat([summary("eagle2", 0.5), summary("vispec", 2.0)])
    t = ablation_table(rows, {"eagle2": main, "vispec": main, "ablations/compression": summary("vispec", 1.0)},
                       plan, ["caption", "vqa"])
    got = t.groupby("label")["tau"].mean()
    assert got["baseline"] == 0.5 and got["+image embedding compression"] == 1.0 and got["+dataset generation"] == 2.0
    assert "+global visual injection" not in got.index and set(t["task"]) == {"caption", "vqa"}


@pytest.fixture(scope="module")
def tiny():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tiny_target("llava_next")
    torch.set_num_threads(threads)


def test_plain_data_is_ground_truth_and_trainable(tiny, tmp_path):
    from vispec_core.data.synthesis import load_synthesized, settings_of
    from vispec_core.training.trainer import make_example

    out = write_plain(tiny, "tiny:llava_next", 5, tmp_path / "plain", shard_size=2)
    ds = load_synthesized(out)
    assert len(ds) == 5 and settings_of(out)["settings"]["source"] == "scenes_plain"
    for r in ds:
        assert "1000 words" not in r["prompt"] and "explanation" not in r["prompt"]       # not rewritten
        assert r["answer_ids"][-1] in tiny.eos_token_ids and tiny.decode_text(r["answer_ids"]).strip() == r["answer"]
        assert len(r["images"]) == 1
    ex = make_example(tiny, ds[0], 512)                     # the trainer's own check of the prompt ids passes
    assert ex.length == len(ds[0]["prompt_ids"]) + len(ds[0]["answer_ids"])
    write_plain(tiny, "tiny:llava_next", 5, tmp_path / "plain", shard_size=2)   # rerun: nothing changes
    assert load_synthesized(out)["answer"] == ds["answer"]


def test_init_from_keeps_stage1_weights_that_fit(tiny, tmp_path):
    from vispec_core.drafts import load_draft

    stage1 = load_draft("random:vispec", tiny, seed=3)
    stage1.save_pretrained(tmp_path / "s1")
    init = load_draft(str(init_from(tmp_path / "s1", tiny, tmp_path / "init", "vispec", num_compressed=4)), tiny)
    assert init.config.num_compressed == 4
    old, new = stage1.state_dict(), init.state_dict()
    same = [k for k in new if k in old and old[k].shape == new[k].shape]
    assert same and all(torch.equal(old[k], new[k]) for k in same)
    assert any(k not in old or old[k].shape != new[k].shape for k in new)      # the 4+1 queries start fresh
