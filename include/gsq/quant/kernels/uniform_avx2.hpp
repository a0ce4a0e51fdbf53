// gsq/quant/kernels/uniform_avx2.hpp — AVX2 uniform asymmetric fake quantization.
//
// The same operations as kernels/uniform_reference.hpp, 8 lanes at a time: subtract,
// divide, round to nearest even, clamp, one fused multiply-add (the reference uses
// std::fma), so the results are bit-identical.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/quant/kernels/uniform_reference.hpp"

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace quant::kernels::avx2 {

inline void uniform_fake_quant_rows(const UniformKernelParams& p, std::int64_t r0,
                                    std::int64_t r1) noexcept {
  const __m256 qmin = _mm256_set1_ps(p.qmin), qmax = _mm256_set1_ps(p.qmax);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    float* out = p.out + r * p.out_stride;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const __m256 s = _mm256_set1_ps(uniform_effective_step(p.steps[r * p.steps_stride + g]));
      const __m256 b = _mm256_set1_ps(p.offsets[r * p.offsets_stride + g]);
      const std::int64_t n = std::min<std::int64_t>(p.group, p.cols - c0);
      for (std::int64_t k = 0; k < n; k += 8) {
        const int valid = static_cast<int>(std::min<std::int64_t>(8, n - k));
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), iota);
        const __m256 x =
            valid == 8 ? _mm256_loadu_ps(w + c0 + k) : _mm256_maskload_ps(w + c0 + k, mask);
        const __m256 v = _mm256_div_ps(_mm256_sub_ps(x, b), s);
        __m256 q = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_min_ps(_mm256_max_ps(q, qmin), qmax);
        const __m256 y = _mm256_fmadd_ps(q, s, b);
        if (valid == 8)
          _mm256_storeu_ps(out + c0 + k, y);
        else
          _mm256_maskstore_ps(out + c0 + k, mask, y);
      }
    }
  }
}

}  // namespace quant::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
