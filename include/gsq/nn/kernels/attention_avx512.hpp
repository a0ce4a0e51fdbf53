// gsq/nn/kernels/attention_avx512.hpp — AVX-512 block products of fused attention (see
// attention_reference.hpp for their definition).
//
// A tile of up to 4 rows × 64 columns stays in 16 zmm accumulators while the chain (d for
// scores, t for accumulate) streams past: one vfmadd (FP32) or one vdpbf16ps (one BF16
// pair) per term and lane, in the reference's order, so the bits are identical. Column
// tails are masked. The BF16 kernels need AVX512-BF16 on top of the AVX-512 path
// (`has_bf16`); the dispatcher falls back to the reference kernels without it.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gsq/core/target.hpp"
#include "gsq/nn/kernels/attention_reference.hpp"

#define GSQ_DETAIL_ATTR_AVX512_BF16 __attribute__((target(GSQ_TARGET_AVX512_STRING ",avx512bf16")))

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace nn::kernels::avx512 {

inline __mmask16 tail_mask(std::int64_t n) noexcept {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

template <int R, int V>
inline void scores_f32_tile(const ScoresF32& p, std::int64_t i0, std::int64_t j0) noexcept {
  __mmask16 mask[V];
  for (int v = 0; v < V; ++v) mask[v] = tail_mask(p.n - j0 - 16 * v);
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* a = p.a + i0 * p.lda;
  for (std::int64_t d = 0; d < p.k; ++d) {
    const float* b = p.bt + d * p.ldb + j0;
    __m512 bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_maskz_loadu_ps(mask[v], b + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * p.lda + d]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(p.scale);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm512_mask_storeu_ps(p.s + (i0 + r) * p.lds + j0 + 16 * v, mask[v],
                            _mm512_mul_ps(acc[r][v], scale));
}

template <int R, int V>
inline void accumulate_f32_tile(const AccumulateF32& p, std::int64_t r0, std::int64_t d0) noexcept {
  __mmask16 mask[V];
  for (int v = 0; v < V; ++v) mask[v] = tail_mask(p.width - d0 - 16 * v);
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = _mm512_maskz_loadu_ps(mask[v], p.out + (r0 + r) * p.ldo + d0 + 16 * v);
  const float* c = p.c + r0 * p.cr;
  for (std::int64_t t = 0; t < p.terms; ++t) {
    const float* x = p.x + t * p.ldx + d0;
    __m512 xv[V];
    for (int v = 0; v < V; ++v) xv[v] = _mm512_maskz_loadu_ps(mask[v], x + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 cv = _mm512_set1_ps(c[r * p.cr + t * p.ct]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(cv, xv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm512_mask_storeu_ps(p.out + (r0 + r) * p.ldo + d0 + 16 * v, mask[v], acc[r][v]);
}

/// Runs tile<R, V>(i, j) over rows [0, rows) in blocks of 4 and columns [0, cols) in
/// blocks of 64 (the last ones narrower).
template <template <int, int> class Tile, class P>
inline void for_tiles(const P& p, std::int64_t rows, std::int64_t cols) noexcept {
  for (std::int64_t j = 0; j < cols; j += 64) {
    const std::int64_t vecs = (std::min<std::int64_t>(64, cols - j) + 15) / 16;
    std::int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
      switch (vecs) {
        case 1: Tile<4, 1>::run(p, i, j); break;
        case 2: Tile<4, 2>::run(p, i, j); break;
        case 3: Tile<4, 3>::run(p, i, j); break;
        default: Tile<4, 4>::run(p, i, j); break;
      }
    }
    for (; i < rows; ++i) {
      switch (vecs) {
        case 1: Tile<1, 1>::run(p, i, j); break;
        case 2: Tile<1, 2>::run(p, i, j); break;
        case 3: Tile<1, 3>::run(p, i, j); break;
        default: Tile<1, 4>::run(p, i, j); break;
      }
    }
  }
}

template <int R, int V>
struct ScoresF32Tile {
  static void run(const ScoresF32& p, std::int64_t i, std::int64_t j) noexcept {
    scores_f32_tile<R, V>(p, i, j);
  }
};
template <int R, int V>
struct AccumulateF32Tile {
  static void run(const AccumulateF32& p, std::int64_t i, std::int64_t j) noexcept {
    accumulate_f32_tile<R, V>(p, i, j);
  }
};

inline void scores_f32(const ScoresF32& p) noexcept { for_tiles<ScoresF32Tile>(p, p.m, p.n); }
inline void accumulate_f32(const AccumulateF32& p) noexcept {
  for_tiles<AccumulateF32Tile>(p, p.rows, p.width);
}

// ---- BF16 (AVX512-BF16) -------------------------------------------------------------

inline std::int32_t load_pair(const std::uint16_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <int R, int V>
GSQ_DETAIL_ATTR_AVX512_BF16 inline void scores_bf16_tile(const ScoresBf16& p, std::int64_t i0,
                                                         std::int64_t j0) noexcept {
  __mmask16 mask[V];
  for (int v = 0; v < V; ++v) mask[v] = tail_mask(p.n - j0 - 16 * v);
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::int64_t t = 0; t < p.kp; ++t) {
    const std::uint16_t* b = p.bt + (t * p.ldb + j0) * 2;
    __m512i bv[V];
    for (int v = 0; v < V; ++v) bv[v] = _mm512_maskz_loadu_epi32(mask[v], b + 32 * v);
    for (int r = 0; r < R; ++r) {
      const __m512i av = _mm512_set1_epi32(load_pair(p.a + (i0 + r) * p.lda + 2 * t));
      for (int v = 0; v < V; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)av, (__m512bh)bv[v]);
    }
  }
  const __m512 scale = _mm512_set1_ps(p.scale);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm512_mask_storeu_ps(p.s + (i0 + r) * p.lds + j0 + 16 * v, mask[v],
                            _mm512_mul_ps(acc[r][v], scale));
}

template <int R, int V>
GSQ_DETAIL_ATTR_AVX512_BF16 inline void accumulate_bf16_tile(const AccumulateBf16& p,
                                                             std::int64_t r0,
                                                             std::int64_t d0) noexcept {
  __mmask16 mask[V];
  for (int v = 0; v < V; ++v) mask[v] = tail_mask(p.width - d0 - 16 * v);
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      acc[r][v] = _mm512_maskz_loadu_ps(mask[v], p.out + (r0 + r) * p.ldo + d0 + 16 * v);
  for (std::int64_t t = 0; t < p.tp; ++t) {
    const std::uint16_t* x = p.x + (t * p.ldx + d0) * 2;
    __m512i xv[V];
    for (int v = 0; v < V; ++v) xv[v] = _mm512_maskz_loadu_epi32(mask[v], x + 32 * v);
    for (int r = 0; r < R; ++r) {
      const __m512i cv = _mm512_set1_epi32(load_pair(p.c + (r0 + r) * p.cr + 2 * t));
      for (int v = 0; v < V; ++v)
        acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)cv, (__m512bh)xv[v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm512_mask_storeu_ps(p.out + (r0 + r) * p.ldo + d0 + 16 * v, mask[v], acc[r][v]);
}

template <int R, int V>
struct ScoresBf16Tile {
  GSQ_DETAIL_ATTR_AVX512_BF16 static void run(const ScoresBf16& p, std::int64_t i,
                                              std::int64_t j) noexcept {
    scores_bf16_tile<R, V>(p, i, j);
  }
};
template <int R, int V>
struct AccumulateBf16Tile {
  GSQ_DETAIL_ATTR_AVX512_BF16 static void run(const AccumulateBf16& p, std::int64_t i,
                                              std::int64_t j) noexcept {
    accumulate_bf16_tile<R, V>(p, i, j);
  }
};

GSQ_DETAIL_ATTR_AVX512_BF16 inline void scores_bf16(const ScoresBf16& p) noexcept {
  for_tiles<ScoresBf16Tile>(p, p.m, p.n);
}
GSQ_DETAIL_ATTR_AVX512_BF16 inline void accumulate_bf16(const AccumulateBf16& p) noexcept {
  for_tiles<AccumulateBf16Tile>(p, p.rows, p.width);
}

}  // namespace nn::kernels::avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#undef GSQ_DETAIL_ATTR_AVX512_BF16

#endif  // GSQ_HAVE_X86_SIMD
