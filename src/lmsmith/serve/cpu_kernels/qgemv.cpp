// CPU decode kernels for batch-1..16: quantized matrix-vector products on int16-quantized activations with
// fused prologues/epilogues, and one decode-attention op per layer.
//
// At batch 1 a linear layer is a weight stream: the kernel must read the 4-bit (or 8-bit) weight once and
// spend almost nothing per byte. The activation row is quantized to int16 per block (the weight's group for
// int4, 32 for int8; scale absmax / 32767, an error of ~1/65536 of the block's largest value, below bf16's
// rounding of the other elements even next to an outlier channel) and every product is an integer dot product
// of int16 pairs (AVX-512 VNNI vpdpwssd; AVX2 pmaddwd; portable C++ elsewhere). int8 activations (llama.cpp's
// Q8 trade) cost ~6% perplexity on SmolLM2, whose hidden states have outlier channels.
//
// Weight layout (built once by the Python loader): 16 output rows interleaved so each SIMD lane owns a row and
// no horizontal sums are needed; within a lane the nibbles/bytes are ordered so that one shift + mask yields a
// pair of int16 weights (w[k], w[k+1]) that meets the activation pair (x[k], x[k+1]).
//   int4: qpack [N/16, K/8, 64] u8; lane r of block kk holds q[r, 8kk + j] (0..15) as
//         byte0 = q0 | q2 << 4, byte1 = q4 | q6 << 4, byte2 = q1 | q3 << 4, byte3 = q5 | q7 << 4, so the
//         32-bit lane >> 0 / 4 / 8 / 12, masked with 0x000F000F, gives (q0, q1) / (q2, q3) / (q4, q5) / (q6, q7);
//         s, m [N/16, K/g, 16] fp16 with w = q * s + m.
//   int8: wpack [N/16, K/4, 64] s8 (stored as u8); lane r of block kk holds (w0, w2, w1, w3), so the low bytes of
//         the two 16-bit halves are (w0, w1) and the high bytes (w2, w3); scale [N/16*16] fp32.
// Prologue (optional, in this order): act=1 takes x = [gate | up] and uses silu(gate) * up; norm w: RMSNorm
// x * rsqrt(mean(x^2) + eps) * w. Epilogue: + bias, + residual. Output y[M, N] fp32.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define QG_AVX512 1
#include <immintrin.h>
#define QG_PREFETCH 1024  // bytes ahead of the weight stream (prefetches never fault past the end)
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define QG_AVX2 1
#include <immintrin.h>
#endif

namespace {

struct QuantAct {  // one activation row per m, int16 per block of `block`
  std::vector<int16_t> q;  // [M, K]
  std::vector<float> d;    // [M, K/block] scale
  std::vector<float> sum;  // [M, K/block] exact sum of x (the int4 offsets m meet it)
};

// The float input rows of the product: x itself, or silu(gate) * up, then RMSNorm; [M, K].
const float* prologue(const at::Tensor& x, int64_t K, const c10::optional<at::Tensor>& norm, double eps, int64_t act,
                      std::vector<float>& buf) {
  const int64_t M = x.size(0);
  const float* xp = x.data_ptr<float>();
  if (act == 0 && !norm.has_value()) return xp;
  buf.resize(M * K);
  for (int64_t r = 0; r < M; ++r) {
    float* o = buf.data() + r * K;
    if (act == 1) {
      const float* g = xp + r * 2 * K;
      const float* u = g + K;
      for (int64_t i = 0; i < K; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
    } else {
      std::memcpy(o, xp + r * K, K * sizeof(float));
    }
    if (norm.has_value()) {
      const float* w = norm->data_ptr<float>();
      float ss = 0.f;
      for (int64_t i = 0; i < K; ++i) ss += o[i] * o[i];
      const float inv = 1.f / std::sqrt(ss / (float)K + (float)eps);
      for (int64_t i = 0; i < K; ++i) o[i] = o[i] * inv * w[i];
    }
  }
  return buf.data();
}

void quantize_rows(const float* x, int64_t M, int64_t K, int64_t block, QuantAct& a) {
  const int64_t G = K / block;
  a.q.resize(M * K);
  a.d.resize(M * G);
  a.sum.resize(M * G);
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const float* xs = x + r * K + g * block;
      int16_t* qs = a.q.data() + r * K + g * block;
      float amax = 0.f, s = 0.f;
#if QG_AVX512
      if (block % 16 == 0) {
        __m512 vmax = _mm512_setzero_ps(), vsum = _mm512_setzero_ps();
        for (int64_t i = 0; i < block; i += 16) {
          const __m512 v = _mm512_loadu_ps(xs + i);
          vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));
          vsum = _mm512_add_ps(vsum, v);
        }
        amax = _mm512_reduce_max_ps(vmax);
        s = _mm512_reduce_add_ps(vsum);
        const float d = amax / 32767.f;
        const __m512 inv = _mm512_set1_ps(d > 0.f ? 1.f / d : 0.f);
        for (int64_t i = 0; i < block; i += 16) {
          const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xs + i), inv));
          _mm256_storeu_si256((__m256i*)(qs + i), _mm512_cvtsepi32_epi16(q));
        }
        a.d[r * G + g] = d;
        a.sum[r * G + g] = s;
        continue;
      }
