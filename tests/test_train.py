"""The trainer: a trained draft beats its untrained self on held-out samples, every draft kind and
ablation trains, an interrupted-then-resumed run equals an uninterrupted one, and two DDP processes
follow one process's trajectory."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vispec_core.data.synthesis import load_synthesized, synthesize
from vispec_core.drafts import load_draft
from vispec_core.training.trainer import (Examples, LabelCache, TrainConfig, build_draft, evaluate, read_log, sample_loss,
                               train)

REPO = Path(__file__).resolve().parents[1]
SPEC = "tiny:llava_next"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny LLaVA-NeXT target with a sharpened LM head (a random one is near-uniform: nothing to
    learn), its text and multimodal datasets, one thread (shared cores; the subprocesses match)."""
    from vispec_core.targets import load_target

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    target = load_target(SPEC)
    plain = load_target(SPEC)
    with torch.no_grad():
        target.lm_head.weight.mul_(30.0)
    kw = dict(max_new_tokens=24, target=target, progress=False, shard_size=8)
    synthesize(SPEC, "text", 24, root / "text", **kw)
    synthesize(SPEC, "text", 6, root / "held_out", seed=1, **kw)
    synthesize(SPEC, "easy_vqa", 8, root / "vqa", **kw)
    synthesize(SPEC, "text", 8, root / "plain_text", max_new_tokens=16, target=plain, progress=False)
    yield dict(target=target, plain=plain, root=root)
    torch.set_num_threads(threads)


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def named_weights(monkeypatch, target):
    """Give the tiny target weights_id values like the default VLM's (LM name, + projector with images)."""
    monkeypatch.setattr(target, "weights_id", lambda images=True: "tiny+projector:1" if images else "tiny")


def test_trained_draft_beats_its_untrained_self_on_held_out_samples(world, monkeypatch):
    t, root = world["target"], world["root"]
    named_weights(monkeypatch, t)
    c = TrainConfig(target=SPEC, kind="vispec", data=str(root / "text"), out=str(root / "run"), stage=1,
                    batch_size=4, epochs=3, lr=1e-3)
    held_out = Examples(t, load_synthesized(root / "held_out"), 512)
    before = evaluate(build_draft(c.resolved(), t), t, held_out, range(6), "vispec", unroll=1)
    final = train(c, target=t, progress=False)
    trained = load_draft(str(final), t)
    assert trained.config.target_weights == "tiny"              # text only: any projector's
    after = evaluate(trained, t, held_out, range(6), "vispec", unroll=1)
    assert after["ce"][0] < before["ce"][0] - 0.3 and after["ce"][1] < before["ce"][1] - 0.3   # both steps learn
    log = read_log(root / "run")
    assert len(log) == 18 and log[-1]["lr"] == 0.0
    assert max(r["lr"] for r in log) == pytest.approx(1e-3) and log[5]["lr"] == pytest.approx(1e-3)  # warm-up: 1 epoch
    assert sum(r["loss"] for r in log[-4:]) < sum(r["loss"] for r in log[:4]) - 1.0
    assert all(r["grad_norm"] > 0 and len(r["ce"]) == 2 for r in log)


@pytest.mark.parametrize("kind, options, unroll", [
    ("eagle2", {}, None), ("medusa", {}, None), ("vispec", {"num_compressed": 2, "use_global_injection": False}, 0),
    ("vispec", {"use_compression": False}, 2)])
def test_one_trainer_for_every_kind_and_ablation(world, kind, options, unroll):
    t, root = world["target"], world["root"]
    name = f"{kind}-{'-'.join(f'{k}{v}' for k, v in options.items())}-{unroll}"
    c = TrainConfig(target=SPEC, kind=kind, data=str(root / "vqa"), out=str(root / name), stage=2, batch_size=4,
                    epochs=1, lr=1e-3, unroll=unroll, draft_options=options)
    start = {k: v.detach().clone() for k, v in build_draft(c.resolved(), t).state_dict().items()}
    final = train(c, target=t, progress=False)
    log = read_log(root / name)
    steps = {"medusa": 3, "eagle2": 1}.get(kind, 1 + (unroll or 0))
    assert len(log) == 2 and all(len(r["ce"]) == steps and r["loss"] == r["loss"] for r in log)
    draft = load_draft(str(final), t)
    assert all(getattr(draft.config, k) == v for k, v in options.items())
    moved = {k for k, v in draft.state_dict().items() if not torch.equal(v.float(), start[k])}
    assert moved, "no weight changed"
    if kind == "vispec" and options.get("use_compression", True):
        assert any(k.startswith("adaptor.") for k in moved)          # images reach the adaptor


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(world):
    t, root = world["target"], world["root"]
    cfg = dict(target=SPEC, kind="vispec", data=str(root / "vqa"), stage=2, batch_size=2, epochs=2, lr=1e-3,
               save_every=2, warmup_steps=3)
    whole = train(TrainConfig(out=str(root / "whole"), **cfg), target=t, progress=False)
    c = TrainConfig(out=str(root / "cut"), **cfg)
    train(c, target=t, stop_after=3, progress=False)                      # killed after step 3, saved at 2
    assert not (root / "cut" / "draft").exists() and len(read_log(root / "cut")) == 3
    with pytest.raises(ValueError, match="--resume"):
        train(c, target=t, progress=False)
    resumed = train(c, target=t, resume=True, progress=False)
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    timing = ("samples_per_s", "tokens_per_s", "cpu_s")
    strip = lambda log: [{k: v for k, v in r.items() if k not in timing} for r in log]   # noqa: E731
    assert strip(read_log(root / "whole")) == strip(read_log(root / "cut"))
    with pytest.raises(ValueError, match="other settings"):
        train(TrainConfig(out=str(root / "cut"), **{**cfg, "lr": 1e-4}), target=t, resume=True, progress=False)


