"""Prompt-lookup decoding (Saxena, 2023) as a draft of this decoder: no weights, no training.

The proposal is what followed the earliest earlier occurrence of the sequence's last n tokens
(n = max_ngram down to 1) in the prompt and the answer so far, at most num_tokens long, verified as
a chain, cut before its first end-of-turn token; with no match the cycle is a plain decoding step.
The rule is transformers' `prompt_lookup_num_tokens` (PromptLookupCandidateGenerator; a test checks
the proposals agree), so
`--methods prompt_lookup` and `hf_prompt_lookup` differ only in the forward that verifies: ours,
or transformers'. It proposes one deterministic candidate per position, so verification stays
lossless at any temperature.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .session import ProposingSession


@dataclass
class PromptLookupConfig:
    kind: str = "prompt_lookup"
    num_tokens: int = 10
    max_ngram: int = 2
    draft_vocab: None = None


def lookup(history: list[int], num_tokens: int, max_ngram: int) -> list[int]:
    """The continuation after the earliest earlier match of history's last n tokens, longest n first."""
    length = len(history)
    for n in range(min(max_ngram, length - 1), 0, -1):
        tail = history[-n:]
        for start in range(length - n):
            if history[start:start + n] == tail:
                return history[start + n:start + n + num_tokens]
    return []


class PromptLookupDraft:
    """A draft whose session proposes a chain itself (`propose`) instead of growing a tree."""

    proposes = True          # its sessions propose: no tree to choose

    def __init__(self, num_tokens: int = 10, max_ngram: int = 2):
        if num_tokens < 1 or max_ngram < 1:
            raise ValueError(f"Prompt lookup needs num_tokens >= 1 and max_ngram >= 1, got {num_tokens}, {max_ngram}.")
        self.config = PromptLookupConfig(num_tokens=num_tokens, max_ngram=max_ngram)

    def state_dict(self) -> dict:
        return {}

    def begin(self, target, inputs, capacity: int) -> "PromptLookupSession":
        return PromptLookupSession(self.config, inputs.input_ids[0, :1].tolist(), target.eos_token_ids)


class PromptLookupSession(ProposingSession):
    def __init__(self, config: PromptLookupConfig, history: list[int], eos=frozenset()):
        self.config, self.history, self.eos = config, history, frozenset(eos)

    def extend(self, f, next_ids: torch.LongTensor, next_embeds=None) -> None:
        """The tokens that follow (the decoder's draft pairs); the last is the next cycle's root."""
        self.history += next_ids.tolist()

    def propose(self, root: int) -> list[int]:
        assert self.history[-1] == root, "the session's history must end with the root"
        chain = lookup(self.history, self.config.num_tokens, self.config.max_ngram)
        return chain[:next((i for i, t in enumerate(chain) if t in self.eos), len(chain))]
