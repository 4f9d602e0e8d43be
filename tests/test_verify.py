"""Tree verification: greedy against brute force, sampling lossless by a chi-square test with power."""
import pytest
import torch
from scipy.stats import chisquare

from vispec_core.decoding.tree import draft_tree
from vispec_core.decoding.verify import Acceptance, accept_greedy, accept_sampling, sample_token, target_probs

V, TOTAL, DEPTH, TOP_K = 6, 8, 3, 3
_g = torch.Generator().manual_seed(0)
TARGET = 2.0 * torch.randn(V, V, V, generator=_g)         # order-2 Markov chain: logits[prev2, prev1]
DRAFT = TARGET + 1.5 * torch.randn(V, V, V, generator=_g)  # a different, correlated distribution
PROMPT = (2, 3)
ALPHA = 1e-3      # a correct verifier fails the chi-square test with probability 1e-3
POWER_P = 1e-6    # a wrong verifier must be rejected far beyond alpha


class ChainStepper:
    """Draft from the order-2 table DRAFT; rebuilds node paths from the expand numbering."""

    def __init__(self, before_root):
        self.paths, self.before_root = [], before_root

    def expand(self, tokens, parents, depth):
        rows = []
        for t, p in zip(tokens.tolist(), parents.tolist()):
            self.paths.append((self.paths[p] if p >= 0 else (self.before_root,)) + (t,))
            rows.append(DRAFT[self.paths[-1][-2], self.paths[-1][-1]].log_softmax(-1))
        return torch.stack(rows)  # [k, V]


def node_path(tree, i):
    parents = tree.parents.tolist()
    path = [i]
    while parents[path[-1]] >= 0:
        path.append(parents[path[-1]])
    return path[::-1]


def tree_and_logits(prev2, prev1):
    """Draft tree rooted at prev1, and the target's logits [n, V] after each node's path."""
    tree = draft_tree(ChainStepper(prev2), prev1, TOTAL, DEPTH, TOP_K)
    rows = []
    for i in range(tree.tokens.numel()):
        ctx = [prev2] + tree.tokens[node_path(tree, i)].tolist()
        rows.append(TARGET[ctx[-2], ctx[-1]])
    return tree, torch.stack(rows)


TREES = {(a, b): tree_and_logits(a, b) for a in range(V) for b in range(V)}  # trees are deterministic


# ---- greedy ----

def test_greedy_matches_brute_force():
    lengths = []
    for tree, logits in TREES.values():
        argmax, tokens = logits.argmax(-1).tolist(), tree.tokens.tolist()
        matching = [i for i in range(len(tokens))
                    if all(tokens[j] == argmax[tree.parents[j]] for j in node_path(tree, i)[1:])]
        deepest = max(matching, key=lambda i: tree.depths[i].item())
        acc = accept_greedy(tree, logits)
        assert acc.nodes == node_path(tree, deepest) and acc.bonus_token == argmax[deepest]
        assert acc.accept_length == len(acc.nodes) - 1
        lengths.append(acc.accept_length)
    assert min(lengths) == 0 and max(lengths) >= 2  # the cases exercise misses and long accepts


def test_greedy_first_level_miss():
    tree, logits = TREES[PROMPT]
    first = set(tree.tokens[tree.children[0]].tolist())
    miss = next(t for t in range(V) if t not in first)
    logits = logits.clone()
    logits[0] = -10.0
    logits[0, miss] = 10.0
    acc = accept_greedy(tree, logits)
    assert acc.nodes == [0] and acc.accept_length == 0 and acc.bonus_token == miss


# ---- target_probs and sample_token ----

def test_target_probs_temperature_and_top_p():
    logits = torch.randn(3, 10, generator=torch.Generator().manual_seed(1))
    for t in [0.5, 1.0, 2.0]:
        assert torch.allclose(target_probs(logits, t), torch.softmax(logits / t, -1))
    # probs 0.1 0.5 0.15 0.25 (unsorted): top_p 0.7 keeps {0.5, 0.25}; 0.76 adds 0.15; 0.3 keeps 0.5 only
    logits = torch.tensor([0.1, 0.5, 0.15, 0.25]).log()
    cases = {0.3: [0, 1, 0, 0], 0.7: [0, 0.5, 0, 0.25], 0.76: [0, 0.5, 0.15, 0.25], 1.0: [0.1, 0.5, 0.15, 0.25]}
    for top_p, kept in cases.items():
        kept = torch.tensor(kept)
        assert torch.allclose(target_probs(logits, 1.0, top_p), kept / kept.sum())
    for bad in [dict(temperature=0.0), dict(temperature=-1.0), dict(temperature=1.0, top_p=0.0),
                dict(temperature=1.0, top_p=1.5)]:
        with pytest.raises(ValueError):
            target_probs(logits, **bad)


