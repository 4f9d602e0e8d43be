"""Medusa heads (the paper's 1-layer, 3-head baseline): head j is one residual block x + SiLU(W x)
(W zero-initialised) and the target's LM head; on f_t it predicts token t+2+j. The root (token t+1)
is the target's own, so head 0 gives the root's children and head d the children of depth-d nodes,
whatever the path: a tree can be at most num_heads draft passes deep."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cpu.packed import linear
from .base import DraftModel, DraftOutput, as_input
from .session import TreeSession


class MedusaBlock(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden, hidden))
        self.bias = nn.Parameter(torch.empty(hidden))

    def init_draft_weights(self, init, std: float) -> None:
        init.zeros_(self.weight)     # a fresh head is the identity: it repeats the target's guess
        init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.silu(linear(x, self.weight, self.bias))


class MedusaDraft(DraftModel, kind="medusa"):
    def __init__(self, config):
        super().__init__(config)
        self.heads = nn.ModuleList(MedusaBlock(config.hidden_size) for _ in range(config.num_heads))
        self.post_init()

    def forward(self, f: torch.Tensor, inputs=None, unroll: int = 0, return_logits: bool = True,
                **_) -> DraftOutput:
        """f [1, N, D] -> every head on every row: hidden [H, N, D]; row t of head j predicts token t+2+j."""
        n, f = f.shape[1], as_input(f)
        hidden = torch.cat([head(f) for head in self.heads])
        is_image = torch.zeros(n, dtype=torch.bool, device=f.device)
        for s, stop in (inputs.image_spans if inputs is not None else []):
            is_image[max(s - 1, 0):stop - 1] = True
        return DraftOutput(hidden, self.logits(hidden) if return_logits else None,
                           torch.arange(n, device=f.device), is_image)

    @property
    def max_depth(self) -> int:
        """Draft tokens per tree path: one per head."""
        return len(self.heads)

    def begin(self, target, inputs, capacity: int, **_):
        return MedusaSession(self)


class MedusaSession(TreeSession):
    def __init__(self, draft: MedusaDraft):
        self.draft = draft
        self.f_last = None
        self._logprobs: dict[int, torch.Tensor] = {}

    @torch.inference_mode()
    def head_logprobs(self, j: int) -> torch.Tensor:
        if j not in self._logprobs:
            self._logprobs[j] = self.draft.token_log_probs(self.draft.heads[j](self.f_last))
        return self._logprobs[j]

    def extend(self, f: torch.Tensor, next_ids: torch.LongTensor, next_embeds=None) -> torch.Tensor:
        """Keep the last f; return head 0's log-probs [V] (the token after the root)."""
        self.f_last, self._logprobs = f[0, -1], {}
        return self.head_logprobs(0)

    def expand(self, tokens: torch.LongTensor, parents: torch.LongTensor, depth: int) -> torch.Tensor:
        heads = len(self.draft.heads)
        if depth >= heads:
            raise ValueError(f"This Medusa draft has {heads} heads, one tree level each, so a draft tree can be at "
                             f"most depth {heads - 1}; the tree builder asked for the children of depth-{depth} "
                             f"nodes. Use depth <= {heads - 1}.")
        return self.head_logprobs(depth)[None].expand(tokens.numel(), -1)
