"""Linear weights held, once, in the form this CPU multiplies fastest, for decoding in bf16 / fp16.

Three forms, chosen per dtype by what the CPU can do (`cpu_mode`):

- "onednn" (a CPU with AVX-512 or AVX-NE-CONVERT; for bf16 only when asked, VISPEC_CPU_FORM=onednn,
  since it is inexact: see `cpu_mode`): oneDNN multiplies in its own blocked weight layout.
  Handed a plain weight, `F.linear` reorders it on every call, and for the few rows of a decode step or
  a draft tree that copy costs more than the product (default target, one core: a vanilla step 53 ->
  35 ms, a 30-token verification 102 -> 78 ms, `scripts/profile_vanilla.py`). Packing every weight once
  gives bitwise the same outputs (tests).
- "upcast" (an AVX2-only CPU, which has no bf16 / fp16 arithmetic; fp16, or bf16 without the kernel
  below): a bf16 product over more than a few rows runs a slow generic kernel, so a verification
  costs about linearly in its tokens (default target, 2 cores: 30 tokens 12.6x one token). From UPCAST_MIN_ROWS rows on, the product runs in fp32
  on an fp32 copy of the weight and is rounded back to the input's dtype: the same bf16 values,
  products exact in fp32 and summed in fp32 as the bf16 kernels do, in another order; fewer rows keep
  the bf16 weight, whose half-size read is what a one-token step is bound by. Attention runs in fp32
  there whatever the rows (`Target.forward`): one query's bf16 batched matmuls cost ~2x the fp32 ones
  with the cast (default target, one layer: 330 vs 154 us; a decode step ~7% faster). The fp32 copy is itself
  packed by oneDNN where it can (any x86 CPU): MKL's fp32 product over a few rows is slow on AMD CPUs
  (the default target's linears, 2 cores, Zen 3: 2 / 8 / 30 rows 132 / 120 / 226 ms on MKL, 60 / 75 /
  134 ms packed).
- "widen" (bf16 on any CPU where few_rows.py's AVX2 kernel could be built: the default): every product, however
  many rows, runs in that kernel, which reads the bf16 weight once and widens it to fp32 in registers:
  products exact in fp32, summed in fp32 in input order, rounded to bf16. Each row's result is the
  same whatever the number of rows, so a one-token step and a verification of many tokens compute a
  token's linears bitwise alike. The default target's linears, 2 cores: 1 / 8 / 30 rows
  22 / 34 / 86 ms, against 31 / 143 / 513 on the bf16 weights and 55 / 74 / 108 on the packed fp32
  copy. Attention runs in fp32, as in "upcast"; in both the target's KV cache is fp32 (`Target.new_cache`).
  There the target's and the drafts' decoder layers run as fused_layer.py's one C++ call each.

Each form is a second copy of the language model's linear weights in memory ("upcast": fp32, twice
their size); q/k/v and gate/up are held fused, since the copy is made anyway. VISPEC_PREPACK=0 turns it
off, =1 holds whatever the size; by default a target does so on a CPU in bf16 / fp16 when the copy
fits in PACK_LIMIT_BYTES.
"""
from __future__ import annotations

import contextlib
import functools
import os
import weakref

import torch
import torch.nn.functional as F

from . import few_rows

PACK_LIMIT_BYTES = 4 * 2**30
UPCAST_MIN_ROWS = int(os.environ.get("VISPEC_UPCAST_MIN_ROWS", 3))


