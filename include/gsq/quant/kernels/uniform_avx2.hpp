// gsq/quant/kernels/uniform_avx2.hpp — AVX2 uniform asymmetric fake quantization.
//
// The same operations as kernels/uniform_reference.hpp, 8 lanes at a time: subtract,
// divide, round to nearest even, clamp, one fused multiply-add (the reference uses
// std::fma), so the results are bit-identical. The LSQ+ backward keeps the reference's
// 16 float lane sums in two registers each (lanes 0–7 and 8–15: element k of a group in
// lane k mod 16), blends in only the lanes the reference adds to, and combines the lanes
// with the reference's own tree, so the step and offset gradients are bit-identical too.
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

/// True if all n values are finite.
inline bool row_is_finite(const float* x, std::int64_t n) noexcept {
  const __m256 inf = _mm256_set1_ps(__builtin_huge_valf());
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  std::int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    finite = _mm256_and_ps(
        finite, _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)), inf, _CMP_LT_OQ));
  bool ok = _mm256_movemask_ps(finite) == 0xFF;
  for (; k < n; ++k) ok &= __builtin_isfinite(x[k]);
  return ok;
}

/// Fake-quantizes rows [r0, r1); see reference::uniform_fake_quant_rows (same return).
inline std::int64_t uniform_fake_quant_rows(const UniformKernelParams& p, std::int64_t r0,
                                            std::int64_t r1) noexcept {
  const __m256 qmin = _mm256_set1_ps(p.qmin), qmax = _mm256_set1_ps(p.qmax);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    float* out = p.out + r * p.out_stride;
    if (!row_is_finite(w, p.cols)) return r;
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
  return -1;
}

/// Eight elements of one group for uniform_backward_rows: `valid` lanes (0..8) from
/// column pointer offsets; updates the lane sums and the non-finite flag.
inline void uniform_backward_8(const float* w, const float* go, float* gw, int valid, __m256 s,
                               __m256 b, __m256 qmin, __m256 qmax, __m256& acc_s, __m256& acc_b,
                               __m256& bad) noexcept {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i imask = _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), iota);
  const __m256 mask = _mm256_castsi256_ps(imask);
  const __m256 x = valid == 8 ? _mm256_loadu_ps(w) : _mm256_maskload_ps(w, imask);
  const __m256 gi = valid == 8 ? _mm256_loadu_ps(go) : _mm256_maskload_ps(go, imask);
  const __m256 abs_x = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
  const __m256 finite = _mm256_cmp_ps(abs_x, _mm256_set1_ps(__builtin_huge_valf()), _CMP_LT_OQ);
  bad = _mm256_or_ps(bad, _mm256_andnot_ps(finite, mask));
  const __m256 v = _mm256_div_ps(_mm256_sub_ps(x, b), s);
  const __m256 vc = _mm256_min_ps(_mm256_max_ps(v, qmin), qmax);
  const __m256 clamped = _mm256_cmp_ps(v, vc, _CMP_NEQ_UQ);
  const __m256 q = _mm256_round_ps(vc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 d = _mm256_blendv_ps(_mm256_sub_ps(q, vc), vc, clamped);
  acc_s = _mm256_blendv_ps(acc_s, _mm256_fmadd_ps(gi, d, acc_s), mask);
  acc_b = _mm256_blendv_ps(acc_b, _mm256_add_ps(acc_b, gi), _mm256_and_ps(clamped, mask));
  const __m256 y = _mm256_andnot_ps(clamped, gi);
  if (valid == 8)
    _mm256_storeu_ps(gw, y);
  else
    _mm256_maskstore_ps(gw, imask, y);
}

/// reference::uniform_lane_tree_sum in registers over lanes 0–7 (lo) and 8–15 (hi):
/// lane j += lane j + h for h = 8, 4, 2, 1 (float addition commutes, so the operand order
/// within each add does not matter).
inline float uniform_lane_tree_sum(__m256 lo, __m256 hi) noexcept {
  const __m256 h8 = _mm256_add_ps(lo, hi);
  const __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
  const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
}

/// LSQ+ backward over rows [r0, r1); see reference::uniform_backward_rows.
inline bool uniform_backward_rows(const UniformBackwardParams& p, std::int64_t r0,
                                  std::int64_t r1) noexcept {
  const __m256 qmin = _mm256_set1_ps(p.qmin), qmax = _mm256_set1_ps(p.qmax);
  __m256 bad = _mm256_setzero_ps();
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    const float* go = p.grad_out + r * p.grad_out_stride;
    float* gw = p.grad_w + r * p.grad_w_stride;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const __m256 s = _mm256_set1_ps(uniform_effective_step(p.steps[r * p.steps_stride + g]));
      const __m256 b = _mm256_set1_ps(p.offsets[r * p.offsets_stride + g]);
      const std::int64_t n = std::min<std::int64_t>(p.group, p.cols - c0);
      __m256 s_lo = _mm256_setzero_ps(), s_hi = _mm256_setzero_ps();
      __m256 b_lo = _mm256_setzero_ps(), b_hi = _mm256_setzero_ps();
      for (std::int64_t k = 0; k < n; k += 16) {
        const std::int64_t c = c0 + k;
        uniform_backward_8(w + c, go + c, gw + c,
                           static_cast<int>(std::min<std::int64_t>(8, n - k)), s, b, qmin, qmax,
                           s_lo, b_lo, bad);
        if (n - k > 8)
          uniform_backward_8(w + c + 8, go + c + 8, gw + c + 8,
                             static_cast<int>(std::min<std::int64_t>(8, n - k - 8)), s, b, qmin,
                             qmax, s_hi, b_hi, bad);
      }
      uniform_finish_group(p, r, g, n, uniform_lane_tree_sum(s_lo, s_hi),
                           uniform_lane_tree_sum(b_lo, b_hi));
    }
  }
  return _mm256_testz_ps(bad, bad) != 0;
}

}  // namespace quant::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
