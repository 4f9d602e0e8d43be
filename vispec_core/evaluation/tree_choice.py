"""The 'auto' tree, `generate`'s default: for this target, draft, device and temperature, the tree the
search predicts fastest (`tree_search.search_tree`, its cycle model calibrated on real runs), or decoding
without the draft when no tree is predicted to beat it. A draft should never cost its user time.

The search runs once per (target weights, draft weights, device and weight form, threads, dtype,
temperature, top_p) on the benchmark's calibration prompts (one per task, never an evaluation prompt)
and is cached as JSON under `$VISPEC_CACHE/trees/`; about a minute for the default target on a CPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from ..assets import cache_dir
from ..decoding.tree import TreeConfig

SEARCH_VERSION = 1          # raise when the search comes to choose differently for the same inputs
MIN_SPEEDUP = 1.0           # below this predicted speedup the draft is left out
CALIBRATION_TOKENS = 64


@dataclass(frozen=True)
class TreeChoice:
    tree: TreeConfig | None         # None: decode without the draft
    predicted_speedup: float        # of the best tree, calibrated
    predicted_tau: float
    best: str                       # the best tree's label, chosen or not
    cached: bool

    def as_stats(self) -> dict:
        return dict(tree=self.tree.label if self.tree else None, best=self.best, cached=self.cached,
                    predicted_speedup=round(self.predicted_speedup, 4), predicted_tau=round(self.predicted_tau, 4),
                    decoded="speculative" if self.tree else "without the draft")


def device_name(device: torch.device) -> str:
    """The accelerator or CPU model and the instruction set torch uses on it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info = Path("/proc/cpuinfo")
    model = next((ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")),
                 None) if info.exists() else None
    return f"{model or platform.processor()} (cpu, {torch.backends.cpu.get_cpu_capability()})"


def _digest(draft) -> str:
    h = hashlib.sha256(type(draft).__name__.encode())
    for k, v in sorted(draft.state_dict().items()):
        h.update(k.encode() + v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def choice_key(target, draft, temperature: float, top_p: float) -> str:
    packed = target.packed_weights()
    parts = dict(version=SEARCH_VERSION, target=target.weights_id(), draft=_digest(draft),
                 device=device_name(target.device), dtype=str(target.dtype), form=packed.mode if packed else "plain",
                 threads=torch.get_num_threads(), temperature=round(float(temperature), 4), top_p=round(float(top_p), 4))
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def decide(search: dict, min_speedup: float = MIN_SPEEDUP) -> TreeConfig | None:
    """A search's result -> the tree to decode with, or None when none is predicted to reach min_speedup."""
    best = search["chosen"]
    if best["speedup"] < min_speedup:
        return None
    return TreeConfig(best["total_tokens"], best["depth"], best["top_k"])


def choose_tree(target, draft, temperature: float = 0.0, top_p: float = 1.0, folder: Path | None = None,
                log=None, tokens: int | None = None, **grid) -> TreeChoice:
    """The auto tree for decoding `target` with `draft` at `temperature`: read from the cache, else searched
    (and cached) on `tokens` of each calibration prompt (CALIBRATION_TOKENS), over `grid` (search_tree's depths, top_ks,
    totals; its defaults if not given). `log`: where to say that a search runs (it takes a while)."""
    from ..data.tasks import CALIBRATION_OFFSET, TASKS, task_prompts
    from .tree_search import search_tree

    folder = Path(folder) if folder is not None else cache_dir() / "trees"
    path = folder / f"{choice_key(target, draft, temperature, top_p)}.json"
    cached = path.is_file()
    if cached:
        search = json.loads(path.read_text())
    else:
        prompts = [p for task in TASKS for p in task_prompts(task, 1, 0, CALIBRATION_OFFSET)]
        if log:
            log(f"choosing a draft tree for {type(draft).__name__} at T={temperature:g} on this device "
                f"({len(prompts)} calibration prompts; once, then cached in {folder})")
        search = search_tree(target, draft, prompts, tokens or CALIBRATION_TOKENS, temperature=temperature, top_p=top_p, **grid)
        search = {k: search[k] for k in ("chosen", "paper", "cycle_checks", "vanilla_token_s", "temperature")}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(search))
        os.replace(tmp, path)
    best = search["chosen"]
    return TreeChoice(decide(search), best["speedup"], best["tau"], best["label"], cached)