def test_two_processes_follow_one_process(world):
    """accelerate launch (DDP, gloo, 2 CPU processes, 2 samples each) vs 1 process with the same global batch."""
    root, plain = world["root"], world["plain"]
    args = ["--target", SPEC, "--kind", "vispec", "--data", str(root / "plain_text"), "--stage", "1",
            "--batch-size", "4", "--epochs", "1", "--lr", "1e-3", "--warmup-steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # on a CPU-only machine accelerate's --cpu means one process; --multi_gpu launches torchrun workers and
    # the trainer's Accelerator(cpu=True) joins them with gloo
    with socket.socket() as s:              # a free port, not torchrun's fixed 29500 that another run may hold
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    ddp = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no",
                          "-m", "vispec_core", "train", *args, "--out", str(root / "ddp")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    c = TrainConfig(target=SPEC, kind="vispec", data=str(root / "plain_text"), out=str(root / "single"), stage=1,
                    batch_size=4, epochs=1, lr=1e-3, warmup_steps=1)
    single = train(c, target=plain, progress=False)
    one, two = read_log(root / "single"), read_log(root / "ddp")
    assert [r["processes"] for r in two] == [2, 2] and [r["processes"] for r in one] == [1, 1]
    for r1, r2 in zip(one, two):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-6) and r1["lr"] == r2["lr"]
    init = build_draft(c.resolved(), plain).state_dict()
    a, b = weights(single), weights(root / "ddp" / "draft")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-6, rtol=0)
    # the comparison can fail: Adam moved the weights by ~lr, far above the tolerance
    assert max(float((a[k] - init[k].float()).abs().max()) for k in a) > 1e-4


def test_stage_2_starts_from_the_stage_1_draft(world, tmp_path, monkeypatch):
    t, root = world["target"], world["root"]
    named_weights(monkeypatch, t)
    stage1 = load_draft("random:vispec", t, seed=5)
    stage1.save_pretrained(tmp_path / "stage1")
    data = f"{root / 'vqa'},{root / 'held_out'}"       # several folders train as one dataset: 8 + 6 samples
    c = TrainConfig(target=SPEC, kind="vispec", data=data, out=str(tmp_path / "s2"), stage=2,
                    batch_size=4, epochs=1, init=str(tmp_path / "stage1"))
    start = build_draft(c.resolved(), t).state_dict()
    assert all(torch.equal(v, stage1.state_dict()[k].float()) for k, v in start.items())
    final = train(c, target=t, progress=False)
    assert len(read_log(tmp_path / "s2")) == 14 // 4
    assert load_draft(str(final), t).config.target_weights == "tiny+projector:1"    # learned the vision path
    with pytest.raises(ValueError, match="holds a vispec draft, not a medusa one"):
        build_draft(TrainConfig(**{**c.__dict__, "kind": "medusa"}).resolved(), t)


def test_a_variant_from_init_keeps_its_options(world, tmp_path):
    """--init with --no-global-injection / --num-compressed: the options hold, the weights that fit come
    from the stage-1 draft (they were once silently dropped)."""
    t, root = world["target"], world["root"]
    stage1 = load_draft("random:vispec", t, seed=5)
    stage1.save_pretrained(tmp_path / "stage1")
    c = TrainConfig(target=SPEC, kind="vispec", data=str(root / "vqa"), out=str(tmp_path / "s2"), stage=2,
                    init=str(tmp_path / "stage1"), draft_options={"use_global_injection": False, "num_compressed": 4})
    draft = build_draft(c.resolved(), t)
    assert draft.config.use_global_injection is False and draft.config.num_compressed == 4
    start, before = draft.state_dict(), stage1.state_dict()
    same = [k for k in start if k in before and start[k].shape == before[k].shape]
    assert same and all(torch.equal(start[k], before[k].float()) for k in same)
    assert not any("global" in k for k in start)


