#include <cmath>
#include <limits>

static inline float rbf(float f) { return static_cast<float>(c10::BFloat16(f)); }   // round to bf16 (RNE)

// out[i] = w * bf16(x[i] / sqrt(mean(x[i]^2) + eps)), rounded: HF's RMSNorm on bf16 rows.
static void rms_rows(const float* x, const at::BFloat16* w, float eps, float* out, int64_t n, int64_t D) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * D;
    float ss = 0.f;
    for (int64_t d = 0; d < D; ++d) ss += xi[d] * xi[d];
    const float r = 1.f / std::sqrt(ss / static_cast<float>(D) + eps);
    for (int64_t d = 0; d < D; ++d) out[i * D + d] = rbf(static_cast<float>(w[d]) * rbf(xi[d] * r));
  }
}

static inline float dot(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), acc);
  alignas(32) float t[8];
  _mm256_store_ps(t, acc);
  float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

// The scores of 8 consecutive keys (hd % 8 == 0): each lane summed exactly as `dot` sums, so a key's
// score is the same computed here or alone.
static inline __m256 dot8(const float* q, const float* k, int64_t hd) {
  __m256 a[8];
  for (int r = 0; r < 8; ++r) a[r] = _mm256_setzero_ps();
  for (int64_t d = 0; d < hd; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
    for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + r * hd + d), a[r]);
  }
  const __m256 u = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 v = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u, v, 0x20), _mm256_permute2f128_ps(u, v, 0x31));
}

// exp of 8 lanes (Cephes' polynomial, as avx_mathfun; within a few ulp of expf): a function of each
// lane's value alone, whichever lane or call computes it.
static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-88.3762626647949f));
  const __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// y = x . W^T (+ b), each value rounded to bf16 (kept as float): few_rows' kernel, fp32 out.
static void lin(const float* x, const torch::Tensor& wp, int64_t N, const c10::optional<torch::Tensor>& b,
                float* y, int64_t M, int64_t K) {
  torch::Tensor bf;
  if (b.has_value()) bf = b->to(at::kFloat).contiguous();
  run<float>(x, (const uint16_t*)wp.data_ptr<int16_t>(), b.has_value() ? bf.data_ptr<float>() : nullptr, y, M, K, N,
             wp.size(0));
  for (int64_t i = 0; i < M * N; ++i) y[i] = rbf(y[i]);
}

