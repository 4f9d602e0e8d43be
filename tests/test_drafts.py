"""Drafts: the session protocol, tree masks against chains, training/inference agreement, checkpoints,
target checks, and the ViSpec pieces (compression, positions, injection, several images, video)."""
import functools
import types
import warnings

import pytest
import torch
from safetensors import safe_open

from vispec_core.decoding.tree import draft_tree
from vispec_core.drafts import (DraftConfig, ViSpecDraft, load_draft, shipped_path,
                                video_global_feature)
from vispec_core.targets import TargetInputs, load_target

from conftest import tiny_target

KINDS = ["vispec", "eagle2", "medusa"]
TOL = dict(rtol=1e-5, atol=1e-5)
TIGHT = dict(rtol=1e-5, atol=5e-6)     # same maths, other shapes and kernels: fp32 rounding only


# -- helpers ---------------------------------------------------------------------------------------
_prompts = {}


def prompt(target, photos, n_images=1):
    """(inputs, f, root) of a prompt with n_images photos, cached per target."""
    key = (target.family, n_images)
    if key not in _prompts:
        text = " and ".join(["<image>"] * n_images) + ": describe." if n_images > 1 else "Describe the image."
        inputs = target.prepare(text, [photos["astronaut"], photos["rocket"]][:n_images])
        f = prefill(target, inputs.inputs_embeds, inputs.position_ids)
        _prompts[key] = inputs, f, int(target.logits(f[0, -1]).argmax())
    return _prompts[key]


@functools.cache
def bf16_target():
    return load_target("tiny:llava_next", dtype="bfloat16")


def prefill(target, embeds, positions):
    cache = target.new_cache(embeds.shape[1])
    return target.forward(embeds, positions, cache)


def start(draft, target, inputs, f, root, **kwargs):
    """begin + the first extend, exactly as the decoder calls them."""
    session = draft.begin(target, inputs, inputs.length + 64, **kwargs)
    root_t = torch.tensor([root])
    lp = session.extend(f, torch.cat([inputs.input_ids[0, 1:], root_t]),
                        torch.cat([inputs.inputs_embeds[:, 1:], target.embed(root_t)[None]], 1))
    return session, lp


def with_answer(target, inputs, answer):
    """TargetInputs of prompt + answer tokens (positions by the target's rule) and the target's f on it."""
    a = torch.tensor(answer)
    ids = torch.cat([inputs.input_ids, a[None]], 1)
    embeds = torch.cat([inputs.inputs_embeds, target.embed(a)[None]], 1)
    pos = torch.cat([inputs.position_ids, target.positions(inputs.length, torch.arange(len(answer)),
                                                           inputs.rope_delta)], -1)
    full = TargetInputs(ids, embeds, pos, inputs.image_spans, inputs.image_embeds, inputs.rope_delta)
    return full, prefill(target, embeds, pos)


def image_pairs(inputs):
    return sum(stop - max(s - 1, 0) - 1 for s, stop in inputs.image_spans)


# -- the session protocol ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_session_protocol_shapes_and_root_call(target, photos, kind):
    inputs, f, root = prompt(target, photos)
    draft = load_draft(f"random:{kind}", target)
    session, lp = start(draft, target, inputs, f, root)
    assert lp.shape == (target.vocab_size,) and lp.dtype == torch.float32
    assert torch.allclose(lp.exp().sum(), torch.tensor(1.0), atol=1e-4)
    assert torch.equal(session.expand(torch.tensor([root]), torch.tensor([-1]), 0), lp[None])
    kids = lp.topk(4).indices
    assert session.expand(kids, torch.zeros(4, dtype=torch.long), 1).shape == (4, target.vocab_size)
    if kind != "medusa":
        pairs = inputs.length           # pairs t = 0..T-1, the last one carries the root
        expected = pairs - image_pairs(inputs) + len(inputs.image_spans) if kind == "vispec" else pairs
        assert session.committed == expected
        assert session.cache.length == expected + 4     # the depth-1 tree rows, uncommitted