def test_f_cache_on_disk_is_lossless(world, tmp_path):
    t, root = world["target"], world["root"]
    ds = load_synthesized(root / "vqa")
    cached, fresh = Examples(t, ds, 512, tmp_path / "fcache"), Examples(t, ds, 512)
    for i in (0, 1):
        for ex in (cached[i], cached[i]):                  # computed and stored, then read back
            ref = fresh[i]
            assert torch.equal(ex.f, ref.f) and torch.equal(ex.inputs.inputs_embeds, ref.inputs.inputs_embeds)
            assert ex.prompt_len == ref.prompt_len and ex.inputs.image_spans == ref.inputs.image_spans
            assert all(torch.equal(a, b) for a, b in zip(ex.inputs.image_embeds, ref.inputs.image_embeds))
    assert len(list((tmp_path / "fcache").glob("*.pt"))) == 2


@pytest.mark.parametrize("vocab", [None, 40])
def test_kept_labels_give_the_same_loss_and_gradients(world, vocab):
    t, root = world["target"], world["root"]
    examples = Examples(t, load_synthesized(root / "vqa"), 512)
    draft = load_draft("random:vispec", t, seed=0).float().train()
    ids = None if vocab is None else torch.randperm(t.lm_head.weight.shape[0], generator=torch.Generator().manual_seed(0))[:vocab]
    head = t.lm_head.weight.float()
    kept, none = LabelCache(head, ids), LabelCache(head, ids, max_bytes=0)
    for i in (0, 1):
        ex = examples[i]
        runs = []
        for labels in (None, kept(i, ex), kept(i, ex), none(i, ex)):
            draft.zero_grad()
            loss, ces, accs, mass = sample_loss(draft, head, t, ex, "vispec", 1, 1.0, ids, None, labels)
            loss.backward()
            runs.append((loss.detach(), ces, accs, mass, [q.grad.clone() for q in draft.parameters() if q.grad is not None]))
        for r in runs[1:]:
            assert torch.equal(r[0], runs[0][0]) and r[1:4] == runs[0][1:4]
            assert all(torch.equal(a, b) for a, b in zip(r[4], runs[0][4]))
    assert sorted(kept.kept) == [0, 1] and not none.kept


def test_bad_inputs_fail_clearly(world, tmp_path):
    t, root = world["target"], world["root"]
    base = dict(target=SPEC, kind="vispec", out=str(tmp_path / "x"), batch_size=4, epochs=1)
    with pytest.raises(ValueError, match="Stage 1 is text-only"):
        train(TrainConfig(data=str(root / "vqa"), stage=1, **base), target=t, progress=False)
    with pytest.raises(ValueError, match="answered by target 'tiny:llava_next', not 'tiny:qwen2_5_vl'"):
        train(TrainConfig(data=str(root / "vqa"), **{**base, "target": "tiny:qwen2_5_vl"}), progress=False)
    with pytest.raises(ValueError, match="Unknown draft kind"):
        train(TrainConfig(data=str(root / "vqa"), **{**base, "kind": "eagle3"}), target=t, progress=False)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(TrainConfig(data=str(root / "vqa"), **{**base, "batch_size": 64}), target=t, progress=False)
    with pytest.raises(ValueError, match="Unknown profile"):
        train(TrainConfig(data=str(root / "vqa"), profile="gpu", **base), target=t, progress=False)


@pytest.fixture(scope="module", params=["tiny:llava_next", "tiny:qwen2_5_vl"])
def greedy_world(request, world):
    """A sharpened tiny target of each family and 4 of its greedy answers to easy-vqa questions."""
    from vispec_core.targets import load_target

    spec = request.param
    target = world["target"] if spec == SPEC else load_target(spec)
    if spec != SPEC:
        with torch.no_grad():
            target.lm_head.weight.mul_(30.0)
    data = world["root"] / f"greedy-{spec.split(':')[1]}"
    if not data.exists():
        synthesize(spec, "easy_vqa", 4, data, temperature=0.0, max_new_tokens=32, target=target, progress=False)
    return spec, target, data


@pytest.mark.parametrize("kind", ["vispec", "eagle2", "medusa"])
def test_trained_drafts_are_exact_at_temperature_zero(greedy_world, kind):
    """A draft trained on the target's greedy answers gets tokens accepted on those prompts, and the
    speculative output stays vanilla greedy's, token for token."""
    from vispec_core.decoding.decode import decode_speculative, decode_vanilla

    spec, t, data = greedy_world
    c = TrainConfig(target=spec, kind=kind, data=str(data), out=str(data.parent / f"exact-{data.name}-{kind}"),
                    stage=2, batch_size=4, epochs=30, lr=3e-3)
    draft = load_draft(str(train(c, target=t, progress=False)), t)
    accepted = 0
    for record in load_synthesized(data).select(range(2)):
        inputs = t.prepare(record["prompt"], record["images"])
        vanilla, _ = decode_vanilla(t, inputs, 32)
        spec_tokens, stats = decode_speculative(t, draft, inputs, 32, total_tokens=16, top_k=4)
        assert spec_tokens == vanilla
        accepted += sum(stats["accept_lengths"])
    assert accepted > 0, "the trained draft never had a token accepted"
