"""EAGLE-2 dynamic tree: structure, rerank against a brute-force reference, expand numbering."""
import pytest
import torch

from vispec_core.decoding.tree import ancestor_mask, draft_tree

ROOT = 3


def random_logp(vocab, seed):
    """A fixed random next-token log-prob function of the token path (root included)."""
    def logp(path):
        g = torch.Generator().manual_seed(hash((seed,) + tuple(path)) % 2**62)
        return (2 * torch.randn(vocab, generator=g)).log_softmax(-1)
    return logp


def medusa_logp(vocab, seed):
    """Path-independent draft: the distribution depends only on the depth (Medusa heads)."""
    inner = random_logp(vocab, seed)
    return lambda path: inner((len(path),))


class PathStepper:
    """Fake draft that rebuilds each node's token path from the promised expand numbering."""

    def __init__(self, logp):
        self.logp, self.paths, self.calls = logp, [], []

    def expand(self, tokens, parents, depth):
        self.calls.append((tokens.tolist(), parents.tolist(), depth))
        rows = []
        for t, p in zip(tokens.tolist(), parents.tolist()):
            self.paths.append((self.paths[p] if p >= 0 else ()) + (t,))
            rows.append(self.logp(self.paths[-1]))
        return torch.stack(rows)  # [k, V]


def reference_tree(logp, vocab, total_tokens, depth, top_k):
    """Brute force in plain Python: {draft-token path (root excluded): cumulative score} of kept nodes."""
    def children(path, score):
        lp = logp((ROOT,) + path).tolist()
        best = sorted(range(vocab), key=lambda t: -lp[t])[:top_k]
        return [(path + (t,), score + lp[t]) for t in best]

    level = children((), 0.0)
    cands = list(level)
    for _ in range(depth):
        frontier = sorted(level, key=lambda c: -c[1])[:top_k]
        level = [c for f in frontier for c in children(*f)]
        cands += level
    return dict(sorted(cands, key=lambda c: -c[1])[: total_tokens - 1])


def node_path(tree, i):
    parents = tree.parents.tolist()
    path = [i]
    while parents[path[-1]] >= 0:
        path.append(parents[path[-1]])
    return path[::-1]


def check_structure(tree):
    n = tree.tokens.numel()
    parents, depths = tree.parents.tolist(), tree.depths.tolist()
    scores = tree.scores.tolist()
    assert parents[0] == -1 and depths[0] == 0 and scores[0] == 0 and tree.tokens[0] == ROOT
    assert depths == sorted(depths)  # level order
    for i in range(1, n):
        assert 0 <= parents[i] < i
        assert depths[i] == depths[parents[i]] + 1
        assert scores[i] <= scores[parents[i]]
    for i in range(n):
        expected = torch.zeros(n, dtype=torch.bool)
        expected[node_path(tree, i)] = True
        assert torch.equal(tree.mask[i], expected)
    for node, kids in enumerate(tree.children):
        assert sorted(kids) == [i for i in range(1, n) if parents[i] == node]
        keys = [(-scores[k], k) for k in kids]
        assert keys == sorted(keys)  # score descending, ties lower index first
    leaves = [i for i in range(n) if not tree.children[i]]
    assert tree.paths.shape == (len(leaves), max(depths) + 1)
    for row, leaf in zip(tree.paths.tolist(), leaves):
        length = depths[leaf] + 1
        assert row[:length] == node_path(tree, leaf) and row[length:] == [-1] * (len(row) - length)
    assert sorted(leaves) == leaves


