"""Verification on a draft tree: greedy walk, and lossless multi-candidate sampling (SpecInfer-style).

`target_probs` and `sample_token` are also what vanilla sampling calls, so vanilla and speculative
decoding share one definition of the sampling distribution and of a draw from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vispec_core.decoding.tree import DraftTree


@dataclass
class Acceptance:
    nodes: list[int]     # accepted node indices along one path, starting with the root 0
    bonus_token: int     # the target's own next token after the last accepted node
    # What the verifier already holds, so the caller need not ask the device again (None: not kept):
    draft_tokens: list[int] | None = field(default=None, compare=False)   # tokens of nodes[1:]
    index: torch.LongTensor | None = field(default=None, compare=False, repr=False)  # nodes, on the device

    @property
    def accept_length(self) -> int:
        """Accepted draft tokens (the paper's tau averages this; the bonus token is not counted)."""
        return len(self.nodes) - 1

    def emitted(self, tree: DraftTree) -> tuple[list[int], torch.LongTensor]:
        """(the new tokens: accepted draft tokens, then the bonus; the accepted nodes on the tree's device)."""
        draft_tokens = self.draft_tokens if self.draft_tokens is not None else [tree.host[0][i] for i in self.nodes[1:]]
        index = self.index if self.index is not None else torch.tensor(self.nodes, device=tree.tokens.device)
        return draft_tokens + [self.bonus_token], index


def target_probs(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """Sampling distribution: softmax(logits / temperature), then nucleus truncation.

    logits: [..., V] -> probs [..., V] float32. top_p < 1 keeps the smallest set of most probable
    tokens whose mass reaches top_p (a token is kept if the mass strictly above it is < top_p),
    then renormalises. temperature 0 means greedy: callers use argmax instead.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (0 means greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep_sorted = sorted_p.cumsum(-1) - sorted_p < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = probs * keep
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_token(probs: torch.Tensor, generator: torch.Generator) -> int:
    """Draw one token from probs [V] (non-negative weights; need not sum to 1) by inverse CDF.

    The one uniform comes from `generator` on its own device, so a CPU generator serves CUDA probs.
    """
    cdf = probs.double().cumsum(-1)                                        # [V]
    total = cdf[-1]
    u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64)
    u = u.item() if u.device.type == "cpu" else u.to(cdf.device)          # a host float needs no copy to the device
    # u < 1, but u * total may round up to total; staying strictly below it means the first index
    # with cdf > draw always has positive probability.
    draw = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    token = int(torch.searchsorted(cdf, draw[None], right=True))
    if token >= probs.shape[-1]:
        raise ValueError("cannot sample: probs sum to 0")
    return token


def _check_logits(tree: DraftTree, logits: torch.Tensor) -> None:
    if logits.dim() != 2 or logits.shape[0] != tree.tokens.shape[0]:
        raise ValueError(f"logits must be [n={tree.tokens.shape[0]}, V], got {tuple(logits.shape)}")


def accept_greedy(tree: DraftTree, logits: torch.Tensor) -> Acceptance:
    """Walk from the root while a child holds the target's argmax; the first miss is the bonus.

    logits: [n, V], logits[i] = the target's next-token logits after the path root..i.
    Siblings hold distinct tokens (top-k), so at most one child matches: the nodes whose whole path
    matches form one chain from the root, found on the device and read back in one transfer.
    """
    _check_logits(tree, logits)
    dev = logits.device
    tokens, parents, depths, mask = (t.to(dev) for t in (tree.tokens, tree.parents, tree.depths, tree.mask))
    n = tokens.numel()
    best = logits.argmax(-1)                                                # [n]
    hit = (tokens == best[parents.clamp_min(0)]) | (parents < 0)           # i holds the argmax after its parent
    matched = ~(mask & ~hit).any(-1)                                        # every node on root..i is a hit
    last = torch.where(matched, depths, -1).argmax(-1, keepdim=True)       # [1] the deepest: the chain's end
    # (indexing with a 1-element tensor gathers on the device; a 0-dim one would be read back first)
    at_depth = depths == torch.arange(n, device=dev)[:, None]                 # [n, n]: row d = the nodes at depth d
    path = (mask[last] & at_depth).long().argmax(-1)                        # [n]: its ancestor at each depth
    host = torch.cat([depths[last], best[last], path, tokens[path]]).tolist()
    length = host[0] + 1
    return Acceptance(host[2:2 + length], host[1], draft_tokens=host[3 + n:2 + n + length], index=path[:length])


def accept_sampling(
    tree: DraftTree,
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator,
    top_p: float = 1.0,
) -> Acceptance:
    """Lossless acceptance for deterministic (top-k) draft candidates: the emitted tokens are
    distributed exactly as sampling from target_probs(logits, temperature, top_p) one by one.

    logits: [n, V] as in `accept_greedy`. All randomness comes from `generator` (any device).
    """
    if temperature <= 0:
        raise ValueError(f"accept_sampling needs temperature > 0 (use accept_greedy for 0), got {temperature}")
    _check_logits(tree, logits)
    tokens = tree.host[0]
    nodes = [0]
    while True:
        node = nodes[-1]
        p = target_probs(logits[node], temperature, top_p)                 # [V]
        kids = tree.children[node]
        kid_tokens = [tokens[c] for c in kids]
        assert len(set(kid_tokens)) == len(kid_tokens), "duplicate sibling tokens: not a top-k tree"
        first = kids[0] if kids else 0
        idx = tree.tokens.to(p.device)[first:first + len(kids)]              # kids are consecutive nodes
        residual = p.index_fill(0, idx, 0.0)                                # p without the children
        *p_kid, rest = torch.cat([p[idx], residual.sum()[None]]).double().tolist()
        # Children x_1..x_c are fixed by the draft before the target is consulted. Try x_j with
        # probability p(x_j) / R_j, R_j = p's mass not yet rejected = 1 - p(x_1) - .. - p(x_{j-1});
        # if all fail, draw from p with x_1..x_c removed (mass R_{c+1}). Then
        #   P(emit x_j) = prod_{i<j} (1 - p(x_i) / R_i) * p(x_j) / R_j = (R_j / R_1) * p(x_j) / R_j = p(x_j),
        #   P(emit y not a child) = R_{c+1} * p(y) / R_{c+1} = p(y):
        # every emitted token follows p exactly, so the whole output does (lossless).
        # R_j is summed from the remaining mass, not as 1 - ..., to avoid cancellation when p(x_1) ~ 1.
        for j, child in enumerate(kids):
            remaining = rest + sum(p_kid[j:])
            u = torch.rand((), generator=generator, device=generator.device, dtype=torch.float64).item()
            if u * remaining < p_kid[j]:
                nodes.append(child)
                break
        else:
            if rest <= 0:  # impossible: a child holding all remaining mass is accepted with probability 1
                raise RuntimeError("all target mass was on rejected children")
            return Acceptance(nodes, sample_token(residual, generator), [tokens[i] for i in nodes[1:]])
