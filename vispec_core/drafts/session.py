"""The draft-session interface the decoder drives, declared as Protocols (one interface, two ways to
propose). A draft's `begin` starts a session for one generation; the decoder then feeds it pairs with
`extend` and, each cycle, asks for a proposal in the way the session declares (`proposes`):

  TreeSession       proposes = False: the decoder grows an EAGLE-2 dynamic tree (decoding/tree.py's
                    `draft_tree`) through `expand` (ViSpec, EAGLE-2, Medusa).
  ProposingSession  proposes = True: the session proposes a chain itself with `propose` (prompt lookup).

A session class subclasses the Protocol it implements, so it inherits its declared `proposes`.
"""
from __future__ import annotations

from typing import ClassVar, Protocol

import torch


class Session(Protocol):
    proposes: ClassVar[bool]

    def extend(self, f: torch.Tensor, next_ids: torch.LongTensor, next_embeds: torch.Tensor | None = None):
        """Commit the pairs (f_t, e_{t+1}) of the next m sequence indices: f [1, m, D] the target's last
        hidden states, next_ids [m] the tokens that follow them (the last is the next cycle's root),
        next_embeds [1, m, D] their input embeddings where the prompt's differ from the tokens' (images)."""
        ...


class TreeSession(Session, Protocol):
    proposes: ClassVar[bool] = False

    def expand(self, tokens: torch.LongTensor, parents: torch.LongTensor, depth: int) -> torch.Tensor:
        """Run new tree nodes through the draft; return the log-probs of their children, [k, V].

        tokens: [k] tokens of the new nodes, all at tree depth `depth` (0: the root call, made once
        with the root token and parents [-1]).
        parents: [k] parents[j] is the node whose draft output (hidden state) feeds node j, in
        *expand numbering*: every node passed to `expand` takes the next index in call order. The
        root (call 0) is 0, the items of call 1 are 1..k1, those of call 2 follow at k1+1.., and so
        on; parents[j] always lies in the previous call. A draft that appends its per-node states in
        this order can attend with `ancestor_mask(all parents passed so far)`.

        Root-call tensors are on `draft_tree`'s `device` argument (CPU by default); later calls use
        the device of the returned log-probs. Medusa-style drafts, whose distribution at depth d
        does not depend on the path, fit as they are: they return head d's log-probs for every node.
        """
        ...


class ProposingSession(Session, Protocol):
    proposes: ClassVar[bool] = True

    def propose(self, root: int) -> list[int]:
        """The draft tokens to verify after `root` (the last extended token), as one chain."""
        ...


class Draft(Protocol):
    """What the decoder needs of a draft: `begin`. Optional: `max_depth` (draft tokens per tree path)
    and `config.kind` / `config.draft_vocab`."""

    def begin(self, target, inputs, capacity: int) -> Session:
        ...
