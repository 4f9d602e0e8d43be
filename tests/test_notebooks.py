"""Every numbered notebook runs under papermill with smoke parameters and writes what it promises,
without touching the committed results/."""
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from vispec_core.evaluation.records import read_jsonl
from vispec_core.reproduce import NOTEBOOKS, declared_parameters, notebooks, run_notebook



def check_redundancy(results):
    single = pd.read_csv(results / "tables" / "redundancy_single_layer.csv")
    assert ((single["measured"] - single["closed_form"]).abs() < 1e-9).all()
    assert single["measured"].is_monotonic_decreasing
    layers = pd.read_csv(results / "tables" / "redundancy_target_layers.csv")
    assert layers["image_attention"].between(0, 1).all()


def check_synthesis(results):
    rewrites = pd.read_csv(results / "tables" / "synth_prompt_rewrites.csv", keep_default_na=False)
    assert set(rewrites["source"]) == {"easy_vqa", "scenes", "text"}
    for _, r in rewrites[rewrites["source"] != "text"].iterrows():      # every image prompt asks for a long answer
        assert r["added"] and r["rewritten"].endswith(r["added"]) and r["rewritten"] != r["original"]
    compare = pd.read_csv(results / "tables" / "synth_sampled_vs_greedy.csv").set_index("set")
    assert compare.loc["sampled", "temperature"] == 1 and compare.loc["greedy", "temperature"] == 0
    assert (compare["answers"] == 8).all() and compare["mean_tokens"].between(1, 48).all()
    for col in ("distinct_1", "distinct_2", "repetition_4", "ended_with_eos", "hit_cap", "corpus_distinct_2",
                "grounded", "with_false_claim"):
        assert compare[col].between(0, 1).all(), col
    # the same prompts: greedy answers on the tiny target loop, sampled ones do not (seeded, deterministic)
    assert compare.loc["greedy", "distinct_2"] < compare.loc["sampled", "distinct_2"]
    datasets = pd.read_csv(results / "tables" / "synth_datasets.csv")
    assert list(datasets["dataset"]) == ["demo_sampled", "demo_greedy"]
    assert (datasets["samples"] == 8).all() and (datasets["with_images"] == 8).all()
    assert len(pd.read_csv(results / "tables" / "synth_examples.csv")) == 16
    assert len(read_jsonl(results / "raw" / "synth_sampled_vs_greedy.jsonl")) == 16


def check_training(results):
    plan = pd.read_csv(results / "tables" / "train_plan.csv")
    assert list(plan["run"][:3]) == ["vispec", "eagle2", "medusa"] and set(plan["table"]) == {"main", "table1", "table2"}
    summary = pd.read_csv(results / "tables" / "train_summary.csv")
    assert len(summary[summary["stage"] == 1]) == 3 and set(summary[summary["stage"] == 2]["run"]) == set(plan["run"])
    assert (summary["steps"] == 4).all() and (summary["loss_first"] > 0).all() and summary["acc_step0_last"].between(0, 1).all()
    for run in plan["saved_to"]:                       # smoke drafts stay inside the smoke results folder
        assert (results / "demo_drafts") in Path(run).parents and (Path(run) / "config.json").is_file()
    assert len(list((results / "raw" / "train_logs").glob("*.jsonl"))) == 8


def check_paper_tables(results):
    from vispec_core.evaluation import paper

    verdicts = pd.read_csv(results / "tables" / "verdicts.csv")
    assert list(verdicts["claim"]) == [c.name for c in paper.CLAIMS]
    assert (verdicts["verdict"] == paper.NOT_MEASURABLE).all()          # random drafts: no verdict is claimed
    assert set(verdicts["paper_passes"]) <= {"yes", "n/a (not transcribed)"}
    versus = pd.read_csv(results / "tables" / "main_vs_paper.csv")
    assert set(versus["method"]) == {"prompt_lookup", "medusa", "eagle2", "vispec"} and set(versus["temperature"]) == {0.0, 1.0}
    for col in ("tau", "speedup"):                                      # the bootstrap intervals hold the means
        assert (versus[f"{col}_lo"] <= versus[col] + 1e-9).all() and (versus[col] <= versus[f"{col}_hi"] + 1e-9).all()
    assert versus[versus["temperature"] == 0]["same_as_vanilla"].between(0, 1).all()
    assert versus["vanilla_repetition_4"].between(0, 1).all()
    assert set(versus["task"]) == {"caption", "vqa", "text", "all"}
    assert versus["tau"].between(0, 3).all() and (versus["speedup"] > 0).all()
    caption = versus[(versus["task"] == "caption") & (versus["method"] == "vispec") & (versus["temperature"] == 0)]
    assert caption["paper_task"].iloc[0] == "COCO Caps" and caption["paper_speedup"].iloc[0] == 3.22
    for key, n_rows in (("table1", 12), ("table2", 12)):
        side = pd.read_csv(results / "tables" / f"{key}_vs_paper.csv")
        assert len(side) == n_rows
        measured = side[side["paper_task"] == "COCO Caps"]          # smoke: caption only
        assert measured["tau"].notna().all() and (measured["speedup"] > 0).all(), key
    prefill = pd.read_csv(results / "tables" / "prefill.csv")
    assert len(prefill) == 6 and (prefill["prefill_ratio"] > 0).all()
    assert len(list((results / "raw").glob("bench_ablation_*.jsonl"))) == 5