#endif
      for (int64_t i = 0; i < block; ++i) { amax = std::max(amax, std::fabs(xs[i])); s += xs[i]; }
      const float d = amax / 32767.f;
      const float inv = d > 0.f ? 1.f / d : 0.f;
      for (int64_t i = 0; i < block; ++i) {
        const float v = std::nearbyint(xs[i] * inv);
        qs[i] = (int16_t)std::min(32767.f, std::max(-32767.f, v));
      }
      a.d[r * G + g] = d;
      a.sum[r * G + g] = s;
    }
  }
}

inline float half_to_float(uint16_t h) { return c10::detail::fp16_ieee_to_fp32_value(h); }

inline int32_t pair(const int16_t* x) {  // (x[0], x[1]) as one 32-bit lane
  int32_t v;
  std::memcpy(&v, x, 4);
  return v;
}

// ---------------------------------------------------------------------------------------------- int4
void int4_block(const uint8_t* qp, const uint16_t* sp, const uint16_t* mp, const QuantAct& a, int64_t r,
                int64_t K, int64_t group, float* out16) {
  const int64_t G = K / group, per = group / 8;
  const int16_t* xq = a.q.data() + r * K;
  const float* d = a.d.data() + r * G;
  const float* xs = a.sum.data() + r * G;
#if QG_AVX512
  // (q0, q1) = v & 0x000F000F; (q2, q3) * 16 = v & 0x00F000F0 (no shift: its sums are exact multiples of 16);
  // (q4, q5) = (v >> 8) & 0x000F000F; (q6, q7) = v >> 12 per 16-bit lane (no mask)
  __m512 acc = _mm512_setzero_ps();
  const __m512i mask = _mm512_set1_epi32(0x000F000F), mask16 = _mm512_set1_epi32(0x00F000F0);
  for (int64_t g = 0; g < G; ++g) {
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512(), a16 = _mm512_setzero_si512();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      const int16_t* x = xq + kk * 8;
      _mm_prefetch((const char*)(qp + kk * 64 + QG_PREFETCH), _MM_HINT_T0);  // the stream runs on into the next block
      const __m512i v = _mm512_loadu_si512((const void*)(qp + kk * 64));
      a0 = _mm512_dpwssd_epi32(a0, _mm512_and_si512(v, mask), _mm512_set1_epi32(pair(x)));
      a16 = _mm512_dpwssd_epi32(a16, _mm512_and_si512(v, mask16), _mm512_set1_epi32(pair(x + 2)));
      a1 = _mm512_dpwssd_epi32(a1, _mm512_and_si512(_mm512_srli_epi32(v, 8), mask), _mm512_set1_epi32(pair(x + 4)));
      a0 = _mm512_dpwssd_epi32(a0, _mm512_srli_epi16(v, 12), _mm512_set1_epi32(pair(x + 6)));
    }
    const __m512i ai = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_srai_epi32(a16, 4));
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(sp + g * 16)));
    const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(mp + g * 16)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai), _mm512_mul_ps(s, _mm512_set1_ps(d[g])), acc);
    acc = _mm512_fmadd_ps(m, _mm512_set1_ps(xs[g]), acc);
  }
  _mm512_storeu_ps(out16, acc);
