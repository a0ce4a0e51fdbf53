// gsq/nn/kernels/attention_avx2.hpp — AVX2 block products of fused attention (see
// attention_reference.hpp for their definition).
//
// FP32 only: a tile of up to 4 rows × 32 columns in 16 ymm accumulators, one vfmadd per
// term and lane in the reference's order (identical bits), masked column tails. AVX2 has
// no BF16 dot product; the dispatcher runs the reference BF16 kernels on this path.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/nn/kernels/attention_reference.hpp"

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace nn::kernels::avx2 {

inline __m256i tail_mask(std::int64_t n) noexcept {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int count = static_cast<int>(std::min<std::int64_t>(std::max<std::int64_t>(n, 0), 8));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
}

template <int R, int V>
inline void scores_f32_tile(const ScoresF32& p, std::int64_t i0, std::int64_t j0) noexcept {
  __m256i mask[V];
  for (int v = 0; v < V; ++v) mask[v] = tail_mask(p.n - j0 - 8 * v);
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  const float* a = p.a + i0 * p.lda;
  for (std::int64_t d = 0; d < p.k; ++d) {
    const float* b = p.bt + d * p.ldb + j0;
    __m256 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm256_maskload_ps(b + 8 * v, mask[v]);
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_set1_ps(a[r * p.lda + d]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  const __m256 scale = _mm256_set1_ps(p.scale);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm256_maskstore_ps(p.s + (i0 + r) * p.lds + j0 + 8 * v, mask[v],
                          _mm256_mul_ps(acc[r][v], scale));
}

template <int R, int V>
inline void accumulate_f32_tile(const AccumulateF32& p, std::int64_t r0, std::int64_t d0) noexcept {
  __m256i mask[V];
  for (int v = 0; v < V; ++v) mask[v] = tail_mask(p.width - d0 - 8 * v);
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = _mm256_maskload_ps(p.out + (r0 + r) * p.ldo + d0 + 8 * v, mask[v]);
  const float* c = p.c + r0 * p.cr;
  for (std::int64_t t = 0; t < p.terms; ++t) {
    const float* x = p.x + t * p.ldx + d0;
    __m256 xv[V];
    for (int v = 0; v < V; ++v) xv[v] = _mm256_maskload_ps(x + 8 * v, mask[v]);
    for (int r = 0; r < R; ++r) {
      const __m256 cv = _mm256_set1_ps(c[r * p.cr + t * p.ct]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(cv, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm256_maskstore_ps(p.out + (r0 + r) * p.ldo + d0 + 8 * v, mask[v], acc[r][v]);
}

/// Runs the tiles over rows in blocks of 4 and columns in blocks of 32 (the last ones
/// narrower); T<R><V> is the tile of R rows × V vectors.
template <class P, void (*T11)(const P&, std::int64_t, std::int64_t),
          void (*T12)(const P&, std::int64_t, std::int64_t),
          void (*T13)(const P&, std::int64_t, std::int64_t),
          void (*T14)(const P&, std::int64_t, std::int64_t),
          void (*T41)(const P&, std::int64_t, std::int64_t),
          void (*T42)(const P&, std::int64_t, std::int64_t),
          void (*T43)(const P&, std::int64_t, std::int64_t),
          void (*T44)(const P&, std::int64_t, std::int64_t)>
inline void for_tiles(const P& p, std::int64_t rows, std::int64_t cols) noexcept {
  for (std::int64_t j = 0; j < cols; j += 32) {
    const std::int64_t vecs = (std::min<std::int64_t>(32, cols - j) + 7) / 8;
    std::int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
      switch (vecs) {
        case 1: T41(p, i, j); break;
        case 2: T42(p, i, j); break;
        case 3: T43(p, i, j); break;
        default: T44(p, i, j); break;
      }
    }
    for (; i < rows; ++i) {
      switch (vecs) {
        case 1: T11(p, i, j); break;
        case 2: T12(p, i, j); break;
        case 3: T13(p, i, j); break;
        default: T14(p, i, j); break;
      }
    }
  }
}

inline void scores_f32(const ScoresF32& p) noexcept {
  for_tiles<ScoresF32, scores_f32_tile<1, 1>, scores_f32_tile<1, 2>, scores_f32_tile<1, 3>,
            scores_f32_tile<1, 4>, scores_f32_tile<4, 1>, scores_f32_tile<4, 2>,
            scores_f32_tile<4, 3>, scores_f32_tile<4, 4>>(p, p.m, p.n);
}
inline void accumulate_f32(const AccumulateF32& p) noexcept {
  for_tiles<AccumulateF32, accumulate_f32_tile<1, 1>, accumulate_f32_tile<1, 2>,
            accumulate_f32_tile<1, 3>, accumulate_f32_tile<1, 4>, accumulate_f32_tile<4, 1>,
            accumulate_f32_tile<4, 2>, accumulate_f32_tile<4, 3>, accumulate_f32_tile<4, 4>>(
      p, p.rows, p.width);
}

}  // namespace nn::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
