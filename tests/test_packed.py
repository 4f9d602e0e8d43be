"""CPU weight forms (cpu/packed.py). The oneDNN form (VISPEC_CPU_FORM=onednn): in bf16 the target's forward and logits are
bitwise those of the HF modules' own weights (tree masks and Qwen's q/k/v biases included), decoding
emits the same tokens, and a weight changed in place is packed again. The drafts' weights, packed where
they are used (packed.linear), give bitwise the same log-probs."""
import copy
import io

import pytest
import torch

from vispec_core import load_draft
from vispec_core.cpu import few_rows
from vispec_core.cpu import packed as packed_module
from vispec_core.cpu.packed import can_pack, is_packed
from vispec_core.data.tasks import task_prompts
from vispec_core.decoding.decode import decode_speculative, decode_vanilla, prefill
from vispec_core.targets import load_target


def bf16_target(family, monkeypatch, mode, form="auto"):
    monkeypatch.setenv("VISPEC_PREPACK", mode)
    monkeypatch.setenv("VISPEC_CPU_FORM", form)
    return load_target(f"tiny:{family}", dtype=torch.bfloat16)


def outputs(target, inputs):
    """Prefill logits, then a 4-token tree-masked forward's logits, then 12 greedy tokens."""
    cache, f = prefill(target, inputs, inputs.length + 32)
    first = target.logits(f[0])
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
    depths = torch.tensor([0, 1, 1, 2])
    f = target.forward(target.embed(torch.tensor([[5, 9, 11, 13]])), target.positions(cache.length, depths,
                                                                                     inputs.rope_delta), cache, mask)
    return first, target.logits(f[0]), decode_vanilla(target, inputs, 12)[0]


NEEDS_BF16_PACKING = pytest.mark.skipif(not can_pack(torch.bfloat16), reason="oneDNN packs bf16 only on a CPU with "
                                         "AVX-512 or AVX-NE-CONVERT (this one has neither)")


@NEEDS_BF16_PACKING
@pytest.mark.parametrize("family", ["llava_next", "qwen2_5_vl"])
def test_packed_weights_are_bitwise_the_modules(family, monkeypatch):
    p = task_prompts("caption", 1, seed=2)[0]
    plain = bf16_target(family, monkeypatch, "0")
    assert plain.packed_weights() is None
    packed = bf16_target(family, monkeypatch, "auto", "onednn")
    assert packed.packed_weights().mode == "onednn"
    if family == "qwen2_5_vl":
        assert packed.packed_weights().layers[0]["qkv_bias"] is not None      # the biases go through too
    want = outputs(plain, plain.prepare(p.prompt, p.images))
    got = outputs(packed, packed.prepare(p.prompt, p.images))
    for a, b in zip(want[:2], got[:2]):
        assert torch.equal(a, b)
    assert want[2] == got[2]

    draft = load_draft("random:vispec", target=packed)          # the speculative loop on packed weights
    inputs = packed.prepare(p.prompt, p.images)
    assert decode_speculative(packed, draft, inputs, 12, total_tokens=8, top_k=2)[0] == got[2]

    before = packed.packed_weights()
    with torch.no_grad():                                        # an in-place change is seen: packed again
        for t in (plain, packed):
            t.language_model.layers[0].mlp.down_proj.weight.mul_(3.0)
            t.lm_head.weight.mul_(2.0)
    assert not before.current()
    want = outputs(plain, plain.prepare(p.prompt, p.images))
    got = outputs(packed, packed.prepare(p.prompt, p.images))
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1]) and packed.packed_weights() is not before


def test_packing_only_where_it_helps(monkeypatch):
    monkeypatch.setenv("VISPEC_PREPACK", "auto")
    assert load_target("tiny:llava_next", dtype=torch.float32).packed_weights() is None    # fp32: MKL's own path


def test_a_named_cpu_form_is_taken_or_refused_clearly(monkeypatch):
    """VISPEC_CPU_FORM picks the form; a misspelt one, or one this CPU cannot run, is an error saying what to do."""
    monkeypatch.setenv("VISPEC_CPU_FORM", "upcast")
    assert packed_module.cpu_mode(torch.bfloat16) == "upcast"
    assert packed_module.cpu_mode(torch.float32) is None
    monkeypatch.setenv("VISPEC_CPU_FORM", "widne")
    with pytest.raises(ValueError, match="'widne' is not a weight form; use auto or one of onednn, widen, upcast"):
        packed_module.cpu_mode(torch.bfloat16)
    monkeypatch.setenv("VISPEC_CPU_FORM", "onednn")
    monkeypatch.setattr(packed_module, "can_pack", lambda dtype: False)
    with pytest.raises(ValueError, match="does not pack"):
        packed_module.cpu_mode(torch.bfloat16)
    monkeypatch.setenv("VISPEC_CPU_FORM", "widen")
    monkeypatch.setattr(few_rows, "available", lambda: False)
    with pytest.raises(ValueError, match="few-rows AVX2 kernel"):
        packed_module.cpu_mode(torch.bfloat16)
    with pytest.raises(ValueError, match=r"bf16 weights \(here torch.float16\)"):
        packed_module.cpu_mode(torch.float16)
    monkeypatch.setenv("VISPEC_CPU_FORM", "auto")
    assert packed_module.cpu_mode(torch.bfloat16) == "upcast"


