// gsq/nn/kernels/lora_merge_avx512.hpp — AVX-512 LoRA merge (see lora_merge_reference.hpp).
//
// 64 columns of a row stay in four zmm accumulators while the rank-many A rows stream
// past (one broadcast coefficient per A row): one vfmadd per term in ascending j, as the
// reference's std::fma chain, so the bits are identical. The column tail is masked.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/nn/kernels/lora_merge_reference.hpp"

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace nn::kernels::avx512 {

inline void merge_rows(const MergeParams& p) noexcept {
  // Column chunks outer, rows inner: a chunk of A (rank x 64 floats) is read from L2
  // once and then reused from L1 by every row.
  std::int64_t k = 0;
  for (; k + 64 <= p.cols; k += 64) {
    for (std::int64_t r = 0; r < p.rows; ++r) {
      float* w = p.w + r * p.w_stride + k;
      const float* coef = p.coef + r * p.coef_stride;
      __m512 acc0 = _mm512_loadu_ps(w), acc1 = _mm512_loadu_ps(w + 16);
      __m512 acc2 = _mm512_loadu_ps(w + 32), acc3 = _mm512_loadu_ps(w + 48);
      for (std::int64_t j = 0; j < p.rank; ++j) {
        const __m512 c = _mm512_set1_ps(coef[j]);
        const float* a = p.a + j * p.a_stride + k;
        acc0 = _mm512_fmadd_ps(c, _mm512_loadu_ps(a), acc0);
        acc1 = _mm512_fmadd_ps(c, _mm512_loadu_ps(a + 16), acc1);
        acc2 = _mm512_fmadd_ps(c, _mm512_loadu_ps(a + 32), acc2);
        acc3 = _mm512_fmadd_ps(c, _mm512_loadu_ps(a + 48), acc3);
      }
      _mm512_storeu_ps(w, acc0);
      _mm512_storeu_ps(w + 16, acc1);
      _mm512_storeu_ps(w + 32, acc2);
      _mm512_storeu_ps(w + 48, acc3);
    }
  }
  for (; k < p.cols; k += 16) {
    const __mmask16 mask = p.cols - k >= 16 ? static_cast<__mmask16>(0xFFFF)
                                            : static_cast<__mmask16>((1u << (p.cols - k)) - 1u);
    for (std::int64_t r = 0; r < p.rows; ++r) {
      float* w = p.w + r * p.w_stride + k;
      const float* coef = p.coef + r * p.coef_stride;
      __m512 acc = _mm512_maskz_loadu_ps(mask, w);
      for (std::int64_t j = 0; j < p.rank; ++j)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(coef[j]),
                              _mm512_maskz_loadu_ps(mask, p.a + j * p.a_stride + k), acc);
      _mm512_mask_storeu_ps(w, mask, acc);
    }
  }
}

}  // namespace nn::kernels::avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