#elif QG_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const __m256i mask = _mm256_set1_epi32(0x000F000F);
  for (int64_t g = 0; g < G; ++g) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      const int16_t* x = xq + kk * 8;
      const __m256i b0 = _mm256_set1_epi32(pair(x)), b1 = _mm256_set1_epi32(pair(x + 2));
      const __m256i b2 = _mm256_set1_epi32(pair(x + 4)), b3 = _mm256_set1_epi32(pair(x + 6));
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(qp + kk * 64 + h * 32));
        __m256i p = _mm256_madd_epi16(_mm256_and_si256(v, mask), b0);
        p = _mm256_add_epi32(p, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v, 4), mask), b1));
        p = _mm256_add_epi32(p, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v, 8), mask), b2));
        p = _mm256_add_epi32(p, _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi32(v, 12), mask), b3));
        if (h == 0) a0 = _mm256_add_epi32(a0, p); else a1 = _mm256_add_epi32(a1, p);
      }
    }
    const __m256 dg = _mm256_set1_ps(d[g]), xg = _mm256_set1_ps(xs[g]);
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(sp + g * 16)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(sp + g * 16 + 8)));
    const __m256 m0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(mp + g * 16)));
    const __m256 m1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(mp + g * 16 + 8)));
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), _mm256_mul_ps(s0, dg), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), _mm256_mul_ps(s1, dg), acc1);
    acc0 = _mm256_fmadd_ps(m0, xg, acc0);
    acc1 = _mm256_fmadd_ps(m1, xg, acc1);
  }
  _mm256_storeu_ps(out16, acc0);
  _mm256_storeu_ps(out16 + 8, acc1);
#else
  float acc[16] = {0};
  for (int64_t g = 0; g < G; ++g) {
    int64_t ai[16] = {0};
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      const int16_t* x = xq + kk * 8;
      for (int rr = 0; rr < 16; ++rr) {
        const uint8_t* b = qp + kk * 64 + 4 * rr;
        const int q[8] = {b[0] & 15, b[2] & 15, b[0] >> 4, b[2] >> 4, b[1] & 15, b[3] & 15, b[1] >> 4, b[3] >> 4};
        for (int i = 0; i < 8; ++i) ai[rr] += (int64_t)q[i] * x[i];
      }
    }
    for (int rr = 0; rr < 16; ++rr)
      acc[rr] += (float)ai[rr] * half_to_float(sp[g * 16 + rr]) * d[g] + half_to_float(mp[g * 16 + rr]) * xs[g];
  }
  std::memcpy(out16, acc, sizeof(acc));
#endif
}

// y = f(x) W^T + bias + residual, f the prologue; the weight block b of 16 rows is computed by `block(b, r, out16)`
template <typename Block>
at::Tensor gemv_out(int64_t M, int64_t N, int64_t NB, int64_t grain, const c10::optional<at::Tensor>& bias,
                    const c10::optional<at::Tensor>& residual, const at::TensorOptions& opts, Block block) {
  at::Tensor y = at::empty({M, N}, opts);
  float* yp = y.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  at::Tensor res;
  const float* rp = nullptr;
  if (residual.has_value()) {
    res = residual->contiguous();
    TORCH_CHECK(res.scalar_type() == at::kFloat && res.numel() == M * N, "residual must be float32 [M, N]");
    rp = res.data_ptr<float>();
  }
  at::parallel_for(0, NB, grain, [&](int64_t b0, int64_t b1) {
    float tmp[16];
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t r = 0; r < M; ++r) {
        block(b, r, tmp);
        const int64_t n0 = b * 16, cnt = std::min<int64_t>(16, N - n0);
        for (int64_t i = 0; i < cnt; ++i)
          yp[r * N + n0 + i] = tmp[i] + (bp ? bp[n0 + i] : 0.f) + (rp ? rp[r * N + n0 + i] : 0.f);
      }
    }
  });
  return y;
}

