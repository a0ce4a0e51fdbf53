// gsq/nn/kernels/lora_merge_avx2.hpp — AVX2 LoRA merge (see lora_merge_reference.hpp).
//
// 32 columns of a row in four ymm accumulators, one vfmadd per term in ascending j as
// the reference's std::fma chain, so the bits are identical; the column tail (< 8) runs
// the scalar chain, whose std::fma gives the same correctly rounded results.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/nn/kernels/lora_merge_reference.hpp"

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace nn::kernels::avx2 {

inline void merge_rows(const MergeParams& p) noexcept {
  // Column chunks outer, rows inner: a chunk of A (rank x 32 floats) is read from L2
  // once and then reused from L1 by every row.
  std::int64_t k = 0;
  for (; k + 32 <= p.cols; k += 32) {
    for (std::int64_t r = 0; r < p.rows; ++r) {
      float* w = p.w + r * p.w_stride + k;
      const float* coef = p.coef + r * p.coef_stride;
      __m256 acc0 = _mm256_loadu_ps(w), acc1 = _mm256_loadu_ps(w + 8);
      __m256 acc2 = _mm256_loadu_ps(w + 16), acc3 = _mm256_loadu_ps(w + 24);
      for (std::int64_t j = 0; j < p.rank; ++j) {
        const __m256 c = _mm256_set1_ps(coef[j]);
        const float* a = p.a + j * p.a_stride + k;
        acc0 = _mm256_fmadd_ps(c, _mm256_loadu_ps(a), acc0);
        acc1 = _mm256_fmadd_ps(c, _mm256_loadu_ps(a + 8), acc1);
        acc2 = _mm256_fmadd_ps(c, _mm256_loadu_ps(a + 16), acc2);
        acc3 = _mm256_fmadd_ps(c, _mm256_loadu_ps(a + 24), acc3);
      }
      _mm256_storeu_ps(w, acc0);
      _mm256_storeu_ps(w + 8, acc1);
      _mm256_storeu_ps(w + 16, acc2);
      _mm256_storeu_ps(w + 24, acc3);
    }
  }
  for (; k + 8 <= p.cols; k += 8)
    for (std::int64_t r = 0; r < p.rows; ++r) {
      float* w = p.w + r * p.w_stride + k;
      const float* coef = p.coef + r * p.coef_stride;
      __m256 acc = _mm256_loadu_ps(w);
      for (std::int64_t j = 0; j < p.rank; ++j)
        acc = _mm256_fmadd_ps(_mm256_set1_ps(coef[j]), _mm256_loadu_ps(p.a + j * p.a_stride + k),
                              acc);
      _mm256_storeu_ps(w, acc);
    }
  for (; k < p.cols; ++k)
    for (std::int64_t r = 0; r < p.rows; ++r) {
      float* w = p.w + r * p.w_stride + k;
      const float* coef = p.coef + r * p.coef_stride;
      float acc = *w;
      for (std::int64_t j = 0; j < p.rank; ++j) acc = std::fma(coef[j], p.a[j * p.a_stride + k], acc);
      *w = acc;
    }
}

}  // namespace nn::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