def check_length(results):
    table = pd.read_csv(results / "tables" / "length_vs_speedup.csv")
    assert set(table["method"]) == {"medusa", "eagle2", "vispec"} and set(table["task"]) == {"caption", "vqa", "text"}
    assert table["output_tokens"].between(1, 6).all() and (table["speedup"] > 0).all()
    trend = pd.read_csv(results / "tables" / "length_trend.csv")
    for _, r in trend.iterrows():       # a line wherever the task lengths differ; none where they are all equal
        lengths = table[(table["method"] == r["method"]) & (table["temperature"] == r["temperature"])]["output_tokens"]
        assert math.isfinite(r["slope_per_100_tokens"]) == (lengths.nunique() > 1)


def check_draft_annotated(results):
    steps = pd.read_csv(results / "tables" / "vispec_draft_steps.csv")
    assert list(steps["step"]) == [0, 1] and steps["top1_agrees_with_target"].between(0, 1).all()
    parts = {r["part"]: r for r in read_jsonl(results / "raw" / "vispec_draft_annotated.jsonl")}
    adaptor, layout = parts["adaptor"], parts["layout"]
    assert len(adaptor["attention_entropy"]) == adaptor["queries"]
    assert all(0 < h <= math.log(adaptor["image_tokens"]) + 1e-6 for h in adaptor["attention_entropy"])
    # the image's pairs are replaced by the compressed tokens (all queries but g's)
    assert layout["draft_rows"] == layout["target_positions"] - 1 - adaptor["image_tokens"] + adaptor["queries"] - 1


def check_step_by_step(results):
    nodes = pd.read_csv(results / "tables" / "speculative_cycle_tree.csv")
    assert len(nodes) == 30 and (nodes["parent"] == -1).sum() == 1 and nodes["depth"].max() <= 4
    assert (nodes["parent"].iloc[1:] < nodes["node"].iloc[1:]).all()            # parents first
    path = nodes[nodes["accepted"]]
    assert path["node"].iloc[0] == 0 and list(path["depth"]) == list(range(len(path)))
    assert all(p in set(path["node"]) for p in path["parent"].iloc[1:])           # one root-to-node path
    records = read_jsonl(results / "raw" / "speculative_step_by_step.jsonl")
    exact = [r for r in records if r["check"] == "exact_T0"]
    assert len(exact) == 2 and all(r["same_tokens"] for r in exact)
    sampling = [r for r in records if r["check"] == "sampling_T1"]
    assert [r["new_token"] for r in sampling] == [2, 3] and all(r["samples_each"] == 40 for r in sampling)
    cost = pd.read_csv(results / "tables" / "tau_to_speedup.csv").iloc[0]
    assert bool(cost["same_tokens"]) and cost["bound_1_plus_tau"] == pytest.approx(1 + cost["tau"])
    assert 0 < cost["predicted_speedup"] <= cost["bound_1_plus_tau"] * cost["t_step_ms"] / cost["t_verify_ms"] + 1e-9


# notebook -> (extra smoke parameters, tables it must write with their required columns, figures, check)
def check_default_target(results):
    checks = pd.read_csv(results / "tables" / "default_vlm_checks.csv").set_index("check")
    assert checks.loc["Parity: max |logit diff| (fp32)", "measured"] <= 2e-4
    for row in ("See: shape accuracy", "See: colour accuracy", "See (scenes): shape accuracy", "See (scenes): colour accuracy"):
        assert 0 <= checks.loc[row, "measured"] <= 1 and 0 <= float(checks.loc[row, "blank_image"]) <= 1
    grounded = "Write long: grounded (a true colour or shape, nothing false)"
    for row in ("Write long: colours grounded", "Write long: no false colour named", "Write long: no false shape named", grounded):
        assert 0 <= checks.loc[row, "measured"] <= 1
    assert checks.loc[grounded, "measured"] <= min(checks.loc["Write long: no false colour named", "measured"],
                                                   checks.loc["Write long: no false shape named", "measured"])
    for row in ("See (scenes): shape accuracy", "See (scenes): colour accuracy",           # section 5b's ceiling
                "Write long (scenes): grounded", "Write long (easy-vqa): grounded"):
        assert 0 <= checks.loc[row, "measured"] <= 1 and 0 <= float(checks.loc[row, "lm_told_facts"]) <= 1, row
    assert checks.loc["Write long (scenes): grounded", "n"] + checks.loc["Write long (easy-vqa): grounded", "n"] == \
        checks.loc["Write long: median tokens", "n"]
    both, decode = (checks.loc[f"Vanilla decoder tokens/s ({k})", "measured"] for k in ("prefill + decode", "decode steps"))
    assert 0 < both and 0 < decode
    tuned = pd.read_csv(results / "tables" / "default_vlm_tuned_checks.csv").set_index("check")
    committed = json.loads((NOTEBOOKS.parent / "results" / "default_vlm" / "target_checks.json").read_text())
    assert tuned.loc["described, T=0: grounded (>= 3 true claims, no false one)", "measured"] == \
        committed["describe_T0"]["grounded"]
    assert tuned.loc["colour of the shape at a position", "n"] == committed["binding"]["questions"]