NEEDS_KERNEL = pytest.mark.skipif(not few_rows.available(), reason="the few-rows AVX2 kernel is not built here "
                                   "(an AVX2 CPU, a C++ compiler and ninja are needed)")


@pytest.mark.parametrize("form", ["fp32 packed", "fp32 plain", "widen"])
def test_a_cpu_without_bf16_arithmetic_multiplies_in_fp32(monkeypatch, form):
    """Where oneDNN refuses bf16 (an AVX2-only CPU) the weights are held "widen" (the few-rows kernel:
    every product in fp32 on the bf16 weight, each row's result the same whatever the rows) or, without
    the kernel, "upcast": products over fewer than UPCAST_MIN_ROWS rows on the bf16 weights as before
    (bitwise), products over more in fp32 (on a oneDNN-packed fp32 copy where oneDNN packs fp32, else
    on a plain one); rounded to bf16, attention in fp32 however many rows on an fp32 KV cache (all within
    bf16 rounding of the plain path); speculative decoding emits vanilla's tokens."""
    if form == "fp32 packed" and not can_pack(torch.float32):
        pytest.skip("oneDNN does not pack fp32 on this machine")
    if form == "widen" and not few_rows.available():
        pytest.skip("the few-rows AVX2 kernel is not built here")
    monkeypatch.setattr(packed_module, "can_pack", lambda dtype: form == "fp32 packed" and dtype == torch.float32)
    monkeypatch.setattr(few_rows, "available", lambda: form == "widen")
    p = task_prompts("caption", 1, seed=2)[0]
    plain = bf16_target("llava_next", monkeypatch, "0")
    assert plain.packed_weights() is None
    target = bf16_target("llava_next", monkeypatch, "auto")
    packs = target.packed_weights()
    if form == "widen":
        assert packs.mode == "widen"
    else:
        assert packs.mode == "upcast" and packs.layers[0]["o"][1].is_mkldnn == (form == "fp32 packed")
    inputs = target.prepare(p.prompt, p.images)
    assert inputs.length >= packed_module.UPCAST_MIN_ROWS
    assert target.new_cache(8).storage.dtype == torch.float32 and plain.new_cache(8).storage.dtype == torch.bfloat16
    want, got = outputs(plain, inputs), outputs(target, inputs)
    assert not torch.equal(want[0], got[0])                                   # the prefill ran in fp32
    assert torch.allclose(want[0], got[0], rtol=0.05, atol=0.05 * want[0].abs().max().item())
    cache, _ = prefill(plain, inputs, inputs.length + 4)                      # one row, on the same cache:
    steps = [t.logits(t.forward(t.embed(torch.tensor([[7]])), t.positions(c.length, torch.zeros(1, dtype=torch.long),
                                                                          inputs.rope_delta), c)[0])
             for t, c in ((plain, cache), (target, copy.deepcopy(cache)))]
    assert torch.allclose(steps[0], steps[1], rtol=0.05, atol=0.05 * steps[0].abs().max().item())  # attention in fp32
    mlp = target.language_model.layers[0].mlp
    h = torch.randn(1, 9, mlp.gate_proj.in_features, generator=torch.Generator().manual_seed(9)).bfloat16()
    if form == "widen":                     # a token's products are bitwise the same alone or among 8 others
        for n in (1, 2, 5):
            assert torch.equal(packs.mlp(0, h[:, 3:3 + n]), packs.mlp(0, h)[:, 3:3 + n])
            assert torch.equal(packs.logits(h[:, 3:3 + n]), packs.logits(h)[:, 3:3 + n])
    else:
        for n in (1, packed_module.UPCAST_MIN_ROWS - 1):                      # fewer rows: the bf16 weights, bitwise
            assert torch.equal(packs.mlp(0, h[:, :n]), mlp(h[:, :n])) and torch.equal(packs.logits(h[:, :n]), target.lm_head(h[:, :n]))
    with torch.no_grad():       # a random head is near-uniform: its bf16 near-ties flip with the summation order
        target.lm_head.weight.mul_(30.0)
    draft = load_draft("random:eagle2", target=target, seed=1, draft_vocab=list(range(0, 600, 3)))
    with torch.inference_mode():
        spec = decode_speculative(target, draft, inputs, 24, total_tokens=8, top_k=2)[0]
    assert spec == decode_vanilla(target, inputs, 24)[0]
    assert is_packed(draft.fc.weight)                       # the prompt's product: fp32
    assert is_packed(draft.vocab_head) == (form == "widen")  # 2-row expansions: on the bf16 weight unless widened


