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
