"""Drafts: ViSpec, EAGLE-2 and Medusa, all `transformers.PreTrainedModel`s sharing the target's frozen
embedding and LM head, and prompt lookup (no weights); the session interface the decoder drives
(session.py). `load_draft(spec, target)` is the one way in."""
from __future__ import annotations

from pathlib import Path

from ..assets import data_root
from .base import DraftModel, DraftOutput
from .config import KINDS, DraftConfig
from .eagle2 import Eagle2Draft
from .medusa import MedusaDraft, MedusaSession
from .vispec import DraftSession, GlobalInjection, ViSpecDraft, VisionAdaptor, video_global_feature
from .prompt_lookup import PromptLookupDraft
from .session import Draft, ProposingSession, Session, TreeSession
from .vocab import frequent_tokens

__all__ = ["Draft", "DraftConfig", "DraftModel", "DraftOutput", "DraftSession", "Eagle2Draft", "GlobalInjection",
           "KINDS", "MedusaDraft", "MedusaSession", "PromptLookupDraft", "ProposingSession", "Session", "TreeSession",
           "ViSpecDraft", "VisionAdaptor", "frequent_tokens", "load_draft", "shipped_path", "shipped_root", "variant_of",
           "video_global_feature"]


def shipped_root() -> Path:
    """Where trained drafts are shipped: <data root>/drafts/<family>/<kind>/ (assets.data_root)."""
    return data_root() / "drafts"


def shipped_path(target, kind: str) -> Path:
    return shipped_root() / target.family / kind


def load_draft(spec: str, target, seed: int = 0, **overrides) -> DraftModel:
    """"prompt_lookup" (prompt-lookup decoding, no weights), "random:<kind>" (untrained,
    seed-deterministic; overrides set DraftConfig fields such as
    num_compressed), "<kind>" (the trained draft shipped for this target under
    <data root>/drafts/<family>/<kind>/) or a folder written by save_pretrained. The draft follows the
    target's device and dtype and shares its embedding and LM head."""
    if spec != "prompt_lookup":
        DraftConfig.check_options(overrides)      # a misspelt option is named, not ignored
    if spec == "prompt_lookup":                  # no weights: the proposal is a lookup in the context
        if overrides:
            raise ValueError(f"prompt_lookup takes no overrides, got {sorted(overrides)}; "
                             "build PromptLookupDraft(num_tokens=..., max_ngram=...) directly.")
        return PromptLookupDraft()
    if spec.startswith("random:"):
        kind = spec.split(":", 1)[1]
        if kind not in KINDS:
            raise ValueError(f"Unknown draft kind {kind!r} in {spec!r}; choose one of {KINDS}.")
        return DraftModel.random(target, kind, seed=seed, **overrides)
    if overrides:
        raise ValueError(f"Overrides {sorted(overrides)} only apply to random drafts; a saved draft keeps its config.")
    if spec in KINDS:
        path = shipped_path(target, spec)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"No trained {spec} draft is shipped for target family {target.family!r} (looked in {path}). "
                f"Train one with vispec_core's trainer and save it there with draft.save_pretrained(...), "
                f"or use load_draft('random:{spec}', target) for an untrained draft.")
    else:
        path = Path(spec)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{spec!r} is neither a draft kind {KINDS}, 'random:<kind>', nor a folder "
                                    "with a saved draft (config.json + model.safetensors).")
    try:
        config = DraftConfig.from_pretrained(path)
    except (OSError, ValueError) as e:             # not JSON, or not a draft's config
        raise ValueError(f"The draft config {path / 'config.json'} cannot be read: {e} "
                         "Save the draft again with draft.save_pretrained(folder).") from e
    config.check_target(target)                  # before any weight is read
    config.check_weights(target)
    check_weights_file(path / "model.safetensors")
    model = DraftModel._kinds[config.kind].from_pretrained(path, config=config, dtype=target.dtype)
    return model.to(target.device).eval().attach(target)


def check_weights_file(file: Path) -> None:
    """A draft's weights must be a whole safetensors file of finite numbers."""
    from safetensors import SafetensorError, safe_open

    again = "Save the draft again with draft.save_pretrained(folder) (or retrain it)."
    if not file.is_file() and (file.parent / f"{file.name}.index.json").is_file():
        return                                    # sharded: transformers checks the shards it reads
    if not file.is_file():
        raise FileNotFoundError(f"The draft folder {file.parent} holds no {file.name}. {again}")
    try:
        with safe_open(str(file), "pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                    raise ValueError(f"The draft weights {file} hold NaN or inf in {name!r}: the training that "
                                     f"wrote them diverged. {again}")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"The draft weights {file} are corrupt or truncated ({e}). {again}") from e


def variant_of(done: DraftModel, target, seed: int = 0, **options) -> DraftModel:
    """A fresh draft of done's kind with DraftConfig `options` (num_compressed, use_global_injection,
    ...) that takes every weight of `done` whose name and shape match, and done's draft vocabulary:
    how an ablation variant starts from a trained draft (an adaptor of another size starts fresh)."""
    draft = load_draft(f"random:{done.config.kind}", target, seed=seed, **options)
    mine = draft.state_dict()
    draft.load_state_dict({k: v for k, v in done.state_dict().items() if k in mine and mine[k].shape == v.shape},
                          strict=False)
    if done.config.draft_vocab:
        draft.with_vocab(done.config.draft_vocab)
    return draft
