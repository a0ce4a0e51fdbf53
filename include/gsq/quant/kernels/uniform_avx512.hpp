// gsq/quant/kernels/uniform_avx512.hpp — AVX-512 uniform asymmetric fake quantization.
//
// The same operations as kernels/uniform_reference.hpp, 16 lanes at a time: subtract,
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

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace quant::kernels::avx512 {

inline void uniform_fake_quant_rows(const UniformKernelParams& p, std::int64_t r0,
                                    std::int64_t r1) noexcept {
  const __m512 qmin = _mm512_set1_ps(p.qmin), qmax = _mm512_set1_ps(p.qmax);
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    float* out = p.out + r * p.out_stride;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const __m512 s = _mm512_set1_ps(uniform_effective_step(p.steps[r * p.steps_stride + g]));
      const __m512 b = _mm512_set1_ps(p.offsets[r * p.offsets_stride + g]);
      const std::int64_t n = std::min<std::int64_t>(p.group, p.cols - c0);
      for (std::int64_t k = 0; k < n; k += 16) {
        const __mmask16 mask = n - k >= 16 ? static_cast<__mmask16>(0xFFFF)
                                           : static_cast<__mmask16>((1u << (n - k)) - 1u);
        const __m512 x = _mm512_maskz_loadu_ps(mask, w + c0 + k);
        const __m512 v = _mm512_div_ps(_mm512_sub_ps(x, b), s);
        __m512 q = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(q, qmin), qmax);
        _mm512_mask_storeu_ps(out + c0 + k, mask, _mm512_fmadd_ps(q, s, b));
      }
    }
  }
}

}  // namespace quant::kernels::avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
