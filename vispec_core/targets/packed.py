"""Prepacked linear weights for decoding on a CPU in bf16 / fp16.

oneDNN multiplies in its own blocked weight layout. Handed a plain weight, `F.linear` reorders it on
every call, and for the few rows of a decode step or a draft tree that copy costs more than the
product (default target, one core: a vanilla step 53 -> 35 ms, a 30-token verification 102 -> 78 ms,
`scripts/profile_vanilla.py`). Packing every weight once gives bitwise the same outputs (tests),
for a second copy of the language model's linear weights in memory; q/k/v and gate/up are packed
fused, since the copy is made anyway.

VISPEC_PREPACK=0 turns it off, =1 packs whatever the size; by default a target packs on a CPU in
bf16 / fp16 when its linear weights fit in PACK_LIMIT_BYTES. oneDNN packs bf16 / fp16 only on CPUs
with the instructions for them (AVX-512 or AVX-NE-CONVERT); elsewhere (an AVX2-only CPU) nothing is
packed and `F.linear` runs as usual.
"""
from __future__ import annotations

import functools
import os
import weakref

import torch
import torch.nn.functional as F

PACK_LIMIT_BYTES = 4 * 2**30


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def _pack(*weights: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(torch.cat(weights) if len(weights) > 1 else weights[0])


@functools.cache
def can_pack(dtype: torch.dtype) -> bool:
    """Whether oneDNN on this CPU packs weights of this dtype (it raises on one that lacks the instructions)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        _pack(torch.zeros(8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


def _bias(*linears) -> torch.Tensor | None:
    biases = [m.bias for m in linears]
    if all(b is None for b in biases):
        return None
    return torch.cat([b if b is not None else m.weight.new_zeros(m.weight.shape[0]) for b, m in zip(biases, linears)])


def packing_wanted(language_model, lm_head) -> bool:
    weight = lm_head.weight
    mode = os.environ.get("VISPEC_PREPACK", "auto")
    if mode == "0" or weight.device.type != "cpu" or not can_pack(weight.dtype):
        return False
    if mode == "1":
        return True
    if weight.dtype not in (torch.bfloat16, torch.float16):
        return False
    size = sum(p.numel() * p.element_size() for p in language_model.layers.parameters()) + weight.numel() * weight.element_size()
    return size <= PACK_LIMIT_BYTES


class PackedWeights:
    """The language model's linear weights (and LM head) in oneDNN's layout, per decoder layer."""

    def __init__(self, language_model, lm_head):
        self.layers, self.sources = [], [lm_head.weight]
        for layer in language_model.layers:
            a, m = layer.self_attn, layer.mlp
            qkv, gate_up = (a.q_proj, a.k_proj, a.v_proj), (m.gate_proj, m.up_proj)
            self.layers.append(dict(
                qkv=_pack(*(x.weight for x in qkv)), qkv_bias=_bias(*qkv),
                split=[x.weight.shape[0] for x in qkv],
                o=_pack(a.o_proj.weight), o_bias=a.o_proj.bias,
                gate_up=_pack(*(x.weight for x in gate_up)), gate_up_bias=_bias(*gate_up),
                down=_pack(m.down_proj.weight), down_bias=m.down_proj.bias, act=m.act_fn))
            self.sources += [x.weight for x in (*qkv, a.o_proj, *gate_up, m.down_proj)]
        self.head, self.head_bias = _pack(lm_head.weight), lm_head.bias
        self.signature = self._signature()

    def _signature(self) -> tuple:
        return tuple((w.data_ptr(), w._version) for w in self.sources)

    def current(self) -> bool:
        """False once any source weight was replaced or changed in place (then pack again)."""
        return self._signature() == self.signature

    def qkv(self, i: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.layers[i]
        return _linear(h, p["qkv"], p["qkv_bias"]).split(p["split"], dim=-1)

    def o(self, i: int, x: torch.Tensor) -> torch.Tensor:
        p = self.layers[i]
        return _linear(x, p["o"], p["o_bias"])

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        p = self.layers[i]
        gate, up = _linear(x, p["gate_up"], p["gate_up_bias"]).chunk(2, dim=-1)
        return _linear(p["act"](gate) * up, p["down"], p["down_bias"])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return _linear(hidden, self.head, self.head_bias)


# weight id -> (weakref to the weight, its (data_ptr, version) when packed, the packed copy). Kept beside
# the weight, not on it: a packed oneDNN tensor has no storage, so a weight carrying one could not be
# pickled or saved with the module.
_DRAFT_PACKS: dict[int, tuple] = {}


def _forget(key: int, ref: weakref.ref) -> None:
    if _DRAFT_PACKS.get(key, (None,))[0] is ref:
        del _DRAFT_PACKS[key]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a draft's weights: when decoding on a CPU in bf16 / fp16 (no autograd), on a
    packed copy made once per weight and made again once the weight changes; bitwise the same."""
    if (weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float16) or x.dtype != weight.dtype
            or weight.is_inference() or (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
            or os.environ.get("VISPEC_PREPACK", "auto") == "0" or not can_pack(weight.dtype)):
        return F.linear(x, weight, bias)
    key, signature = id(weight), (weight.data_ptr(), weight._version)
    held = _DRAFT_PACKS.get(key)
    if held is None or held[0]() is not weight or held[1] != signature:
        ref = held[0] if held is not None and held[0]() is weight else weakref.ref(weight, lambda r, k=key: _forget(k, r))
        held = _DRAFT_PACKS[key] = (ref, signature, _pack(weight.detach()))
    return _linear(x, held[2], bias)


def is_packed(weight: torch.Tensor) -> bool:
    """Whether `linear` holds a current packed copy of this weight."""
    held = _DRAFT_PACKS.get(id(weight))
    return held is not None and held[0]() is weight and held[1] == (weight.data_ptr(), weight._version)
