// gsq/nn/uniform_quant.hpp — the uniform asymmetric quantizer of L4Q with LSQ+ gradients.
//
// DESIGN.md "Uniform asymmetric (L4Q)": groups of G along the input axis, a learnable
// step s > 0 and offset b per group,
//     v = (w − b)/s,   q = clamp(round(v), Qn, Qp),   ŵ = q·s + b,
//     Qn = −2^(n−1), Qp = 2^(n−1) − 1, round = half to even.
// LSQ+ (Bhalgat et al. 2020) gradients, with the straight-through estimator for round:
//     ∂ŵ/∂w = 1 if Qn ≤ v ≤ Qp, else 0        (in-range mask)
//     ∂ŵ/∂s = round(v) − v in range, Qn below, Qp above
//     ∂ŵ/∂b = 0 in range, 1 outside
// No extra gradient scale is applied (LSQ's 1/√(N·Qp)): AdamW normalises each element's
// step anyway, and the unscaled form is what finite differences can check.
//
// A step at or below kMinUniformStep is treated as kMinUniformStep so an optimizer can
// never divide by zero or flip the grid. The rows here are plain loops over one group
// (round-half-even via the 1.5·2^23 trick, exact for |v| ≤ 2^22, after clamping), so
// the compiler vectorises them; one non-inlined dequantization routine is shared by the
// forward and by the export so both produce identical bits.
//
// TODO(quant): format/uniform.hpp and quant/uniform.hpp (the quant engineer's uniform
// storage and quantizer) were not there when L4qLinear was written; switch to them when
// they land and keep this contract.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN

inline constexpr float kMinUniformStep = 1e-8f;

namespace detail {

struct UniformGrid {
  int bits = 4;
  float qmin = -8.0f;  // Qn
  float qmax = 7.0f;   // Qp

  static UniformGrid of(int bits) {
    GSQ_CHECK(bits >= 2 && bits <= 8, ErrorCode::kInvalidArgument,
              "uniform quantizer: bits must be 2..8, got " + std::to_string(bits));
    return {bits, -static_cast<float>(1 << (bits - 1)), static_cast<float>((1 << (bits - 1)) - 1)};
  }
};

inline float effective_step(float s) noexcept { return std::max(s, kMinUniformStep); }

/// Round half to even for |v| <= 2^22 (here v is already clamped to the code range):
/// adding 1.5·2^23 leaves no fraction bits, so the FPU's round-to-nearest-even does the
/// rounding. Vectorises with plain SSE2, unlike nearbyint. (Not valid under
/// -ffast-math, which gsq does not support anyway: it breaks every exactness contract.)
inline float round_half_even_small(float v) noexcept {
  constexpr float kMagic = 12582912.0f;  // 1.5 · 2^23
  return (v + kMagic) - kMagic;
}

/// Codes of one group: q_i = clamp(round((w_i − b)/s), Qn, Qp), as floats.
inline void uniform_codes(const float* w, std::int64_t n, float s, float b, const UniformGrid& grid,
                          float* q) noexcept {
  const float step = effective_step(s);
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = std::clamp((w[i] - b) / step, grid.qmin, grid.qmax);
    q[i] = round_half_even_small(v);
  }
}

/// ŵ_i = q_i·s + b for one group (in place allowed). Shared by the forward and the
/// export, and kept out of line so both run the very same instructions.
GSQ_NOINLINE inline void uniform_dequantize(const float* q, std::int64_t n, float s, float b,
                                            float* out) noexcept {
  const float step = effective_step(s);
  for (std::int64_t i = 0; i < n; ++i) {
    const float scaled = q[i] * step;
    out[i] = scaled + b;
  }
}

/// LSQ+ backward of one group for upstream gradient g = ∂L/∂ŵ: writes the masked
/// ∂L/∂w into dw (in place over g allowed) and adds ∂L/∂s, ∂L/∂b (summed in index order).
inline void uniform_lsq_backward(const float* w, const float* g, std::int64_t n, float s, float b,
                                 const UniformGrid& grid, float* dw, float& ds,
                                 float& db) noexcept {
  const float step = effective_step(s);
  float sum_s = 0.0f, sum_b = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = (w[i] - b) / step;
    const float gi = g[i];
    if (v < grid.qmin) {
      sum_s += gi * grid.qmin;
      sum_b += gi;
      dw[i] = 0.0f;
    } else if (v > grid.qmax) {
      sum_s += gi * grid.qmax;
      sum_b += gi;
      dw[i] = 0.0f;
    } else {
      sum_s += gi * (round_half_even_small(v) - v);
      dw[i] = gi;
    }
  }
  // Below the step floor s has no effect on ŵ, so it gets no gradient.
  ds += s > kMinUniformStep ? sum_s : 0.0f;
  db += sum_b;
}

/// Min/max initialisation of one group: the grid spans [min w, max w] exactly
/// (s = (max − min)/(Qp − Qn), b = min − Qn·s); a constant group gets the smallest step
/// and its value as offset.
inline void uniform_init_minmax(const float* w, std::int64_t n, const UniformGrid& grid, float& s,
                                float& b) noexcept {
  float lo = w[0], hi = w[0];
  for (std::int64_t i = 1; i < n; ++i) {
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  s = std::max((hi - lo) / (grid.qmax - grid.qmin), kMinUniformStep);
  b = lo - grid.qmin * s;
}

}  // namespace detail
GSQ_NAMESPACE_END
