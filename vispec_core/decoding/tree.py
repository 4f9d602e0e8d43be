"""EAGLE-2 dynamic draft tree: grow the top-k frontier level by level, then rerank every candidate.

Node 0 is the root: the last token the target produced, not yet in the target's KV cache. The
target verifies all n nodes of a `DraftTree` in one forward pass (n counts the root).

The build stays on the draft's device and never waits for it (no host synchronisation): what the
host needs of a tree (`children`, `paths`) is read back on first use, in one transfer.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
import torch

from ..drafts.session import TreeSession


@dataclass
class DraftTree:
    """A reranked draft tree, numbered level by level (depth, then generation order): parents first."""

    tokens: torch.LongTensor    # [n]; tokens[0] = root token
    parents: torch.LongTensor   # [n]; parents[0] = -1, parents[i] < i
    depths: torch.LongTensor    # [n]; depths[0] = 0
    scores: torch.Tensor        # [n]; cumulative draft log-prob of the path root..i; scores[0] = 0
    mask: torch.BoolTensor      # [n, n]; mask[i, j] = j is i or an ancestor of i

    @cached_property
    def host(self) -> tuple[list[int], list[int], list[float]]:
        """(tokens, parents, scores) as lists: one device-to-host transfer, on first use."""
        rows = torch.stack([self.tokens.double(), self.parents.double(), self.scores.double()]).tolist()
        tokens, parents = ([int(x) for x in row] for row in rows[:2])
        assert all(p >= 0 for p in parents[1:]), "rerank kept a node without its parent"
        return tokens, parents, rows[2]

    @cached_property
    def children(self) -> list[list[int]]:
        """Children of each node, score descending (ties: lower index first). Each node's children
        are a run of consecutive indices: a parent's top-k candidates are generated together, score
        sorted, and the rerank keeps a prefix of them."""
        _, parents, scores = self.host
        children: list[list[int]] = [[] for _ in parents]
        for i in range(1, len(parents)):
            children[parents[i]].append(i)
        for kids in children:
            kids.sort(key=lambda i: -scores[i])    # stable: equal scores keep lower index first
            assert not kids or kids == list(range(kids[0], kids[0] + len(kids))), "children not consecutive"
        return children

    @cached_property
    def paths(self) -> torch.LongTensor:
        """[num_leaves, max_depth + 1]: root->leaf node indices, right-padded with -1."""
        parents, rows = self.host[1], []
        for leaf in (i for i, kids in enumerate(self.children) if not kids):
            path = [leaf]
            while path[-1] != 0:
                path.append(parents[path[-1]])
            rows.append(path[::-1])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [-1] * (width - len(r)) for r in rows], device=self.tokens.device)


def ancestor_mask(parents: torch.LongTensor, max_depth: int | None = None) -> torch.BoolTensor:
    """Self-or-ancestor mask of a forest: parents [m] (-1 = none) -> mask [m, m], mask[i, j] = j is i or an ancestor of i.

    max_depth: a bound on every node's depth, when the caller knows one (fewer squarings)."""
    m = parents.numel()
    parents = parents.long()
    step = torch.zeros(m, m, device=parents.device)
    step.scatter_(1, parents.clamp_min(0)[:, None], (parents >= 0).float()[:, None])  # step[i, parent(i)] = 1
    mask = step + torch.eye(m, device=parents.device)
    # Transitive closure by squaring: after s squarings mask reaches 2**s levels up; depth <= m - 1.
    depth = m - 1 if max_depth is None else min(max_depth, m - 1)
    for _ in range(max(depth, 1).bit_length()):
        mask = (mask @ mask).clamp_max(1)
    return mask.bool()


def chain_tree(root_token: int, chain: list[int], device=None) -> DraftTree:
    """A proposal of one chain (a `ProposingSession`'s) as a tree: the root, then each token the child
    of the one before."""
    n = 1 + len(chain)
    return DraftTree(tokens=torch.tensor([root_token] + chain, dtype=torch.long, device=device),
                     parents=torch.arange(-1, n - 1, device=device),
                     depths=torch.arange(n, device=device),
                     scores=torch.zeros(n, device=device),
                     mask=torch.ones(n, n, dtype=torch.bool, device=device).tril())


