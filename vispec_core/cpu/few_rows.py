"""A bf16 weight times a few fp32 rows, for a CPU with AVX2 but no bf16 arithmetic (packed.py's "widen" form).

There PyTorch multiplies a bf16 weight by n > 1 rows in a generic kernel whose cost grows about
linearly with n, and the alternative, an fp32 copy of the weight, reads twice the bytes. This kernel
reads the bf16 weight once, widens it in registers (a bf16 is the top half of an fp32) and multiplies
it by up to 6 rows at a time: a 6 x 16 register tile, BLIS's shape for AVX2. The weight is repacked
once (`pack`) into blocks of 16 output columns, k-major, so each step loads 16 weights of one input
column and the widening is two unpacks; the rows are broadcast from the fp32 input. A lone row (a
decode step, the row left after 6-row tiles) spans 4 blocks at once, so its FMAs do not wait on each
other. Products are exact in fp32 and summed in fp32 in input order, as the fp32 copy's product is
(in another order).

The kernel is C++ built once per machine with torch's `load_inline` (needs `ninja`, a dependency, and
a C++ compiler) into $VISPEC_CACHE/kernels; `available()` is False where it cannot be built or the CPU
lacks AVX2 / FMA, and packed.py then keeps the fp32 copy. VISPEC_FEW_ROWS_KERNEL=0 turns it off.
"""
from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import torch

BLOCK = 16                                     # output columns per packed block (two AVX2 registers)
# Word order in a block so that unpacklo / unpackhi (which work per 128-bit lane) widen columns 0-7 / 8-15.
_ORDER = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15])

KERNELS = Path(__file__).parent / "kernels"        # the C++ sources, read at build time


def _cpu_ok() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def build(name: str, sources: tuple[str, ...], functions: list[str], what: str, instead: str):
    """Build kernels/<sources> once per machine into $VISPEC_CACHE/kernels/<name> (torch's `load_inline`
    on the files' text); None, with one warning saying why and what runs `instead`, where it fails."""
    from ..assets import cache_dir
    build_dir = cache_dir("kernels", name)
    if not any(build_dir.glob("*.so")):
        print(f"vispec: building the {what} (once per machine, about a minute)", file=sys.stderr, flush=True)
    try:
        from torch.utils.cpp_extension import load_inline
        return load_inline(f"vispec_{name}", cpp_sources=[(KERNELS / s).read_text() for s in sources],
                           functions=functions, extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
                           extra_ldflags=["-fopenmp"], build_directory=str(build_dir), verbose=False)
    except Exception as e:                      # no compiler, no ninja, a failed build
        warnings.warn(f"vispec: the {what} could not be built ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); {instead}", stacklevel=4)
        return None


@functools.cache
def _module():
    """The built kernel, or None (with one warning saying why) where it cannot be had."""
    if os.environ.get("VISPEC_FEW_ROWS_KERNEL", "1") == "0" or not _cpu_ok():
        return None
    return build("few_rows", ("few_rows.cpp",), ["few_rows_linear"], "few-rows AVX2 kernel",
                 "bf16 products over a few rows use an fp32 weight copy instead (slower, twice the memory). "
                 "Install a C++ compiler (e.g. apt install g++) and `pip install ninja` to have it.")


def available() -> bool:
    """Whether the kernel is built (building it on first call) and usable on this CPU."""
    return _module() is not None


def pack(weight: torch.Tensor) -> torch.Tensor:
    """A bf16 weight [N, K] in the kernel's layout: [ceil(N / 16), K, 16] int16, 16 output columns per block."""
    if weight.dtype != torch.bfloat16 or weight.dim() != 2:
        raise ValueError(f"few_rows.pack takes a 2-D bf16 weight, got {weight.dtype} of shape {tuple(weight.shape)}")
    n, k = weight.shape
    nb = -(-n // BLOCK)
    w = weight.detach().contiguous().view(torch.int16)
    if nb * BLOCK != n:
        w = torch.cat([w, w.new_zeros(nb * BLOCK - n, k)])
    return w.view(nb, BLOCK, k)[:, _ORDER].transpose(1, 2).contiguous()


def linear(x: torch.Tensor, packed: torch.Tensor, n: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] (fp32 or bf16) times the packed weight of n output columns, plus bias: [..., n] in
    x's dtype, summed in fp32 and rounded once (bf16: to nearest even, as `.bfloat16()` rounds)."""
    return _module().few_rows_linear(x, packed, n, bias)