def test_packed_weights_see_a_replaced_parameter_and_are_checked_once_per_decode(monkeypatch):
    """A weight replaced by a new Parameter (not changed in place) is packed again too; a decode checks the
    weights once on entry (Target.weights_fixed), not at each of its forward and logits calls."""
    monkeypatch.setattr(packed_module, "can_pack", lambda dtype: False)
    monkeypatch.setattr(few_rows, "available", lambda: False)            # the "upcast" form, on any CPU
    target = bf16_target("llava_next", monkeypatch, "auto")
    before = target.packed_weights()
    assert before.mode == "upcast" and before.current()
    original, calls = packed_module.PackedWeights.current, []
    monkeypatch.setattr(packed_module.PackedWeights, "current", lambda self: calls.append(1) or original(self))
    p = task_prompts("caption", 1, seed=2)[0]
    inputs = target.prepare(p.prompt, p.images)
    assert len(decode_vanilla(target, inputs, 6)[0]) == 6 and len(calls) == 1
    calls.clear()
    target.forward(target.embed(torch.tensor([[5]])), torch.zeros(1, 1, dtype=torch.long), target.new_cache(4))
    assert len(calls) == 2                        # outside a decode: every call checks (new_cache, forward)

    mlp = target.language_model.layers[0].mlp
    with target.weights_fixed():
        mlp.down_proj.weight = torch.nn.Parameter(mlp.down_proj.weight.detach() * 3)
        assert target.packed_weights() is before                       # promised fixed inside
    assert not before.current()
    after = target.packed_weights()
    h = torch.randn(1, 2, mlp.gate_proj.in_features, generator=torch.Generator().manual_seed(9)).bfloat16()
    with torch.no_grad():
        assert after is not before and torch.equal(after.mlp(0, h), mlp(h)) and not torch.equal(before.mlp(0, h), mlp(h))


@NEEDS_KERNEL
@pytest.mark.parametrize("m,n,k", [(1, 61, 8), (3, 17, 576), (7, 100, 35), (8, 40, 576), (13, 960, 576), (14, 20, 64),
                                   (40, 5, 1536)])