def check_tree(total_tokens: int, depth: int, top_k: int, vocab_size: int | None = None) -> None:
    """Clear errors for tree settings out of range (callers check before any model work)."""
    if depth < 1:
        raise ValueError(f"depth (expansions after the root pass) must be >= 1, got {depth}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if vocab_size is not None and top_k > vocab_size:
        raise ValueError(f"top_k={top_k} exceeds the vocabulary size {vocab_size}")
    if total_tokens < 2:
        raise ValueError(f"total_tokens counts the root and must be >= 2, got {total_tokens}")


def draft_tree(
    stepper: TreeSession,
    root_token: int,
    total_tokens: int,
    depth: int,
    top_k: int,
    device: torch.device | str | None = None,
) -> DraftTree:
    """Build the EAGLE-2 dynamic tree: the root pass, then `depth` expansions, at most `total_tokens`
    nodes. A path holds up to depth + 1 draft tokens (`depth` as the official EAGLE-2 and ViSpec code
    count it: their 30/3/8 tree drafts 4 levels).

    Expansion: the root pass gives the root's top_k children, the first frontier. Each expansion runs
    the frontier (top_k nodes) through the draft together; the top_k children of each node, k*k in
    all, become candidates scored by cumulative log-prob (the product of draft probabilities on the
    path), and the global top_k of them are the next frontier.
    Rerank: of all candidates, top_k + depth * top_k**2, keep the total_tokens - 1 best
    (ties: earlier candidate first). A parent scores at least as high as its child and is generated
    earlier, so the kept set is closed under parents: a tree. If there are fewer candidates than
    total_tokens - 1 (small vocab, top_k or depth), all are kept and the tree has fewer nodes.
    """
    check_tree(total_tokens, depth, top_k)

    # Tensors from Python ints by filling on the device (torch.tensor would copy from the host and wait).
    root = torch.full((1,), root_token, dtype=torch.long, device=device)
    logp = stepper.expand(root, torch.full_like(root, -1), 0)  # [1, V]
    if top_k > logp.shape[-1]:
        raise ValueError(f"top_k={top_k} exceeds the draft vocabulary size {logp.shape[-1]}")
    dev = logp.device
    # Log-probs are <= 0, so a child never outscores its parent; clamping keeps that under rounding.
    score, token = logp[0].float().clamp_max(0).topk(top_k)  # [k], score-sorted
    # Candidates level by level: (tokens, parent candidate index (-1 = root), cumulative scores, depth).
    levels = [(token, torch.full((top_k,), -1, device=dev), score, 1)]
    front = torch.arange(top_k, device=dev)        # candidate indices of the frontier
    front_parent = torch.zeros(top_k, dtype=torch.long, device=dev)  # expand index of their parents
    n_cand, call_start = top_k, 1                  # expand index of the next call's first item

    for d in range(1, depth + 1):
        logp = stepper.expand(token, front_parent, d)                   # [k, V]
        child_lp, child_tok = logp.float().clamp_max(0).topk(top_k, dim=-1)  # [k, k]
        child_score = (score[:, None] + child_lp).flatten()             # [k*k]
        levels.append((child_tok.flatten(), front.repeat_interleave(top_k), child_score, d + 1))
        best = child_score.sort(descending=True, stable=True).indices[:top_k]
        front, token, score = n_cand + best, child_tok.flatten()[best], child_score[best]
        front_parent = call_start + best // top_k
        n_cand, call_start = n_cand + top_k * top_k, call_start + top_k

    cand_tokens = torch.cat([lvl[0] for lvl in levels])
    cand_parents = torch.cat([lvl[1] for lvl in levels])
    cand_scores = torch.cat([lvl[2] for lvl in levels])
    cand_depths = torch.cat([torch.full_like(lvl[0], lvl[3]) for lvl in levels])

    best = cand_scores.sort(descending=True, stable=True).indices[: total_tokens - 1]
    keep = best.sort().values                     # candidate order = (depth, generation order)
    new_index = torch.full((n_cand + 1,), -1, device=dev)  # candidate c -> new_index[c + 1]; root -> 0
    new_index[:1].zero_()                         # (`[0] = 0` would copy the 0 from the host and wait)
    new_index[keep + 1] = torch.arange(1, keep.numel() + 1, device=dev)

    zero = torch.zeros(1, dtype=torch.long, device=dev)
    parents = torch.cat([zero - 1, new_index[cand_parents[keep] + 1]])
    tokens = torch.cat([zero + root_token, cand_tokens[keep]])
    depths = torch.cat([zero, cand_depths[keep]])
    scores = torch.cat([zero.float(), cand_scores[keep]])
    if device is not None and torch.device(device) != dev:      # a draft on another device than the target
        tokens, parents, depths, scores = (t.to(device) for t in (tokens, parents, depths, scores))
    return DraftTree(tokens, parents, depths, scores, ancestor_mask(parents, depth + 1))


# -- the tree's shape ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeConfig:
    total_tokens: int = 30
    depth: int = 3
    top_k: int = 8

    @property
    def label(self) -> str:
        return f"{self.total_tokens}/{self.depth}/{self.top_k}"

    @property
    def nodes(self) -> int:
        """Nodes the tree really has: all candidates when there are fewer than total_tokens - 1."""
        return min(self.total_tokens, 1 + self.top_k + self.depth * self.top_k ** 2)


PAPER_TREE = TreeConfig(30, 3, 8)


def parse_tree(spec: str | None) -> TreeConfig | str:
    """'auto' | 'paper' | 'T/D/K' (e.g. '30/3/8') -> 'auto' or a TreeConfig."""
    if spec is None or spec == "paper":
        return PAPER_TREE
    if spec == "auto":
        return "auto"
    parts = spec.split("/")
    try:
        t, d, k = (int(p) for p in parts)
    except ValueError:
        t = d = k = None
    if len(parts) != 3 or t is None or t < 2 or d < 1 or k < 1:
        raise ValueError(f"tree must be 'auto', 'paper' or TOTAL/DEPTH/TOP_K with TOTAL >= 2 and DEPTH, "
                         f"TOP_K >= 1 (the paper's is 30/3/8), got {spec!r}.")
    return TreeConfig(t, d, k)
