// gsq/gemm/kernels/f32_avx512.hpp — the AVX-512 FP32 GEMM kernel.
//
// A tile of 12 rows × 32 columns (24 zmm accumulators; 16 columns for N <= 16) stays in
// registers for a whole B block. Per k step: load the B step (2 zmm), broadcast each A
// row's value and issue one FMA per accumulator. Every C element is one FMA chain in
// ascending k started from +0, the same chain as the scalar reference (std::fma), so the
// result is bit-identical to it and to the AVX2 kernel. A is read from a packed tile
// ([k][12]) or, for thin N, in place from the operand (row and k strides).
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>

#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/gemm/float_pack.hpp"

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::f32_avx512 {

inline constexpr int kMr = 12;
inline constexpr int kNrWide = 32;
inline constexpr int kNrNarrow = 16;

GSQ_ALWAYS_INLINE __mmask16 column_mask(int valid) noexcept {
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

/// Stores one accumulator tile: partial sums to `acc`, or the epilogue into C.
template <int MR, int NV>
GSQ_ALWAYS_INLINE void store_tile(const FloatKernelParams& p, __m512 (&r)[MR][NV], std::int64_t t,
                                  float* acc_tile, const __mmask16 (&cmask)[NV]) noexcept {
  if (!p.last) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j) _mm512_store_ps(acc_tile + i * p.nr + j * 16, r[i][j]);
    return;
  }
  const __m512 alpha = _mm512_set1_ps(p.alpha);
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

/// All tiles of one call for a 12 × (NV·16) register tile; kDirect reads A in place.
template <int NV, bool kDirect>
inline void run_tiles(const FloatKernelParams& p) noexcept {
  constexpr int MR = kMr;
  const std::int64_t rs = kDirect ? p.a_row_stride : 1;
  const std::int64_t ks = kDirect ? p.a_step_stride : MR;
  __mmask16 cmask[NV];
  for (int j = 0; j < NV; ++j) cmask[j] = column_mask(p.n_valid - 16 * j);
  for (std::int64_t t = 0; t < p.tiles; ++t) {
    const float* a = static_cast<const float*>(p.a) + t * p.a_tile_stride;
    const float* b = static_cast<const float*>(p.b);
    float* acc_tile = p.acc != nullptr ? p.acc + t * MR * p.nr : nullptr;
    __m512 r[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j)
        r[i][j] = p.first ? _mm512_setzero_ps() : _mm512_load_ps(acc_tile + i * p.nr + j * 16);
    for (std::int64_t s = 0; s < p.steps; ++s) {
      __m512 bv[NV];
      for (int j = 0; j < NV; ++j) bv[j] = _mm512_loadu_ps(b + j * 16);
      for (int i = 0; i < MR; ++i) {
        const __m512 av = _mm512_set1_ps(a[i * rs]);
        for (int j = 0; j < NV; ++j) r[i][j] = _mm512_fmadd_ps(av, bv[j], r[i][j]);
      }
      b += p.nr;
      a += ks;
    }
    store_tile<MR, NV>(p, r, t, acc_tile, cmask);
  }
}

/// The path's kernel entry point.
inline void gemm_kernel(const FloatKernelParams& p) noexcept {
  const bool narrow = p.n_valid <= 16;
  if (p.a_row_stride > 0) {
    if (narrow) run_tiles<1, true>(p);
    else run_tiles<2, true>(p);
  } else {
    if (narrow) run_tiles<1, false>(p);
    else run_tiles<2, false>(p);
  }
}

}  // namespace gemm::kernels::f32_avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