int64_t in_features(const at::Tensor& x, int64_t act) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x must be contiguous float32 [M, K]");
  TORCH_CHECK(act == 0 || act == 1, "act must be 0 (none) or 1 (silu(gate) * up)");
  TORCH_CHECK(act == 0 || x.size(1) % 2 == 0, "act=1 needs x = [gate | up]");
  return act == 1 ? x.size(1) / 2 : x.size(1);
}

at::Tensor int4_gemv(const at::Tensor& x_, const at::Tensor& qpack, const at::Tensor& s, const at::Tensor& m,
                     const c10::optional<at::Tensor>& bias, int64_t N, int64_t group,
                     const c10::optional<at::Tensor>& norm, double eps, int64_t act,
                     const c10::optional<at::Tensor>& residual) {
  TORCH_CHECK(qpack.scalar_type() == at::kByte && qpack.is_contiguous(), "qpack must be contiguous uint8");
  const at::Tensor x = x_.contiguous();
  const int64_t K = in_features(x, act), M = x.size(0), NB = qpack.size(0), G = K / group;
  TORCH_CHECK(K % group == 0 && group % 8 == 0 && qpack.size(1) * 8 == K, "shape mismatch");
  std::vector<float> buf;
  QuantAct a;
  quantize_rows(prologue(x, K, norm, eps, act, buf), M, K, group, a);
  const uint8_t* qp = qpack.data_ptr<uint8_t>();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(s.data_ptr<at::Half>());
  const uint16_t* mp = reinterpret_cast<const uint16_t*>(m.data_ptr<at::Half>());
  return gemv_out(M, N, NB, 4, bias, residual, x.options(), [&](int64_t b, int64_t r, float* out16) {
    int4_block(qp + b * (K / 8) * 64, sp + b * G * 16, mp + b * G * 16, a, r, K, group, out16);
  });
}

// ---------------------------------------------------------------------------------------------- int8
constexpr int64_t I8_BLOCK = 32;

void int8_block(const uint8_t* wp, const QuantAct& a, int64_t r, int64_t K, float* out16) {
  const int64_t G = K / I8_BLOCK, per = I8_BLOCK / 4;
  const int16_t* xq = a.q.data() + r * K;
  const float* d = a.d.data() + r * G;
#if QG_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      _mm_prefetch((const char*)(wp + kk * 64 + QG_PREFETCH), _MM_HINT_T0);
      const __m512i v = _mm512_loadu_si512((const void*)(wp + kk * 64));
      const __m512i lo = _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8);  // (w0, w1)
      const __m512i hi = _mm512_srai_epi16(v, 8);                         // (w2, w3)
      a0 = _mm512_dpwssd_epi32(a0, lo, _mm512_set1_epi32(pair(xq + kk * 4)));
      a1 = _mm512_dpwssd_epi32(a1, hi, _mm512_set1_epi32(pair(xq + kk * 4 + 2)));
    }
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1)), _mm512_set1_ps(d[g]), acc);
  }
  _mm512_storeu_ps(out16, acc);
#elif QG_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      const __m256i b0 = _mm256_set1_epi32(pair(xq + kk * 4)), b1 = _mm256_set1_epi32(pair(xq + kk * 4 + 2));
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(wp + kk * 64 + h * 32));
        const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8), b0),
                                           _mm256_madd_epi16(_mm256_srai_epi16(v, 8), b1));
        if (h == 0) a0 = _mm256_add_epi32(a0, p); else a1 = _mm256_add_epi32(a1, p);
      }
    }
    const __m256 dg = _mm256_set1_ps(d[g]);
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), dg, acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), dg, acc1);
  }
  _mm256_storeu_ps(out16, acc0);
  _mm256_storeu_ps(out16 + 8, acc1);
