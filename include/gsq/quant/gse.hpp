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
// quantize_gse / dequantize_gse run the path gsq::selected_isa() picks (kernels/gse_*.hpp),
// parallel over output rows with parallel_for_chunks; every path and thread count gives
// the same bits as the *_reference functions, which define the results.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/quant/kernels/gse_avx2.hpp"
#include "gsq/quant/kernels/gse_avx512.hpp"
#include "gsq/quant/kernels/gse_params.hpp"

GSQ_NAMESPACE_BEGIN

enum class Rounding { kNearestEven, kStochastic };

struct QuantizeOptions {
  Rounding rounding = Rounding::kNearestEven;
  std::uint64_t seed = 0;       // stochastic rounding: the run's seed
  std::uint64_t stream = 0;     // stochastic rounding: which tensor (so tensors draw differently)
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

namespace detail {

inline void check_quantize_shape(MatrixView<const float> src, bool transpose, const GseMatrix& out,
                                 const QuantizeOptions& options) {
  const std::int64_t rows = transpose ? src.cols() : src.rows();
  const std::int64_t cols = transpose ? src.rows() : src.cols();
  GSQ_CHECK(out.rows() == rows && out.cols() == cols, ErrorCode::kShapeMismatch,
            std::string("quantize_gse: output for '") + options.name + "' is " +
                std::to_string(out.rows()) + "x" + std::to_string(out.cols()) + ", expected " +
                std::to_string(rows) + "x" + std::to_string(cols));
}

/// The reference encoding of output rows [r0, r1) (shapes already checked).
inline void quantize_gse_reference_rows(MatrixView<const float> src, bool transpose, GseMatrix& out,
                                        const QuantizeOptions& options, std::int64_t r0,
                                        std::int64_t r1) {
  const std::int64_t rows = out.rows();
  const std::int64_t cols = out.cols();
  const GseSpec spec = out.spec();
  const int qmax = spec.max_mantissa();
  auto at = [&](std::int64_t r, std::int64_t c) { return transpose ? src(c, r) : src(r, c); };
  for (std::int64_t r = r0; r < r1; ++r) {
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

/// The reference decoding of GseMatrix rows [r0, r1) (shapes already checked).
inline void dequantize_gse_reference_rows(const GseMatrix& q, bool transpose, MatrixView<float> dst,
                                          std::int64_t r0, std::int64_t r1) {
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = 0; c < q.cols(); ++c) (transpose ? dst(c, r) : dst(r, c)) = q.value(r, c);
}

/// A SIMD kernel met a non-finite value in output rows [r0, r1): find the first one in
/// the reference's order and throw the reference's error.
inline void throw_first_non_finite(MatrixView<const float> src, bool transpose, std::int64_t r0,
                                   std::int64_t r1, const char* name) {
  const std::int64_t cols = transpose ? src.rows() : src.cols();
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const float v = transpose ? src(c, r) : src(r, c);
      if (std::isfinite(v)) continue;
      if (transpose) throw_non_finite(name, c, r, v);
      throw_non_finite(name, r, c, v);
    }
  throw_error(ErrorCode::kNonFinite, std::string("quantize_gse: tensor '") + name +
                                         "' holds a non-finite value (not located)");
}

/// Output rows per parallel chunk: about 64 K elements, whole tiles when transposed.
inline std::int64_t gse_row_grain(std::int64_t cols, bool transpose) noexcept {
  std::int64_t grain = std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(cols, 1));
  if (transpose)
    grain = (grain + quant::kernels::kGseTileRows - 1) / quant::kernels::kGseTileRows *
            quant::kernels::kGseTileRows;
  return grain;
}

}  // namespace detail

/// Quantizes `src` into `out` (already shaped: [R, C] or, transposed, [C, R]). The scalar
/// definition of the encoding; single-threaded.
inline void quantize_gse_reference(MatrixView<const float> src, bool transpose, GseMatrix& out,
                                   const QuantizeOptions& options = {}) {
  detail::check_quantize_shape(src, transpose, out, options);
  detail::quantize_gse_reference_rows(src, transpose, out, options, 0, out.rows());
}

/// Dequantizes `q` into `dst` ([rows, cols] of q, or transposed [cols, rows]).
inline void dequantize_gse_reference(const GseMatrix& q, bool transpose, MatrixView<float> dst) {
  const std::int64_t rows = transpose ? q.cols() : q.rows();
  const std::int64_t cols = transpose ? q.rows() : q.cols();
  check_shape(dst, rows, cols, "dequantize_gse: output");
  detail::dequantize_gse_reference_rows(q, transpose, dst, 0, q.rows());
}

