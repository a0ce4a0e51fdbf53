// gsq/quant/gse.hpp — fp32 ⇄ GSE-INT quantization (DESIGN.md "GSE-INT⟨b, G, E⟩").
//
// Encoding of one group: amax = max|x_i|; amax == 0 → e = e_min, all m_i = 0; otherwise
// e = floor(log2 amax) − (b − 2) clamped to [e_min, e_max], m_i = round(x_i · 2^−e)
// (half-to-even, or stochastic: floor(x_i · 2^−e + u_i) with u_i from Philox keyed by
// (seed, stream, element index)), saturated to ±(2^(b−1) − 1).
//
// `transpose` chooses the grouping axis of a [R, C] source without a float transpose:
//   transpose = false → GseMatrix [R, C], groups along C (source rows are k-contiguous);
//   transpose = true  → GseMatrix [C, R], groups along R (source columns become rows).
// The element index used for stochastic rounding is always the source index r·C + c, so
// both orientations of one tensor draw the same random numbers.
//
// TODO(quant): this is the scalar reference only; AVX2/AVX-512 paths go in
// quant/kernels/ and must be bit-identical.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"

GSQ_NAMESPACE_BEGIN

enum class Rounding { kNearestEven, kStochastic };

struct QuantizeOptions {
  Rounding rounding = Rounding::kNearestEven;
  std::uint64_t seed = 0;    // stochastic rounding: the run's seed
  std::uint64_t stream = 0;  // stochastic rounding: which tensor (so tensors draw differently)
  const char* name = "tensor";  // named in errors (e.g. non-finite input)
};

namespace detail {

[[noreturn]] GSQ_NOINLINE GSQ_COLD inline void throw_non_finite(const char* name, std::int64_t r,
                                                                std::int64_t c, float v) {
  throw_error(ErrorCode::kNonFinite, std::string("tensor '") + name + "' holds " +
                                         (std::isnan(v) ? "NaN" : "Inf") + " at row " +
                                         std::to_string(r) + ", column " + std::to_string(c) +
                                         "; GSE-INT quantization needs finite input");
}

/// The shared exponent of a group with maximum magnitude `amax`.
inline int gse_group_exponent(float amax, const GseSpec& spec) noexcept {
  if (amax == 0.0f) return spec.exp_min();
  const int e = std::ilogb(amax) - (spec.bits - 2);
  return std::clamp(e, spec.exp_min(), spec.exp_max());
}

}  // namespace detail

/// Quantizes `src` into `out` (already shaped: [R, C] or, transposed, [C, R]).
inline void quantize_gse_reference(MatrixView<const float> src, bool transpose, GseMatrix& out,
                                   const QuantizeOptions& options = {}) {
  const std::int64_t rows = transpose ? src.cols() : src.rows();
  const std::int64_t cols = transpose ? src.rows() : src.cols();
  GSQ_CHECK(out.rows() == rows && out.cols() == cols, ErrorCode::kShapeMismatch,
            std::string("quantize_gse: output for '") + options.name + "' is " +
                std::to_string(out.rows()) + "x" + std::to_string(out.cols()) + ", expected " +
                std::to_string(rows) + "x" + std::to_string(cols));
  const GseSpec spec = out.spec();
  const int qmax = spec.max_mantissa();
  auto at = [&](std::int64_t r, std::int64_t c) { return transpose ? src(c, r) : src(r, c); };
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t g = 0; g < out.groups_per_row(); ++g) {
      const std::int64_t c0 = g * spec.group;
      const std::int64_t c1 = std::min(c0 + spec.group, cols);
      float amax = 0.0f;
      for (std::int64_t c = c0; c < c1; ++c) {
        const float v = at(r, c);
        if (!std::isfinite(v)) {
          if (transpose) detail::throw_non_finite(options.name, c, r, v);
          detail::throw_non_finite(options.name, r, c, v);
        }
        amax = std::max(amax, std::fabs(v));
      }
      const int e = detail::gse_group_exponent(amax, spec);
      out.exponent_row(r)[g] = static_cast<std::int8_t>(e);
      for (std::int64_t c = c0; c < c0 + spec.group; ++c) {
        int m = 0;
        if (c < c1 && amax != 0.0f) {
          const float scaled = std::ldexp(at(r, c), -e);
          float q;
          if (options.rounding == Rounding::kNearestEven) {
            q = std::nearbyint(scaled);
          } else {
            const std::int64_t index = transpose ? c * rows + r : r * cols + c;
            q = std::floor(scaled + random_uniform(options.seed, options.stream,
                                                   static_cast<std::uint64_t>(index)));
          }
          m = static_cast<int>(std::clamp(q, static_cast<float>(-qmax), static_cast<float>(qmax)));
        }
        out.set_mantissa(r, c, m);
      }
    }
  }
}

/// Dequantizes `q` into `dst` ([rows, cols] of q, or transposed [cols, rows]).
inline void dequantize_gse_reference(const GseMatrix& q, bool transpose, MatrixView<float> dst) {
  const std::int64_t rows = transpose ? q.cols() : q.rows();
  const std::int64_t cols = transpose ? q.rows() : q.cols();
  check_shape(dst, rows, cols, "dequantize_gse: output");
  for (std::int64_t r = 0; r < q.rows(); ++r)
    for (std::int64_t c = 0; c < q.cols(); ++c) (transpose ? dst(c, r) : dst(r, c)) = q.value(r, c);
}

/// Quantizes `src` into `out` on the selected ISA path (see core/isa.hpp).
inline void quantize_gse(MatrixView<const float> src, bool transpose, GseMatrix& out,
                         const QuantizeOptions& options = {}) {
  quantize_gse_reference(src, transpose, out, options);
}

/// Quantizes `src` into a new GseMatrix of format `spec`.
inline GseMatrix quantize_gse(MatrixView<const float> src, const GseSpec& spec, bool transpose,
                              const QuantizeOptions& options = {},
                              MemoryCategory category = MemoryCategory::kActivations) {
  GseMatrix out(transpose ? src.cols() : src.rows(), transpose ? src.rows() : src.cols(), spec,
                category);
  quantize_gse(src, transpose, out, options);
  return out;
}

/// Dequantizes `q` into `dst` on the selected ISA path.
inline void dequantize_gse(const GseMatrix& q, bool transpose, MatrixView<float> dst) {
  dequantize_gse_reference(q, transpose, dst);
}

GSQ_NAMESPACE_END
