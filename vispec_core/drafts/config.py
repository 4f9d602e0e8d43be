"""DraftConfig: what a draft is (ViSpec, EAGLE-2 or Medusa) and which target it was built for."""
from __future__ import annotations

import importlib
import warnings

from transformers import AutoConfig, PreTrainedConfig

KINDS = ("vispec", "eagle2", "medusa")
# Fields of a target's text config that do not describe its decoder layer.
_NOT_LAYER = ("_name_or_path", "architectures", "transformers_version", "id2label", "label2id", "dtype",
              "output_attentions", "output_hidden_states", "return_dict", "problem_type",
              "chunk_size_feed_forward", "is_encoder_decoder")
# DraftConfig fields set from the kind and the target, never by a caller.
_FROM_TARGET = ("kind", "family", "hidden_size", "vocab_size", "mirrored_layer", "layer_class", "rotary_class")


class DraftConfig(PreTrainedConfig):
    """One config for every draft kind.

    family / hidden_size / vocab_size: the target's `describe()`; a draft refuses another target.
    target_weights: the `Target.weights_id` the draft was trained against (empty: unknown). The same
    family with other weights (e.g. the default VLM with another projector) still fits and stays
    lossless, but its hidden states are not the ones the draft learned, so loading it there warns.
    draft_vocab: None (the target's full vocabulary) or the token ids the draft scores (EAGLE-3's
    reduced draft vocabulary, e.g. `frequent_tokens` of the training answers); saved here, while
    the LM head rows are rebuilt from the target at attach.
    mirrored_layer: the target's text config with one layer (vispec, eagle2), from which the draft's
    decoder layer is built; layer_class / rotary_class: the HF classes it instantiates.
    """

    model_type = "vispec_draft"

    kind: str = "vispec"
    family: str = ""
    hidden_size: int = 0
    vocab_size: int = 0
    target_weights: str = ""
    mirrored_layer: dict | None = None
    layer_class: str = ""                 # e.g. transformers.models.llama.modeling_llama.LlamaDecoderLayer
    rotary_class: str = ""
    num_compressed: int = 1               # compressed image tokens c per image (the adaptor has one more query: g)
    use_compression: bool = True          # off: the draft sees every image embedding (EAGLE-2)
    use_global_injection: bool = True     # f_aug = Linear(cat(f, g)) on text positions
    num_heads: int = 3                    # medusa: head j predicts token t+2+j from f_t
    draft_vocab: list[int] | None = None  # token ids the draft scores; None: all
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown draft kind {self.kind!r}; choose one of {KINDS}.")
        if self.kind != "medusa" and self.num_compressed < 1:
            raise ValueError(f"num_compressed must be >= 1, got {self.num_compressed}.")
        if self.draft_vocab is not None:
            ids = self.draft_vocab = [int(i) for i in self.draft_vocab]
            top = self.vocab_size or float("inf")
            if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= top:
                raise ValueError(f"draft_vocab must hold distinct token ids in [0, {self.vocab_size}); got "
                                 f"{len(ids)} ids, {len(set(ids))} distinct, in {min(ids, default=None)}.."
                                 f"{max(ids, default=None)}.")
        super().__post_init__(**kwargs)

    @property
    def uses_adaptor(self) -> bool:
        return self.kind != "medusa" and (self.use_compression or self.use_global_injection)

    @classmethod
    def options(cls) -> list[str]:
        """The fields a fresh draft may be given (the rest come from the target)."""
        return [k for k in cls.__annotations__ if k not in _FROM_TARGET]

    @classmethod
    def check_options(cls, options) -> None:
        unknown = sorted(set(options) - set(cls.options()))
        if unknown:
            raise ValueError(f"Unknown draft option(s) {unknown}; the options are {cls.options()}.")

    @classmethod
    def for_target(cls, target, kind: str, **overrides) -> "DraftConfig":
        """The config of a fresh draft of `kind` for `target`. EAGLE-2 is ViSpec without the adaptor."""
        cls.check_options(overrides)
        fields = dict(kind=kind, **target.describe())
        if kind == "eagle2":
            fields.update(use_compression=False, use_global_injection=False)
        if kind != "medusa":
            layer = target.language_model.layers[0]
            text = {k: v for k, v in target.text_config.to_dict().items() if k not in _NOT_LAYER}
            text["num_hidden_layers"] = 1
            if text.get("layer_types"):
                text["layer_types"] = text["layer_types"][:1]
            if "max_window_layers" in text:
                text["max_window_layers"] = min(text["max_window_layers"], 1)
            fields.update(mirrored_layer=text, layer_class=_path(type(layer)),
                          rotary_class=_path(type(target.language_model.rotary_emb)))
        fields.update(overrides)
        if kind == "eagle2" and (fields["use_compression"] or fields["use_global_injection"]):
            raise ValueError("An EAGLE-2 draft has no vision adaptor; use kind='vispec' to switch "
                             "compression or global injection on.")
        return cls(**fields)

    def layer_config(self) -> PreTrainedConfig:
        """The mirrored one-layer text config (e.g. LlamaConfig, Qwen2_5_VLTextConfig)."""
        fields = dict(self.mirrored_layer or {})
        return AutoConfig.for_model(fields.pop("model_type"), **fields)

    def check_target(self, target) -> None:
        mine = {"family": self.family, "hidden_size": self.hidden_size, "vocab_size": self.vocab_size}
        theirs = {k: target.describe()[k] for k in mine}
        if mine != theirs:
            raise ValueError(f"This {self.kind} draft was built for target {mine}, not for the loaded "
                             f"target {theirs}; load or train a draft for this target.")

    def check_weights(self, target) -> None:
        """Warn when a saved draft meets other weights of its target than it was trained against."""
        seen, unseen = target.weights_id(images=True), target.weights_id(images=False)
        if self.target_weights and seen and unseen and self.target_weights not in (seen, unseen):
            warnings.warn(f"This {self.kind} draft was trained against target weights {self.target_weights}, "
                          f"but the loaded target has {seen}. Decoding stays lossless, but expect "
                          "fewer accepted tokens; train a draft on this target's answers for its speed.",
                          stacklevel=3)


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str) -> type:
    """A transformers class named in a config (only transformers' own classes are imported)."""
    module, _, name = path.rpartition(".")
    if not module.startswith("transformers."):
        raise ValueError(f"Refusing to import {path!r}: a draft's layer must be a transformers class.")
    return getattr(importlib.import_module(module), name)


AutoConfig.register(DraftConfig.model_type, DraftConfig)
