"""DraftModel: what every draft shares. The target's embedding and LM head are attached, frozen and
never stored: they stay out of `parameters()`, `state_dict()` and the checkpoint.

Reduced draft vocabulary (EAGLE-3's): with `config.draft_vocab` (N token ids) the draft scores only
those tokens, logits = h @ W[ids].T with W the target's LM head; W[ids] is rebuilt at `attach` as a
non-persistent buffer. Sessions still hand the tree log-probs indexed by token id, -inf outside the
draft vocabulary; the target's verification is unchanged, so decoding stays lossless."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init

from ..cpu.packed import linear
from .config import DraftConfig


@dataclass
class DraftOutput:
    """Teacher-forced draft output over a training sequence.

    Row r stands for sequence index t = pair_index[r] (-1: a compressed image token). Every step's
    row r predicts token t + 2 (ViSpec/EAGLE-2: from the pair (f_t, e_{t+1}); step k > 0 is the
    draft unrolled on its own hidden states). Medusa: step j is head j and predicts token t + 2 + j.
    """

    hidden: torch.Tensor              # [S, L, D]: S steps (unroll + 1) or heads
    logits: torch.Tensor | None       # [S, L, N] float32 over the draft vocabulary (N = V without one), or None
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
        object.__setattr__(self, "_shared", None)   # (embed_tokens, lm_head, target), unregistered

    # -- the target's frozen parts ------------------------------------------------------------
    def attach(self, target) -> "DraftModel":
        """Share the target's embedding and LM head (after checking the draft was built for it)."""
        self.config.check_target(target)
        object.__setattr__(self, "_shared", (target.language_model.embed_tokens, target.lm_head, target))
        if self.config.draft_vocab is not None:
            weight = target.lm_head.weight
            ids = torch.tensor(self.config.draft_vocab, dtype=torch.long, device=weight.device)
            self.register_buffer("vocab_ids", ids, persistent=False)                        # [N]
            self.register_buffer("vocab_head", weight.detach()[ids].clone(), persistent=False)  # [N, D]
        return self

    def with_vocab(self, ids: list[int] | None) -> "DraftModel":
        """The same draft over another draft vocabulary (None: the full one). No weight depends on
        it (the LM head is the target's), so a trained draft can be restricted without retraining."""
        self.config.draft_vocab = None if ids is None else [int(i) for i in ids]
        for name in ("vocab_ids", "vocab_head"):
            self._buffers.pop(name, None)
        return self.attach(self._target_parts()[2])

    def _target_parts(self):
        if self._shared is None:
            raise RuntimeError("This draft has no target attached: call draft.attach(target) "
                               "(load_draft does it).")
        return self._shared

    def embed(self, ids: torch.LongTensor) -> torch.Tensor:
        return self._target_parts()[0](ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., N] float32 over the draft vocabulary (its ids in order; N = V without one)."""
        head = self._target_parts()[1]
        if self.config.draft_vocab is None:
            return head(hidden).float()
        return linear(hidden.to(self.vocab_head.dtype), self.vocab_head).float()

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.logits(hidden), dim=-1)

    def token_log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., V] log-probs indexed by token id, what the tree takes: a reduced vocabulary's are
        scattered into -inf (one scatter), so a draft never proposes a token outside it."""
        lp = self.log_probs(hidden)
        if self.config.draft_vocab is None:
            return lp
        out = lp.new_full((*lp.shape[:-1], self.config.vocab_size), float("-inf"))
        return out.index_copy_(-1, self.vocab_ids, lp)

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
