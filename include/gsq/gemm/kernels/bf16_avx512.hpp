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

#include <cstdint>
#include <cstring>

#include "gsq/core/target.hpp"
#include "gsq/gemm/float_pack.hpp"

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

/// The path's kernel entry point (A always packed).
inline void gemm_kernel(const FloatKernelParams& p) noexcept {
  if (p.n_valid <= 16) run_tiles<1>(p);
  else run_tiles<2>(p);
}

}  // namespace gemm::kernels::bf16_avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
