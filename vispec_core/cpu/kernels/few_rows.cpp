#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <vector>
#ifndef PREFETCH
#define PREFETCH 128     // k steps ahead (4 KB): measured best of 32-256 (1 / 5 / 30 rows 14.6 / 15.6 / 70.8 ms)
#endif

// y[m:m+MR, block] = x[m:m+MR, :] . Wb (+ bias), rounded to T: Wb is one packed block [K][16] of bf16 words.
template <int MR, typename T>
static inline void tile(const float* X, int64_t K, const uint16_t* Wb, T* Y, int64_t N, int64_t ncols, const float* bias) {
  __m256 lo[MR], hi[MR];
  for (int i = 0; i < MR; ++i) { lo[i] = _mm256_setzero_ps(); hi[i] = _mm256_setzero_ps(); }
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t k = 0; k < K; ++k) {
    // The weight streams from memory once; asking for it ahead of use, every step, overlaps the stream
    // with the FMAs (all linears of the default target, 2 threads, no prefetch -> this: 1 row 20.9 ->
    // 14.6 ms, 5 rows 27.6 -> 15.6, 30 rows 84 -> 71). A prefetch past the end is harmless.
    _mm_prefetch((const char*)(Wb + (k + PREFETCH) * 16), _MM_HINT_T0);
    const __m256i v = _mm256_loadu_si256((const __m256i*)(Wb + k * 16));
    const __m256 wl = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
    const __m256 wh = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 xb = _mm256_broadcast_ss(X + i * K + k);
      lo[i] = _mm256_fmadd_ps(wl, xb, lo[i]);
      hi[i] = _mm256_fmadd_ps(wh, xb, hi[i]);
    }
  }
  alignas(32) float t[MR][16];            // through a local buffer: else GCC keeps the sums on the stack
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) { _mm256_store_ps(t[i], lo[i]); _mm256_store_ps(t[i] + 8, hi[i]); }
  for (int i = 0; i < MR; ++i)
    for (int64_t c = 0; c < ncols; ++c) Y[i * N + c] = static_cast<T>(bias ? t[i][c] + bias[c] : t[i][c]);
}

// The same over NBK consecutive blocks at once (only the last may have fewer than 16 columns,
// `last_cols`), for a lone row: its sums in one block are two dependent FMA chains, which wait on the
// FMA's latency; over 4 blocks they are 8 and the FMA units stay busy (all the default target's
// linears at one row, old / new in one process: 1.16x at 2 threads, 1.22x at 1; two rows over two
// blocks measured slower than tile<2>, 4 + 4 rows slower than 6 + 2). Each sum still runs over k in
// order, as tile's do, so a row's result never depends on the tile it is in.
template <int MR, int NBK, typename T>
static inline void wide_tile(const float* X, int64_t K, const uint16_t* Wb, T* Y, int64_t N, int64_t last_cols,
                             const float* bias) {
  __m256 lo[MR * NBK], hi[MR * NBK];
  for (int a = 0; a < MR * NBK; ++a) { lo[a] = _mm256_setzero_ps(); hi[a] = _mm256_setzero_ps(); }
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t k = 0; k < K; ++k) {
    __m256 xb[MR];
    for (int i = 0; i < MR; ++i) xb[i] = _mm256_broadcast_ss(X + i * K + k);
#pragma GCC unroll 4
    for (int j = 0; j < NBK; ++j) {
      const uint16_t* w = Wb + j * K * 16 + k * 16;
      _mm_prefetch((const char*)(w + PREFETCH * 16), _MM_HINT_T0);
      const __m256i v = _mm256_loadu_si256((const __m256i*)w);
      const __m256 wl = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
      const __m256 wh = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
      for (int i = 0; i < MR; ++i) {
        lo[i * NBK + j] = _mm256_fmadd_ps(wl, xb[i], lo[i * NBK + j]);
        hi[i * NBK + j] = _mm256_fmadd_ps(wh, xb[i], hi[i * NBK + j]);
      }
    }
  }
  alignas(32) float t[MR * NBK][16];
  for (int a = 0; a < MR * NBK; ++a) { _mm256_store_ps(t[a], lo[a]); _mm256_store_ps(t[a] + 8, hi[a]); }
  for (int j = 0; j < NBK; ++j) {
    const int64_t ncols = j == NBK - 1 ? last_cols : 16;
    const float* bj = bias ? bias + j * 16 : nullptr;
    for (int i = 0; i < MR; ++i)
      for (int64_t c = 0; c < ncols; ++c) Y[i * N + j * 16 + c] = static_cast<T>(bj ? t[i * NBK + j][c] + bj[c] : t[i * NBK + j][c]);
  }
}

