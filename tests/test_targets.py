"""Targets: prefill and greedy parity with transformers, the tree-capable forward, inputs and errors."""
import json

import pytest
import torch

from vispec_core.decoding.decode import generate
from vispec_core.decoding.tree import ancestor_mask
from vispec_core.targets import load_target, save_target


def reference_inputs(target, prompt, images):
    """What the family's own processor feeds its transformers model."""
    return target.encode(prompt, images)[1]


@pytest.mark.parametrize("photo", ["astronaut", "rocket"])
def test_prefill_logits_match_transformers(target, photos, photo):
    inputs = target.prepare("Describe the image.", [photos[photo]])
    enc = reference_inputs(target, "Describe the image.", [photos[photo]])
    assert torch.equal(inputs.input_ids, enc["input_ids"])
    cache = target.new_cache(inputs.length)
    ours = target.logits(target.forward(inputs.inputs_embeds, inputs.position_ids, cache))[0]
    with torch.no_grad():
        ref = target.model(**enc).logits[0].float()
    assert (ours - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("photo", ["astronaut", "rocket"])
def test_greedy_generate_matches_transformers(target, photos, photo):
    gen = generate(target, "What is in the picture?", [photos[photo]], max_new_tokens=64)
    enc = reference_inputs(target, "What is in the picture?", [photos[photo]])
    with torch.no_grad():
        ref = target.model.generate(**enc, max_new_tokens=64, do_sample=False)[0, enc["input_ids"].shape[1]:]
    assert gen.prompt_ids == enc["input_ids"][0].tolist()
    assert gen.token_ids == ref.tolist()
    assert gen.stats["new_tokens"] == len(gen.token_ids) and gen.stats["wall_time_s"] > 0


def test_image_tokens_expanded_in_prompt_ids(target, photos):
    inputs = target.prepare("<image> and <image>: which is brighter?", [photos["astronaut"], photos["rocket"]])
    assert len(inputs.image_spans) == 2
    for (start, end), emb in zip(inputs.image_spans, inputs.image_embeds):
        assert end - start == emb.shape[0] > 1
        assert (inputs.input_ids[0, start:end] == target.image_token_id).all()
        assert torch.equal(inputs.inputs_embeds[0, start:end], emb)
    assert (inputs.input_ids == target.image_token_id).sum() == sum(e - s for s, e in inputs.image_spans)


def test_tree_forward_equals_each_path_alone(target, photos):
    """Logits of tree nodes under an ancestor-only mask equal running each root-to-leaf path by itself."""
    inputs = target.prepare("Tell me about it.", [photos["coffee"]])
    cache = target.new_cache(inputs.length + 16)
    target.forward(inputs.inputs_embeds, inputs.position_ids, cache)
    cache.commit(inputs.length)
    parents = torch.tensor([-1, 0, 0, 1, 1, 2, 3, 5, 0])
    depths = torch.tensor([0, 1, 1, 2, 2, 2, 3, 3, 1])
    tokens = torch.randint(0, 1000, (9,), generator=torch.Generator().manual_seed(0))
    mask = ancestor_mask(parents)
    pos = target.positions(cache.length, depths, inputs.rope_delta)
    tree_logits = target.logits(target.forward(target.embed(tokens)[None], pos, cache, mask))[0]
    leaves = [i for i in range(9) if not (parents == i).any()]
    for leaf in leaves:
        path = [leaf]
        while parents[path[-1]] >= 0:
            path.append(int(parents[path[-1]]))
        path = path[::-1]
        p = torch.tensor(path)
        path_pos = target.positions(cache.length, torch.arange(len(path)), inputs.rope_delta)
        path_logits = target.logits(target.forward(target.embed(tokens[p])[None], path_pos, cache))[0]
        assert (tree_logits[p] - path_logits).abs().max().item() <= 1e-4


def test_kv_cache_commit_keeps_only_the_accepted_path(target):
    inputs = target.prepare("Count to ten.")
    ids = torch.tensor([11, 12, 13, 14, 15])
    # the chain 11 -> 13 -> 15 written as nodes 0, 2, 4 among distractors, then compacted
    cache = target.new_cache(inputs.length + 8)
    target.forward(inputs.inputs_embeds, inputs.position_ids, cache)
    cache.commit(inputs.length)
    parents = torch.tensor([-1, 0, 0, 1, 2])
    depths = torch.tensor([0, 1, 1, 2, 2])
    target.forward(target.embed(ids)[None], target.positions(cache.length, depths, inputs.rope_delta), cache,
                   ancestor_mask(parents))
    cache.commit(5, [0, 2, 4])
    nxt = target.forward(target.embed(torch.tensor([[7]])), target.positions(cache.length, torch.zeros(1, dtype=torch.long), inputs.rope_delta), cache)
    ref = target.new_cache(inputs.length + 8)
    chain = torch.cat([inputs.inputs_embeds, target.embed(torch.tensor([[11, 13, 15, 7]]))], 1)
    pos = torch.cat([inputs.position_ids, target.positions(inputs.length, torch.arange(4), inputs.rope_delta)], -1)
    full = target.forward(chain, pos, ref)
    assert (nxt[0, -1] - full[0, -1]).abs().max().item() <= 1e-4


def test_sampling_is_seeded(target, photos):
    a = generate(target, "Say something.", [photos["rocket"]], max_new_tokens=16, temperature=1.0, seed=3)
    b = generate(target, "Say something.", [photos["rocket"]], max_new_tokens=16, temperature=1.0, seed=3)
    c = generate(target, "Say something.", [photos["rocket"]], max_new_tokens=16, temperature=1.0, seed=4)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_saved_checkpoint_folder_loads_by_path(target, photos, tmp_path):
    save_target(target, tmp_path)
    again = load_target(str(tmp_path), dtype=torch.float32)
    assert again.family == target.family
    a = target.prepare("<image> What?", [photos["rocket"]])
    b = again.prepare("<image> What?", [photos["rocket"]])
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.allclose(a.inputs_embeds, b.inputs_embeds)


# -- bad input -------------------------------------------------------------------------------

def test_missing_image_file(target, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        target.prepare("What?", [tmp_path / "nope.png"])


def test_corrupt_image_file(target, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="corrupt"):
        target.prepare("What?", [bad])


def test_image_count_must_match_places(target, photos):
    with pytest.raises(ValueError, match="image place"):
        target.prepare("<image> vs <image>", [photos["rocket"]])


def test_prompt_beyond_context_refused_before_work(target):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(target, "Hello", max_new_tokens=10**7)


def test_unknown_target_spec():
    with pytest.raises(ValueError, match="Unknown target"):
        load_target("llava-13b-please")
    with pytest.raises(ValueError, match="Unknown tiny target"):
        load_target("tiny:gpt2")


def test_unsupported_architecture_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="supported architectures"):
        load_target(str(tmp_path))


def test_dtype_the_device_cannot_run():
    with pytest.raises(ValueError, match="float16"):
        load_target("tiny:llava_next", device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        load_target("tiny:llava_next", device="cpu", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            load_target("tiny:llava_next", device="cuda")