#else
  float acc[16] = {0};
  for (int64_t g = 0; g < G; ++g) {
    int64_t ai[16] = {0};
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      const int16_t* x = xq + kk * 4;
      for (int rr = 0; rr < 16; ++rr) {
        const int8_t* b = reinterpret_cast<const int8_t*>(wp + kk * 64 + 4 * rr);
        ai[rr] += (int64_t)b[0] * x[0] + (int64_t)b[2] * x[1] + (int64_t)b[1] * x[2] + (int64_t)b[3] * x[3];
      }
    }
    for (int rr = 0; rr < 16; ++rr) acc[rr] += (float)ai[rr] * d[g];
  }
  std::memcpy(out16, acc, sizeof(acc));
#endif
}

at::Tensor int8_gemv(const at::Tensor& x_, const at::Tensor& wpack, const at::Tensor& scale,
                     const c10::optional<at::Tensor>& bias, int64_t N, const c10::optional<at::Tensor>& norm,
                     double eps, int64_t act, const c10::optional<at::Tensor>& residual) {
  TORCH_CHECK(wpack.scalar_type() == at::kByte && wpack.is_contiguous(), "wpack must be contiguous uint8");
  const at::Tensor x = x_.contiguous();
  const int64_t K = in_features(x, act), M = x.size(0), NB = wpack.size(0);
  TORCH_CHECK(K % I8_BLOCK == 0 && wpack.size(1) * 4 == K, "shape mismatch");
  std::vector<float> buf;
  QuantAct a;
  quantize_rows(prologue(x, K, norm, eps, act, buf), M, K, I8_BLOCK, a);
  const uint8_t* wp = wpack.data_ptr<uint8_t>();
  const float* sc = scale.data_ptr<float>();
  return gemv_out(M, N, NB, 16, bias, residual, x.options(), [&](int64_t b, int64_t r, float* out16) {
    int8_block(wp + b * (K / 4) * 64, a, r, K, out16);
    for (int i = 0; i < 16; ++i) out16[i] *= sc[b * 16 + i];
  });
}

