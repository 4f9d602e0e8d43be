"""A reduced draft vocabulary (EAGLE-3): the draft proposes only its N tokens, speculative decoding
stays token-identical to vanilla greedy, checkpoints keep the ids (never the LM head rows), the
trainer learns on the restricted distributions, and frequent_tokens counts correctly."""
import pytest
import torch
from safetensors import safe_open

from vispec_core.data.synthesis import load_synthesized, synthesize
from vispec_core.decoding.decode import decode_speculative, decode_vanilla
from vispec_core.decoding.tree import draft_tree
from vispec_core.drafts import frequent_tokens, load_draft
from vispec_core.training.trainer import TrainConfig, build_draft, read_log, train

KINDS = ["vispec", "eagle2", "medusa"]
PROMPTS = [("Describe the picture in detail.", "rocket"), ("<image> What is on the table?", "coffee")]


def vocab_for(target, tokens, n=48):
    """A small draft vocabulary: the tokens vanilla greedy says, n other ids (every third) and EOS. A
    random draft over it proposes the right token often enough for acceptances to happen."""
    extra = list(range(0, 3 * n, 3))
    return frequent_tokens([tokens, extra], len(set(tokens) | set(extra)) + 1, target.eos_token_ids)


def test_frequent_tokens_on_a_toy_list():
    lists = [[5, 3, 5, 7], [3, 5, 9, 9], [1]]          # counts: 5:3, 3:2, 9:2, 7:1, 1:1
    assert frequent_tokens(lists, 3) == [5, 3, 9]       # 3 and 9 tie: lower id first
    assert frequent_tokens(lists, 4) == [5, 3, 9, 1]    # 1 and 7 tie
    assert frequent_tokens(lists, 3, always=[2]) == [5, 3, 2]   # EOS 2 never seen, still in
    assert frequent_tokens(lists, 2, always=[5]) == [5, 3]      # a frequent EOS takes one slot only
    assert frequent_tokens(lists, 100) == [5, 3, 9, 1, 7]       # no more than occur
    assert frequent_tokens(lists, 7, fill=[8, 3, 6, 4]) == [5, 3, 9, 1, 7, 8, 6]   # topped up in fill's order
    with pytest.raises(ValueError, match="cannot hold"):
        frequent_tokens(lists, 1, always=[0, 2])


