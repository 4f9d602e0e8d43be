"""The benchmark: records, resume, paired speedup, exactness across methods, the tree search's offline
tau estimate against real runs, report tables, and bad input. Tiny fp32 targets, random drafts."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from vispec_core.__main__ import main
from vispec_core.cpu.packed import can_pack
from vispec_core.data.tasks import TASKS, parse_tasks, task_prompts
from vispec_core.decoding.decode import decode_speculative, decode_vanilla
from vispec_core.drafts.session import TreeSession
from vispec_core.evaluation.bench import hf_generate, parse_methods, parse_temperatures, read_records
from vispec_core.evaluation.report import paired, summarise, write_report
from vispec_core.evaluation.tree_choice import decide
from vispec_core.evaluation.tree_search import PAPER_TREE, TreeConfig, calibrate, estimate_tau, parse_tree, search_tree

from conftest import tiny_target

METHODS = "vanilla,hf,hf_prompt_lookup,prompt_lookup,medusa,eagle2,vispec"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on a shared 2-core CPU make OpenMP wait; one keeps these tests quick."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bench_args(out, **over):
    opts = dict(target="tiny:llava_next", methods=METHODS, tasks="text,caption", temperature="0,1",
                n_prompts="1", max_new_tokens="6", drafts="random", dtype="float32", out=str(out))
    opts.update(over)
    return ["bench"] + [x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", v)]


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.jsonl"
    assert main(bench_args(out)) == 0
    return out


def runs_of(path):
    return [json.loads(line) for line in path.read_text().splitlines() if json.loads(line)["type"] == "run"]


def test_records_have_every_field(bench_file):
    lines = [json.loads(line) for line in bench_file.read_text().splitlines()]
    header = lines[0]
    assert header["type"] == "header"
    for k in ("config", "git_commit", "versions", "device", "dtype", "threads"):
        assert k in header
    assert header["versions"]["torch"] == torch.__version__ and header["dtype"] == "float32"
    runs = runs_of(bench_file)
    assert len(runs) == 7 * 2 * 2                       # methods x prompts x temperatures
    for r in runs:
        for k in ("task", "prompt_id", "method", "temperature", "seed", "new_tokens", "wall_time_s",
                  "prefill_time_s", "decode_time_s", "tau", "accept_lengths", "peak_memory", "tree",
                  "same_as_vanilla", "first_divergence", "tokens"):
            assert k in r, k
        assert r["new_tokens"] == len(r["tokens"]) >= 1
        assert r["wall_time_s"] > 0 and r["peak_memory"]["bytes"] > 0
        assert "rss" in r["peak_memory"]["kind"]        # CPU: labelled as the process's max RSS
        assert (r["tree"] is not None) == (r["method"] in ("medusa", "eagle2", "vispec"))
        if r["tree"]:   # Medusa's 3 heads give 3 levels: its tree stops at depth 2
            want = ("30/2/8", "capped") if r["method"] == "medusa" else ("30/3/8", "paper")
            assert (r["tree"]["label"], r["tree"]["source"]) == want
            assert len(r["accept_lengths"]) == r["cycles"]
    # same seed for every method on a prompt
    seeds = {(r["prompt_id"], r["temperature"]): set() for r in runs}
    for r in runs:
        seeds[(r["prompt_id"], r["temperature"])].add(r["seed"])
    assert all(len(s) == 1 for s in seeds.values())


def test_every_method_gives_vanillas_tokens_at_temperature_0_in_fp32(bench_file):
    runs = [r for r in runs_of(bench_file) if r["temperature"] == 0]
    by_prompt = {}
    for r in runs:
        by_prompt.setdefault(r["prompt_id"], {})[r["method"]] = r["tokens"]
    for pid, toks in by_prompt.items():
        assert len(toks) == 7
        assert all(t == toks["vanilla"] for t in toks.values()), pid
    for r in runs:
        if r["method"] != "vanilla":
            assert r["same_as_vanilla"] is True and r["first_divergence"] is None


def test_rerun_skips_done_records_and_refuses_other_settings(bench_file, capsys):
    before = bench_file.read_text()
    with bench_file.open("a") as f:
        f.write('{"type": "run", "task": "te')            # a run killed mid-write
    assert main(bench_args(bench_file)) == 0
    assert bench_file.read_text() == before              # the stub dropped, nothing re-run
    assert main(bench_args(bench_file, max_new_tokens="7")) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_method_added_later_reruns_its_groups_whole(tmp_path):
    """Resuming with one more method measures every (prompt, temperature) group again, all methods in one
    sitting; the new runs supersede the old ones in every table."""
    out = tmp_path / "grow.jsonl"
    small = dict(methods="vanilla,eagle2", tasks="text", temperature="0")
    assert main(bench_args(out, **small)) == 0
    first = runs_of(out)
    assert len(first) == 2
    assert main(bench_args(out, **dict(small, methods="vanilla,eagle2,prompt_lookup"))) == 0
    runs = runs_of(out)
    assert runs[:2] == first and sorted(r["variant"] for r in runs[2:]) == ["eagle2", "prompt_lookup", "vanilla"]
    table = paired(read_records(out))
    assert len(table) == 3 and table["wall_time_s"].tolist() == [r["wall_time_s"] for r in runs[2:]]
    assert all(r["same_as_vanilla"] for r in runs[2:] if r["method"] != "vanilla")
    assert main(bench_args(out, **dict(small, methods="vanilla,eagle2,prompt_lookup"))) == 0
    assert len(runs_of(out)) == 5                                # complete: nothing ran again


@pytest.mark.parametrize("changed, message", [("draft", "other target or draft weights"),
                                              ("machine", "another machine or weight form"),
                                              ("version", "an older version of the benchmark")])
def test_rerun_after_retraining_or_on_another_machine_starts_over_and_keeps_the_old_file(
        bench_file, tmp_path, capsys, changed, message):
    """Resuming onto figures of other weights would mix two models in one table, onto another machine's
    two machines' timings: the bench keeps the old file aside and measures again."""
    out = tmp_path / "b.jsonl"
    records = [json.loads(line) for line in bench_file.read_text().splitlines()]
    for r in records:
        if r["type"] == "header":
            assert len(r["config"]["weights"]) == 16 and r["device"]
            if changed == "draft":
                r["config"]["weights"] = "an-older-draft"
            elif changed == "version":
                del r["config"]["records_version"]          # written before records carried one
            else:
                r["device"] = "another CPU (cpu, AVX512)"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    methods = METHODS if changed != "draft" else "vanilla,eagle2"       # the same drafts: the same weights
    args = bench_args(out, methods=methods, tasks="text", temperature="0")
    assert main(args) == 0
    kept = list(tmp_path.glob("b.before-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == "".join(json.dumps(r) + "\n" for r in records)
    assert message in capsys.readouterr().err
    fresh = [json.loads(line) for line in out.read_text().splitlines()]
    def what(h):
        return h["config"]["weights"], h["device"], h["config"].get("records_version")
    assert [what(r) for r in fresh if r["type"] == "header"] != [what(h) for h in records if h["type"] == "header"]
    assert {r["variant"] for r in fresh if r["type"] == "run"} == set(methods.split(","))


@pytest.mark.parametrize("machine", ["same", "another"])
def test_records_made_in_another_clone_resume_or_start_over_but_never_fail(tmp_path, capsys, machine):
    """Committed records were written in another checkout: its drafts folder had another absolute path.
    What identifies a benchmark is its settings, its weights and its machine, never a path: on the same
    machine the run resumes (nothing measured twice); on another it is set aside and measured again."""
    from vispec_core import load_draft, load_target

    target = load_target("tiny:llava_next", dtype="float32")
    first = tmp_path / "first_clone"
    load_draft("random:eagle2", target=target).save_pretrained(first / "drafts" / "eagle2")
    args = dict(methods="vanilla,eagle2", tasks="text", temperature="0")
    assert main(bench_args(first / "b.jsonl", drafts=str(first / "drafts"), **args)) == 0
    header = json.loads((first / "b.jsonl").read_text().splitlines()[0])
    assert header["config"]["drafts"] == str(first / "drafts") and "command" in header["config"]

    second = tmp_path / "second_clone"
    shutil.copytree(first, second)
    out = second / "b.jsonl"
    if machine == "another":
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        lines[0]["device"] = "another CPU (cpu, AVX512)"
        out.write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = out.read_text()
    capsys.readouterr()
    assert main(bench_args(out, drafts=str(second / "drafts"), **args)) == 0
    err = capsys.readouterr().err
    if machine == "same":
        assert out.read_text() == before                  # resumed: every run was already there
    else:
        assert "another machine" in err and len(list(second.glob("b.before-*.jsonl"))) == 1
        runs = runs_of(out)
        assert {r["variant"] for r in runs} == {"vanilla", "eagle2"} and all(r["same_as_vanilla"] is not False
                                                                               for r in runs)


def test_records_name_paths_relative_to_the_repository(tmp_path):
    from vispec_core.evaluation.records import REPO, portable, write_jsonl

    assert portable(str(REPO / "data" / "drafts" / "default")) == "data/drafts/default"
    assert portable(REPO / "results") == "results"
    assert portable("default") == "default" and portable("tiny:llava_next") == "tiny:llava_next"
    assert portable({"a": [str(Path.home() / ".cache" / "vispec")]}) == {"a": ["~/.cache/vispec"]}
    path = write_jsonl(tmp_path / "r.jsonl", [{"source": str(REPO / "results" / "raw" / "x.jsonl")}],
                       drafts=REPO / "data" / "drafts")
    line = json.loads(path.read_text())
    assert line["source"] == "results/raw/x.jsonl" and line["meta"]["config"]["drafts"] == "data/drafts"
    assert str(REPO) not in path.read_text()


def test_bench_refuses_an_out_file_that_is_not_a_benchmark_file(tmp_path, capsys):
    """A notes file given as --out is neither cut nor appended to, whether or not it ends with a newline."""
    for text in ("my notes", "first line\nsecond line", '{"a": 1}\n'):
        notes = tmp_path / "notes.txt"
        notes.write_text(text)
        assert main(bench_args(notes)) == 2
        assert notes.read_text() == text
        assert "not a benchmark file" in capsys.readouterr().err


def test_speedup_is_paired_per_prompt():
    # vanilla: 1 s/token on prompt a, 3 s/token on prompt b; the method: 0.5 and 3 -> ratios 2 and 1
    recs = []
    for pid, v, m in (("a", 1.0, 0.5), ("b", 3.0, 3.0)):
        for method, tpt in (("vanilla", v), ("vispec", m)):
            recs.append(dict(type="run", task="t", prompt_id=pid, temperature=0.0, variant=method, method=method,
                             time_per_token_s=tpt, new_tokens=10, decode_time_s=9 * tpt, tokens_per_s=1 / tpt, tau=1.0, tree=None,
                             same_as_vanilla=True if method != "vanilla" else None))
    runs = paired(recs)
    assert sorted(runs[runs["method"] == "vispec"]["speedup"]) == [1.0, 2.0]
    row = summarise(recs).query("variant == 'vispec' and task == 'all'").iloc[0]
    assert row["mean_speedup"] == pytest.approx(1.5)            # mean of paired ratios
    assert row["mean_speedup"] != pytest.approx(2.0 / 1.75)     # not a ratio of pooled means
    assert row["median_speedup"] == pytest.approx(1.5)
    assert row["mean_speedup_lo"] == pytest.approx(1.0) and row["mean_speedup_hi"] == pytest.approx(2.0)
    assert row["mean_decode_speedup"] == pytest.approx(1.5)
    assert np.isnan(row["median_repetition_4"])                # no token ids recorded: unknown, not 0
    recs[1]["tokens"] = [7, 8, 9, 10] * 3                       # a loop: 5 of its 9 4-grams repeat an earlier one
    recs[3]["tokens"] = list(range(12))
    row = summarise(recs).query("variant == 'vispec' and task == 'all'").iloc[0]
    assert row["median_repetition_4"] == pytest.approx((5 / 9 + 0) / 2)


def test_report_tables_and_figure(bench_file, tmp_path):
    written = write_report(bench_file, tmp_path)
    csv = tmp_path / "tables" / f"{bench_file.stem}_summary.csv"
    assert csv in written and (tmp_path / "tables" / f"{bench_file.stem}_summary.md").is_file()
    assert (tmp_path / "figures" / f"{bench_file.stem}_length_vs_speedup.png").stat().st_size > 1000
    df = pd.read_csv(csv)
    for col in ("variant", "task", "temperature", "mean_tau", "mean_tau_lo", "mean_tau_hi", "mean_speedup",
                "mean_speedup_lo", "mean_speedup_hi", "median_speedup", "mean_decode_speedup", "tokens_per_s", "prompts"):
        assert col in df.columns
    assert len(df) == 7 * 3 * 2                           # variants x (2 tasks + all) x temperatures
    assert set(df["task"]) == {"text", "caption", "all"}
    for col in ("mean_tau", "mean_speedup", "mean_speedup_lo", "mean_speedup_hi", "mean_decode_speedup", "tokens_per_s"):
        assert np.isfinite(df[col]).all()
    assert (df["mean_speedup_lo"] <= df["mean_speedup"] + 1e-12).all() and (df["mean_speedup"] <= df["mean_speedup_hi"] + 1e-12).all()
    assert (df[df["variant"] == "vanilla"]["mean_speedup"] == 1.0).all()


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
def test_hf_generate_sees_the_same_prompt_and_matches_vanilla(family, photos):
    target = tiny_target(family)
    prompt = "Describe it. Describe it, describe it."
    inputs = target.prepare(prompt, [photos["rocket"]])
    greedy, _ = decode_vanilla(target, inputs, 20)
    for lookup in (False, True):        # prompt lookup: its first step would copy image placeholders
        tokens, stats = hf_generate(target, prompt, [photos["rocket"]], 20, 0.0, 1.0, 0, prompt_lookup=lookup)
        assert stats["prompt_tokens"] == inputs.length
        assert tokens == greedy
        assert stats["prefill_time_s"] > 0 and stats["decode_time_s"] > 0
    tokens, _ = hf_generate(target, prompt, [photos["rocket"]], 20, 1.0, 1.0, 0)
    assert len(tokens) == 20


# -- the tree search ------------------------------------------------------------------------------
class OracleDraft:
    """A draft that knows the target's greedy answer and ranks its next token 1st, 2nd, 4th or 7th
    depending on the position (random log-probs elsewhere): acceptance is rich and known to be
    path-dependent, yet deterministic."""

    RANKS = (0, 0, 1, 3, 0, 6, 0)

    def __init__(self, script, vocab):
        self.script, self.vocab = script, vocab

    def begin(self, target, inputs, capacity):
        return OracleSession(self)


class OracleSession(TreeSession):
    def __init__(self, draft):
        self.draft, self.generated, self.extends, self.paths = draft, 0, 0, []

    def extend(self, f, next_ids, next_embeds=None):
        self.generated += 1 if self.extends == 0 else len(next_ids)
        self.extends += 1

    def _logprobs(self, path):
        d, at = self.draft, self.generated + len(path)
        g = torch.Generator().manual_seed(hash((at,) + tuple(path)) % 2**31)
        logits = torch.randn(d.vocab, generator=g)
        if at < len(d.script) and list(path) == d.script[self.generated:at]:
            rank = OracleDraft.RANKS[at % len(OracleDraft.RANKS)]
            for r in range(rank):
                logits[(d.script[at] + 1 + r) % d.vocab] = 9.0 - 1.5 * r
            logits[d.script[at]] = 9.0 - 1.5 * rank
        return logits.log_softmax(-1)

    def expand(self, tokens, parents, depth):
        if depth == 0:
            self.paths = [()]
        else:
            self.paths += [self.paths[p] + (t,) for t, p in zip(tokens.tolist(), parents.tolist())]
        return torch.stack([self._logprobs(p) for p in self.paths[-len(tokens):]])


@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
def test_offline_tau_estimate_equals_real_runs(family):
    target = tiny_target(family)
    prompts = task_prompts("caption", 1, seed=3)
    n = 24
    inputs = target.prepare(prompts[0].prompt, prompts[0].images)
    greedy, _ = decode_vanilla(target, inputs, n + 8)
    draft = OracleDraft(greedy, target.vocab_size)
    cal = calibrate(target, draft, prompts, n, depths=(1, 2, 3, 4), top_ks=(1, 2, 4, 8), max_total=30)
    assert cal.ys[0] == greedy[:len(cal.ys[0])]
    taus = []
    for config in (TreeConfig(30, 3, 8), TreeConfig(4, 2, 2), TreeConfig(8, 4, 4), TreeConfig(12, 3, 1),
                   TreeConfig(2, 1, 8)):
        tokens, stats = decode_speculative(target, draft, inputs, n, total_tokens=config.total_tokens,
                                           depth=config.depth, top_k=config.top_k)
        assert tokens == greedy[:n]
        tau, lengths = estimate_tau(cal, config)
        assert lengths == [stats["accept_lengths"]], config
        assert tau == pytest.approx(stats["tau"])
        taus.append(tau)
    assert max(taus) > 1 and len(set(taus)) > 2          # the check has teeth: trees differ in tau


def test_sampled_calibration_replays_what_a_sampled_run_accepted():
    """At T>0 a run accepts exactly the longest tree path spelling the tokens it emits (the residual draw
    excludes the children), so calibrating on the tokens a real sampled run emitted gives back its
    accept lengths; and left to itself, calibration samples the answer exactly as vanilla sampling does."""
    from vispec_core.targets import load_target

    target = load_target("tiny:llava_next", dtype=torch.float32)
    with torch.no_grad():
        target.lm_head.weight.mul_(30.0)          # peaked: sampled runs follow greedy for a while, then part
    prompts = task_prompts("caption", 1, seed=3)
    n, t = 24, 0.3
    inputs = target.prepare(prompts[0].prompt, prompts[0].images)
    greedy, _ = decode_vanilla(target, inputs, n + 8)
    draft = OracleDraft(greedy, target.vocab_size)
    accepted, parted = 0, 0
    for seed, config in ((5, TreeConfig(8, 4, 4)), (6, TreeConfig(30, 3, 8)), (7, TreeConfig(4, 2, 2))):
        tokens, stats = decode_speculative(target, draft, inputs, n + 8, temperature=t, total_tokens=config.total_tokens,
                                           depth=config.depth, top_k=config.top_k,
                                           generator=torch.Generator().manual_seed(seed))
        cal = calibrate(target, draft, prompts, n, depths=(2, 3, 4), top_ks=(2, 4, 8), max_total=30,
                        temperature=t, follow=[tokens])
        assert cal.ys[0] == tokens[:len(cal.ys[0])]
        lengths = estimate_tau(cal, config)[1][0]
        assert len(lengths) >= 3 and lengths == stats["accept_lengths"][:len(lengths)], config
        accepted += sum(lengths)
        parted += tokens != greedy[:len(tokens)]
    assert accepted > 0 and parted > 0                 # acceptances happened, and sampling left greedy
    cal = calibrate(target, draft, prompts, n, depths=(2,), top_ks=(2,), max_total=8, temperature=t, seed=4)
    sampled, _ = decode_vanilla(target, inputs, len(cal.ys[0]), temperature=t,
                                generator=torch.Generator().manual_seed(4 * 1_000_003))
    assert cal.ys[0] == sampled and sampled != greedy[:len(sampled)]


@pytest.mark.parametrize("kind", ["medusa", "vispec"])
def test_offline_estimate_matches_real_drafts(kind):
    """Real (random) drafts see the target's f: from single-token forwards in calibration, from the tree
    forward in decoding; in fp32 both give the same trees, so the same accept lengths."""
    from vispec_core import load_draft

    target = tiny_target("llava_next")
    draft = load_draft(f"random:{kind}", target=target)
    prompts = task_prompts("caption", 1, seed=3)
    tree = TreeConfig(30, 2, 8) if kind == "medusa" else PAPER_TREE      # Medusa's 3 heads: depth 2
    cal = calibrate(target, draft, prompts, 24, depths=(tree.depth,), top_ks=(8,), max_total=30)
    inputs = target.prepare(prompts[0].prompt, prompts[0].images)
    _, stats = decode_speculative(target, draft, inputs, 24)
    assert estimate_tau(cal, tree)[1] == [stats["accept_lengths"]]


def test_search_tree_returns_a_valid_config():
    target = tiny_target("llava_next")
    from vispec_core import load_draft

    draft = load_draft("random:medusa", target=target)        # 3 heads: depth at most 2
    result = search_tree(target, draft, task_prompts("text", 1), 6, depths=(1, 2, 3, 4), top_ks=(1, 4, 8),
                         totals=(2, 8, 30), verify_sizes=(1, 8, 30), repeats=1)
    c = result["chosen"]
    assert 2 <= c["total_tokens"] <= 30 and 1 <= c["depth"] <= 2 and c["top_k"] in (1, 4, 8)
    assert c["tokens_per_s"] == max(r["tokens_per_s"] for r in result["candidates"])
    assert result["paper"]["label"] == "30/2/8"                # the paper's tree at the heads' depth
    assert all(np.isfinite(r["speedup"]) and r["tau"] >= 0 for r in result["candidates"])
    assert set(result["verify_curve_s"]) == {"1", "8", "30"}
    assert set(result["draft_pass_s"]) == {"1", "4", "8"} and all(t > 0 for t in result["draft_pass_s"].values())


def test_tree_auto_runs_both_trees(tmp_path):
    out = tmp_path / "auto.jsonl"
    assert main(bench_args(out, methods="vanilla,eagle2", tasks="text", temperature="0,1", max_new_tokens="4",
                           tree="auto", calibration_tokens="4")) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    search = {r["temperature"]: r for r in lines if r["type"] == "tree_search"}     # one search per temperature
    assert set(search) == {0.0, 1.0} and {r["method"] for r in search.values()} == {"eagle2"}
    runs = {(r["variant"], r["temperature"]): r for r in lines if r["type"] == "run"}
    assert set(runs) == {(v, t) for v in ("vanilla", "eagle2", "eagle2@auto") for t in (0.0, 1.0)}
    for t in (0.0, 1.0):       # the chosen tree, or no draft where none is predicted to win (as generate's auto)
        chosen = decide(search[t])
        assert runs["eagle2@auto", t]["tree"]["label"] == (chosen.label if chosen else "no draft")
        assert (runs["eagle2@auto", t]["draft_time_s"] is None) == (chosen is None)        # no draft ran
        assert runs["eagle2", t]["tree"]["label"] == "30/3/8"
    written = write_report(out, tmp_path)
    assert tmp_path / "tables" / "auto_trees.csv" in written
    assert tmp_path / "figures" / "auto_predicted_vs_measured.png" in written
    trees = pd.read_csv(tmp_path / "tables" / "auto_trees.csv")
    assert len(trees) == 4 and (trees["calibrated_at"] == trees["temperature"]).all()
    # the same measured cycle: speedup scales with tau + 1, so 2x needs tau_for_2x; the longest path always
    # accepted is the ceiling
    assert np.allclose((trees["tau_for_2x"] + 1) / (trees["predicted_tau"] + 1), 2 / trees["predicted_speedup"])
    assert (trees["predicted_speedup"] <= trees["ceiling_speedup"] + 1e-12).all()
    assert main(bench_args(out, methods="vanilla,eagle2", tasks="text", temperature="0,1", max_new_tokens="4",
                           tree="auto", calibration_tokens="4")) == 0          # resumed: nothing searched again
    assert len([line for line in out.read_text().splitlines() if '"tree_search"' in line]) == 2


# -- bad input ------------------------------------------------------------------------------------
def test_parsers():
    assert parse_temperatures("0,1") == [0.0, 1.0] and parse_temperatures("0.7") == [0.7]
    assert parse_methods("vanilla, vispec") == ["vanilla", "vispec"]
    assert parse_tasks("all") == list(TASKS) and parse_tasks("ocr,vqa") == ["ocr", "vqa"]
    assert parse_tree("auto") == "auto" and parse_tree(None) == PAPER_TREE and parse_tree("16/4/4") == TreeConfig(16, 4, 4)
    for bad, fn in (("0,x", parse_temperatures), ("-1", parse_temperatures), ("", parse_temperatures),
                    ("vanila", parse_methods), ("vqa,coco", parse_tasks), ("30/3", parse_tree),
                    ("a/b/c", parse_tree), ("1/3/8", parse_tree), ("30/0/8", parse_tree)):
        with pytest.raises(ValueError):
            fn(bad)


@pytest.mark.parametrize("over, message", [(dict(methods="vanilla,eagle"), "Unknown method"),
                                           (dict(tasks="text,coco"), "Unknown task"),
                                           (dict(tree="30-3-8"), "tree must be"),
                                           (dict(temperature="zero"), "--temperature"),
                                           (dict(n_prompts="0"), "--n-prompts")])
def test_bad_input_gives_a_clear_error(tmp_path, capsys, over, message):
    assert main(bench_args(tmp_path / "x.jsonl", **over)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_tasks_are_deterministic_and_held_out():
    for task in TASKS:
        a, b = task_prompts(task, 2, seed=5), task_prompts(task, 2, seed=5)
        assert [p.prompt_id for p in a] == [p.prompt_id for p in b] and len(a) == 2
        assert [np.asarray(i).sum() for p in a for i in p.images] == [np.asarray(i).sum() for p in b for i in p.images]
    assert all(p.meta["scene_seed"] >= 1_000_000 for p in task_prompts("caption", 3) + task_prompts("ocr", 3))
    assert all("OCR" in p.prompt for p in task_prompts("ocr", 2))
    assert all(p.prompt.endswith("Please answer with an explanation.") for p in task_prompts("vqa", 3))


def load_script(name: str):
    """A script of scripts/ as a module, so a test can call its main()."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not can_pack(torch.bfloat16), reason="oneDNN packs bf16 only on a CPU with AVX-512 or AVX-NE-CONVERT")
def test_profile_draft_script_runs(capsys):
    """scripts/profile_draft.py on a tiny bf16 target: the profile a user runs cannot rot."""
    module = load_script("profile_draft")
    assert module.main(["--target", "tiny:llava_next", "--dtype", "bfloat16", "--draft", "random:eagle2",
                        "--tree", "6/2/3", "--tokens", "8", "--threads", "1", "--repeats", "1"]) == 0
    assert "packed draft / unpacked" in capsys.readouterr().out


def test_draft_tau_script_runs(tmp_path, capsys):
    """scripts/draft_tau.py on a tiny target: acceptance compared without timing."""
    module = load_script("draft_tau")
    out = tmp_path / "tau.json"
    assert module.main(["--target", "tiny:llava_next", "--drafts", "random:eagle2,random:medusa", "--trees", "4/1/2,6/2/2",
                        "--tasks", "vqa", "--n-prompts", "1", "--tokens", "6", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["draft"], r["tree"]) for r in rows] == [(d, t) for d in ("random:eagle2", "random:medusa")
                                                        for t in ("4/1/2", "6/2/2")]
    assert all(0 <= r["tau"] <= 3 and r["cycles"] > 0 for r in rows)
    assert "tau" in capsys.readouterr().out