// ---------------------------------------------------------------------------------------------- attention
inline float dot(const float* a, const float* b, int64_t n) {
#if QG_AVX512
  if (n % 16 == 0) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float s[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[i + j] * b[i + j];
  float t = 0.f;
  for (; i < n; ++i) t += a[i] * b[i];
  return t + ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

inline void rope(const float* x, const float* c, const float* s, int64_t D, float* out) {
  const int64_t h = D / 2;
  for (int64_t i = 0; i < h; ++i) out[i] = x[i] * c[i] - x[i + h] * s[i];
  for (int64_t i = h; i < D; ++i) out[i] = x[i] * c[i] + x[i - h] * s[i];
}

// One decode layer's attention for M rows (one new token each): RoPE of q and k (cos/sin: the rows' [M, D]),
// the new K/V written to the flat caches [slots, KV, D] at slots[r], then softmax(q K^T * scale) V over the
// row's lens[r] cached positions (the last `window` of them when window > 0) through its block table.
at::Tensor decode_attention(const at::Tensor& qkv_, const at::Tensor& cos_, const at::Tensor& sin_,
                            at::Tensor k_cache, at::Tensor v_cache, const at::Tensor& slots_, const at::Tensor& tables_,
                            const at::Tensor& lens_, int64_t H, int64_t KV, int64_t D, double scale, int64_t window,
                            int64_t block_size) {
  const at::Tensor qkv = qkv_.contiguous(), cs = cos_.contiguous(), sn = sin_.contiguous();
  const at::Tensor slots = slots_.contiguous(), tables = tables_.contiguous(), lens = lens_.contiguous();
  TORCH_CHECK(qkv.scalar_type() == at::kFloat && k_cache.scalar_type() == at::kFloat &&
              v_cache.scalar_type() == at::kFloat && cs.scalar_type() == at::kFloat, "float32 tensors expected");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "the caches must be contiguous");
  TORCH_CHECK(slots.scalar_type() == at::kLong && tables.scalar_type() == at::kLong && lens.scalar_type() == at::kLong,
              "slots, tables and lens must be int64");
  const int64_t M = qkv.size(0), W = (H + 2 * KV) * D, group = H / KV;
  TORCH_CHECK(qkv.dim() == 2 && qkv.size(1) == W && H % KV == 0, "qkv must be [M, (H + 2 KV) D]");
  const int64_t nslots = k_cache.numel() / (KV * D), width = tables.size(1);
  const float* qp = qkv.data_ptr<float>();
  const float* cp = cs.data_ptr<float>();
  const float* sp = sn.data_ptr<float>();
  float* kc = k_cache.data_ptr<float>();
  float* vc = v_cache.data_ptr<float>();
  const int64_t* sl = slots.data_ptr<int64_t>();
  const int64_t* tb = tables.data_ptr<int64_t>();
  const int64_t* ln = lens.data_ptr<int64_t>();
  at::Tensor out = at::empty({M, H * D}, qkv.options());
  float* op = out.data_ptr<float>();
  std::vector<float> q(H * D), scores, acc(D);
  std::vector<int64_t> pos_slot;
  for (int64_t r = 0; r < M; ++r) {
    const float* row = qp + r * W;
    const float* c = cp + r * D;
    const float* s = sp + r * D;
    TORCH_CHECK(sl[r] >= 0 && sl[r] < nslots, "slot out of range");
    for (int64_t h = 0; h < H; ++h) rope(row + h * D, c, s, D, q.data() + h * D);
    for (int64_t h = 0; h < KV; ++h) {
      rope(row + (H + h) * D, c, s, D, kc + (sl[r] * KV + h) * D);
      std::memcpy(vc + (sl[r] * KV + h) * D, row + (H + KV + h) * D, D * sizeof(float));
    }
    const int64_t n = ln[r], start = window > 0 ? std::max<int64_t>(0, n - window) : 0, cnt = n - start;
    TORCH_CHECK(n >= 1 && (n - 1) / block_size < width, "context length beyond the block table");
    pos_slot.resize(cnt);
    for (int64_t j = 0; j < cnt; ++j) {
      const int64_t p = start + j, slot = tb[r * width + p / block_size] * block_size + p % block_size;
      TORCH_CHECK(slot >= 0 && slot < nslots, "block table points outside the cache");
      pos_slot[j] = slot;
    }
    scores.resize(cnt);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / group;
      const float* qh = q.data() + h * D;
      float mx = -INFINITY;
      for (int64_t j = 0; j < cnt; ++j) {
        scores[j] = dot(qh, kc + (pos_slot[j] * KV + g) * D, D) * (float)scale;
        mx = std::max(mx, scores[j]);
      }
      float sum = 0.f;
      for (int64_t j = 0; j < cnt; ++j) { scores[j] = std::exp(scores[j] - mx); sum += scores[j]; }
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < cnt; ++j) {
        const float p = scores[j];
        const float* vr = vc + (pos_slot[j] * KV + g) * D;
        for (int64_t i = 0; i < D; ++i) acc[i] += p * vr[i];
      }
      const float inv = 1.f / sum;
      for (int64_t i = 0; i < D; ++i) op[r * H * D + h * D + i] = acc[i] * inv;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- whole step
// The decode step of a Llama-family decoder in one call (no Python or dispatcher between the ops), the same ops as
// LlamaForCausalLM._forward_decode_cpu_fused. proj: 4 tensors per projection (int4: qpack, s, m, bias; int8: wpack,
// scale, unused, bias; an empty bias = none), 4 projections per layer (qkv, o, gate_up, down) and then the lm_head
// when `head`; kind/n_out/group per projection (kind 4 or 8); norms: 2 per layer (input, post-attention) and the
// final one, eps per norm; caches: k and v per layer. Returns the logits, or the final-normed x without a head.
at::Tensor project(const std::vector<at::Tensor>& proj, const std::vector<int64_t>& kind,
                   const std::vector<int64_t>& n_out, const std::vector<int64_t>& group, size_t i, const at::Tensor& x,
                   const c10::optional<at::Tensor>& norm, double eps, int64_t act, const c10::optional<at::Tensor>& res) {
  const at::Tensor& b = proj[4 * i + 3];
  const c10::optional<at::Tensor> bias = b.numel() ? c10::optional<at::Tensor>(b) : c10::nullopt;
  if (kind[i] == 4) return int4_gemv(x, proj[4 * i], proj[4 * i + 1], proj[4 * i + 2], bias, n_out[i], group[i], norm, eps, act, res);
  return int8_gemv(x, proj[4 * i], proj[4 * i + 1], bias, n_out[i], norm, eps, act, res);
}

at::Tensor decode_forward(const at::Tensor& x0, at::TensorList proj_, at::IntArrayRef kind_, at::IntArrayRef n_out_,
                          at::IntArrayRef group_, at::TensorList norms, at::ArrayRef<double> eps, at::TensorList caches,
                          const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& slots, const at::Tensor& tables,
                          const at::Tensor& lens, int64_t H, int64_t KV, int64_t D, double scale, int64_t window,
                          int64_t block_size, bool head) {
  const std::vector<at::Tensor> proj(proj_.begin(), proj_.end());
  const std::vector<int64_t> kind(kind_.begin(), kind_.end()), n_out(n_out_.begin(), n_out_.end()),
      group(group_.begin(), group_.end());
  const int64_t L = (int64_t)caches.size() / 2;
  TORCH_CHECK((int64_t)kind.size() == 4 * L + (head ? 1 : 0) && (int64_t)proj.size() == 4 * (int64_t)kind.size() &&
              (int64_t)norms.size() == 2 * L + 1 && eps.size() == norms.size(), "decode_forward: inconsistent lists");
  at::Tensor x = x0.contiguous();
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor qkv = project(proj, kind, n_out, group, 4 * l, x, norms[2 * l], eps[2 * l], 0, c10::nullopt);
    at::Tensor kc = caches[2 * l], vc = caches[2 * l + 1];
    const at::Tensor o = decode_attention(qkv, cos, sin, kc, vc, slots, tables, lens, H, KV, D, scale, window, block_size);
    x = project(proj, kind, n_out, group, 4 * l + 1, o, c10::nullopt, 0.0, 0, x);
    const at::Tensor gu = project(proj, kind, n_out, group, 4 * l + 2, x, norms[2 * l + 1], eps[2 * l + 1], 0, c10::nullopt);
    x = project(proj, kind, n_out, group, 4 * l + 3, gu, c10::nullopt, 0.0, 1, x);
  }
  if (head) return project(proj, kind, n_out, group, 4 * L, x, norms[2 * L], eps[2 * L], 0, c10::nullopt);
  return at::rms_norm(x, {x.size(1)}, norms[2 * L], eps[2 * L]);
}

const char* isa() {
#if QG_AVX512
  return "avx512-vnni";
#elif QG_AVX2
  return "avx2";
#else
  return "portable";
#endif
}

std::string isa_op() { return isa(); }

}  // namespace

