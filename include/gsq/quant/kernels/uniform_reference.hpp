// gsq/quant/kernels/uniform_reference.hpp — the scalar uniform asymmetric (L4Q) kernels
// and the flat parameters every path takes (quant/uniform.hpp documents the math).
//
// One element: s' = max(s, kUniformMinStep), v = (w − b)/s', q = clamp(nearbyint(v), Qn,
// Qp), ŵ = fma(q, s', b). The SIMD kernels (uniform_avx2.hpp, uniform_avx512.hpp) run
// the same operations — subtract, divide, round to nearest even, clamp, fused
// multiply-add — so they give the same bits.
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

namespace reference {

/// True if all n values are finite; accumulates a flag rather than branching, so the
/// compiler vectorises it.
inline bool row_is_finite(const float* x, std::int64_t n) noexcept {
  bool ok = true;
  for (std::int64_t i = 0; i < n; ++i) ok &= std::isfinite(x[i]);
  return ok;
}

/// The code of one value as a float: clamp(nearbyint((w − b)/s), Qn, Qp).
inline float uniform_code(float w, float s, float b, float qmin, float qmax) noexcept {
  return std::clamp(std::nearbyint((w - b) / s), qmin, qmax);
}

/// Fake-quantizes rows [r0, r1): out = fma(code, s', b).
inline void uniform_fake_quant_rows(const UniformKernelParams& p, std::int64_t r0,
                                    std::int64_t r1) noexcept {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* w = p.w + r * p.w_stride;
    float* out = p.out + r * p.out_stride;
    for (std::int64_t c0 = 0, g = 0; c0 < p.cols; c0 += p.group, ++g) {
      const float s = uniform_effective_step(p.steps[r * p.steps_stride + g]);
      const float b = p.offsets[r * p.offsets_stride + g];
      const std::int64_t c1 = std::min<std::int64_t>(c0 + p.group, p.cols);
      for (std::int64_t c = c0; c < c1; ++c)
        out[c] = std::fma(uniform_code(w[c], s, b, p.qmin, p.qmax), s, b);
    }
  }
}

}  // namespace reference
}  // namespace quant::kernels
GSQ_NAMESPACE_END