@functools.cache
def can_pack(dtype: torch.dtype) -> bool:
    """Whether oneDNN on this CPU packs weights of this dtype (it raises on one that lacks the instructions)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8, dtype=dtype))
    except RuntimeError:
        return False
    return True


def many_rows_dtype() -> torch.dtype:
    """bf16 where this CPU has bf16 arithmetic, else fp32: the dtype for work whose every product has
    many rows (training, batched evaluation), which bf16 without it runs several times slower."""
    return torch.bfloat16 if can_pack(torch.bfloat16) else torch.float32


FORMS = ("onednn", "widen", "upcast")
EXACT_FORMS = ("widen",)      # a row's result does not depend on the rows computed beside it


def cpu_mode(dtype: torch.dtype) -> str | None:
    """How a CPU weight of this dtype is held for decoding: "onednn", "widen", "upcast" or None (as it is).

    bf16 takes "widen" wherever its kernel builds (any AVX2 CPU, AVX-512 ones included): its rows are
    computed alike however many there are, so greedy speculative decoding returns vanilla's tokens
    bitwise. VISPEC_CPU_FORM names another form instead; "onednn" (AVX-512 with bf16 arithmetic) can be
    faster on some CPUs but is inexact: a verification of many tokens rounds near-ties differently
    from a one-token step (`EXACT_FORMS`)."""
    if dtype not in (torch.bfloat16, torch.float16) or os.environ.get("VISPEC_PREPACK", "auto") == "0":
        return None
    form = os.environ.get("VISPEC_CPU_FORM", "auto")
    if form != "auto":
        return _forced_form(form, dtype)
    if dtype == torch.bfloat16 and few_rows.available():
        return "widen"
    return "onednn" if can_pack(dtype) else "upcast"


def _forced_form(form: str, dtype: torch.dtype) -> str:
    if form not in FORMS:
        raise ValueError(f"VISPEC_CPU_FORM={form!r} is not a weight form; use auto or one of {', '.join(FORMS)}.")
    if form == "onednn" and not can_pack(dtype):
        raise ValueError(f"VISPEC_CPU_FORM=onednn: oneDNN on this CPU does not pack {dtype} weights "
                         "(it needs AVX-512 or AVX-NE-CONVERT); unset it or use widen / upcast.")
    if form == "widen" and not (dtype == torch.bfloat16 and few_rows.available()):
        raise ValueError(f"VISPEC_CPU_FORM=widen needs bf16 weights (here {dtype}) and the few-rows AVX2 kernel "
                         "(an AVX2 CPU and a C++ compiler; `make setup` builds it); unset it or use upcast.")
    return form


def rows(x: torch.Tensor) -> int:
    return x.numel() // x.shape[-1]


def upcast_wanted(mode: str | None, x: torch.Tensor) -> bool:
    """Whether this product (or attention) over x's rows runs in fp32."""
    return mode == "widen" or (mode == "upcast" and rows(x) >= UPCAST_MIN_ROWS)


def _pack(mode: str, *weights: torch.Tensor, keep_weight: bool = True) -> tuple:
    """keep_weight=False: the caller multiplies few rows on the weight itself (upcast: no reference kept)."""
    w = torch.cat(weights) if len(weights) > 1 else weights[0]
    if mode == "onednn":
        return (torch.ops.mkldnn._reorder_linear_weight(w),)
    if mode == "widen":
        return few_rows.pack(w), w.shape[0]
    w32 = w.float()                                            # the weight for a few rows, its fp32 copy for more
    return w.contiguous() if keep_weight else None, torch.ops.mkldnn._reorder_linear_weight(w32) if can_pack(torch.float32) else w32


def _linear(mode: str, x: torch.Tensor, packed: tuple[torch.Tensor, ...], b: torch.Tensor | None = None) -> torch.Tensor:
    if mode == "onednn":
        return torch.ops.mkldnn._linear_pointwise(x, packed[0], b, "none", [], "")
    if mode == "widen":
        return few_rows.linear(x, *packed, b)
    if not upcast_wanted(mode, x):
        return F.linear(x, packed[0], b)
    x32, b32 = x.float(), None if b is None else b.float()
    if packed[1].is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x32, packed[1], b32, "none", [], "").to(x.dtype)
    return F.linear(x32, packed[1], b32).to(x.dtype)


def _bias(*linears) -> torch.Tensor | None:
    biases = [m.bias for m in linears]
    if all(b is None for b in biases):
        return None
    return torch.cat([b if b is not None else m.weight.new_zeros(m.weight.shape[0]) for b, m in zip(biases, linears)])


def packing_mode(language_model, lm_head) -> str | None:
    """The form the target's linear weights are held in for decoding ("onednn", "widen", "upcast"), or None."""
    weight = lm_head.weight
    mode = cpu_mode(weight.dtype) if weight.device.type == "cpu" else None
    if mode is None or os.environ.get("VISPEC_PREPACK", "auto") == "1":
        return mode
    size = sum(p.numel() * p.element_size() for p in language_model.layers.parameters()) + weight.numel() * weight.element_size()
    return mode if size * (2 if mode == "upcast" else 1) <= PACK_LIMIT_BYTES else None