@pytest.mark.parametrize("kind", KINDS)
def test_draft_proposes_only_its_vocabulary(target, photos, kind):
    inputs = target.prepare(PROMPTS[0][0], [photos["rocket"]])
    vanilla, _ = decode_vanilla(target, inputs, 16)
    ids = vocab_for(target, vanilla)
    draft = load_draft(f"random:{kind}", target, draft_vocab=ids)
    session = draft.begin(target, inputs, inputs.length + 64)
    f = target.forward(inputs.inputs_embeds, inputs.position_ids, target.new_cache(inputs.length))
    root = vanilla[0]
    lp = session.extend(f, torch.cat([inputs.input_ids[0, 1:], torch.tensor([root], device=target.device)]))
    assert lp.shape == (target.vocab_size,)
    outside = torch.ones(target.vocab_size, dtype=torch.bool, device=lp.device)
    outside[ids] = False
    assert torch.isneginf(lp[outside]).all() and torch.isfinite(lp[ids]).all()
    assert torch.allclose(lp[ids].exp().sum().cpu(), torch.tensor(1.0))
    tree = draft_tree(session, root, 30, 2 if kind == "medusa" else 3, 8)      # Medusa: 3 heads, depth 2
    assert len(tree.tokens) == 30 and set(tree.tokens[1:].tolist()) <= set(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_reduced_vocabulary_speculative_equals_vanilla_greedy(target, photos, kind):
    accepted = 0
    for prompt, photo in PROMPTS:
        inputs = target.prepare(prompt, [photos[photo]])
        vanilla, _ = decode_vanilla(target, inputs, 64)
        missing = vanilla[3]          # left out of the draft vocabulary: only the target can say it
        ids = [i for i in vocab_for(target, vanilla) if i != missing]
        draft = load_draft(f"random:{kind}", target, draft_vocab=ids)
        spec, stats = decode_speculative(target, draft, inputs, 64, total_tokens=30, top_k=8)
        assert spec == vanilla and len(spec) == 64 and missing in spec
        accepted += sum(stats["accept_lengths"])
    assert accepted > 0, "no draft token was ever accepted: the test would not exercise acceptance"


@pytest.mark.parametrize("kind", ["vispec", "medusa"])
def test_save_load_keeps_the_ids_and_rebuilds_the_sub_head(target, photos, kind, tmp_path):
    ids = list(range(100, 400, 7)) + sorted(target.eos_token_ids)
    draft = load_draft(f"random:{kind}", target, seed=3, draft_vocab=ids)
    draft.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as st:
        assert set(st.keys()) == set(draft.state_dict()) and not [k for k in st.keys() if "vocab" in k]
    loaded = load_draft(str(tmp_path), target)
    assert loaded.config.draft_vocab == ids
    assert torch.equal(loaded.vocab_head, target.lm_head.weight[ids])
    h = torch.randn(5, target.hidden_size, device=target.device)
    assert torch.equal(loaded.token_log_probs(h), draft.token_log_probs(h))
    # the same draft over the full vocabulary: the draft vocabulary's logits are a slice of it
    full = load_draft(str(tmp_path), target).with_vocab(None)
    assert torch.allclose(full.logits(h)[:, ids], loaded.logits(h), atol=1e-5)
    assert not hasattr(full, "vocab_head")


def test_trainer_with_a_reduced_vocabulary(tmp_path):
    from vispec_core.targets import load_target

    spec = "tiny:llava_next"
    target = load_target(spec)
    with torch.no_grad():
        target.lm_head.weight.mul_(30.0)      # a sharpened head: something to learn (as test_train)
    synthesize(spec, "text", 16, tmp_path / "text", max_new_tokens=24, target=target, progress=False, shard_size=8)
    c = TrainConfig(target=spec, kind="vispec", data=str(tmp_path / "text"), out=str(tmp_path / "run"), stage=1,
                    batch_size=4, epochs=3, lr=1e-3, draft_vocab=64)
    final = train(c, target=target, progress=False)
    log = read_log(tmp_path / "run")
    assert sum(r["loss"] for r in log[-3:]) < sum(r["loss"] for r in log[:3]) - 0.5
    # the tiny random target spreads its mass widely (its 384 sampled answer tokens are 346 distinct
    # ids): ~11% of it falls inside these 64, the rest is what the restricted loss leaves out
    mass = [r["vocab_mass"] for r in log]
    assert all(0.0 < m < 1.0 for m in mass)
    draft = load_draft(str(final), target)
    expected = frequent_tokens(load_synthesized(tmp_path / "text"), 64, target.eos_token_ids)
    assert draft.config.draft_vocab == expected and len(expected) == 64


def test_cli_passes_draft_vocab_to_the_trainer(monkeypatch):
    import vispec_core.training.trainer as train_module
    from vispec_core.__main__ import main

    seen = []
    monkeypatch.setattr(train_module, "train", lambda config, resume: seen.append(config) or "out/draft")
    assert main(["train", "--target", "tiny:llava_next", "--kind", "eagle2", "--data", "d", "--out", "o",
                 "--draft-vocab", "4096"]) == 0
    assert seen[0].draft_vocab == 4096


def test_stage_two_on_few_distinct_tokens_keeps_a_full_size_vocabulary(tmp_path):
    """Stage 2 on short captions (few distinct tokens) keeps a --draft-vocab of 4,096 ids, not the
    100 the data holds: the data's tokens come first, then --init's fill up."""
    from vispec_core.targets import load_target

    spec = "tiny:llava_next"
    target = load_target(spec)
    synthesize(spec, "text", 2, tmp_path / "few", max_new_tokens=4, target=target, progress=False, shard_size=8)
    from_data = frequent_tokens(load_synthesized(tmp_path / "few"), 64, target.eos_token_ids)
    assert len(from_data) < 64
    stage1 = list(range(500, 564))
    load_draft("random:eagle2", target, draft_vocab=stage1).save_pretrained(tmp_path / "init")
    c = TrainConfig(target=spec, kind="eagle2", data=str(tmp_path / "few"), out=str(tmp_path / "run"), stage=2,
                    init=str(tmp_path / "init"), draft_vocab=64)
    ids = build_draft(c, target).config.draft_vocab
    assert len(ids) == 64 and ids[:len(from_data)] == from_data
    assert ids[len(from_data):] == [i for i in stage1 if i not in from_data][:64 - len(from_data)]
    with pytest.raises(ValueError, match="distinct tokens"):      # a fresh draft has nothing to top up with
        build_draft(TrainConfig(target=spec, kind="eagle2", data=str(tmp_path / "few"), out=str(tmp_path / "r2"),
                                stage=1, draft_vocab=64), target)
