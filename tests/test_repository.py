"""The repository as a newcomer clones it: committed files carry no path of the machine that wrote them
and describe the product as it is, not the history of its making (that is `git log`)."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINARY = {".safetensors", ".png", ".jpg", ".jpeg", ".gguf", ".bin", ".pt", ".arrow", ".parquet", ".npy", ".npz"}

# A path of somebody's machine: the usual roots of home folders, checkouts and temporary files.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/(?:work|home|root|Users|tmp|mnt|scratch)/[\w.-]+|[A-Z]:\\\\?[\w.-]+\\)")
HISTORY = [
    (re.compile(r"\b(?:session|phase)s?[ _-]?#?\d+\b", re.I), "a development session or phase by number"),
    (re.compile(r"\bissues?[ _-]?#?\d+\b", re.I), "an issue number"),
    (re.compile(r"\.\./shared|REFERENCES\.md"), "a file outside the repository"),
    (re.compile(r"\bcommit [0-9a-f]{7,40}\b"), "a commit hash"),
]


def prose(name: str) -> bool:
    """Where history must not be written: everything but generated results, whose records and tables
    name the commit that made them as their provenance."""
    return not name.startswith("results/") or name.endswith("README.md")


def tracked_texts():
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, names.split("\0")):
        path = ROOT / name
        if path.suffix.lower() in BINARY or not path.is_file():
            continue
        try:
            yield name, path.read_text()
        except UnicodeDecodeError:
            continue


def offending(pattern, where=lambda name: True) -> list[str]:
    hits = []
    for name, text in tracked_texts():
        if not where(name):
            continue
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            hits.append(f"{name}:{line}: {m.group(0)!r}")
    return hits


def test_the_scan_finds_what_it_looks_for():
    assert ABSOLUTE_PATH.search('{"drafts": "/work/main/data/drafts/default"}')
    assert ABSOLUTE_PATH.search("cache at /root/.cache/vispec")
    assert not ABSOLUTE_PATH.search("data/drafts/default and ~/.cache/vispec and /proc/cpuinfo")
    examples = ["as in session " + "17", "phase" + "13/", "see issue " + "#7", ".." + "/shared/x",
                "fixed in commit " + "a35624a"]            # split, so this file does not match itself
    found = {why for pattern, why in HISTORY for text in examples if pattern.search(text)}
    assert len(found) == len(HISTORY)
    assert not any(p.search("stage 1 and stage 2; 30/3/8; the paper's Sec. 5") for p, _ in HISTORY)


def committed_output(name: str) -> bool:
    """What a run wrote or a reader reads: records, tables, notebooks with their outputs, READMEs. (Code may
    name a working folder of the machine it runs on.)"""
    return name.startswith(("results/", "data/", "notebooks/")) or name.endswith(".md")


def test_no_committed_output_holds_an_absolute_path():
    hits = offending(ABSOLUTE_PATH, committed_output)
    assert not hits, "absolute paths in committed files (write them relative to the repository):\n" + "\n".join(hits[:40])


@pytest.mark.parametrize("pattern, what", HISTORY, ids=[w for _, w in HISTORY])
def test_no_tracked_text_names_development_history(pattern, what):
    hits = offending(pattern, prose)
    assert not hits, f"tracked text names {what} (history belongs in git log):\n" + "\n".join(hits[:40])
