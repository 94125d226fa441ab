// Quantized matrix-vector products for batch-1..16 CPU decode, on int8-quantized activations.
//
// At batch 1 a linear layer is a weight stream: the kernel must read the 4-bit (or 8-bit) weight once and
// spend almost nothing per byte. Here the activation row is quantized to int8 per block (the weight's group
// for int4, 32 for int8: llama.cpp's Q8_1/Q8_0 activations) and every product is an integer dot product
// (AVX-512 VNNI vpdpbusd: u8 x s8 -> s32; AVX2 maddubs+madd; portable C++ elsewhere).
//
// Weight layout (built once by the Python loader): 16 output rows interleaved so each SIMD lane owns a row
// and no horizontal sums are needed.
//   int4: qpack [N/16, K/8, 64] u8, byte 4r+i of block kk = q[r, 8kk+i] | q[r, 8kk+4+i] << 4 (q in 0..15);
//         s, m [N/16, K/g, 16] fp16 with w = q * s + m.
//   int8: wpack [N/16, K/4, 64] u8, byte 4r+i of block kk = w[r, 4kk+i] + 128; scale [N/16*16] fp32.
// Output y[M, N] fp32 (+ bias).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define QG_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define QG_AVX2 1
#include <immintrin.h>
#endif

namespace {

struct QuantAct {  // one activation row per m, int8 per block of `block`
  std::vector<int8_t> q;    // [M, K]
  std::vector<float> d;     // [M, K/block] scale
  std::vector<float> sum;   // [M, K/block] sum of x (int4 offsets) or of q (int8 +128 correction)
};

QuantAct quantize_rows(const float* x, int64_t M, int64_t K, int64_t block, bool sum_of_q) {
  const int64_t G = K / block;
  QuantAct a;
  a.q.resize(M * K);
  a.d.resize(M * G);
  a.sum.resize(M * G);
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const float* xs = x + r * K + g * block;
      int8_t* qs = a.q.data() + r * K + g * block;
      float amax = 0.f, s = 0.f;
      for (int64_t i = 0; i < block; ++i) { amax = std::max(amax, std::fabs(xs[i])); s += xs[i]; }
      const float d = amax / 127.f;
      const float inv = d > 0.f ? 1.f / d : 0.f;
      int32_t qsum = 0;
      for (int64_t i = 0; i < block; ++i) {
        const int32_t v = (int32_t)std::nearbyint(xs[i] * inv);
        qs[i] = (int8_t)v;
        qsum += v;
      }
      a.d[r * G + g] = d;
      a.sum[r * G + g] = sum_of_q ? (float)qsum : s;
    }
  }
  return a;
}

inline float half_to_float(uint16_t h) { return c10::detail::fp16_ieee_to_fp32_value(h); }

// ---------------------------------------------------------------------------------------------- int4
void int4_block(const uint8_t* qp, const uint16_t* sp, const uint16_t* mp, const QuantAct& a, int64_t r,
                int64_t K, int64_t group, float* out16) {
  const int64_t G = K / group, per = group / 8;
  const int8_t* xq = a.q.data() + r * K;
  const float* d = a.d.data() + r * G;
  const float* xs = a.sum.data() + r * G;
#if QG_AVX512
  __m512 acc = _mm512_setzero_ps();
  const __m512i lowmask = _mm512_set1_epi8(0x0F);
  for (int64_t g = 0; g < G; ++g) {
    __m512i ai = _mm512_setzero_si512();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      const __m512i v = _mm512_loadu_si512((const void*)(qp + kk * 64));
      const __m512i lo = _mm512_and_si512(v, lowmask);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), lowmask);
      int32_t x0, x1;
      std::memcpy(&x0, xq + kk * 8, 4);
      std::memcpy(&x1, xq + kk * 8 + 4, 4);
      ai = _mm512_dpbusd_epi32(ai, lo, _mm512_set1_epi32(x0));
      ai = _mm512_dpbusd_epi32(ai, hi, _mm512_set1_epi32(x1));
    }
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(sp + g * 16)));
    const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(mp + g * 16)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ai), _mm512_mul_ps(s, _mm512_set1_ps(d[g])), acc);
    acc = _mm512_fmadd_ps(m, _mm512_set1_ps(xs[g]), acc);
  }
  _mm512_storeu_ps(out16, acc);