@pytest.mark.parametrize("kind", KINDS)
def test_text_only_prompt_and_bfloat16_target(kind):
    """No image: no compressed rows, g = 0; a bf16 target gives a bf16 draft with float32 log-probs."""
    target = bf16_target()
    inputs = target.prepare("Say something long.")
    f = prefill(target, inputs.inputs_embeds, inputs.position_ids)
    draft = load_draft(f"random:{kind}", target)
    assert {p.dtype for p in draft.parameters()} == {torch.bfloat16}
    session, lp = start(draft, target, inputs, f, 42)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
    assert draft_tree(session, 42, total_tokens=10, depth=2, top_k=3).tokens.numel() == 10
    out = draft(f, inputs, unroll=1)
    assert out.hidden.dtype == torch.bfloat16 and not out.is_image.any()


@pytest.mark.parametrize("kind", ["vispec", "eagle2"])
def test_tree_nodes_see_prefix_and_ancestors_only(target, photos, kind):
    """Every node of a real draft tree has the hidden state of its path run alone as a chain."""
    inputs, f, root = prompt(target, photos)
    draft = load_draft(f"random:{kind}", target, initializer_range=0.1)   # larger weights, sharper attention
    session, _ = start(draft, target, inputs, f, root)
    draft_tree(session, root, total_tokens=20, depth=2, top_k=3)
    assert session.nodes == 1 + 3 + 3 and session.depths == [0, 1, 1, 1, 2, 2, 2]
    for node in range(1, session.nodes):
        path = [node]
        while session.parents[path[-1]] > 0:
            path.append(session.parents[path[-1]])
        chain, _ = start(draft, target, inputs, f, root)
        chain.expand(torch.tensor([root]), torch.tensor([-1]), 0)
        for depth, n in enumerate(reversed(path), 1):
            chain.expand(torch.tensor([session.tokens[n]]), torch.tensor([depth - 1]), depth)
        torch.testing.assert_close(session.hidden[node], chain.hidden[-1], **TIGHT)
    # the check can fail: a node seeing its earlier sibling is far off
    wrong, _ = start(draft, target, inputs, f, root)
    wrong.expand(torch.tensor([root]), torch.tensor([-1]), 0)
    wrong.expand(torch.tensor(session.tokens[1:3]), torch.tensor([0, 0]), 1)
    wrong.cache.truncate(wrong.committed)     # redo both as a causal run: node 2 sees node 1
    pos = target.positions(wrong.next_index, torch.zeros(2, dtype=torch.long), inputs.rope_delta)
    with torch.inference_mode():
        x = draft.pair_input(wrong.hidden[[0, 0]][None], target.embed(torch.tensor(session.tokens[1:3]))[None],
                             torch.zeros(2, dtype=torch.bool),
                             draft.row_globals(torch.full((2,), wrong.next_index), inputs.image_spans, wrong.globals))
        h, _ = draft.layer(x, pos, cache=wrong.cache)
    torch.testing.assert_close(h[0, 0], session.hidden[1], **TIGHT)
    assert (h[0, 1] - session.hidden[2]).abs().max() > 100 * TIGHT["atol"]


@pytest.mark.parametrize("kind", ["vispec", "eagle2"])
def test_extend_after_a_tree_equals_one_long_extend(target, photos, kind):
    """The tree's rows are discarded and positions continue: extending in cycles = extending at once."""
    inputs, f, root = prompt(target, photos)
    answer = [root, 11, 12, 13, 14]
    full, f_full = with_answer(target, inputs, answer)
    draft = load_draft(f"random:{kind}", target, initializer_range=0.1)
    session, _ = start(draft, target, inputs, f, root)
    draft_tree(session, root, total_tokens=10, depth=3, top_k=3)
    T = inputs.length
    session.extend(f_full[:, T:T + 2], torch.tensor(answer[1:3]))
    draft_tree(session, answer[2], total_tokens=10, depth=3, top_k=3)
    lp = session.extend(f_full[:, T + 2:T + 4], torch.tensor(answer[3:5]))
    once = draft.begin(target, inputs, T + 64)
    lp_once = once.extend(f_full[:, :T + 4], full.input_ids[0, 1:T + 5])
    assert once.committed == session.committed and once.next_index == session.next_index == T + 4
    torch.testing.assert_close(session.root_hidden, once.root_hidden, **TIGHT)
    torch.testing.assert_close(lp, lp_once, **TOL)


