"""The conda environment and pyproject.toml ask for the same packages."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    extras = project["optional-dependencies"]
    assert f"-e .[{','.join(extras)}]" in pip
    wanted = project["dependencies"] + [d for group in extras.values() for d in group]
    assert sorted(p for p in pip if not p.startswith("-e .")) == sorted(wanted)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.split("=")[1] >= project["requires-python"].lstrip(">=")


def test_torchvision_is_never_asked_for():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.lower().startswith("torchvision") for d in deps)


def test_one_data_root_for_every_shipped_artifact(monkeypatch, tmp_path):
    import pytest

    from vispec_core.assets import data_root
    from vispec_core.drafts import shipped_root
    from vispec_core.targets.default_vlm import projector_path

    monkeypatch.delenv("VISPEC_DATA", raising=False)
    assert data_root() == ROOT / "data"                 # a checkout works as it is
    monkeypatch.setenv("VISPEC_DATA", str(tmp_path))
    assert shipped_root() == tmp_path / "drafts"
    assert projector_path() == tmp_path / "default_vlm" / "projector.safetensors"
    monkeypatch.setenv("VISPEC_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="VISPEC_DATA"):
        shipped_root()


def test_the_kernel_sources_ship_with_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vispec_core"]
    shipped = {p for pattern in data for p in (ROOT / "vispec_core").glob(pattern)}
    assert {p.name for p in shipped} >= {"few_rows.cpp", "fused_layer.cpp"}