EXPECTED = {
    "00_build_default_target": (
        {},
        {"default_vlm_checks.csv": ["check", "measured", "blank_image", "goal", "n", "met"],
         "default_vlm_tuned_checks.csv": ["check", "measured", "goal", "met", "n"]},
        ["default_vlm_projector_loss.png", "default_vlm_long_lengths.png", "default_vlm_instruction_tuning_loss.png"],
        check_default_target,
    ),
    "01_redundancy_attention": (
        {},
        {"redundancy_single_layer.csv": ["R", "measured", "closed_form"],
         "redundancy_target_layers.csv": ["layer", "image_attention", "image_share"]},
        ["redundancy_single_layer.png", "redundancy_target_layers.png"],
        check_redundancy,
    ),
    "02_synthesize_data": (
        {},
        {"synth_prompt_rewrites.csv": ["source", "original", "added", "rewritten"],
         "synth_sampled_vs_greedy.csv": ["set", "temperature", "mean_tokens", "distinct_2", "repetition_4"],
         "synth_examples.csv": ["set", "prompt", "length", "answer"],
         "synth_datasets.csv": ["dataset", "samples", "mean_answer_tokens", "path"]},
        ["synth_length_distribution.png"],
        check_synthesis,
    ),
    "03_train_drafts": (
        {},
        {"train_plan.csv": ["run", "kind", "stage2_data", "table", "row", "saved_to"],
         "train_summary.csv": ["run", "stage", "steps", "loss_first", "loss_last"]},
        ["train_loss_curves.png"],
        check_training,
    ),
    "04_paper_tables": (
        {},
        {"paper_main_table.csv": ["model", "temperature", "method", "task", "tau", "speedup"],
         "prefill.csv": ["task", "vanilla_prefill_s", "vispec_prefill_s", "prefill_ratio"],
         "verdicts.csv": ["claim", "paper", "rule", "measured", "verdict", "holds_in_resamples", "why", "paper_passes"]},
        ["bench_main_length_vs_speedup.png"],
        check_paper_tables,
    ),
    "06_vispec_draft_annotated": (
        {},
        {"vispec_draft_steps.csv": ["step", "reads", "cross_entropy", "top1_agrees_with_target"]},
        ["vispec_adaptor_attention.png", "vispec_unroll_mask.png"],
        check_draft_annotated,
    ),
    "07_speculative_decoding_step_by_step": (
        {},
        {"speculative_cycle_tree.csv": ["node", "token", "parent", "depth", "cumulative_log_prob", "accepted"],
         "tau_to_speedup.csv": ["tau", "bound_1_plus_tau", "t_draft_ms", "t_verify_ms", "predicted_speedup"]},
        ["speculative_cycle_tree.png", "speculative_sampling_histograms.png", "tau_to_speedup.png"],
        check_step_by_step,
    ),
    "05_length_vs_speedup": (
        {},
        {"length_vs_speedup.csv": ["method", "temperature", "task", "output_tokens", "speedup", "tau"]},
        ["length_vs_speedup_trend.png"],
        check_length,
    ),
}


def test_every_notebook_has_expectations():
    assert sorted(p.stem for p in notebooks()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_smoke_run(name, tmp_path):
    params, tables, figures, check = EXPECTED[name]
    run_notebook(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
                 {"SMOKE": True, "RESULTS_DIR": str(tmp_path / "results"), **params})
    for table, columns in tables.items():
        df = pd.read_csv(tmp_path / "results" / "tables" / table)
        assert len(df) > 0 and set(columns) <= set(df.columns), table
        numbers = df.select_dtypes("number").to_numpy().ravel()
        assert all(math.isfinite(x) for x in numbers), table
        assert (tmp_path / "results" / "tables" / table.replace(".csv", ".md")).is_file()
    for fig in figures:
        assert (tmp_path / "results" / "figures" / fig).stat().st_size > 1000
    if figures:                                         # shown in the notebook, not only saved
        executed = json.loads((tmp_path / f"{name}.ipynb").read_text())
        assert any("image/png" in o.get("data", {}) for c in executed["cells"] for o in c.get("outputs", [])), name
    assert any((tmp_path / "results" / "raw").glob("*.jsonl"))
    check(tmp_path / "results")


def test_misspelt_parameter_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no parameter"):
        run_notebook(NOTEBOOKS / "01_redundancy_attention.ipynb", tmp_path / "x.ipynb", {"SMOKEE": True})


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_every_parameter_is_declared(path):
    """Every assignment in a parameters cell is one papermill parses: one it cannot read (a comment
    with ' = ' in it was one) would be refused as a misspelling when passed."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = {m.group(1) for m in re.finditer(r"^([A-Za-z_]\w*)\s*=", "".join(cell["source"]), re.M)}
    assert assigned == set(declared_parameters(path))
