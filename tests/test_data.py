"""Data synthesis: the dataset round trip, records reproducible from their seed, kill -9 and resume
without a lost or duplicated sample, and errors that say what is wrong."""
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch
from PIL import Image

from vispec_core.__main__ import main
from vispec_core.data.synthesis import (CAPTION, Settings, check_manifest, EXPLAIN, LONG_ANSWER, prompt_source, sample_seed, settings_of,
                              shard_path, synthesize)
from vispec_core.decoding.decode import generate
from vispec_core.targets import load_target

REPO = Path(__file__).resolve().parents[1]
SPEC = "tiny:llava_next"


@pytest.fixture(scope="module")
def one_thread():
    """One thread: faster on shared cores, and the same numerics as the subprocesses (OMP_NUM_THREADS=1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def llava(one_thread):
    return load_target(SPEC)


def load_parquet(out):
    files = sorted(str(p) for p in (Path(out) / "data").glob("*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train")


def test_round_trip_records_are_self_contained_and_reproducible(llava, tmp_path):
    synthesize(SPEC, "easy_vqa", 5, tmp_path, max_new_tokens=12, shard_size=2, engine="batch1", target=llava,
               progress=False)
    ds = load_parquet(tmp_path)                       # datasets alone, no vispec code
    assert len(ds) == 5 and ds["index"] == list(range(5))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [f"train-{k:05d}.parquet" for k in range(3)]
    source = prompt_source("easy_vqa")
    for r in ds:
        p = source(0, r["index"])
        assert r["prompt"] == p.prompt and r["source"] == "easy_vqa" and r["seed"] == sample_seed(0, r["index"])
        assert r["prompt"].endswith((EXPLAIN, LONG_ANSWER))
        assert isinstance(r["images"][0], Image.Image)
        assert r["images"][0].tobytes() == Image.open(io.BytesIO(p.images[0])).convert("RGB").tobytes()
        g = generate(llava, r["prompt"], r["images"], max_new_tokens=12, temperature=1.0, seed=r["seed"])
        assert r["prompt_ids"] == g.prompt_ids and r["answer_ids"] == g.token_ids and r["answer"] == g.text
    settings = settings_of(tmp_path)["settings"]
    assert settings["temperature"] == 1.0 and settings["engine"] == "batch1" and settings["target"] == SPEC


def test_batched_engine_draws_the_same_answers_as_batch1(llava, tmp_path):
    """Each row samples with its own seeded generator: batching does not change a sample (fp32)."""
    for engine, bs in (("batch1", 1), ("hf_batched", 3)):
        synthesize(SPEC, "scenes", 4, tmp_path / engine, max_new_tokens=16, shard_size=4, engine=engine,
                   batch_size=bs, target=llava, progress=False)
    a, b = load_parquet(tmp_path / "batch1"), load_parquet(tmp_path / "hf_batched")
    assert a["answer_ids"] == b["answer_ids"] and a["prompt_ids"] == b["prompt_ids"]
    assert len({tuple(x) for x in a["answer_ids"]}) == 4        # sampled, distinct answers
    greedy = tmp_path / "greedy"
    synthesize(SPEC, "scenes", 4, greedy, temperature=0.0, max_new_tokens=16, shard_size=4, engine="hf_batched",
               target=llava, progress=False)
    assert load_parquet(greedy)["answer_ids"] != a["answer_ids"]
    assert settings_of(greedy)["settings"]["temperature"] == 0.0


def test_prompts_ask_for_long_answers_and_vary():
    text = [prompt_source("text")(0, i).prompt for i in range(200)]
    assert len(set(text)) > 190
    assert sum(LONG_ANSWER in t for t in text) > 40 and sum(EXPLAIN in t for t in text) > 40
    scenes = [prompt_source("scenes")(0, i).prompt for i in range(30)]
    assert any(CAPTION in s for s in scenes) and any(s.endswith(LONG_ANSWER) for s in scenes)
    assert prompt_source("text")(3, 7) == prompt_source("text")(3, 7)


def _cli(out, n, extra=()):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "vispec_core", "synthesize", "--target", SPEC, "--source",
                             "easy_vqa", "--n", str(n), "--out", str(out), "--max-new-tokens", "12",
                             "--shard-size", "2", "--engine", "batch1", *extra],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_then_rerun_loses_and_duplicates_nothing(llava, tmp_path):
    n, out = 9, tmp_path / "killed"
    proc = _cli(out, n)
    deadline = time.time() + 60
    while not shard_path(out, 1).is_file():           # let it write two shards, then kill it mid-way
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in (out / "data").glob("train-*.parquet"))
    assert 2 <= len(done) < 5                          # interrupted part-way
    rerun = _cli(out, n)
    assert rerun.wait(timeout=120) == 0, rerun.stderr.read().decode()
    synthesize(SPEC, "easy_vqa", n, tmp_path / "whole", max_new_tokens=12, shard_size=2, engine="batch1",
               target=llava, progress=False)
    resumed, whole = load_parquet(out).to_list(), load_parquet(tmp_path / "whole").to_list()
    assert [r["index"] for r in resumed] == list(range(n))
    for a, b in zip(resumed, whole):
        for key in ("prompt", "prompt_ids", "answer_ids", "answer", "seed", "source_ref"):
            assert a[key] == b[key], key
    assert not list((out / "data").glob(".*"))          # no temporary file left behind
    # a rerun of a finished dataset does nothing; a larger n continues it
    synthesize(SPEC, "easy_vqa", n + 2, out, max_new_tokens=12, shard_size=2, engine="batch1", target=llava,
               progress=False)
    grown = load_parquet(out)
    assert grown["index"] == list(range(n + 2)) and grown["answer_ids"][:n] == [r["answer_ids"] for r in whole]


def test_bad_inputs_fail_clearly(llava, tmp_path, capsys):
    with pytest.raises(ValueError, match="Unknown source 'coco'"):
        synthesize(SPEC, "coco", 2, tmp_path / "a", target=llava)
    assert main(["synthesize", "--target", "tiny:nope", "--source", "text", "--n", "2", "--out", str(tmp_path / "b")]) == 2
    assert "Unknown tiny target 'nope'" in capsys.readouterr().err
    assert main(["synthesize", "--target", "llava-7b", "--source", "text", "--n", "2", "--out", str(tmp_path / "b")]) == 2
    assert "Unknown target 'llava-7b'" in capsys.readouterr().err
    out = tmp_path / "c"
    synthesize(SPEC, "text", 2, out, max_new_tokens=4, target=llava, progress=False)
    with pytest.raises(ValueError, match="other settings.*temperature: 1.0 there, 0.0 now"):
        synthesize(SPEC, "text", 2, out, max_new_tokens=4, temperature=0.0, target=llava, progress=False)
    with pytest.raises(ValueError, match="already holds 2 samples"):
        synthesize(SPEC, "text", 1, out, max_new_tokens=4, target=llava, progress=False)
    with pytest.raises(ValueError, match="other settings.*source"):
        synthesize(SPEC, "easy_vqa", 2, out, max_new_tokens=4, target=llava, progress=False)
    with pytest.raises(ValueError, match="other settings.*target_weights: '' there, 'retrained' now"):
        check_manifest(out, Settings(**{**settings_of(out)["settings"], "target_weights": "retrained"}), 2)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a vispec dataset folder"):
        synthesize(SPEC, "text", 2, tmp_path / "d", target=llava)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        synthesize(SPEC, "text", 2, tmp_path / "e", temperature=-1, target=llava)


def test_several_folders_load_as_one_dataset_and_foreign_data_is_refused(llava, tmp_path):
    import json

    from vispec_core.data.synthesis import check_weights, load_synthesized

    synthesize(SPEC, "text", 3, tmp_path / "t1", max_new_tokens=6, target=llava, progress=False)
    synthesize(SPEC, "scenes", 2, tmp_path / "t0", temperature=0.0, seed=1, max_new_tokens=6, target=llava,
               progress=False)
    both = load_synthesized(f"{tmp_path / 't1'},{tmp_path / 't0'}")
    assert list(both["answer_ids"]) == (list(load_parquet(tmp_path / "t1")["answer_ids"])
                                        + list(load_parquet(tmp_path / "t0")["answer_ids"]))
    assert len(load_synthesized([tmp_path / "t0", tmp_path / "t1"])) == 5
    assert len(load_synthesized(tmp_path / "t0")) == 2
    with pytest.raises(ValueError, match="names no dataset folder"):
        load_synthesized(" , ")
    with pytest.raises(FileNotFoundError, match="not a dataset written by vispec_core.data"):
        load_synthesized(f"{tmp_path / 't1'},{tmp_path}")

    manifest = tmp_path / "t0" / "vispec_data.json"
    m = json.loads(manifest.read_text())
    m["settings"]["target"] = "tiny:qwen2_5_vl"
    manifest.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="mixes datasets answered by different targets"):
        load_synthesized(f"{tmp_path / 't1'},{tmp_path / 't0'}")

    class Retrained:       # a target whose projector was trained again
        def weights_id(self, images=True):
            return "lm+projector:new"

    m["settings"].update(target=SPEC, target_weights="lm+projector:old")
    manifest.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="answered by target weights lm\\+projector:old.*synthesize the data again"):
        check_weights(f"{tmp_path / 't1'},{tmp_path / 't0'}", Retrained())
    m["settings"]["target_weights"] = "lm+projector:new"
    manifest.write_text(json.dumps(m))
    check_weights(f"{tmp_path / 't1'},{tmp_path / 't0'}", Retrained())     # t1 records none: nothing to compare
