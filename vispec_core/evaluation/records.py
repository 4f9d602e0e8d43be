"""Raw per-run records: JSONL lines that carry their own provenance (config, git commit, versions)."""
from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "vispec")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[2], timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).resolve().parents[2], timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_metadata(**config) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"config": config, "git_commit": git_commit(), "versions": versions, "python": platform.python_version(),
            "machine": platform.machine(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def write_jsonl(path, records, **config) -> Path:
    """Write records (dicts) to path, each line carrying the run's metadata under "meta"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = run_metadata(**config)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for r in records:
            f.write(json.dumps({**r, "meta": meta}) + "\n")
    tmp.replace(path)
    return path


def read_jsonl(path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def results_dir(root: str | Path, smoke: bool) -> Path:
    """Where a notebook writes. A smoke run never writes into the committed results/: it goes to
    results/smoke/ (ignored by git) unless the caller chose another folder."""
    root = Path(root)
    if smoke and root.resolve() == (Path(__file__).resolve().parents[2] / "results").resolve():
        root = root / "smoke"
    for sub in ("raw", "tables", "figures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root
