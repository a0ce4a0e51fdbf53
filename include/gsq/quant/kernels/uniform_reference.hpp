// gsq/quant/kernels/uniform_reference.hpp — the scalar uniform asymmetric (L4Q) kernels
// and the flat parameters every path takes (quant/uniform.hpp documents the math).
//
// One element: s' = max(s, kUniformMinStep), v = (w − b)/s', q = clamp(round(v), Qn, Qp)
// (round half to even), ŵ = fma(q, s', b). The SIMD kernels (uniform_avx2.hpp,
// uniform_avx512.hpp) run the same operations — subtract, divide, round to nearest even,
// clamp, fused multiply-add — so they give the same bits.
//
// Rounding without libm: the code is clamped first and then rounded by adding and
// subtracting 1.5·2^23 (exact round-half-to-even for |x| < 2^22 in the default rounding
// mode; |Qn|, Qp <= 128). Clamping to the integers Qn, Qp commutes with rounding, so this
// equals clamp(nearbyint(v)) for every non-NaN v, and matches the SIMD round instructions.
//
// LSQ+ backward (uniform_backward_rows), per element with upstream gradient g, and
// v_c = clamp(v, Qn, Qp), clamped = (v != v_c):
//     ∂L/∂w = clamped ? 0 : g
//     step term   g·d with d = clamped ? v_c : round(v_c) − v_c    (fma into a lane sum)
//     offset term g if clamped
// Reduction order (defined so 8- and 16-lane SIMD reproduce it bit for bit): element k of
// a group (k = 0 .. n−1, counted from the group's first column) goes to float lane
// k mod 16; lane sums start at +0 and take their elements in increasing k, the step sum
// as fma(g, d, lane), the offset sum as lane + g (clamped elements only). The 16 lanes
// are then combined by the fixed tree lane[j] += lane[j + h] for h = 8, 4, 2, 1
// (uniform_lane_tree_sum); lane 0 is the group's sum.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN

/// Steps at or below this are used as this (an optimizer may push a step through zero;
/// the grid never flips or divides by zero, and such a step gets no gradient).
inline constexpr float kUniformMinStep = 1e-8f;

namespace quant::kernels {

struct UniformKernelParams {
  const float* w = nullptr;  // [rows, cols], row stride w_stride
  std::int64_t w_stride = 0;
  float* out = nullptr;  // ŵ, may equal w
  std::int64_t out_stride = 0;
  const float* steps = nullptr;  // [rows, groups]
  std::int64_t steps_stride = 0;
  const float* offsets = nullptr;
  std::int64_t offsets_stride = 0;
  std::int64_t cols = 0;
  int group = 128;
  float qmin = -8.0f, qmax = 7.0f;
};

inline float uniform_effective_step(float s) noexcept { return std::max(s, kUniformMinStep); }

/// Lanes of the per-group gradient sums (see the reduction order above).
inline constexpr int kUniformSumLanes = 16;

struct UniformBackwardParams {
  const float* w = nullptr;  // [rows, cols]: the weight that was quantized
  std::int64_t w_stride = 0;
  const float* grad_out = nullptr;  // ∂L/∂ŵ
  std::int64_t grad_out_stride = 0;
  float* grad_w = nullptr;  // ∂L/∂w, written (may equal grad_out)
  std::int64_t grad_w_stride = 0;
  const float* steps = nullptr;  // [rows, groups]
  std::int64_t steps_stride = 0;
  const float* offsets = nullptr;
  std::int64_t offsets_stride = 0;
  float* grad_steps = nullptr;  // added to
  std::int64_t grad_steps_stride = 0;
  float* grad_offsets = nullptr;  // added to
  std::int64_t grad_offsets_stride = 0;
  std::int64_t cols = 0;
  int group = 128;
  float qmin = -8.0f, qmax = 7.0f;
  bool lsq_grad_scale = false;
};

/// Combines kUniformSumLanes partial sums in the fixed tree of the reduction order
/// (overwrites `lanes`).
inline float uniform_lane_tree_sum(float* lanes) noexcept {
  for (int h = kUniformSumLanes / 2; h >= 1; h /= 2)
    for (int j = 0; j < h; ++j) lanes[j] += lanes[j + h];
  return lanes[0];
}

/// Adds one group's step and offset gradient sums (n elements) to the outputs, with the
/// optional LSQ gradient scale 1/√(n·Qp) (rounded to float once per group). Shared by
/// every ISA path.
inline void uniform_finish_group(const UniformBackwardParams& p, std::int64_t r, std::int64_t g,
                                 std::int64_t n, float sum_s, float sum_b) noexcept {
  if (p.lsq_grad_scale) {
    const float scale =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(n) * static_cast<double>(p.qmax)));
    sum_s *= scale;
    sum_b *= scale;
  }
  if (p.steps[r * p.steps_stride + g] > kUniformMinStep)
    p.grad_steps[r * p.grad_steps_stride + g] += sum_s;
  p.grad_offsets[r * p.grad_offsets_stride + g] += sum_b;
}

