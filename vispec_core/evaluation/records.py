"""Raw per-run records: JSONL lines that carry their own provenance (config, git commit, versions).

Records are committed and read on other machines, so no record holds a path of the machine that wrote
it: `portable` turns a path inside the repository into one relative to its root, and one under the
home folder into `~/...`.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("torch", "transformers", "datasets", "accelerate", "vispec")
REPO = Path(__file__).resolve().parents[2]
RECORD_TYPES = ("header", "run", "tree_search")


def portable(value):
    """A path (or a string holding paths) as it reads on any machine: relative to the repository root
    when inside it, `~/...` under the home folder; other values unchanged (lists and dicts recursively)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable(v) for v in value)
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or os.sep not in value:
        return value
    if os.path.isabs(value) and " " not in value.strip():
        path = Path(value).resolve()
        if path.is_relative_to(REPO):
            return path.relative_to(REPO).as_posix() or "."
    home = str(Path.home())
    return value.replace(str(REPO) + os.sep, "").replace(str(REPO), ".").replace(home + os.sep, "~/")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=REPO, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO, timeout=10).stdout.strip()
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
    return {"config": portable(config), "git_commit": git_commit(), "versions": versions, "python": platform.python_version(),
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
            f.write(json.dumps({**portable(r), "meta": meta}) + "\n")
    tmp.replace(path)
    return path


def read_jsonl(path) -> list[dict]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def read_records(path: Path) -> list[dict]:
    """A benchmark file's records. A last line cut by a killed run is dropped; any other line that is
    not a record means the file is not a benchmark file, and nothing in it is touched."""
    path = Path(path)
    if not path.is_file():
        return []
    out, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if out and i == len(lines) - 1 and line.startswith("{") and not path.read_bytes().endswith(b"\n"):
                continue                                                      # a run killed mid-write
            record = None
        if not isinstance(record, dict) or record.get("type") not in RECORD_TYPES:
            raise ValueError(f"{path}:{i + 1} is not a benchmark record, so {path} is not a benchmark file; "
                             "nothing was changed. Give --out a new file or a benchmark file to resume.")
        out.append(record)
    return out


def latest_runs(records: list[dict]) -> list[dict]:
    """The run records, the last one of each (task, prompt, variant, temperature): a group the benchmark
    ran again whole supersedes its earlier runs."""
    runs = {}
    for r in records:
        if r.get("type") == "run":
            key = (r["task"], r["prompt_id"], r.get("variant", r.get("method")), r["temperature"])
            runs.pop(key, None)
            runs[key] = r
    return list(runs.values())


def drop_partial_tail(path: Path) -> None:
    """Cut a last line left half-written by a killed run, so appends start on a fresh line. Call it
    after `read_records` accepted the file: a file of other content is never cut."""
    path = Path(path)
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])


def append_records(path: Path, records: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def results_dir(root: str | Path, smoke: bool) -> Path:
    """Where a notebook writes. A smoke run never writes into the committed results/: it goes to
    results/smoke/ (ignored by git) unless the caller chose another folder."""
    root = Path(root)
    if smoke and root.resolve() == (REPO / "results").resolve():
        root = root / "smoke"
    for sub in ("raw", "tables", "figures"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root