@pytest.mark.parametrize("make_logp", [random_logp, medusa_logp])
@pytest.mark.parametrize(
    "vocab,total_tokens,depth,top_k,seed",
    [(3, 8, 2, 3, 0), (4, 10, 3, 3, 1), (5, 12, 3, 2, 2), (8, 31, 3, 8, 3), (6, 7, 4, 2, 4), (50, 16, 3, 4, 5),
     (2, 30, 2, 2, 6)],
)
def test_tree_matches_brute_force(make_logp, vocab, total_tokens, depth, top_k, seed):
    logp = make_logp(vocab, seed)
    tree = draft_tree(PathStepper(logp), ROOT, total_tokens, depth, top_k)
    check_structure(tree)
    ref = reference_tree(logp, vocab, total_tokens, depth, top_k)
    n_cand = top_k + depth * top_k**2
    assert tree.tokens.numel() == min(total_tokens, 1 + n_cand) == 1 + len(ref)
    got = {tuple(tree.tokens[node_path(tree, i)[1:]].tolist()): tree.scores[i].item()
           for i in range(1, tree.tokens.numel())}
    assert got.keys() == ref.keys()
    for path, score in ref.items():
        assert got[path] == pytest.approx(score, abs=1e-5)


def test_expand_numbering_and_frontier():
    vocab, depth, top_k = 7, 4, 3
    logp = random_logp(vocab, 11)
    stepper = PathStepper(logp)
    tree = draft_tree(stepper, ROOT, 1000, depth, top_k)  # keeps every candidate
    assert tree.tokens.numel() == 1 + top_k + depth * top_k**2
    assert stepper.calls[0] == ([ROOT], [-1], 0)
    assert [c[2] for c in stepper.calls] == list(range(depth + 1))
    paths = {tuple(tree.tokens[node_path(tree, i)].tolist()): i for i in range(tree.tokens.numel())}
    start, prev_len = 0, 1
    for d, (tokens, parents, call_depth) in enumerate(stepper.calls[1:], 1):
        assert len(tokens) == top_k
        assert all(start <= p < start + prev_len for p in parents)  # parents lie in the previous call
        start, prev_len = start + prev_len, len(tokens)
        # the nodes of call d are the top_k depth-d candidates, and their rebuilt paths are tree paths
        level = [i for i in range(tree.tokens.numel()) if tree.depths[i] == d]
        best = sorted(level, key=lambda i: -tree.scores[i].item())[:top_k]
        expanded = [paths[p] for p in stepper.paths[start:start + prev_len]]
        assert sorted(expanded) == sorted(best)


def test_ties_and_point_masses_keep_a_tree():
    """Equal scores (uniform draft) and -inf log-probs (point-mass draft) rely on the stable tie rule."""
    uniform = PathStepper(lambda path: torch.full((5,), -5.0).log_softmax(-1))
    check_structure(draft_tree(uniform, ROOT, 12, 3, 3))
    point = PathStepper(lambda path: torch.tensor([0.0] + [-float("inf")] * 4))
    tree = draft_tree(point, ROOT, 9, 3, 2)
    check_structure(tree)
    assert tree.scores[1] == 0 and tree.tokens[1] == 0


def test_ancestor_mask_random_forests():
    g = torch.Generator().manual_seed(0)
    for m in [1, 2, 5, 17, 40]:
        parents = torch.tensor([int(torch.randint(-1, i, (), generator=g)) if i else -1 for i in range(m)])
        mask = ancestor_mask(parents)
        for i in range(m):
            expected, j = {i}, parents[i].item()
            while j >= 0:
                expected.add(j)
                j = parents[j].item()
            assert set(mask[i].nonzero().flatten().tolist()) == expected
    chain = ancestor_mask(torch.arange(-1, 63))
    assert torch.equal(chain, torch.ones(64, 64, dtype=torch.bool).tril())


@pytest.mark.parametrize(
    "kwargs,message",
    [(dict(depth=0), "depth"), (dict(top_k=0), "top_k must be"), (dict(top_k=9), "vocabulary"),
     (dict(total_tokens=1), "total_tokens")],
)
def test_validation(kwargs, message):
    args = dict(total_tokens=10, depth=3, top_k=2) | kwargs
    with pytest.raises(ValueError, match=message):
        draft_tree(PathStepper(random_logp(8, 0)), ROOT, **args)