#elif QG_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const __m256i lowmask = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t g = 0; g < G; ++g) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      int32_t x0, x1;
      std::memcpy(&x0, xq + kk * 8, 4);
      std::memcpy(&x1, xq + kk * 8 + 4, 4);
      const __m256i bx0 = _mm256_set1_epi32(x0), bx1 = _mm256_set1_epi32(x1);
      for (int h = 0; h < 2; ++h) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(qp + kk * 64 + h * 32));
        const __m256i lo = _mm256_and_si256(v, lowmask);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), lowmask);
        const __m256i p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, bx0), ones),
                                           _mm256_madd_epi16(_mm256_maddubs_epi16(hi, bx1), ones));
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
    int32_t ai[16] = {0};
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      for (int rr = 0; rr < 16; ++rr)
        for (int i = 0; i < 4; ++i) {
          const uint8_t b = qp[kk * 64 + 4 * rr + i];
          ai[rr] += (int32_t)(b & 0x0F) * xq[kk * 8 + i] + (int32_t)(b >> 4) * xq[kk * 8 + 4 + i];
        }
    }
    for (int rr = 0; rr < 16; ++rr)
      acc[rr] += (float)ai[rr] * half_to_float(sp[g * 16 + rr]) * d[g] + half_to_float(mp[g * 16 + rr]) * xs[g];
  }
  std::memcpy(out16, acc, sizeof(acc));
#endif
}

at::Tensor int4_gemv(const at::Tensor& x, const at::Tensor& qpack, const at::Tensor& s, const at::Tensor& m,
                     const c10::optional<at::Tensor>& bias, int64_t N, int64_t group) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be float32 [M, K]");
  TORCH_CHECK(qpack.scalar_type() == at::kByte && qpack.is_contiguous(), "qpack must be contiguous uint8");
  const at::Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), NB = qpack.size(0), G = K / group;
  TORCH_CHECK(K % group == 0 && group % 8 == 0 && qpack.size(1) * 8 == K, "shape mismatch");
  QuantAct a = quantize_rows(xc.data_ptr<float>(), M, K, group, false);
  at::Tensor y = at::empty({M, N}, xc.options());
  float* yp = y.data_ptr<float>();
  const uint8_t* qp = qpack.data_ptr<uint8_t>();
  const uint16_t* sp = reinterpret_cast<const uint16_t*>(s.data_ptr<at::Half>());
  const uint16_t* mp = reinterpret_cast<const uint16_t*>(m.data_ptr<at::Half>());
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  at::parallel_for(0, NB, 4, [&](int64_t b0, int64_t b1) {
    float tmp[16];
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t r = 0; r < M; ++r) {
        int4_block(qp + b * (K / 8) * 64, sp + b * G * 16, mp + b * G * 16, a, r, K, group, tmp);
        const int64_t n0 = b * 16, cnt = std::min<int64_t>(16, N - n0);
        for (int64_t i = 0; i < cnt; ++i) yp[r * N + n0 + i] = tmp[i] + (bp ? bp[n0 + i] : 0.f);
      }
    }
  });
  return y;
}

// ---------------------------------------------------------------------------------------------- int8
constexpr int64_t I8_BLOCK = 32;