namespace reference {

/// True if all n values are finite; accumulates a flag rather than branching, so the
/// compiler vectorises it.
inline bool row_is_finite(const float* x, std::int64_t n) noexcept {
  bool ok = true;
  for (std::int64_t i = 0; i < n; ++i) ok &= std::isfinite(x[i]);
  return ok;
}

/// round-half-to-even(clamp(v, Qn, Qp)) for integers |Qn|, |Qp| < 2^22, without a libm
/// call. The compiler may not fold (x + M) − M: gsq builds without -ffast-math.
inline float uniform_round_clamped(float v, float qmin, float qmax) noexcept {
  constexpr float kRoundMagic = 12582912.0f;  // 1.5·2^23
  const float vc = std::min(std::max(v, qmin), qmax);
  return (vc + kRoundMagic) - kRoundMagic;
}

/// The code of one value as a float: clamp(round((w − b)/s), Qn, Qp).
inline float uniform_code(float w, float s, float b, float qmin, float qmax) noexcept {
  return uniform_round_clamped((w - b) / s, qmin, qmax);
}

/// Fake-quantizes rows [r0, r1): out = fma(code, s', b). Each row's weights are checked
/// first (the row is then hot for the pass): returns the first row holding a non-finite
/// weight — rows before it written, it and later rows untouched, so the caller can
/// report the position even in place — or −1.
inline std::int64_t uniform_fake_quant_rows(const UniformKernelParams& p, std::int64_t r0,
                                            std::int64_t r1) noexcept {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    float* out = p.out + r * p.out_stride;
    if (!row_is_finite(w, p.cols)) return r;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const float s = uniform_effective_step(p.steps[r * p.steps_stride + g]);
      const float b = p.offsets[r * p.offsets_stride + g];
      const std::int64_t c1 = std::min<std::int64_t>(c0 + p.group, p.cols);
      for (std::int64_t c = c0; c < c1; ++c)
        out[c] = std::fma(uniform_code(w[c], s, b, p.qmin, p.qmax), s, b);
    }
  }
  return -1;
}

/// LSQ+ backward over rows [r0, r1). Returns false if a weight was not finite (the
/// outputs are then unspecified; the caller reports the position).
inline bool uniform_backward_rows(const UniformBackwardParams& p, std::int64_t r0,
                                  std::int64_t r1) noexcept {
  bool finite = true;
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    const float* go = p.grad_out + r * p.grad_out_stride;
    float* gw = p.grad_w + r * p.grad_w_stride;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const float s = uniform_effective_step(p.steps[r * p.steps_stride + g]);
      const float b = p.offsets[r * p.offsets_stride + g];
      const std::int64_t n = std::min<std::int64_t>(p.group, p.cols - c0);
      float lane_s[kUniformSumLanes] = {}, lane_b[kUniformSumLanes] = {};
      for (std::int64_t k = 0; k < n; ++k) {
        const float x = w[c0 + k];
        finite &= std::isfinite(x);
        const float v = (x - b) / s;
        const float vc = std::min(std::max(v, p.qmin), p.qmax);
        const bool clamped = v != vc;
        const float d = clamped ? vc : uniform_round_clamped(vc, p.qmin, p.qmax) - vc;
        const float gi = go[c0 + k];
        const int j = static_cast<int>(k % kUniformSumLanes);
        lane_s[j] = std::fma(gi, d, lane_s[j]);
        if (clamped) lane_b[j] += gi;
        gw[c0 + k] = clamped ? 0.0f : gi;
      }
      uniform_finish_group(p, r, g, n, uniform_lane_tree_sum(lane_s),
                           uniform_lane_tree_sum(lane_b));
    }
  }
  return finite;
}

}  // namespace reference
}  // namespace quant::kernels
GSQ_NAMESPACE_END