/// Quantizes `src` into `out` on the selected ISA path (see core/isa.hpp).
inline void quantize_gse(MatrixView<const float> src, bool transpose, GseMatrix& out,
                         const QuantizeOptions& options = {}) {
  detail::check_quantize_shape(src, transpose, out, options);
  const Isa isa = selected_isa();
  const std::int64_t rows = out.rows();
  const std::int64_t grain = detail::gse_row_grain(out.cols(), transpose);
  if (isa == Isa::kReference || !GSQ_HAVE_X86_SIMD) {
    parallel_for_chunks(rows, grain, [&](std::int64_t r0, std::int64_t r1) {
      detail::quantize_gse_reference_rows(src, transpose, out, options, r0, r1);
    });
    return;
  }
#if GSQ_HAVE_X86_SIMD
  const GseSpec spec = out.spec();
  quant::kernels::GseQuantParams params;
  params.src = src.data();
  params.src_stride = src.stride();
  params.src_cols = src.cols();
  params.rows = rows;
  params.cols = out.cols();
  params.transpose = transpose;
  params.bits = spec.bits;
  params.group = spec.group;
  params.exp_min = spec.exp_min();
  params.exp_max = spec.exp_max();
  params.stochastic = options.rounding == Rounding::kStochastic;
  params.seed = options.seed;
  params.stream = options.stream;
  params.mantissas = out.mantissa_row(0);
  params.row_bytes = out.row_bytes();
  params.exponents = out.exponent_row(0);
  params.groups = out.groups_per_row();
  params.code_bits = spec.code_bits();
  const std::int64_t staging_bytes =
      quant::kernels::gse_staging_bytes(spec.is_packed(), transpose, out.padded_cols());
  parallel_for_chunks(rows, grain, [&](std::int64_t r0, std::int64_t r1) {
    AlignedBuffer<std::int8_t> staging(staging_bytes, MemoryCategory::kScratch, kUninitialized);
    quant::kernels::GseQuantParams p = params;
    p.staging = staging.data();
    const bool ok = isa == Isa::kAvx512Vnni ? quant::kernels::avx512::quantize_gse_rows(p, r0, r1)
                                            : quant::kernels::avx2::quantize_gse_rows(p, r0, r1);
    if (!ok) detail::throw_first_non_finite(src, transpose, r0, r1, options.name);
  });
#endif
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
  check_shape(dst, transpose ? q.cols() : q.rows(), transpose ? q.rows() : q.cols(),
              "dequantize_gse: output");
  const Isa isa = selected_isa();
  const std::int64_t grain = detail::gse_row_grain(q.cols(), transpose);
  if (isa == Isa::kReference || !GSQ_HAVE_X86_SIMD) {
    parallel_for_chunks(q.rows(), grain, [&](std::int64_t r0, std::int64_t r1) {
      detail::dequantize_gse_reference_rows(q, transpose, dst, r0, r1);
    });
    return;
  }
#if GSQ_HAVE_X86_SIMD
  quant::kernels::GseDequantParams params;
  params.mantissas = q.mantissa_row(0);
  params.row_bytes = q.row_bytes();
  params.exponents = q.exponent_row(0);
  params.groups = q.groups_per_row();
  params.rows = q.rows();
  params.cols = q.cols();
  params.group = q.spec().group;
  params.packed = q.spec().is_packed();
  params.code_bits = q.spec().code_bits();
  params.transpose = transpose;
  params.dst = dst.data();
  params.dst_stride = dst.stride();
  const std::int64_t staging_bytes =
      quant::kernels::gse_staging_bytes(params.packed, transpose, q.padded_cols());
  parallel_for_chunks(q.rows(), grain, [&](std::int64_t r0, std::int64_t r1) {
    AlignedBuffer<std::int8_t> staging(staging_bytes, MemoryCategory::kScratch, kUninitialized);
    quant::kernels::GseDequantParams p = params;
    p.staging = staging.data();
    if (isa == Isa::kAvx512Vnni)
      quant::kernels::avx512::dequantize_gse_rows(p, r0, r1);
    else
      quant::kernels::avx2::dequantize_gse_rows(p, r0, r1);
  });
#endif
}

GSQ_NAMESPACE_END