void int8_block(const uint8_t* wp, const QuantAct& a, int64_t r, int64_t K, float* out16) {
  const int64_t G = K / I8_BLOCK, per = I8_BLOCK / 4;
  const int8_t* xq = a.q.data() + r * K;
  const float* d = a.d.data() + r * G;
  const float* qs = a.sum.data() + r * G;
#if QG_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512i ai = _mm512_setzero_si512();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      int32_t x0;
      std::memcpy(&x0, xq + kk * 4, 4);
      ai = _mm512_dpbusd_epi32(ai, _mm512_loadu_si512((const void*)(wp + kk * 64)), _mm512_set1_epi32(x0));
    }
    // sum (w + 128) x = sum w x + 128 sum x
    const __m512 f = _mm512_sub_ps(_mm512_cvtepi32_ps(ai), _mm512_set1_ps(128.f * qs[g]));
    acc = _mm512_fmadd_ps(f, _mm512_set1_ps(d[g]), acc);
  }
  _mm512_storeu_ps(out16, acc);
#elif QG_AVX2
  // maddubs(u8 = w + 128, s8) could saturate int16 (2 x 255 x 127), so undo the +128 and use the sign
  // trick: w x q = |w| x (q signed by w), maddubs on |w| <= 127: 2 x 127 x 127 fits.
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i bias8 = _mm256_set1_epi8((char)0x80);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      int32_t x0;
      std::memcpy(&x0, xq + kk * 4, 4);
      const __m256i bx = _mm256_set1_epi32(x0);
      for (int h = 0; h < 2; ++h) {
        const __m256i w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(wp + kk * 64 + h * 32)), bias8);
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(bx, w)), ones);
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
    int32_t ai[16] = {0};
    for (int64_t j = 0; j < per; ++j) {
      const int64_t kk = g * per + j;
      for (int rr = 0; rr < 16; ++rr)
        for (int i = 0; i < 4; ++i) ai[rr] += ((int32_t)wp[kk * 64 + 4 * rr + i] - 128) * xq[kk * 4 + i];
    }
    for (int rr = 0; rr < 16; ++rr) acc[rr] += (float)ai[rr] * d[g];
  }
  std::memcpy(out16, acc, sizeof(acc));
#endif
}

at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& wpack, const at::Tensor& scale,
                     const c10::optional<at::Tensor>& bias, int64_t N) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be float32 [M, K]");
  TORCH_CHECK(wpack.scalar_type() == at::kByte && wpack.is_contiguous(), "wpack must be contiguous uint8");
  const at::Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), NB = wpack.size(0);
  TORCH_CHECK(K % I8_BLOCK == 0 && wpack.size(1) * 4 == K, "shape mismatch");
  QuantAct a = quantize_rows(xc.data_ptr<float>(), M, K, I8_BLOCK, true);
  at::Tensor y = at::empty({M, N}, xc.options());
  float* yp = y.data_ptr<float>();
  const uint8_t* wp = wpack.data_ptr<uint8_t>();
  const float* sc = scale.data_ptr<float>();
  const float* bp = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  at::parallel_for(0, NB, 16, [&](int64_t b0, int64_t b1) {
    float tmp[16];
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t r = 0; r < M; ++r) {
        int8_block(wp + b * (K / 4) * 64, a, r, K, tmp);
        const int64_t n0 = b * 16, cnt = std::min<int64_t>(16, N - n0);
        for (int64_t i = 0; i < cnt; ++i) yp[r * N + n0 + i] = tmp[i] * sc[n0 + i] + (bp ? bp[n0 + i] : 0.f);
      }
    }
  });
  return y;
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
  m.def("int4_gemv(Tensor x, Tensor qpack, Tensor s, Tensor m, Tensor? bias, int N, int group) -> Tensor");
  m.def("int8_gemv(Tensor x, Tensor wpack, Tensor scale, Tensor? bias, int N) -> Tensor");
  m.def("isa() -> str", &isa_op);
}

TORCH_LIBRARY_IMPL(lmsmith_cpu, CPU, m) {
  m.impl("int4_gemv", &int4_gemv);
  m.impl("int8_gemv", &int8_gemv);
}