@pytest.mark.parametrize("kind", ["vispec", "eagle2"])
def test_training_forward_matches_the_session(target, photos, kind):
    """Teacher-forced rows = extend; unrolled step k rows = a depth-(k+1) chain node in the session."""
    inputs, f, root = prompt(target, photos)
    answer = [root, 21, 22, 23, 24, 25, 26, 27]
    full, f_full = with_answer(target, inputs, answer)
    draft = load_draft(f"random:{kind}", target, initializer_range=0.1)
    out = draft(f_full, full, unroll=2)
    rows = {int(t): r for r, t in enumerate(out.pair_index) if t >= 0}
    assert out.hidden.shape == (3, len(out.pair_index), target.hidden_size)
    assert out.logits.shape == (3, len(out.pair_index), target.vocab_size)
    assert int(out.is_image.sum()) == (image_pairs(inputs) if kind == "eagle2" else draft.config.num_compressed)
    P = inputs.length + 2
    session, _ = start(draft, target, inputs, f, root)
    session.extend(f_full[:, P - 2:P], full.input_ids[0, P - 1:P + 1])
    lp = session.expand(full.input_ids[0, P:P + 1], torch.tensor([-1]), 0)
    torch.testing.assert_close(lp[0], torch.log_softmax(out.logits[0, rows[P - 1]], -1), **TOL)
    session.expand(full.input_ids[0, P + 1:P + 2], torch.tensor([0]), 1)
    session.expand(full.input_ids[0, P + 2:P + 3], torch.tensor([1]), 2)
    torch.testing.assert_close(session.hidden[0], out.hidden[0, rows[P - 1]], **TIGHT)
    torch.testing.assert_close(session.hidden[1], out.hidden[1, rows[P]], **TIGHT)
    torch.testing.assert_close(session.hidden[2], out.hidden[2, rows[P + 1]], **TIGHT)
    assert (out.hidden[1, rows[P]] - out.hidden[0, rows[P]]).abs().max() > 100 * TIGHT["atol"]


# -- checkpoints and targets ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_without_target_weights(target, photos, kind, tmp_path):
    inputs, f, root = prompt(target, photos)
    draft = load_draft(f"random:{kind}", target, seed=3)
    draft.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as st:
        shapes = {k: st.get_slice(k).get_shape() for k in st.keys()}
    assert shapes and not [k for k in shapes if "embed" in k or "lm_head" in k]
    assert not [k for k, s in shapes.items() if target.vocab_size in s]
    assert set(shapes) == set(draft.state_dict())
    loaded = load_draft(str(tmp_path), target)
    assert type(loaded) is type(draft) and loaded.config.kind == kind
    a, lp_a = start(draft, target, inputs, f, root)
    b, lp_b = start(loaded, target, inputs, f, root)
    assert torch.equal(lp_a, lp_b)
    kids = lp_a.topk(3).indices
    assert torch.equal(a.expand(kids, torch.zeros(3, dtype=torch.long), 1),
                       b.expand(kids, torch.zeros(3, dtype=torch.long), 1))


def test_wrong_target_fails_clearly(photos, tmp_path):
    llava, qwen = tiny_target("llava_next"), tiny_target("qwen2_5_vl")
    load_draft("random:vispec", llava).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="llava_next.*qwen2_5_vl"):
        load_draft(str(tmp_path), qwen)
    smaller = types.SimpleNamespace(describe=lambda: {**llava.describe(), "hidden_size": 32})
    with pytest.raises(ValueError, match="'hidden_size': 64.*'hidden_size': 32"):
        load_draft("random:medusa", llava).attach(smaller)


