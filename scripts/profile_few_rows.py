"""Probe: would a hand-written AVX2 kernel for "bf16 weight x a few fp32 rows" make verification cheaper
on a CPU without bf16 arithmetic? Not used by the package; a measurement for the next step of issue 7.

    pip install ninja      # plus a C++ compiler; the kernel is built with torch's load_inline
    python scripts/few_rows_kernel_probe.py --threads 2

On such a CPU (AVX2 only) PyTorch multiplies a bf16 weight by n > 1 rows in a generic kernel whose cost
grows about linearly with n, so `targets/packed.py` runs products over 3+ rows on a oneDNN-packed fp32
copy, which reads twice the bytes of the bf16 weight. This kernel reads the bf16 weight once, widens
it in registers and multiplies it by up to 4 rows at a time in fp32. The probe times the default
target's linears (30 layers of fused q/k/v, o, fused gate/up, down, and the LM head; random weights of
the real shapes, 268 MB in bf16) for n rows three ways: PyTorch's bf16 product, the packed fp32 copy,
and the kernel; and checks the kernel against an fp32 product.

Session 9 (AMD EPYC Zen 3, 2 threads; ms for all the linears of one forward; two runs of this script,
minutes apart, on a machine whose speed drifts by ~20%):
    rows               1       2       4       8      16      30
    bf16            25.9    41.0    74.6   143.5   296.6   738.3
    fp32 packed     56.8    59.2    65.7    81.7   114.1   157.7
    this kernel     43.4    46.6    73.3    91.9   153.6   239.7
    bf16            23.4    34.8    79.2   146.2   263.7   521.0
    fp32 packed     55.0    58.6    65.7    77.5    86.8   132.2
    this kernel     30.9    39.5    39.9    57.2   100.0   218.9
On one thread the kernel loses to the packed fp32 copy at 2-4 rows (71.7 / 86.2 / 103.1 ms at 1 / 2 / 4
rows vs 85.1 / 83.7 / 103.8). As written it is compute-bound (one bf16 widening per 8 weights shared by
at most 4 rows, two output rows per pass) and loses to oneDNN past ~8 rows; at 2-8 rows it saves up to
~40% of the linears' time, a verification of 4-8 tokens maybe 15-25%: worth tuning (more output rows
per pass, prefetching) before wiring it into `packed.py` behind a compiler check.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

SOURCE = r'''
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

static inline __m256 load_bf16(const uint16_t* p) {   // 8 bf16 -> 8 fp32: the bf16 bits are an fp32's top half
  __m128i h = _mm_loadu_si128((const __m128i*)p);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 sh = _mm_movehdup_ps(s); s = _mm_add_ps(s, sh);
  sh = _mm_movehl_ps(sh, s); s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}
// y[M,N] = x[M,K] (fp32, contiguous) . w[N,K]^T (bf16, contiguous); fp32 sums; K % 8 == 0, N % 2 == 0
torch::Tensor few_rows_linear(torch::Tensor x, torch::Tensor w) {
  TORCH_CHECK(x.size(1) % 8 == 0 && w.size(0) % 2 == 0 && x.size(1) == w.size(1), "shapes");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x.options());
  const float* X = x.data_ptr<float>();
  const uint16_t* W = (const uint16_t*)w.data_ptr<at::BFloat16>();
  float* Y = y.data_ptr<float>();
  at::parallel_for(0, N / 2, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t n = 2 * b0; n < 2 * b1; n += 2) {
      const uint16_t* w0 = W + n * K; const uint16_t* w1 = w0 + K;
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mc = std::min<int64_t>(4, M - m0);
        __m256 a0[4], a1[4];
        for (int i = 0; i < 4; ++i) { a0[i] = _mm256_setzero_ps(); a1[i] = _mm256_setzero_ps(); }
        for (int64_t k = 0; k < K; k += 8) {
          __m256 v0 = load_bf16(w0 + k), v1 = load_bf16(w1 + k);
          for (int i = 0; i < 4; ++i) if (i < mc) {
            __m256 xv = _mm256_loadu_ps(X + (m0 + i) * K + k);
            a0[i] = _mm256_fmadd_ps(v0, xv, a0[i]);
            a1[i] = _mm256_fmadd_ps(v1, xv, a1[i]);
          }
        }
        for (int i = 0; i < mc; ++i) { Y[(m0 + i) * N + n] = hsum(a0[i]); Y[(m0 + i) * N + n + 1] = hsum(a1[i]); }
      }
    }
  });
  return y;
}
'''

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]     # default target: qkv, o, gate_up, down


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", default="1,2,4,8,16,30")
    args = p.parse_args()
    from torch.utils.cpp_extension import load_inline
    kernel = load_inline("vispec_few_rows_probe", cpp_sources=[SOURCE], functions=["few_rows_linear"],
                         extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"], extra_ldflags=["-fopenmp"]).few_rows_linear
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3072, 576, generator=g).bfloat16()
    x = torch.randn(5, 576, generator=g)
    err = (kernel(x, w) - F.linear(x, w.float())).abs().max().item()
    print(f"kernel vs fp32 product: max abs difference {err:.2e}")
    layers = [[(torch.randn(s, generator=g) * 0.02).bfloat16() for s in SHAPES] for _ in range(30)]
    weights = [w for layer in layers for w in layer] + [(torch.randn(49152, 576, generator=g) * 0.02).bfloat16()]
    packed = [torch.ops.mkldnn._reorder_linear_weight(w.float()) for w in weights]
    forms = {
        "bf16": lambda x, i: F.linear(x, weights[i]),
        "fp32 packed": lambda x, i: torch.ops.mkldnn._linear_pointwise(x.float(), packed[i], None, "none", [], "").bfloat16(),
        "this kernel": lambda x, i: kernel(x.float(), weights[i]).bfloat16(),
    }
    rows = [int(r) for r in args.rows.split(",")]
    print("rows        " + "".join(f"{n:>8}" for n in rows))
    for name, f in forms.items():
        ms = []
        for n in rows:
            xs = {k: torch.randn(n, k, generator=g).bfloat16() for k in (576, 1536)}
            runs = []
            for _ in range(6):
                t = time.perf_counter()
                for i, w in enumerate(weights):
                    f(xs[w.shape[1]], i)
                runs.append(time.perf_counter() - t)
            ms.append(sorted(runs[1:])[2] * 1000)
        print(f"{name:<12}" + "".join(f"{m:8.1f}" for m in ms))


if __name__ == "__main__":
    main()
