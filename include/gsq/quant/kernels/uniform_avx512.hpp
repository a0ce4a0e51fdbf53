// gsq/quant/kernels/uniform_avx512.hpp — AVX-512 uniform asymmetric fake quantization.
//
// The same operations as kernels/uniform_reference.hpp, 16 lanes at a time: subtract,
// divide, round to nearest even, clamp, one fused multiply-add (the reference uses
// std::fma), so the results are bit-identical. The LSQ+ backward keeps the reference's
// 16 float lane sums in one register each (element k of a group in lane k mod 16), adds
// masked lanes only where the reference adds, and combines the lanes with the
// reference's own tree, so the step and offset gradients are bit-identical too.
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

/// True if all n values are finite.
inline bool row_is_finite(const float* x, std::int64_t n) noexcept {
  const __m512 inf = _mm512_set1_ps(__builtin_huge_valf());
  __mmask16 bad = 0;
  std::int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    bad |= static_cast<__mmask16>(
        ~_mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + k)), inf, _CMP_LT_OQ));
  if (k < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - k)) - 1u);
    bad |= static_cast<__mmask16>(
        mask & ~_mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_maskz_loadu_ps(mask, x + k)), inf,
                                   _CMP_LT_OQ));
  }
  return bad == 0;
}

/// Fake-quantizes rows [r0, r1); see reference::uniform_fake_quant_rows (same return).
inline std::int64_t uniform_fake_quant_rows(const UniformKernelParams& p, std::int64_t r0,
                                            std::int64_t r1) noexcept {
  const __m512 qmin = _mm512_set1_ps(p.qmin), qmax = _mm512_set1_ps(p.qmax);
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    float* out = p.out + r * p.out_stride;
    if (!row_is_finite(w, p.cols)) return r;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const __m512 s = _mm512_set1_ps(uniform_effective_step(p.steps[r * p.steps_stride + g]));
      const __m512 b = _mm512_set1_ps(p.offsets[r * p.offsets_stride + g]);
      const std::int64_t n = std::min<std::int64_t>(p.group, p.cols - c0);
      for (std::int64_t k = 0; k < n; k += 16) {
        // Full vectors unmasked (masked stores are slow on some CPUs), the tail masked.
        const bool full = n - k >= 16;
        const __mmask16 mask = full ? static_cast<__mmask16>(0xFFFF)
                                    : static_cast<__mmask16>((1u << (n - k)) - 1u);
        const __m512 x =
            full ? _mm512_loadu_ps(w + c0 + k) : _mm512_maskz_loadu_ps(mask, w + c0 + k);
        const __m512 v = _mm512_div_ps(_mm512_sub_ps(x, b), s);
        __m512 q = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(q, qmin), qmax);
        const __m512 y = _mm512_fmadd_ps(q, s, b);
        if (full)
          _mm512_storeu_ps(out + c0 + k, y);
        else
          _mm512_mask_storeu_ps(out + c0 + k, mask, y);
      }
    }
  }
  return -1;
}

/// reference::uniform_lane_tree_sum in registers: lane j += lane j + h for h = 8, 4, 2, 1
/// (float addition commutes, so the operand order within each add does not matter).
inline float uniform_lane_tree_sum(__m512 x) noexcept {
  const __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
  const __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
  const __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
}

/// LSQ+ backward over rows [r0, r1); see reference::uniform_backward_rows.
inline bool uniform_backward_rows(const UniformBackwardParams& p, std::int64_t r0,
                                  std::int64_t r1) noexcept {
  const __m512 qmin = _mm512_set1_ps(p.qmin), qmax = _mm512_set1_ps(p.qmax);
  const __m512 inf = _mm512_set1_ps(__builtin_huge_valf());
  __mmask16 bad = 0;
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    const float* go = p.grad_out + r * p.grad_out_stride;
    float* gw = p.grad_w + r * p.grad_w_stride;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const __m512 s = _mm512_set1_ps(uniform_effective_step(p.steps[r * p.steps_stride + g]));
      const __m512 b = _mm512_set1_ps(p.offsets[r * p.offsets_stride + g]);
      const std::int64_t n = std::min<std::int64_t>(p.group, p.cols - c0);
      __m512 acc_s = _mm512_setzero_ps(), acc_b = _mm512_setzero_ps();
      std::int64_t k = 0;
      for (; k + 16 <= n; k += 16) {  // full vectors: no masks on loads, sums and stores
        const __m512 x = _mm512_loadu_ps(w + c0 + k);
        const __m512 gi = _mm512_loadu_ps(go + c0 + k);
        bad |= static_cast<__mmask16>(~_mm512_cmp_ps_mask(_mm512_abs_ps(x), inf, _CMP_LT_OQ));
        const __m512 v = _mm512_div_ps(_mm512_sub_ps(x, b), s);
        const __m512 vc = _mm512_min_ps(_mm512_max_ps(v, qmin), qmax);
        const __mmask16 clamped = _mm512_cmp_ps_mask(v, vc, _CMP_NEQ_UQ);
        const __m512 q = _mm512_roundscale_ps(vc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512 d = _mm512_mask_blend_ps(clamped, _mm512_sub_ps(q, vc), vc);
        acc_s = _mm512_fmadd_ps(gi, d, acc_s);
        acc_b = _mm512_mask_add_ps(acc_b, clamped, acc_b, gi);
        _mm512_storeu_ps(gw + c0 + k, _mm512_maskz_mov_ps(static_cast<__mmask16>(~clamped), gi));
      }
      if (k < n) {  // the group's tail: masked lanes keep their sums untouched
        const __mmask16 mask = static_cast<__mmask16>((1u << (n - k)) - 1u);
        const __m512 x = _mm512_maskz_loadu_ps(mask, w + c0 + k);
        const __m512 gi = _mm512_maskz_loadu_ps(mask, go + c0 + k);
        bad |= static_cast<__mmask16>(
            mask & ~_mm512_cmp_ps_mask(_mm512_abs_ps(x), inf, _CMP_LT_OQ));
        const __m512 v = _mm512_div_ps(_mm512_sub_ps(x, b), s);
        const __m512 vc = _mm512_min_ps(_mm512_max_ps(v, qmin), qmax);
        const __mmask16 clamped = _mm512_cmp_ps_mask(v, vc, _CMP_NEQ_UQ);
        const __m512 q = _mm512_roundscale_ps(vc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m512 d = _mm512_mask_blend_ps(clamped, _mm512_sub_ps(q, vc), vc);
        acc_s = _mm512_mask3_fmadd_ps(gi, d, acc_s, mask);
        acc_b = _mm512_mask_add_ps(acc_b, static_cast<__mmask16>(clamped & mask), acc_b, gi);
        _mm512_mask_storeu_ps(gw + c0 + k, mask,
                              _mm512_maskz_mov_ps(static_cast<__mmask16>(~clamped), gi));
      }
      uniform_finish_group(p, r, g, n, uniform_lane_tree_sum(acc_s), uniform_lane_tree_sum(acc_b));
    }
  }
  return bad == 0;
}

}  // namespace quant::kernels::avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