def test_a_draft_meeting_other_weights_of_its_target_warns(tmp_path, monkeypatch):
    llava = tiny_target("llava_next")
    monkeypatch.setattr(llava, "weights_id", lambda images=True: "lm+projector:new" if images else "lm")
    messages = {}
    for recorded, warns in (("lm+projector:old", True), ("lm+projector:new", False), ("lm", False), ("", False)):
        draft = load_draft("random:eagle2", llava)
        draft.config.target_weights = recorded
        draft.save_pretrained(tmp_path / str(warns) / recorded)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            loaded = load_draft(str(tmp_path / str(warns) / recorded), llava)
        assert loaded.config.target_weights == recorded
        messages[recorded] = [str(w.message) for w in seen if "trained against" in str(w.message)]
        assert len(messages[recorded]) == warns, (recorded, messages[recorded])
    said = messages["lm+projector:old"][0]
    assert "lm+projector:old" in said and "lm+projector:new" in said and "lossless" in said


def test_random_drafts_are_seed_deterministic_and_shipped_ones_explain_absence(tmp_path):
    llava = tiny_target("llava_next")
    a, b, c = (load_draft("random:vispec", llava, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.fc.weight, c.fc.weight)
    if not (shipped_path(llava, "eagle2") / "config.json").is_file():
        with pytest.raises(FileNotFoundError, match="No trained eagle2 draft is shipped.*random:eagle2"):
            load_draft("eagle2", llava)
    with pytest.raises(ValueError, match="Unknown draft kind"):
        load_draft("random:eagle3", llava)


# -- ViSpec's pieces -----------------------------------------------------------------------------
@pytest.mark.parametrize("num_compressed", [1, 4])
def test_compressed_tokens_replace_the_span_at_its_last_positions(target, photos, num_compressed):
    inputs, f, root = prompt(target, photos, n_images=2)
    draft = load_draft("random:vispec", target, num_compressed=num_compressed)
    compressed, globals_ = draft.compress(inputs.image_embeds)
    assert [c.shape for c in compressed] == [(num_compressed, target.hidden_size)] * 2
    n = inputs.length
    rows = draft.layout(f, inputs.inputs_embeds[:, 1:], inputs.position_ids, 0, inputs.image_spans, compressed)
    assert int(rows.is_image.sum()) == 2 * num_compressed
    assert rows.f.shape[1] == n - image_pairs(inputs) + 2 * num_compressed
    compressed_rows = (rows.pair_index == -1).nonzero().flatten()
    for i, ((s, stop), c) in enumerate(zip(inputs.image_spans, compressed)):
        # pair t carries token t+1 at t's position: the span's last tokens ride on pairs stop-1-nc .. stop-2
        last = torch.arange(stop - 1 - num_compressed, stop - 1)
        at = compressed_rows[i * num_compressed:(i + 1) * num_compressed]
        assert torch.equal(rows.e[0, at], c)
        assert torch.equal(rows.position_ids[..., at], inputs.position_ids[..., last])
        assert torch.equal(rows.f[0, at], f[0, last])
        assert int(rows.pair_index[at[-1] + 1]) == stop - 1            # text resumes at its own index
    image = {t for s, stop in inputs.image_spans for t in range(max(s - 1, 0), stop - 1)}
    assert rows.pair_index[rows.pair_index >= 0].tolist() == [t for t in range(n) if t not in image]


def test_several_images_are_compressed_each_on_its_own(target, photos):
    inputs, f, root = prompt(target, photos, n_images=2)
    draft = load_draft("random:vispec", target)
    c, g = draft.compress(inputs.image_embeds)
    c2, g2 = draft.compress([inputs.image_embeds[0], inputs.image_embeds[1] + 1.0])
    assert torch.equal(c[0], c2[0]) and torch.equal(g[0], g2[0]) and not torch.equal(g[1], g2[1])
    (s0, e0), (s1, e1) = inputs.image_spans
    index = torch.tensor([0, e0 - 2, e0 - 1, e1 - 2, e1 - 1, inputs.length + 5])
    rows_g = draft.row_globals(index, inputs.image_spans, g)[0]
    for row, want in zip(rows_g, [0 * g[0], 0 * g[0], g[0], g[0], g[1], g[1]]):
        assert torch.equal(row, want)
    session, lp = start(draft, target, inputs, f, root)
    assert session.committed == inputs.length - image_pairs(inputs) + 2


def test_global_injection_is_identity_at_init_and_compression_off_is_eagle2(target, photos):
    inputs, f, root = prompt(target, photos)
    eagle = load_draft("random:eagle2", target, seed=5)
    assert eagle.adaptor is None and eagle.injection is None
    off = load_draft("random:vispec", target, seed=5, use_compression=False, use_global_injection=False)
    assert set(off.state_dict()) == set(eagle.state_dict())
    only_g = load_draft("random:vispec", target, seed=7, use_compression=False)
    g = torch.randn(target.hidden_size)
    assert torch.equal(only_g.injection(f[0], g), f[0])
    only_g.load_state_dict(eagle.state_dict(), strict=False)          # same fc and layer
    lps = [start(d, target, inputs, f, root)[1] for d in (eagle, off, only_g)]
    assert torch.equal(lps[0], lps[1])
    torch.testing.assert_close(lps[0], lps[2], **TOL)
    vispec = load_draft("random:vispec", target, seed=5)
    assert not torch.allclose(start(vispec, target, inputs, f, root)[1], lps[0], **TOL)


def test_video_frames_compress_one_by_one_and_average_their_global_features(target, photos):
    inputs, f, root = prompt(target, photos, n_images=2)
    draft = load_draft("random:vispec", target)
    c, g = draft.compress(inputs.image_embeds)
    cv, gv = draft.compress(inputs.image_embeds, frames_as_video=True)
    assert all(torch.equal(a, b) for a, b in zip(c, cv))
    torch.testing.assert_close(gv[0], (g[0] + g[1]) / 2)
    assert torch.equal(gv[0], gv[1])
    assert video_global_feature([]) == []
    session, _ = start(draft, target, inputs, f, root, frames_as_video=True)
    assert torch.equal(session.globals[0], gv[0])


# -- Medusa ----------------------------------------------------------------------------------------
def test_medusa_heads_start_as_the_identity_and_refuse_a_too_deep_tree(target, photos):
    inputs, f, root = prompt(target, photos)
    draft = load_draft("random:medusa", target)
    session, lp = start(draft, target, inputs, f, root)
    torch.testing.assert_close(lp, torch.log_softmax(target.logits(f[0, -1]), -1), **TOL)
    draft_tree(session, root, total_tokens=10, depth=2, top_k=2)
    with pytest.raises(ValueError, match="3 heads.*at most depth 2"):
        draft_tree(session, root, total_tokens=10, depth=3, top_k=2)
    out = draft(f, inputs)
    assert out.hidden.shape == (3, inputs.length, target.hidden_size)


def test_draft_config_round_trips_through_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModel

    llava = tiny_target("llava_next")
    draft = load_draft("random:vispec", llava, num_compressed=4)
    draft.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, DraftConfig) and config.num_compressed == 4 and config.family == "llava_next"
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, ViSpecDraft)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in draft.state_dict().items())


def test_the_adaptors_attention_is_what_its_forward_uses():
    """Queries + o_proj(attention @ values), then the MLP, gives the adaptor's output: the weights a
    notebook draws are the ones that make the compressed tokens and g."""
    target = tiny_target("llava_next")
    draft = load_draft("random:vispec", target=target, num_compressed=4).float()
    a = draft.adaptor
    v = torch.randn(50, draft.config.hidden_size)
    w = a.attention(v)
    assert w.shape == (a.num_heads, 5, 50) and torch.allclose(w.sum(-1), torch.ones(a.num_heads, 5))
    values = a._heads(a.v_proj(a.image_norm(v)))
    x = a.queries + a.o_proj((w @ values).transpose(0, 1).reshape(5, -1))
    torch.testing.assert_close(x + a.mlp(a.mlp_norm(x)), a(v), rtol=1e-5, atol=1e-5)