def test_sample_token_reproducible_and_distributed():
    weights = torch.tensor([0.0, 3.0, 1.0, 0.0, 6.0])  # unnormalised; zeros must never come out

    def draws(seed, n):
        gen = torch.Generator().manual_seed(seed)
        return [sample_token(weights, gen) for _ in range(n)]

    assert draws(5, 30) == draws(5, 30) and draws(5, 30) != draws(6, 30)
    counts = torch.bincount(torch.tensor(draws(7, 5000)), minlength=5)
    assert counts[0] == 0 and counts[3] == 0
    assert chisquare(counts[[1, 2, 4]], 5000 * weights[[1, 2, 4]] / 10).pvalue > ALPHA
    with pytest.raises(ValueError):
        sample_token(torch.zeros(4), torch.Generator())


# ---- sampling: lossless, statistically ----

def exact_first3(temperature, top_p):
    """Exact joint distribution [V**3] of the first 3 tokens sampled from the target chain."""
    def probs(a, b):
        return target_probs(TARGET[a, b].double(), temperature, top_p)
    p1 = probs(*PROMPT)
    joint = torch.zeros(V, V, V, dtype=torch.float64)
    for t1 in range(V):
        p2 = probs(PROMPT[1], t1)
        for t2 in range(V):
            joint[t1, t2] = p1[t1] * p2[t2] * probs(t1, t2)
    return joint.flatten()


def speculative_first3(verify, n_runs, seed):
    """Counts [V**3] of the first 3 tokens over n_runs speculative generations (cycles until >= 3)."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(V**3)
    for _ in range(n_runs):
        seq = list(PROMPT)
        while len(seq) < len(PROMPT) + 3:
            tree, logits = TREES[seq[-2], seq[-1]]
            acc = verify(tree, logits, gen)
            seq += tree.tokens[acc.nodes[1:]].tolist() + [acc.bonus_token]
        counts[seq[2] * V * V + seq[3] * V + seq[4]] += 1
    return counts


def chi2_test(counts, probs):
    """Chi-square goodness of fit against exact probabilities; bins expecting < 5 are pooled."""
    assert counts[probs == 0].sum() == 0, "generated a sequence of probability 0"
    expected = probs * counts.sum() / probs.sum()
    big = expected >= 5
    obs, exp = counts[big].tolist(), expected[big].tolist()
    if expected[~big].sum() > 0:
        obs.append(counts[~big].sum().item())
        exp.append(expected[~big].sum().item())
    if exp[-1] < 5:  # the pooled bin itself is small: merge it into the smallest large bin
        i = min(range(len(exp) - 1), key=exp.__getitem__)
        obs[i], exp[i] = obs[i] + obs.pop(), exp[i] + exp.pop()
    return chisquare(obs, exp)


def lossless(temperature, top_p):
    return lambda tree, logits, gen: accept_sampling(tree, logits, temperature, gen, top_p)


def accept_first_child(tree, logits, gen):
    """Wrong: trusts the draft, walks first children to a leaf."""
    nodes = [0]
    while tree.children[nodes[-1]]:
        nodes.append(tree.children[nodes[-1]][0])
    return Acceptance(nodes, sample_token(target_probs(logits[nodes[-1]], 1.0), gen))


def bonus_from_full_p(tree, logits, gen):
    """Wrong, subtly: after all children are rejected, draws the bonus from p instead of the residual."""
    acc = accept_sampling(tree, logits, 1.0, gen)
    last = acc.nodes[-1]
    if tree.children[last]:
        acc.bonus_token = sample_token(target_probs(logits[last], 1.0), gen)
    return acc


@pytest.mark.parametrize(
    "temperature,top_p,n_runs", [(1.0, 1.0, 8000), (1.5, 1.0, 4000), (1.0, 0.8, 4000)]
)
def test_sampling_is_lossless(temperature, top_p, n_runs):
    counts = speculative_first3(lossless(temperature, top_p), n_runs, seed=1)
    test = chi2_test(counts, exact_first3(temperature, top_p))
    print(f"lossless T={temperature} top_p={top_p} N={n_runs}: chi2={test.statistic:.1f} p={test.pvalue:.3g}")
    assert test.pvalue > ALPHA


@pytest.mark.parametrize("wrong", [accept_first_child, bonus_from_full_p])
def test_chi_square_rejects_wrong_verifiers(wrong):
    counts = speculative_first3(wrong, 8000, seed=1)
    test = chi2_test(counts, exact_first3(1.0, 1.0))
    print(f"negative control {wrong.__name__} N=8000: chi2={test.statistic:.1f} p={test.pvalue:.3g}")
    assert test.pvalue < POWER_P


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_logits_with_cpu_generator():
    class CudaStepper(ChainStepper):
        def expand(self, tokens, parents, depth):
            return super().expand(tokens.cpu(), parents.cpu(), depth).cuda()

    tree = draft_tree(CudaStepper(PROMPT[0]), PROMPT[1], TOTAL, DEPTH, TOP_K)
    cpu_tree, logits = TREES[PROMPT]
    assert tree.mask.is_cuda and torch.equal(tree.tokens.cpu(), cpu_tree.tokens)
    assert accept_greedy(tree, logits.cuda()) == accept_greedy(cpu_tree, logits)
    a = accept_sampling(tree, logits.cuda(), 1.0, torch.Generator().manual_seed(3))
    b = accept_sampling(cpu_tree, logits, 1.0, torch.Generator().manual_seed(3))
    assert a == b