TORCH_LIBRARY(lmsmith_cpu, m) {
  m.def("int4_gemv(Tensor x, Tensor qpack, Tensor s, Tensor m, Tensor? bias, int N, int group, Tensor? norm=None, "
        "float eps=0.0, int act=0, Tensor? residual=None) -> Tensor");
  m.def("int8_gemv(Tensor x, Tensor wpack, Tensor scale, Tensor? bias, int N, Tensor? norm=None, float eps=0.0, "
        "int act=0, Tensor? residual=None) -> Tensor");
  m.def("decode_attention(Tensor qkv, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slots, "
        "Tensor tables, Tensor lens, int H, int KV, int D, float scale, int window, int block_size) -> Tensor");
  m.def("decode_forward(Tensor x, Tensor[] proj, int[] kind, int[] n_out, int[] group, Tensor[] norms, float[] eps, "
        "Tensor(a!)[] caches, Tensor cos, Tensor sin, Tensor slots, Tensor tables, Tensor lens, int H, int KV, int D, "
        "float scale, int window, int block_size, bool head) -> Tensor");
  m.def("isa() -> str", &isa_op);
}

TORCH_LIBRARY_IMPL(lmsmith_cpu, CPU, m) {
  m.impl("int4_gemv", &int4_gemv);
  m.impl("int8_gemv", &int8_gemv);
  m.impl("decode_attention", &decode_attention);
  m.impl("decode_forward", &decode_forward);
}
