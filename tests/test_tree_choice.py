"""The 'auto' tree of `generate`: searched once per target, draft, device and temperature, cached, and
no draft at all where no tree is predicted to win; the search's cycle model fitted through real runs."""
import pytest
import torch

from vispec_core import generate, load_draft
from vispec_core.data.tasks import task_prompts
from vispec_core.decoding.tree import TreeConfig
from vispec_core.evaluation import tree_choice, tree_search

from conftest import tiny_target
from test_decode import ScriptedDraft

GRID = dict(depths=(1, 2, 3), top_ks=(1, 2, 4), totals=(4, 8, 16), repeats=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return tiny_target("llava_next")


def scripted_search(target, verify_cost, tokens=8):
    """A perfect draft (it proposes the target's greedy answer) searched with the given verification costs."""
    prompt = task_prompts("caption", 1)[0]
    greedy = generate(target, prompt.prompt, prompt.images, max_new_tokens=tokens + 8).token_ids
    draft = ScriptedDraft(greedy, target.vocab_size)
    original = tree_search.verify_cost_curve
    try:
        tree_search.verify_cost_curve = lambda target, cache, sizes, *a, **k: {n: verify_cost(n) for n in sizes}
        return tree_search.search_tree(target, draft, [prompt], tokens, measure=False, **GRID)
    finally:
        tree_search.verify_cost_curve = original


def test_no_tree_when_the_costs_make_every_tree_lose(tiny):
    # verifying n > 1 tokens costs 50 one-token forwards: even a perfect draft cannot pay for it
    lose = scripted_search(tiny, lambda n: 0.01 if n == 1 else 0.5)
    assert lose["chosen"]["tau"] > 1 and lose["chosen"]["speedup"] < 1
    assert tree_choice.decide(lose) is None
    # free verification: the perfect draft's deepest tree wins
    win = scripted_search(tiny, lambda n: 0.01)
    assert win["chosen"]["speedup"] > 1
    assert tree_choice.decide(win) == TreeConfig(win["chosen"]["total_tokens"], win["chosen"]["depth"],
                                                 win["chosen"]["top_k"])


def test_generate_auto_decodes_without_the_draft_when_none_wins_and_says_so(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("VISPEC_CACHE", str(tmp_path))
    monkeypatch.setattr(tree_choice, "CALIBRATION_TOKENS", 4)
    monkeypatch.setattr(tree_search, "verify_cost_curve",      # told: verification costs 50 one-token forwards
                        lambda target, cache, sizes, *a, **k: {n: 0.01 if n == 1 else 0.5 for n in sizes})
    monkeypatch.setattr(tree_search, "overhead_fit", lambda checks: (lambda n: 0.0))    # nothing measured beyond
    draft = load_draft("random:eagle2", tiny)
    prompt = task_prompts("vqa", 1)[0]
    plain = generate(tiny, prompt.prompt, prompt.images, max_new_tokens=8)
    auto = generate(tiny, prompt.prompt, prompt.images, draft=draft, max_new_tokens=8)
    assert auto.token_ids == plain.token_ids
    assert auto.stats["method"] == "vanilla" and auto.stats["draft"] == "eagle2" and auto.stats["tree"] is None
    choice = auto.stats["tree_choice"]
    assert choice["decoded"] == "without the draft" and choice["predicted_speedup"] < 1 and not choice["cached"]
    assert len(list((tmp_path / "trees").glob("*.json"))) == 1
    # cached: a second call searches nothing; another temperature is another choice
    def searched(*a, **k):
        raise RuntimeError("searched again")
    monkeypatch.setattr(tree_search, "search_tree", searched)
    again = generate(tiny, prompt.prompt, prompt.images, draft=draft, max_new_tokens=8)
    assert again.stats["tree_choice"]["cached"] and again.token_ids == plain.token_ids
    with pytest.raises(RuntimeError, match="searched again"):
        generate(tiny, prompt.prompt, prompt.images, draft=draft, max_new_tokens=8, temperature=1.0)


def test_explicit_trees_skip_the_choice(tiny, monkeypatch):
    monkeypatch.setattr(tree_choice, "choose_tree", lambda *a, **k: pytest.fail("auto choice with a tree given"))
    draft = load_draft("random:eagle2", tiny)
    assert generate(tiny, "Say.", draft=draft, max_new_tokens=3, tree="paper").stats["tree"] == "30/3/8"
    assert generate(tiny, "Say.", draft=draft, max_new_tokens=3, tree="8/2/2").stats["tree"] == "8/2/2"
    assert generate(tiny, "Say.", draft=draft, max_new_tokens=3, depth=2).stats["tree"] == "30/2/8"
    medusa = load_draft("random:medusa", tiny)
    assert generate(tiny, "Say.", draft=medusa, max_new_tokens=3, tree="paper").stats["tree"] == "30/2/8"
    lookup = generate(tiny, "Say.", draft=load_draft("prompt_lookup", tiny), max_new_tokens=3)
    assert lookup.stats["tree_source"] == "chain" and lookup.stats["tree"] is None
    with pytest.raises(ValueError, match="not both"):
        generate(tiny, "Say.", draft=draft, max_new_tokens=3, tree="paper", top_k=4)
    with pytest.raises(ValueError, match="tree must be"):
        generate(tiny, "Say.", draft=draft, max_new_tokens=3, tree="thirty")


def test_calibrated_cycle_model_passes_through_its_real_runs(tiny):
    """The cycle model is fitted through real runs of one or two trees: it predicts their measured cycles.
    How well it predicts other trees is timed live on a shared CPU only by the benchmark (the test below
    reads its record)."""
    draft = load_draft("random:eagle2", tiny)
    search = tree_search.search_tree(tiny, draft, task_prompts("caption", 1), 16, **GRID)
    assert len(search["cycle_checks"]) in (1, 2)
    for c in search["cycle_checks"]:
        row = next(r for r in search["candidates"] if r["label"] == c["label"])
        assert tree_search.cycle_s(row) == pytest.approx(c["measured_cycle_s"], rel=1e-6)
    assert all(tree_search.cycle_s(r) > 0 for r in search["candidates"])


def test_calibrated_cycle_model_predicts_the_recorded_benchmark_within_20_percent():
    """The auto-tree benchmark (results/raw/bench_auto_tree.jsonl) recorded each search's predicted rows
    and then decoded 10 prompts per task with those trees: the model's cycle time (draft, extend,
    verification, fitted overhead) is within 20% of the runs' median measured cycle, tree by tree."""
    import json
    import statistics
    from pathlib import Path
    records = [json.loads(line) for line in
               (Path(__file__).parents[1] / "results" / "raw" / "bench_auto_tree.jsonl").read_text().splitlines()]
    runs = [r for r in records if r["type"] == "run" and r["tree"] and r["cycles"]]
    compared = 0
    for search in (r for r in records if r["type"] == "tree_search"):
        for row in (search["chosen"], search["paper"]):
            measured = [r["decode_time_s"] / r["cycles"] for r in runs if r["method"] == search["method"]
                        and r["temperature"] == search["temperature"] and r["tree"]["label"] == row["label"]]
            if measured:
                assert len(measured) >= 10
                assert 0.8 < tree_search.cycle_s(row) / statistics.median(measured) < 1.2, (search["method"], row["label"])
                compared += 1
    assert compared >= 6
