// gsq/gemm/kernels/f32_avx2.hpp — the AVX2 FMA FP32 GEMM kernel.
//
// A tile of 6 rows × 16 columns (12 ymm accumulators; 8 columns for N <= 8) stays in
// registers for a whole B block: per k step two B loads, one broadcast per A row, one
// FMA per accumulator. Each C element is one FMA chain in ascending k from +0, the chain
// of the scalar reference, so results are bit-identical to it and to AVX-512. A is read
// packed ([k][6]) or, for thin N, in place.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>

#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/gemm/float_pack.hpp"

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::f32_avx2 {

inline constexpr int kMr = 6;
inline constexpr int kNrWide = 16;
inline constexpr int kNrNarrow = 8;

/// Lane mask (all bits set in the first `valid` lanes) for maskload/maskstore.
GSQ_ALWAYS_INLINE __m256i column_mask(int valid) noexcept {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lanes);
}

template <int NV, bool kDirect>
inline void run_tiles(const FloatKernelParams& p) noexcept {
  constexpr int MR = kMr;
  const std::int64_t rs = kDirect ? p.a_row_stride : 1;
  const std::int64_t ks = kDirect ? p.a_step_stride : MR;
  __m256i cmask[NV];
  bool full[NV];
  for (int j = 0; j < NV; ++j) {
    cmask[j] = column_mask(p.n_valid - 8 * j);
    full[j] = p.n_valid - 8 * j >= 8;
  }
  const __m256 alpha = _mm256_set1_ps(p.alpha);
  for (std::int64_t t = 0; t < p.tiles; ++t) {
    const float* a = static_cast<const float*>(p.a) + t * p.a_tile_stride;
    const float* b = static_cast<const float*>(p.b);
    float* acc_tile = p.acc != nullptr ? p.acc + t * MR * p.nr : nullptr;
    __m256 r[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j)
        r[i][j] = p.first ? _mm256_setzero_ps() : _mm256_load_ps(acc_tile + i * p.nr + j * 8);
    for (std::int64_t s = 0; s < p.steps; ++s) {
      __m256 bv[NV];
      for (int j = 0; j < NV; ++j) bv[j] = _mm256_loadu_ps(b + j * 8);
      for (int i = 0; i < MR; ++i) {
        const __m256 av = _mm256_broadcast_ss(a + i * rs);
        for (int j = 0; j < NV; ++j) r[i][j] = _mm256_fmadd_ps(av, bv[j], r[i][j]);
      }
      b += p.nr;
      a += ks;
    }
    if (!p.last) {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) _mm256_store_ps(acc_tile + i * p.nr + j * 8, r[i][j]);
      continue;
    }
    for (int i = 0; i < MR; ++i) {
      if (t * MR + i >= p.m_valid) break;
      float* c = p.c + (t * MR + i) * p.ldc;
      for (int j = 0; j < NV; ++j) {
        if (p.n_valid <= 8 * j) continue;
        float* cj = c + j * 8;
        if (full[j]) {
          const __m256 out = p.accumulate ? _mm256_fmadd_ps(alpha, r[i][j], _mm256_loadu_ps(cj))
                                          : _mm256_mul_ps(alpha, r[i][j]);
          _mm256_storeu_ps(cj, out);
        } else {
          const __m256 out = p.accumulate
                                 ? _mm256_fmadd_ps(alpha, r[i][j], _mm256_maskload_ps(cj, cmask[j]))
                                 : _mm256_mul_ps(alpha, r[i][j]);
          _mm256_maskstore_ps(cj, cmask[j], out);
        }
      }
    }
  }
}

/// The path's kernel entry point.
inline void gemm_kernel(const FloatKernelParams& p) noexcept {
  const bool narrow = p.n_valid <= 8;
  if (p.a_row_stride > 0) {
    if (narrow) run_tiles<1, true>(p);
    else run_tiles<2, true>(p);
  } else {
    if (narrow) run_tiles<1, false>(p);
    else run_tiles<2, false>(p);
  }
}

}  // namespace gemm::kernels::f32_avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
