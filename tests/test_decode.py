"""The speculative loop's bookkeeping (positions, cache commits, draft pairs, stop rules), checked with
scripted drafts whose acceptance is known in advance; real drafts are tested in test_speculative.py."""
import pytest
import torch

from vispec_core.decoding.decode import decode_speculative, decode_vanilla, generate
from vispec_core.drafts.session import TreeSession


class ScriptedDraft:
    """Proposes `script` (e.g. the target's own greedy answer) while the tree path agrees with it;
    with `script=None` it proposes token 0 everywhere (a draft that is always wrong)."""

    def __init__(self, script, vocab):
        self.script, self.vocab = script, vocab
        self.extend_calls = []

    def begin(self, target, inputs, capacity):
        return ScriptedSession(self)


class ScriptedSession(TreeSession):
    def __init__(self, draft):
        self.draft, self.generated = draft, 0
        self.node_paths = []

    def extend(self, f, next_ids, next_embeds=None):
        self.draft.extend_calls.append((f.shape[1], len(next_ids)))
        assert f.shape[1] == len(next_ids)
        self.generated += 1 if not self.draft.extend_calls[1:] else len(next_ids)

    def _logprobs(self, path):
        logits = torch.zeros(self.draft.vocab)
        script, at = self.draft.script, self.generated + len(path)
        if script is not None and at < len(script) and list(path) == script[self.generated:at]:
            logits[script[at]] = 20.0
        else:
            logits[0] = 20.0
        return torch.log_softmax(logits, -1)

    def expand(self, tokens, parents, depth):
        if depth == 0:
            self.node_paths = [()]
        else:
            self.node_paths += [self.node_paths[p] + (t,) for t, p in zip(tokens.tolist(), parents.tolist())]
        paths = self.node_paths[-len(tokens):]
        return torch.stack([self._logprobs(p) for p in paths])


@pytest.mark.parametrize("tree", [dict(total_tokens=8, depth=3, top_k=2), dict(total_tokens=30, depth=3, top_k=8),
                                  dict(total_tokens=4, depth=1, top_k=3)])
def test_perfect_draft_accepts_depth_plus_one_tokens_per_cycle(target, photos, tree):
    """`depth` counts the expansions after the root pass, as the official EAGLE-2 code does: a tree's
    longest path, all accepted, is depth + 1 draft tokens."""
    inputs = target.prepare("Describe it.", [photos["rocket"]])
    greedy, _ = decode_vanilla(target, inputs, 40)
    draft = ScriptedDraft(greedy, target.vocab_size)
    tokens, stats = decode_speculative(target, draft, inputs, 40, **tree)
    assert tokens == greedy
    # every full cycle accepts depth + 1 draft tokens; only the last may be cut short by max_new_tokens
    assert all(a == tree["depth"] + 1 for a in stats["accept_lengths"][:-1])
    assert stats["tau"] >= tree["depth"]
    assert stats["cycles"] == len(stats["accept_lengths"]) <= -(-39 // (tree["depth"] + 2))


def test_wrong_draft_is_still_exact_and_accepts_nothing(target, photos):
    inputs = target.prepare("Describe it.", [photos["coffee"]])
    greedy, _ = decode_vanilla(target, inputs, 24)
    tokens, stats = decode_speculative(target, ScriptedDraft(None, target.vocab_size), inputs, 24,
                                       total_tokens=6, depth=2, top_k=2)
    assert tokens == greedy
    assert stats["tau"] == 0 and stats["cycles"] == 23


def test_draft_receives_one_pair_per_position(target, photos):
    inputs = target.prepare("Describe it.", [photos["rocket"]])
    greedy, _ = decode_vanilla(target, inputs, 20)
    draft = ScriptedDraft(greedy, target.vocab_size)
    tokens, stats = decode_speculative(target, draft, inputs, 20, total_tokens=8, depth=3, top_k=2)
    first, *later = draft.extend_calls
    assert first == (inputs.length, inputs.length)     # prompt pairs (f_t, token t+1), root included
    assert [n for n, _ in later] == [a + 1 for a in stats["accept_lengths"][: len(later)]]


def test_stops_at_eos_like_vanilla(target, photos):
    inputs = target.prepare("Describe it.", [photos["rocket"]])
    greedy, _ = decode_vanilla(target, inputs, 30)
    target_eos = target.eos_token_ids
    try:
        target.eos_token_ids = frozenset({greedy[9]})      # pretend the 10th token ends the answer
        vanilla, _ = decode_vanilla(target, inputs, 30)
        spec, _ = decode_speculative(target, ScriptedDraft(greedy, target.vocab_size), inputs, 30,
                                     total_tokens=8, depth=3, top_k=2)
    finally:
        target.eos_token_ids = target_eos
    assert spec == vanilla == greedy[: greedy.index(greedy[9]) + 1]


def test_stats_follow_the_contract(target, photos):
    gen = generate(target, "Describe it.", [photos["rocket"]], draft=ScriptedDraft(None, target.vocab_size),
                   max_new_tokens=6, total_tokens=4, depth=1, top_k=3)
    for key in ("tau", "accept_lengths", "new_tokens", "wall_time_s", "draft_time_s", "verify_time_s", "cycles"):
        assert key in gen.stats
    assert gen.stats["new_tokens"] == len(gen.token_ids) == 6


@pytest.mark.parametrize("tree, message", [(dict(total_tokens=1, depth=3, top_k=8), "total_tokens"),
                                           (dict(total_tokens=30, depth=0, top_k=8), "depth"),
                                           (dict(total_tokens=30, depth=3, top_k=0), "top_k"),
                                           (dict(total_tokens=30, depth=3, top_k=10**7), "vocabulary")])
def test_tree_settings_out_of_range_refused_before_work(target, tree, message):
    inputs = target.prepare("Hi")
    with pytest.raises(ValueError, match=message):
        decode_speculative(target, ScriptedDraft(None, target.vocab_size), inputs, 8, **tree)


def test_medusa_too_deep_refused_before_work(target):
    from vispec_core import load_draft

    medusa = load_draft("random:medusa", target=target)
    with pytest.raises(ValueError, match="at most 3"):
        decode_speculative(target, medusa, target.prepare("Hi"), 8, total_tokens=30, depth=4, top_k=8)


def test_top_k_beyond_a_reduced_draft_vocabulary_refused(target):
    from vispec_core import load_draft

    draft = load_draft("random:eagle2", target=target, draft_vocab=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="top_k=8 exceeds the vocabulary size 4"):
        decode_speculative(target, draft, target.prepare("Hi"), 8, total_tokens=30, depth=3, top_k=8)