// One decoder layer over n new tokens after `start` cached positions; writes their keys and values
// into the layer's fp32 cache and returns the new residual stream [n, D] in bf16. mask [n, start + n]:
// the keys each new token sees (none: all before it). ln1 none: no input norm (EAGLE's draft layer).
torch::Tensor decoder_layer(torch::Tensor x, c10::optional<torch::Tensor> ln1, torch::Tensor ln2, double eps,
                            torch::Tensor qkv_p, c10::optional<torch::Tensor> qkv_b,
                            torch::Tensor o_p, c10::optional<torch::Tensor> o_b,
                            torch::Tensor gu_p, int64_t I, c10::optional<torch::Tensor> gu_b,
                            torch::Tensor down_p, c10::optional<torch::Tensor> down_b,
                            torch::Tensor cos, torch::Tensor sin, torch::Tensor keys, torch::Tensor values,
                            int64_t start, c10::optional<torch::Tensor> mask, double scale,
                            int64_t H, int64_t KV, int64_t hd) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.is_contiguous(), "x: [n, D] bf16");
  const int64_t n = x.size(0), D = x.size(1), QKV = (H + 2 * KV) * hd, L = start + n, cap = keys.size(1);
  TORCH_CHECK(keys.scalar_type() == at::kFloat && keys.is_contiguous() && values.is_contiguous()
              && keys.sizes() == values.sizes() && keys.size(0) == KV && keys.size(2) == hd && L <= cap,
              "keys, values: [KV, capacity, hd] fp32 with room for the new tokens");
  TORCH_CHECK(cos.scalar_type() == at::kBFloat16 && cos.sizes() == sin.sizes() && cos.size(0) == n
              && cos.size(1) == hd && cos.is_contiguous() && sin.is_contiguous(), "cos, sin: [n, hd] bf16");
  TORCH_CHECK(qkv_p.size(1) == D && o_p.size(1) == H * hd && gu_p.size(1) == D && down_p.size(1) == I
              && H % KV == 0 && hd % 2 == 0 && hd <= 512, "weights of other shapes than this layer's");
  const uint8_t* M = nullptr;
  torch::Tensor mc;
  if (mask.has_value()) {
    mc = mask->to(at::kBool).contiguous();
    TORCH_CHECK(mc.dim() == 2 && mc.size(0) == n && mc.size(1) == L, "mask: [n, start + n] bool");
    M = (const uint8_t*)mc.data_ptr<bool>();
  }
  const at::BFloat16* X0 = x.data_ptr<at::BFloat16>();
  std::vector<float> xs(n * D), h(n * D), qkv(n * QKV), att(n * H * hd), o(n * D), gu(n * 2 * I), act(n * I);
  for (int64_t i = 0; i < n * D; ++i) xs[i] = static_cast<float>(X0[i]);

  if (ln1.has_value()) rms_rows(xs.data(), ln1->data_ptr<at::BFloat16>(), (float)eps, h.data(), n, D);
  else h = xs;                                          // a draft's layer: its input is already fc(e, f)
  lin(h.data(), qkv_p, QKV, qkv_b, qkv.data(), n, D);

  // rotary, rounded as q * cos + rotate_half(q) * sin is in bf16: three roundings
  const at::BFloat16* C = cos.data_ptr<at::BFloat16>();
  const at::BFloat16* S = sin.data_ptr<at::BFloat16>();
  const int64_t half = hd / 2;
  float* K = keys.data_ptr<float>();
  float* V = values.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    float* row = qkv.data() + i * QKV;
    for (int64_t hh = 0; hh < H + KV; ++hh) {          // the query heads, then the key heads
      float* v = row + hh * hd;
      float r[512];
      for (int64_t d = 0; d < hd; ++d) {
        const float rot = d < half ? -v[d + half] : v[d - half];
        const float c = static_cast<float>(C[i * hd + d]), s = static_cast<float>(S[i * hd + d]);
        r[d] = rbf(rbf(v[d] * c) + rbf(rot * s));
      }
      std::copy(r, r + hd, v);
    }
    for (int64_t kh = 0; kh < KV; ++kh) {
      std::copy(row + (H + kh) * hd, row + (H + kh + 1) * hd, K + (kh * cap + start + i) * hd);
      std::copy(row + (H + KV + kh) * hd, row + (H + KV + kh + 1) * hd, V + (kh * cap + start + i) * hd);
    }
  }

  // attention: one (head, query) at a time, keys in cache order, masked keys exact zeros; scores 8 keys
  // at a time (the tail alone, summed alike), exp 8 lanes at a time (the tail padded), the softmax's sum
  // and the weighted sum of values key after key
  const int64_t group = H / KV, L8 = (L + 7) / 8 * 8;
  const float NEG = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, H * n, 1, [&](int64_t a, int64_t b) {
    std::vector<float> p(L8);
    alignas(32) float acc[512];
    for (int64_t t = a; t < b; ++t) {
      const int64_t hq = t / n, i = t % n, kh = hq / group;
      const float* q = qkv.data() + i * QKV + hq * hd;
      const float* Kh = K + kh * cap * hd;
      const float* Vh = V + kh * cap * hd;
      int64_t j = 0;
      if (hd % 8 == 0)
        for (; j + 8 <= L; j += 8)
          _mm256_storeu_ps(p.data() + j, _mm256_mul_ps(dot8(q, Kh + j * hd, hd), _mm256_set1_ps((float)scale)));
      for (; j < L; ++j) p[j] = dot(q, Kh + j * hd, hd) * (float)scale;
      float m = NEG;
      for (j = 0; j < L; ++j) {
        if (!(M ? M[i * L + j] != 0 : j <= start + i)) p[j] = NEG;
        m = std::max(m, p[j]);
      }
      std::fill(p.begin() + L, p.end(), NEG);
      const __m256 mv = _mm256_set1_ps(m), neg = _mm256_set1_ps(NEG);
      for (j = 0; j < L8; j += 8) {
        const __m256 s = _mm256_loadu_ps(p.data() + j);
        _mm256_storeu_ps(p.data() + j, _mm256_andnot_ps(_mm256_cmp_ps(s, neg, _CMP_EQ_OQ), exp8(_mm256_sub_ps(s, mv))));
      }
      float sum = 0.f;
      for (j = 0; j < L; ++j) sum += p[j];
      const __m256 sv = _mm256_set1_ps(sum);        // the weights p / sum, 8 at a time (IEEE division either way)
      for (j = 0; j < L8; j += 8) _mm256_storeu_ps(p.data() + j, _mm256_div_ps(_mm256_loadu_ps(p.data() + j), sv));
      float* out = att.data() + i * H * hd + hq * hd;
      if (hd == 64) {                               // the sums in registers: the same FMAs in the same order
        __m256 r[8];
        for (int c = 0; c < 8; ++c) r[c] = _mm256_setzero_ps();
        for (j = 0; j < L; ++j) {
          if (p[j] == 0.f) continue;
          const __m256 w = _mm256_set1_ps(p[j]);
          const float* vj = Vh + j * hd;
#pragma GCC unroll 8
          for (int c = 0; c < 8; ++c) r[c] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vj + 8 * c), r[c]);
        }
        for (int c = 0; c < 8; ++c) _mm256_store_ps(acc + 8 * c, r[c]);
      } else {
        std::fill(acc, acc + hd, 0.f);
        for (j = 0; j < L; ++j) {
          if (p[j] == 0.f) continue;
          const float w = p[j];
          const float* vj = Vh + j * hd;
          int64_t d = 0;
          for (; d + 8 <= hd; d += 8)
            _mm256_store_ps(acc + d, _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(vj + d), _mm256_load_ps(acc + d)));
          for (; d < hd; ++d) acc[d] = std::fma(w, vj[d], acc[d]);
        }
      }
      for (int64_t d = 0; d < hd; ++d) out[d] = rbf(acc[d]);
    }
  });

  lin(att.data(), o_p, D, o_b, o.data(), n, H * hd);
  for (int64_t i = 0; i < n * D; ++i) xs[i] = rbf(xs[i] + o[i]);
  rms_rows(xs.data(), ln2.data_ptr<at::BFloat16>(), (float)eps, h.data(), n, D);
  lin(h.data(), gu_p, 2 * I, gu_b, gu.data(), n, D);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < I; ++c) {
      const float g = gu[i * 2 * I + c];
      act[i * I + c] = rbf(rbf(g / (1.f + std::exp(-g))) * gu[i * 2 * I + I + c]);    // silu(gate) * up
    }
  lin(act.data(), down_p, D, down_b, o.data(), n, I);
  auto y = torch::empty({n, D}, x.options());
  at::BFloat16* Y = y.data_ptr<at::BFloat16>();
  for (int64_t i = 0; i < n * D; ++i) Y[i] = c10::BFloat16(xs[i] + o[i]);
  return y;
}

// The final RMSNorm over bf16 rows [n, D], the same loop as the layers'.
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor w, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 2 && w.scalar_type() == at::kBFloat16
              && w.numel() == x.size(1), "x: [n, D] bf16, w: [D] bf16");
  const auto xc = x.contiguous();
  const int64_t n = x.size(0), D = x.size(1);
  std::vector<float> xs(n * D), out(n * D);
  const at::BFloat16* X0 = xc.data_ptr<at::BFloat16>();
  for (int64_t i = 0; i < n * D; ++i) xs[i] = static_cast<float>(X0[i]);
  rms_rows(xs.data(), w.contiguous().data_ptr<at::BFloat16>(), (float)eps, out.data(), n, D);
  auto y = torch::empty({n, D}, x.options());
  at::BFloat16* Y = y.data_ptr<at::BFloat16>();
  for (int64_t i = 0; i < n * D; ++i) Y[i] = c10::BFloat16(out[i]);
  return y;
}
