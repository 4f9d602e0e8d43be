"""A Llama-family decoder layer in one C++ call, for packed.py's "widen" form (an AVX2 CPU, bf16).

On that CPU a one-token step of the default target spent as long in PyTorch's small ops and the Python
that calls them (RMSNorm's seven ops, rotary's ten, attention's casts, bmm, mask and softmax, the
cache writes, SwiGLU, the residual adds: ~45 ops a layer) as in its linears, and that part grew
with the tokens of a verification as well. Here a layer is one call: the norms, rotary, attention over
the fp32 KV cache, SwiGLU and the residuals in plain loops, the products in few_rows.py's kernel.

It rounds where the PyTorch code rounds (every bf16 op's result, as PyTorch's bf16 ops do: computed in
fp32, rounded to nearest even), and computes each token's row alone, in one fixed order:
- RMSNorm's sum of squares, each attention score's dot product, the softmax and the weighted sum of
  values run over the same elements in the same order whatever the other rows are;
- a query's masked keys contribute exact zeros, so a tree node attending to its ancestors among other
  nodes sums the same terms in the same order as the token did in a one-token step.
So a token's hidden state is bitwise the same in a one-token step and inside any verification tree,
and speculative decoding emits bitwise vanilla's tokens at T=0 in bf16 (tests), which PyTorch's bmm
and reductions, whose order follows the shape, did not promise. Against the PyTorch path the results
differ by fp32 rounding in the norm's and the attention's sums and in exp: one layer on random inputs
was bitwise equal for 11 of 12 draws; on the twelfth one attention value rounded to the other bf16
neighbour, and that spread to 242 of the layer's 1,728 outputs (one ulp each).

Measured (default target, 2 threads, AVX2 Zen 3, `verify_cost_curve` after a VQA prompt): a
target forward over 1 / 4 / 8 tokens 41-53 / 50-64 / 67-83 ms with PyTorch's ops, 21-24 / 26-27 / 39-43
ms fused (with few_rows.py's prefetch); a draft's layer call 2.35 -> 1.27 ms.

Prefills longer than base.SMALL_N tokens keep PyTorch's fused attention (the few-query loops here
are for decode steps and draft trees). Built once per machine like few_rows.py (`load_inline`, in
$VISPEC_CACHE/kernels); VISPEC_FUSED_LAYER=0 turns it off.
"""
from __future__ import annotations

import functools
import os

import torch

from . import few_rows
from .packed import _bias, _pack


@functools.cache
def _module():
    """The built extension, or None (with one warning saying why) where it cannot be had."""
    if os.environ.get("VISPEC_FUSED_LAYER", "1") == "0" or not few_rows.available():
        return None
    return few_rows.build("fused_layer", ("few_rows.cpp", "fused_layer.cpp"), ["decoder_layer", "rms_norm"],
                          "fused decoder layer", "the layers run as PyTorch ops.")


def available() -> bool:
    """Whether the extension is built (building it on first call) and usable on this CPU."""
    return _module() is not None


def layer_fits(attn, mlp, norms) -> bool:
    """Whether a layer is the Llama / Qwen2 kind this code computes: RMSNorm, SiLU-gated MLP, GQA, no
    sliding window, no q/k norms."""
    return (all(hasattr(m, "variance_epsilon") and m.weight.dim() == 1 for m in norms)
            and type(mlp.act_fn).__name__ in ("SiLU", "SiLUActivation")       # torch's or transformers'
            and not getattr(attn, "sliding_window", None) and not hasattr(attn, "q_norm"))


def fits(language_model) -> bool:
    """Whether every layer of a target's language model fits (`layer_fits`)."""
    return all(layer_fits(layer.self_attn, layer.mlp, (layer.input_layernorm, layer.post_attention_layernorm))
               for layer in language_model.layers)


def decoder_layer(x, layer, packed, i, cos, sin, keys, values, start, mask, scale, heads, kv_heads, head_dim):
    """Layer i over x [n, D] bf16; writes the new keys / values at start.. of the fp32 cache views."""
    p = packed.layers[i]
    return _module().decoder_layer(
        x, layer.input_layernorm.weight, layer.post_attention_layernorm.weight, layer.input_layernorm.variance_epsilon,
        p["qkv"][0], p["qkv_bias"], p["o"][0], p["o_bias"], p["gate_up"][0], p["gate_up"][1] // 2, p["gate_up_bias"],
        p["down"][0], p["down_bias"], cos, sin, keys, values, start, mask, scale, heads, kv_heads, head_dim)


def forward(target, packed, embeds, cos, sin, cache, start: int, mask) -> torch.Tensor:
    """Target.forward over a few new tokens with every layer as one C++ call, then the final norm:
    embeds [1, n, D] bf16, cos / sin [1, 1, n, hd], the fp32 cache; returns f [1, n, D]."""
    x, c, s = embeds[0].contiguous(), cos[0, 0].contiguous(), sin[0, 0].contiguous()
    for i, layer in enumerate(target.language_model.layers):
        keys, values = cache.kv[i]
        x = decoder_layer(x, layer, packed, i, c, s, keys, values, start, mask, layer.self_attn.scaling,
                          target.num_heads, target.num_kv_heads, target.head_dim)
    return rms_norm(x, target.language_model.norm)[None]


def draft_layer(layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache, mask) -> torch.Tensor:
    """A draft's decoder layer (drafts/layer.py: no input norm, its own q/k/v and gate/up weights, packed
    here once and again when they change) over x [n, D] bf16 on its fp32 cache."""
    attn, mlp = layer.self_attn, layer.mlp
    qkv, gate_up = (attn.q_proj, attn.k_proj, attn.v_proj), (mlp.gate_proj, mlp.up_proj)
    weights = [m.weight for m in (*qkv, attn.o_proj, *gate_up, mlp.down_proj)]
    signature = tuple((w.data_ptr(), w._version) for w in weights)
    held = layer.__dict__.get("_fused_packs")
    if held is None or held[0] != signature:
        held = layer.__dict__["_fused_packs"] = (signature, dict(
            qkv=_pack("widen", *weights[:3])[0], qkv_bias=_bias(*qkv), o=_pack("widen", weights[3])[0],
            o_bias=attn.o_proj.bias, gate_up=_pack("widen", *weights[4:6])[0], gate_up_bias=_bias(*gate_up),
            down=_pack("widen", weights[6])[0], down_bias=mlp.down_proj.bias))
    p = held[1]
    keys, values = cache.kv[0]
    norm = layer.post_attention_layernorm
    return _module().decoder_layer(
        x, None, norm.weight, norm.variance_epsilon, p["qkv"], p["qkv_bias"], p["o"], p["o_bias"], p["gate_up"],
        mlp.down_proj.weight.shape[1], p["gate_up_bias"], p["down"], p["down_bias"], cos, sin, keys, values,
        cache.length, mask, attn.scaling, layer.num_heads, layer.num_kv_heads, layer.head_dim)


def rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    return _module().rms_norm(x, norm.weight, norm.variance_epsilon)
