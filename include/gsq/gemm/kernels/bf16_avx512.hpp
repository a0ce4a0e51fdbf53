// gsq/gemm/kernels/bf16_avx512.hpp — the AVX-512-BF16 GEMM kernel (vdpbf16ps).
//
// The same 12 × 32 register tile as the FP32 kernel (f32_avx512.hpp), over packed pairs
// of k: per step, two B loads (16 columns × 2 k each), one dword broadcast of each A
// row's pair and one vdpbf16ps per accumulator. vdpbf16ps adds the odd product and then
// the even one to the FP32 accumulator, each rounded to nearest even, with subnormal
// inputs and results flushed to zero (Intel SDM; verified bit for bit on this machine's
// AMD Zen 4). The scalar reference (gemm_bf16_reference) does exactly that.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gsq/core/target.hpp"
#include "gsq/gemm/float_pack.hpp"
#include "gsq/gemm/kernels/f32_avx512.hpp"

GSQ_TARGET_BEGIN_AVX512_BF16
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::bf16_avx512 {

inline constexpr int kMr = 12;

GSQ_ALWAYS_INLINE __mmask16 column_mask(int valid) noexcept {
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

GSQ_ALWAYS_INLINE __m512 dot_pair(__m512 acc, __m512i a, __m512i b) noexcept {
  return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

template <int NV>
inline void run_tiles(const FloatKernelParams& p) noexcept {
  constexpr int MR = kMr;
  __mmask16 cmask[NV];
  for (int j = 0; j < NV; ++j) cmask[j] = column_mask(p.n_valid - 16 * j);
  const __m512 alpha = _mm512_set1_ps(p.alpha);
  for (std::int64_t t = 0; t < p.tiles; ++t) {
    const std::uint32_t* a = static_cast<const std::uint32_t*>(p.a) + t * p.a_tile_stride;
    const std::uint32_t* b = static_cast<const std::uint32_t*>(p.b);
    float* acc_tile = p.acc != nullptr ? p.acc + t * MR * p.nr : nullptr;
    __m512 r[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j)
        r[i][j] = p.first ? _mm512_setzero_ps() : _mm512_load_ps(acc_tile + i * p.nr + j * 16);
    for (std::int64_t s = 0; s < p.steps; ++s) {
      __m512i bv[NV];
      for (int j = 0; j < NV; ++j)
        bv[j] = _mm512_loadu_si512(static_cast<const void*>(b + j * 16));
      for (int i = 0; i < MR; ++i) {
        const __m512i av = _mm512_set1_epi32(static_cast<int>(a[i]));
        for (int j = 0; j < NV; ++j) r[i][j] = dot_pair(r[i][j], av, bv[j]);
      }
      b += p.nr;
      a += MR;
    }
    if (!p.last) {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) _mm512_store_ps(acc_tile + i * p.nr + j * 16, r[i][j]);
      continue;
    }
    for (int i = 0; i < MR; ++i) {
      if (t * MR + i >= p.m_valid) break;
      float* c = p.c + (t * MR + i) * p.ldc;
      for (int j = 0; j < NV; ++j) {
        if (cmask[j] == 0) continue;
        const __m512 out =
            p.accumulate ? _mm512_fmadd_ps(alpha, r[i][j], _mm512_maskz_loadu_ps(cmask[j], c + j * 16))
                         : _mm512_mul_ps(alpha, r[i][j]);
        _mm512_mask_storeu_ps(c + j * 16, cmask[j], out);
      }
    }
  }
}

/// 32 floats → 16 bf16 pairs (element 2i low, 2i+1 high), rounded to nearest even with
/// subnormal results flushed to ±0: the values of detail::bf16_operand.
GSQ_ALWAYS_INLINE __m512i to_pairs(__m512 lo, __m512 hi) noexcept {
  const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
  const __mmask32 normal = _mm512_test_epi16_mask(v, _mm512_set1_epi16(0x7F80));
  return _mm512_mask_blend_epi16(normal, _mm512_and_si512(v, _mm512_set1_epi16(static_cast<short>(0x8000))), v);
}

/// kBf16Pairs panels from an FP32 operand (the layout and values of detail::pack_lines).
inline void pack_pairs(const float* data, std::int64_t stride, bool transposed, std::int64_t first,
                       std::int64_t count, int width, std::int64_t k_total, std::int64_t s0,
                       std::int64_t s1, std::uint32_t* out) noexcept {
  using f32_avx512::column_mask;
  const std::int64_t steps = s1 - s0;
  if (transposed) {  // k row 2s and 2s+1, lines contiguous: interleave the two rows
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (std::int64_t s = 0; s < steps; ++s) {
      const std::int64_t k = 2 * (s0 + s);
      const float* even = data + k * stride + first;
      for (int i0 = 0; i0 < width; i0 += 16) {
        const __mmask16 m = column_mask(static_cast<int>(count) - i0);
        const __m512 e = _mm512_maskz_loadu_ps(m, even + i0);
        const __m512 o = k + 1 < k_total ? _mm512_maskz_loadu_ps(m, even + stride + i0) : _mm512_setzero_ps();
        // [e0..e15 | o0..o15] as bf16, then (e_i, o_i) pairs.
        const __m512i words = to_pairs(e, o);
        const __m512i pairs = _mm512_permutexvar_epi16(interleave, words);
        _mm512_mask_storeu_epi32(out + s * width + i0, column_mask(width - i0), pairs);
      }
    }
    return;
  }
  for (int i0 = 0; i0 < width; i0 += 16) {
    const __mmask16 w = column_mask(width - i0);
    for (std::int64_t sb = 0; sb < steps; sb += 16) {
      const std::int64_t k0 = 2 * (s0 + sb);  // first k of these 16 pairs
      const __mmask16 m_lo = column_mask(static_cast<int>(std::min<std::int64_t>(16, k_total - k0)));
      const __mmask16 m_hi = column_mask(static_cast<int>(std::min<std::int64_t>(16, k_total - k0 - 16)));
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        if (i0 + i >= count) {
          r[i] = _mm512_setzero_ps();
          continue;
        }
        const float* src = data + (first + i0 + i) * stride + k0;
        r[i] = _mm512_castsi512_ps(to_pairs(_mm512_maskz_loadu_ps(m_lo, src),
                                            _mm512_maskz_loadu_ps(m_hi, src + 16)));
      }
      f32_avx512::transpose16(r);
      const std::int64_t n = std::min<std::int64_t>(16, steps - sb);
      for (std::int64_t s = 0; s < n; ++s)
        _mm512_mask_storeu_epi32(out + (sb + s) * width + i0, w, _mm512_castps_si512(r[s]));
    }
  }
}

/// The path's kernel entry point (A always packed).
inline void gemm_kernel(const FloatKernelParams& p) noexcept {
  if (p.n_valid <= 16) run_tiles<1>(p);
  else run_tiles<2>(p);
}

}  // namespace gemm::kernels::bf16_avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