// Rows m..m+MR-1 over blocks b..b1-1: NBK blocks per tile while they last, then one at a time.
template <int MR, int NBK, typename T>
static inline void tiles(const float* X, const uint16_t* W, const float* bias, T* Y, int64_t K, int64_t N,
                         int64_t b, int64_t b1) {
  auto cols = [&](int64_t last) { return std::min<int64_t>(16, N - last * 16); };
  for (; NBK > 1 && b + NBK <= b1; b += NBK)
    wide_tile<MR, NBK>(X, K, W + b * K * 16, Y + b * 16, N, cols(b + NBK - 1), bias ? bias + b * 16 : nullptr);
  for (; b < b1; ++b)
    tile<MR>(X, K, W + b * K * 16, Y + b * 16, N, cols(b), bias ? bias + b * 16 : nullptr);
}

template <typename T>
static void run(const float* X, const uint16_t* W, const float* bias, T* Y, int64_t M, int64_t K, int64_t N, int64_t NB) {
  at::parallel_for(0, NB, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t g0 = b0; g0 < b1; g0 += 4) {          // 4 blocks at a time: a lone row's tile spans them
      const int64_t g1 = std::min(b1, g0 + 4);
      for (int64_t m = 0; m < M; m += 6) {
        const float* Xm = X + m * K;
        T* Ym = Y + m * N;
        switch (std::min<int64_t>(6, M - m)) {
          case 6: tiles<6, 1>(Xm, W, bias, Ym, K, N, g0, g1); break;
          case 5: tiles<5, 1>(Xm, W, bias, Ym, K, N, g0, g1); break;
          case 4: tiles<4, 1>(Xm, W, bias, Ym, K, N, g0, g1); break;
          case 3: tiles<3, 1>(Xm, W, bias, Ym, K, N, g0, g1); break;
          case 2: tiles<2, 1>(Xm, W, bias, Ym, K, N, g0, g1); break;
          default: tiles<1, 4>(Xm, W, bias, Ym, K, N, g0, g1);
        }
      }
    }
  });
}

// x: [..., K] fp32 or bf16; wp: [ceil(N / 16), K, 16] int16 (pack's layout); bias: [N] or None.
// Returns [..., N] in x's dtype: sums in fp32, the bias added in fp32, then rounded (bf16: to nearest even).
torch::Tensor few_rows_linear(torch::Tensor x, torch::Tensor wp, int64_t N, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "x: fp32 or bf16");
  TORCH_CHECK(wp.dim() == 3 && wp.size(2) == 16 && x.dim() >= 1 && wp.size(1) == x.size(-1) && wp.is_contiguous()
              && wp.scalar_type() == at::kShort && wp.size(0) * 16 >= N && (wp.size(0) - 1) * 16 < N,
              "wp: a packed weight of N columns and x's K");
  const int64_t K = x.size(-1), NB = wp.size(0), M = x.numel() / K;
  const auto xc = x.contiguous();
  std::vector<float> widened;                  // bf16 rows widened here: no separate op, no dispatch
  const float* X;
  if (x.scalar_type() == at::kFloat) {
    X = xc.data_ptr<float>();
  } else {
    widened.resize(M * K);
    const at::BFloat16* s = xc.data_ptr<at::BFloat16>();
    for (int64_t i = 0; i < M * K; ++i) widened[i] = static_cast<float>(s[i]);
    X = widened.data();
  }
  auto shape = x.sizes().vec();
  shape.back() = N;
  auto y = torch::empty(shape, x.options());
  torch::Tensor b;
  if (bias.has_value()) {
    b = bias->to(at::kFloat).contiguous();
    TORCH_CHECK(b.numel() == N, "bias: N values");
  }
  const float* B = bias.has_value() ? b.data_ptr<float>() : nullptr;
  const uint16_t* W = (const uint16_t*)wp.data_ptr<int16_t>();
  if (x.scalar_type() == at::kFloat) run<float>(X, W, B, y.data_ptr<float>(), M, K, N, NB);
  else run<at::BFloat16>(X, W, B, y.data_ptr<at::BFloat16>(), M, K, N, NB);
  return y;
}
