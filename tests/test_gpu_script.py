"""scripts/gpu_check.py at its CPU self-test shape (--small), so the GPU script cannot rot."""
import json
import math

import pytest
import torch

from conftest import script_module


@pytest.fixture(scope="module")
def gpu_check():
    return script_module("gpu_check")


def test_small_run_measures_every_phase(gpu_check, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = gpu_check.main(["--small", "--out", str(tmp_path), "--bench-tasks", "text", "--bench-prompts", "1",
                               "--bench-tokens", "4", "--bench-temperatures", "0", "--profile-cycle"])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "gpu_check_small.json").read_text())
    assert code == 0, report
    assert report["small"] is True and report["device"] == "cpu"
    assert not (tmp_path / "gpu_check.json").exists()          # never a GPU-named file from a CPU run
    assert report["bandwidth"]["bytes_per_s"] > 0
    v = report["vanilla_vs_floor"]
    assert v["weight_bytes"] == sum(p * 2 for p in [1000 * 64 * 2, 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64), 64])
    for k in ("floor_token_s", "ours_token_s", "hf_generate_token_s", "ours_over_floor"):
        assert math.isfinite(v[k]) and v[k] > 0
    assert set(report["verify_curve"]["seconds"]) >= {"1", "8", "30", "64"}
    c = report["speculative_cycle"]
    assert c["cycles"] > 0 and c["cycle_s"] > 0 and c["draft_s_per_cycle"] + c["verify_s_per_cycle"] > 0
    prof = report["profile_cycle"]
    assert prof["cycles"] == 10 and prof["top_self_cpu"] and prof["per_cycle"]["aten_ops_all_levels"] > 0
    assert prof["per_cycle"]["aten::nonzero"] == 0           # no data-dependent shapes in the cycle
    assert "top 25 ops by self CPU time" in (tmp_path / "profile_cycle_small.txt").read_text()
    assert (tmp_path / "bench_small.jsonl").is_file() and (tmp_path / "tables" / "bench_small_summary.csv").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_gpu_figures_without_a_gpu(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--out", str(tmp_path / "gpu")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "gpu").exists()