class PackedWeights:
    """The language model's linear weights (and LM head) held in `mode`'s form, per decoder layer."""

    def __init__(self, language_model, lm_head, mode: str = "onednn"):
        self.mode = mode
        self.rows_alike = mode in EXACT_FORMS                  # greedy trees give vanilla's tokens bitwise
        self.fp32_attention = mode in ("upcast", "widen")     # and an fp32 KV cache: see the forms above
        _pack_ = functools.partial(_pack, mode)
        self.layers, self.modules = [], [lm_head]
        for layer in language_model.layers:
            a, m = layer.self_attn, layer.mlp
            qkv, gate_up = (a.q_proj, a.k_proj, a.v_proj), (m.gate_proj, m.up_proj)
            self.layers.append(dict(
                qkv=_pack_(*(x.weight for x in qkv)), qkv_bias=_bias(*qkv),
                split=[x.weight.shape[0] for x in qkv],
                o=_pack_(a.o_proj.weight), o_bias=a.o_proj.bias,
                gate_up=_pack_(*(x.weight for x in gate_up)), gate_up_bias=_bias(*gate_up),
                down=_pack_(m.down_proj.weight), down_bias=m.down_proj.bias, act=m.act_fn))
            self.modules += [*qkv, a.o_proj, *gate_up, m.down_proj]
        self.head, self.head_bias = _pack_(lm_head.weight), lm_head.bias
        self.sources = [m.weight for m in self.modules]     # held, so no later weight can reuse their ids
        self.signature = self._signature()

    def _signature(self) -> tuple:
        weights = [m.weight for m in self.modules]          # read again: a replaced Parameter is seen
        return tuple((id(w), w.data_ptr(), w._version) for w in weights)

    def current(self) -> bool:
        """False once any source weight was replaced, moved or changed in place (then pack again)."""
        return self._signature() == self.signature

    def qkv(self, i: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.layers[i]
        return _linear(self.mode, h, p["qkv"], p["qkv_bias"]).split(p["split"], dim=-1)

    def o(self, i: int, x: torch.Tensor) -> torch.Tensor:
        p = self.layers[i]
        return _linear(self.mode, x, p["o"], p["o_bias"])

    def mlp(self, i: int, x: torch.Tensor) -> torch.Tensor:
        p = self.layers[i]
        gate, up = _linear(self.mode, x, p["gate_up"], p["gate_up_bias"]).chunk(2, dim=-1)
        return _linear(self.mode, p["act"](gate) * up, p["down"], p["down_bias"])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return _linear(self.mode, hidden, self.head, self.head_bias)


# weight id -> (weakref to the weight, its (data_ptr, version) when packed, the packed copy). Kept beside
# the weight, not on it: a packed oneDNN tensor has no storage, so a weight carrying one could not be
# pickled or saved with the module.
_DRAFT_PACKS: dict[int, tuple] = {}


def _forget(key: int, ref: weakref.ref) -> None:
    if _DRAFT_PACKS.get(key, (None,))[0] is ref:
        del _DRAFT_PACKS[key]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a draft's weights: when decoding on a CPU in bf16 / fp16 (no autograd), on a copy in
    `cpu_mode`'s form made once per weight and made again once the weight changes (oneDNN: bitwise
    the same; widen: every product; upcast: from UPCAST_MIN_ROWS rows on)."""
    mode = cpu_mode(weight.dtype) if weight.device.type == "cpu" else None
    if (mode is None or x.dtype != weight.dtype or weight.is_inference()
            or (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
            or (mode == "upcast" and not upcast_wanted(mode, x))):
        return F.linear(x, weight, bias)
    key, signature = id(weight), (weight.data_ptr(), weight._version, mode)
    held = _DRAFT_PACKS.get(key)
    if held is None or held[0]() is not weight or held[1] != signature:
        ref = held[0] if held is not None and held[0]() is weight else weakref.ref(weight, lambda r, k=key: _forget(k, r))
        held = _DRAFT_PACKS[key] = (ref, signature, _pack(mode, weight.detach(), keep_weight=False))
    return _linear(mode, x, held[2], bias)


def is_packed(weight: torch.Tensor) -> bool:
    """Whether `linear` holds a current packed copy of this weight."""
    held = _DRAFT_PACKS.get(id(weight))
    return held is not None and held[0]() is weight and held[1][:2] == (weight.data_ptr(), weight._version)


@contextlib.contextmanager
def packed_linears(module: torch.nn.Module):
    """While in the block, every nn.Linear under `module` multiplies through `linear` (a copy in
    `cpu_mode`'s form, dropped on exit): for transformers' own modules run batched, as data synthesis
    does, whose bf16 products over many rows an AVX2 CPU would run in PyTorch's slow generic kernel."""
    patched = [m for m in module.modules() if isinstance(m, torch.nn.Linear) and "forward" not in m.__dict__]
    for m in patched:
        m.forward = functools.partial(_module_linear, m)
    try:
        yield module
    finally:
        for m in patched:
            del m.forward
            _DRAFT_PACKS.pop(id(m.weight), None)


def _module_linear(m: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, m.weight, m.bias)
