"""DraftModel: what every draft shares. The target's embedding and LM head are attached, frozen and
never stored: they stay out of `parameters()`, `state_dict()` and the checkpoint."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init

from .config import DraftConfig


@dataclass
class DraftOutput:
    """Teacher-forced draft output over a training sequence.

    Row r stands for sequence index t = pair_index[r] (-1: a compressed image token). Every step's
    row r predicts token t + 2 (ViSpec/EAGLE-2: from the pair (f_t, e_{t+1}); step k > 0 is the
    draft unrolled on its own hidden states). Medusa: step j is head j and predicts token t + 2 + j.
    """

    hidden: torch.Tensor              # [S, L, D]: S steps (unroll + 1) or heads
    logits: torch.Tensor | None       # [S, L, V] float32, or None when not asked for
    pair_index: torch.LongTensor      # [L]
    is_image: torch.BoolTensor        # [L]: rows whose input is an image (compressed or not)


def as_input(t: torch.Tensor) -> torch.Tensor:
    """A tensor made under torch.inference_mode (the target's f, prepared embeddings) cannot enter
    autograd; a plain copy can."""
    return t.clone() if t.is_inference() and not torch.is_inference_mode_enabled() else t


class DraftModel(PreTrainedModel):
    config_class = DraftConfig
    base_model_prefix = "draft"
    _tied_weights_keys = None
    _kinds: dict[str, type] = {}      # kind -> class, filled by the subclasses

    def __init_subclass__(cls, kind: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if kind is not None:
            DraftModel._kinds[kind] = cls

    def __init__(self, config: DraftConfig):
        super().__init__(config)
        object.__setattr__(self, "_shared", None)   # (embed_tokens, lm_head) of the target, unregistered

    # -- the target's frozen parts ------------------------------------------------------------
    def attach(self, target) -> "DraftModel":
        """Share the target's embedding and LM head (after checking the draft was built for it)."""
        self.config.check_target(target)
        object.__setattr__(self, "_shared", (target.language_model.embed_tokens, target.lm_head))
        return self

    def _target_parts(self):
        if self._shared is None:
            raise RuntimeError("This draft has no target attached: call draft.attach(target) "
                               "(load_draft does it).")
        return self._shared

    def embed(self, ids: torch.LongTensor) -> torch.Tensor:
        return self._target_parts()[0](ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._target_parts()[1](hidden).float()

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(hidden), dim=-1)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def random(cls, target, kind: str, seed: int = 0, **overrides) -> "DraftModel":
        """An untrained draft of `kind` for `target`: same seed, same weights (built in fp32 on the
        CPU, then moved to the target's device and dtype)."""
        config = DraftConfig.for_target(target, kind, **overrides)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DraftModel._kinds[kind](config)
        return model.to(target.device, target.dtype).eval().attach(target)

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        if cls is DraftModel:      # AutoModel / DraftModel: dispatch on the recorded kind
            config = kwargs.pop("config", None) or DraftConfig.from_pretrained(path)
            return DraftModel._kinds[config.kind].from_pretrained(path, *args, config=config, **kwargs)
        return super().from_pretrained(path, *args, **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        if cls is DraftModel:
            return DraftModel._kinds[config.kind]._from_config(config, **kwargs)
        return super()._from_config(config, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        init_fn = getattr(module, "init_draft_weights", None)
        if init_fn is not None:        # our own modules (adaptor, injection, Medusa blocks)
            init_fn(init, self.config.initializer_range)
        else:
            super()._init_weights(module)

    def begin(self, target, inputs, capacity: int, **kwargs):
        raise NotImplementedError


AutoModel.register(DraftConfig, DraftModel)