def test_few_rows_kernel_is_an_fp32_product_of_the_bf16_weight(m, n, k):
    """The kernel against a float64 product of the same bf16 values: within fp32 summation error, for
    row counts around its 6-row tile and column counts around its 16-column block and its 4-block
    span for a lone row (a partial block in it, blocks left over); a row's result
    does not depend on the rows beside it."""
    g = torch.Generator().manual_seed(m * n + k)
    w = torch.randn(n, k, generator=g).bfloat16()
    x = torch.randn(m, k, generator=g)
    packed = few_rows.pack(w)
    assert packed.shape == (-(-n // 16), k, 16)
    got = few_rows.linear(x, packed, n)
    want = x.double() @ w.double().T
    assert got.dtype == torch.float32 and got.shape == (m, n)
    assert torch.allclose(got.double(), want, rtol=0, atol=1e-5 * (x.abs() @ w.float().abs().T).max().item())
    assert torch.equal(few_rows.linear(x[m // 2:m // 2 + 1], packed, n), got[m // 2:m // 2 + 1])
    for r in (7, 8):                                 # a 6-row tile and a small one: the same sums as alone
        if m >= r:
            assert torch.equal(few_rows.linear(x[m - r:], packed, n), got[m - r:])
    xb, b = x.bfloat16(), torch.randn(n, generator=g).bfloat16()   # bf16 in, bias: summed in fp32, rounded once
    assert torch.equal(few_rows.linear(xb.view(1, m, k), packed, n, b)[0],
                       (few_rows.linear(xb.float(), packed, n) + b.float()).bfloat16())
    with pytest.raises(RuntimeError, match="packed weight"):
        few_rows.linear(torch.randn(2, k + 1), packed, n)
    with pytest.raises(ValueError, match="bf16"):
        few_rows.pack(w.half())


def draft_log_probs(target, draft, inputs):
    """The draft's root log-probs after the prompt's pairs, then those of three children of the root."""
    capacity = inputs.length + 32
    _, f = prefill(target, inputs, capacity)
    root = target.logits(f[0, -1]).argmax()[None]
    session = draft.begin(target, inputs, capacity)
    lp = session.extend(f, torch.cat([inputs.input_ids[0, 1:], root]),
                        torch.cat([inputs.inputs_embeds[:, 1:], target.embed(root[None])], 1))
    session.expand(root, torch.full_like(root, -1), 0)
    children = lp.topk(3).indices
    return lp, session.expand(children, torch.zeros_like(children), 1)


@NEEDS_BF16_PACKING
@pytest.mark.parametrize("family,kind", [("llava_next", "vispec"), ("qwen2_5_vl", "vispec"), ("llava_next", "eagle2"),
                                         ("llava_next", "medusa")])
def test_packed_draft_weights_are_bitwise_the_modules(family, kind, monkeypatch):
    p = task_prompts("caption", 1, seed=3)[0]
    runs = {}
    for mode in ("0", "auto"):
        target = bf16_target(family, monkeypatch, mode, "onednn" if mode == "auto" else "auto")
        draft = load_draft(f"random:{kind}", target=target, seed=1, draft_vocab=list(range(0, 600, 3)))
        if kind == "medusa":        # a fresh Medusa head is the identity: give it weights to multiply
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for h in draft.heads:
                    h.weight.copy_(torch.randn(h.weight.shape, generator=g) * 0.05)
        with torch.inference_mode():
            runs[mode] = draft_log_probs(target, draft, target.prepare(p.prompt, p.images))
        weights = [w for name, w in draft.named_parameters() if name.endswith("weight") and w.dim() == 2]
        packed = [is_packed(w) for w in weights]
        assert (any(packed) and is_packed(draft.vocab_head)) if mode == "auto" else not any(packed)
    for a, b in zip(runs["0"], runs["auto"]):
        assert torch.isfinite(a).any() and torch.equal(a, b)

    with torch.no_grad():                       # a weight changed in place is packed again
        draft.vocab_head.mul_(2.0)
    assert not is_packed(draft.vocab_head)
    with torch.inference_mode():
        again = draft_log_probs(target, draft, target.prepare(p.prompt, p.images))
    assert is_packed(draft.vocab_head) and not torch.equal(again[0], runs["auto"][0])
    buffer = io.BytesIO()                       # a packed weight still pickles (its pack lives beside it)
    torch.save(next(w for w in weights if is_packed(w)), buffer)
    assert len(buffer.getvalue()) > 0


def test_packed_linears_route_transformers_modules_through_the_packed_copy_then_restore_them(monkeypatch):
    """Data synthesis runs transformers' own generate batched; inside `packed_linears` its nn.Linear
    modules multiply through `packed.linear` (the CPU's packed form), and on exit they are as before."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.SiLU(), torch.nn.Linear(48, 32, bias=False)).bfloat16()
    x = torch.randn(5, 64).bfloat16()
    seen = []
    real = packed_module.linear
    monkeypatch.setattr(packed_module, "linear", lambda x, w, b=None: seen.append(w) or real(x, w, b))
    with torch.inference_mode():
        plain = model(x)
        with packed_module.packed_linears(model):
            got = model(x)
            held = [is_packed(m.weight) for m in (model[0], model[2])]
        after = model(x)
    assert seen == [model[0].weight, model[2].weight]
    want = real(torch.nn.functional.silu(real(x, model[0].weight, model[0].bias)), model[2].weight)
    assert torch.equal(got, want)
    assert held == [packed_module.cpu_mode(torch.bfloat16) is not None] * 2
    assert torch.equal(after, plain) and len(seen) == 2                # restored: the modules' own F.linear
    assert not any("forward" in m.__dict__ for m in model) and not is_packed(model[0].weight)
    torch.testing.assert_close(got.float(), plain.float(), rtol=2e-2, atol=2e-2)   # the same product, rounded apart


@NEEDS_KERNEL
def test_fused_layers_compute_each_token_alone(monkeypatch):
    """In the "widen" form each decoder layer is one C++ call (fused_layer.py) that computes a token's
    row alone, in a fixed order: its hidden state is bitwise the same in a one-token step and inside a
    verification tree (a masked sibling before it in the tree), so speculative decoding emits vanilla's
    tokens even with a random, near-uniform head (ties everywhere); and it stays within bf16 rounding
    of the PyTorch ops."""
    monkeypatch.setattr(packed_module, "can_pack", lambda dtype: False)
    p = task_prompts("caption", 1, seed=2)[0]
    target = bf16_target("llava_next", monkeypatch, "auto")
    packs = target.packed_weights()
    assert packs.mode == "widen" and target.fused_layers(packs)
    inputs = target.prepare(p.prompt, p.images)
    cache, _ = prefill(target, inputs, inputs.length + 16)
    tree_cache = copy.deepcopy(cache)
    zero = torch.zeros(1, dtype=torch.long)
    steps = []
    for tok in (5, 9, 13):
        steps.append(target.forward(target.embed(torch.tensor([[tok]])), target.positions(cache.length, zero), cache)[0, 0])
        cache.commit(1)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)   # 5 -> 11, 5 -> 9 -> 13
    tree = target.forward(target.embed(torch.tensor([[5, 11, 9, 13]])),
                          target.positions(tree_cache.length, torch.tensor([0, 1, 1, 2])), tree_cache, mask)[0]
    for step, node in zip(steps, (0, 2, 3)):
        assert torch.equal(tree[node], step)

    torch_ops = bf16_target("llava_next", monkeypatch, "auto")
    monkeypatch.setattr(torch_ops, "fused_layers", lambda packed: False)
    c2, _ = prefill(torch_ops, inputs, inputs.length + 16)
    ref = torch_ops.forward(torch_ops.embed(torch.tensor([[5, 11, 9, 13]])),
                            torch_ops.positions(c2.length, torch.tensor([0, 1, 1, 2])), c2, mask)[0]
    assert torch.allclose(ref.float(), tree.float(), rtol=0.05, atol=0.05 * ref.float().abs().max().item())

    draft = load_draft("random:eagle2", target=target, seed=1, draft_vocab=list(range(0, 600, 3)))
    with torch.inference_mode():
        vanilla = decode_vanilla(target, inputs, 32)[0]
        for total, depth, k in ((8, 3, 2), (4, 2, 2), (12, 4, 3)):
            assert decode_speculative(target, draft, inputs, 32, total_tokens=total, depth=depth, top_k=k)[0] == vanilla


@NEEDS_KERNEL
@pytest.mark.parametrize("kind", ["vispec", "eagle2"])
def test_fused_draft_layer_on_an_fp32_cache_is_the_layer_within_bf16_rounding(kind, monkeypatch):
    """In the "widen" form a draft's decoder layer runs as fused_layer.py's call on an fp32 cache: its
    log-probs (the root's and three children's) within bf16 rounding of PyTorch's ops on a bf16 cache,
    packed again once a weight changes."""
    from vispec_core.drafts.layer import DraftDecoderLayer

    monkeypatch.setattr(packed_module, "can_pack", lambda dtype: False)
    p = task_prompts("caption", 1, seed=3)[0]
    target = bf16_target("llava_next", monkeypatch, "auto")
    with torch.no_grad():       # a random head is near-uniform: sharpened, the log-probs tell layers apart
        target.lm_head.weight.mul_(30.0)
    draft = load_draft(f"random:{kind}", target=target, seed=1, draft_vocab=list(range(0, 600, 3)))
    inputs = target.prepare(p.prompt, p.images)
    assert draft.layer.new_cache(4, torch.bfloat16, "cpu").storage.dtype == torch.float32
    with torch.inference_mode():
        fused = draft_log_probs(target, draft, inputs)
    assert "_fused_packs" in draft.layer.__dict__
    monkeypatch.setattr(DraftDecoderLayer, "fused", lambda self, dtype, device: False)
    assert draft.layer.new_cache(4, torch.bfloat16, "cpu").storage.dtype == torch.bfloat16
    with torch.inference_mode():
        ops = draft_log_probs(target, draft, inputs)
    for a, b in zip(fused, ops):
        assert a.shape == b.shape and torch.isfinite(a).any() and torch.equal(torch.isfinite(a), torch.isfinite(b))
        a, b = a[torch.isfinite(a)], b[torch.isfinite(b)]
        assert (a - b).abs().max() < (a.max() - a.min()) / 100
    monkeypatch.undo()
    monkeypatch.setattr(packed_module, "can_pack", lambda dtype: False)
    monkeypatch.setenv("VISPEC_PREPACK", "auto")
    with torch.no_grad():
        draft.layer.mlp.down_proj.weight.mul_(3.0)
    with torch.inference_mode():
        again = draft_log_probs(target, draft, inputs)
    assert not torch.equal(again[1], fused[1])
