"""Time the forms a bf16 linear can take on a CPU without bf16 arithmetic, over a few rows: PyTorch's
bf16 product, the oneDNN-packed fp32 copy (packed.py's "upcast" form) and the few-rows AVX2 kernel
(cpu/few_rows.py, the "widen" form).

    python scripts/profile_few_rows.py --threads 2

It times all the default target's linears (30 layers of fused q/k/v, o, fused gate/up, down, and the
LM head; random weights of the real shapes, 268 MB in bf16) for n rows each way, the forms taking
turns, and checks the kernel against a float64 product.

Measured (AMD EPYC Zen 3, AVX2, 2 threads; ms for all the linears of one forward, best of 4):
    rows               1       2       3       4       8      16      30      64     256
    bf16            30.8    39.7    53.2    74.6   142.6   274.5   513.1  1099.4  4350.8
    fp32 packed     55.3    56.6    64.2    66.7    74.4    96.5   107.9   198.3   589.7
    kernel          22.6    22.3    19.3    20.1    33.5    52.1    86.1   158.8   636.2
With the kernel prefetching its weight 4 KB ahead (same machine kind):
    rows               1       2       4       5       6       8      16      30
    kernel          20.2    20.6    17.1    19.2    19.2    21.1    42.8    65.8
and, interleaved in one process against builds without the prefetch (best of 5; 1 / 5 / 30 rows):
no prefetch 20.9 / 27.6 / 84.3 ms, prefetch 128 steps ahead 14.6 / 15.6 / 70.8 ms.
The kernel reads the bf16 weight (half the fp32 copy's bytes) and keeps a 6 x 16 tile of sums in
registers (kept on the stack in the inner loop, they ran 44 / 93 / 160 ms at 8 / 16 / 30 rows).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from vispec_core.cpu import few_rows

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]     # default target: qkv, o, gate_up, down


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", default="1,2,3,4,8,16,30,64,256")
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args()
    if not few_rows.available():
        print("the few-rows kernel is not available on this machine (see the warning)", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(3072, 576, generator=g).bfloat16(), torch.randn(5, 576, generator=g)
    err = (few_rows.linear(x, few_rows.pack(w), 3072).double() - x.double() @ w.double().T).abs().max().item()
    print(f"kernel vs float64 product: max abs difference {err:.2e}")
    layers = [[(torch.randn(s, generator=g) * 0.02).bfloat16() for s in SHAPES] for _ in range(30)]
    weights = [w for layer in layers for w in layer] + [(torch.randn(49152, 576, generator=g) * 0.02).bfloat16()]
    fp32 = [torch.ops.mkldnn._reorder_linear_weight(w.float()) for w in weights]
    widened = [few_rows.pack(w) for w in weights]
    forms = {
        "bf16": lambda x, i: F.linear(x, weights[i]),
        "fp32 packed": lambda x, i: torch.ops.mkldnn._linear_pointwise(x.float(), fp32[i], None, "none", [], "").bfloat16(),
        "kernel": lambda x, i: few_rows.linear(x, widened[i], weights[i].shape[0]).bfloat16(),
    }
    rows = [int(r) for r in args.rows.split(",")]
    best = {name: {} for name in forms}
    for n in rows:
        xs = {k: torch.randn(n, k, generator=g).bfloat16() for k in (576, 1536)}
        for _ in range(args.repeats):
            for name, f in forms.items():                       # the forms take turns: drift lands on all
                t = time.perf_counter()
                for i, w in enumerate(weights):
                    f(xs[w.shape[1]], i)
                ms = (time.perf_counter() - t) * 1000
                best[name][n] = min(best[name].get(n, ms), ms)
    print("rows        " + "".join(f"{n:>8}" for n in rows))
    for name in forms:
        print(f"{name:<12}" + "".join(f"{best[name][n]:8.1f}" for n in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
