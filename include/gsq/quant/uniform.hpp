// gsq/quant/uniform.hpp — the uniform asymmetric quantizer of L4Q, with LSQ+ gradients.
//
// For a weight W [out, in] in groups of G along `in`, with a step s > 0 and an offset b
// per group (steps, offsets: [out, ceil(in/G)] matrices):
//     s' = max(s, kUniformMinStep),  v = (w − b)/s',
//     q  = clamp(round(v), Qn, Qp),  Qn = −2^(n−1), Qp = 2^(n−1) − 1 (round half to even),
//     ŵ  = fma(q, s', b)             (one rounding; format/uniform.hpp).
// Backward (LSQ+, Bhalgat et al. 2020, eqs. 4–5: the clamp is applied to v before the
// rounding, and the rounding is passed straight through), per element, for the
// upstream gradient g = ∂L/∂ŵ:
//     Qn <= v <= Qp:  ∂ŵ/∂w = 1,  ∂ŵ/∂s = round(v) − v,  ∂ŵ/∂b = 0
//     v < Qn:         ∂ŵ/∂w = 0,  ∂ŵ/∂s = Qn,            ∂ŵ/∂b = 1
//     v > Qp:         ∂ŵ/∂w = 0,  ∂ŵ/∂s = Qp,            ∂ŵ/∂b = 1
// ∂L/∂s and ∂L/∂b are summed over the group (in float, in 16 lane sums combined by a
// fixed tree: kernels/uniform_reference.hpp defines the order) and *added* to the
// caller's gradients; ∂L/∂w (the in-range mask times g) is *written*. A step at or
// below kUniformMinStep has no effect on ŵ and gets no gradient.
// Gradient scale: LSQ (Esser et al. 2020) multiplies ∂L/∂s by 1/√(N·Qp) (N = weights per
// step; LSQ+ applies it to s and b). It is off by default — AdamW normalises each
// parameter's update, and the unscaled values are the true STE derivatives that finite
// differences check — and on with UniformGradOptions::lsq_grad_scale (N = elements in
// the group, so a tail group uses its own count).
// Initialisation (min/max per group): s = (max − min)/(Qp − Qn), b = min − Qn·s, so the
// grid spans the group's range; a constant group gets the smallest step.
//
// Non-finite weights, steps or offsets throw FormatError naming the tensor and position.
// The forward and the backward are dispatched (scalar, AVX2, AVX-512: identical bits),
// parallel over rows; the export is scalar.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/uniform.hpp"
#include "gsq/quant/kernels/uniform_avx2.hpp"
#include "gsq/quant/kernels/uniform_avx512.hpp"
#include "gsq/quant/kernels/uniform_reference.hpp"

GSQ_NAMESPACE_BEGIN

struct UniformGradOptions {
  /// Multiply ∂L/∂s and ∂L/∂b of a group by 1/√(N·Qp) (LSQ's gradient scale).
  bool lsq_grad_scale = false;
};

namespace quant::detail {

[[noreturn]] GSQ_NOINLINE GSQ_COLD inline void throw_uniform_non_finite(const char* what,
                                                                        const char* name,
                                                                        std::int64_t r,
                                                                        std::int64_t c, float v) {
  gsq::detail::throw_error(ErrorCode::kNonFinite, std::string(what) + ": tensor '" + name +
                                                      "' holds " + (std::isnan(v) ? "NaN" : "Inf") +
                                                      " at row " + std::to_string(r) + ", column " +
                                                      std::to_string(c));
}

inline std::int64_t uniform_groups(std::int64_t cols, const UniformSpec& spec) noexcept {
  return (cols + spec.group - 1) / spec.group;
}

/// Checks the shapes of steps/offsets against w, and that they are finite.
inline void check_uniform_params(const char* what, MatrixView<const float> w,
                                 const UniformSpec& spec, MatrixView<const float> steps,
                                 MatrixView<const float> offsets) {
  spec.validate();
  const std::int64_t groups = uniform_groups(w.cols(), spec);
  check_shape(steps, w.rows(), groups, (std::string(what) + ": steps").c_str());
  check_shape(offsets, w.rows(), groups, (std::string(what) + ": offsets").c_str());
  for (std::int64_t r = 0; r < w.rows(); ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      if (!std::isfinite(steps(r, g))) throw_uniform_non_finite(what, "steps", r, g, steps(r, g));
      if (!std::isfinite(offsets(r, g)))
        throw_uniform_non_finite(what, "offsets", r, g, offsets(r, g));
    }
  }
}

/// Throws for the first non-finite element of w (row-major order), if any; w's row 0 is
/// row `first_row` of the tensor named in the message.
inline void throw_first_non_finite(const char* what, MatrixView<const float> w, const char* name,
                                   std::int64_t first_row = 0) {
  for (std::int64_t r = 0; r < w.rows(); ++r) {
    if (kernels::reference::row_is_finite(w.row(r), w.cols())) continue;
    for (std::int64_t c = 0; c < w.cols(); ++c)
      if (!std::isfinite(w(r, c))) throw_uniform_non_finite(what, name, first_row + r, c, w(r, c));
  }
}

/// Checks shapes, and that the weight and its steps/offsets are finite.
inline void check_uniform_inputs(const char* what, MatrixView<const float> w,
                                 const UniformSpec& spec, MatrixView<const float> steps,
                                 MatrixView<const float> offsets, const char* name) {
  check_uniform_params(what, w, spec, steps, offsets);
  throw_first_non_finite(what, w, name);
}

inline std::int64_t uniform_row_grain(std::int64_t cols) noexcept {
  return std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(cols, 1));
}

}  // namespace quant::detail

/// Min/max initialisation of steps and offsets ([rows, groups]) from a weight.
inline void init_uniform_minmax(MatrixView<const float> w, const UniformSpec& spec,
                                MatrixView<float> steps, MatrixView<float> offsets,
                                const char* name = "weight") {
  spec.validate();
  const std::int64_t groups = quant::detail::uniform_groups(w.cols(), spec);
  check_shape(steps, w.rows(), groups, "init_uniform_minmax: steps");
  check_shape(offsets, w.rows(), groups, "init_uniform_minmax: offsets");
  const float qmin = static_cast<float>(spec.qmin()), qmax = static_cast<float>(spec.qmax());
  for (std::int64_t r = 0; r < w.rows(); ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t c0 = g * spec.group;
      const std::int64_t c1 = std::min<std::int64_t>(c0 + spec.group, w.cols());
      float lo = w(r, c0), hi = w(r, c0);
      for (std::int64_t c = c0; c < c1; ++c) {
        const float v = w(r, c);
        if (!std::isfinite(v))
          quant::detail::throw_uniform_non_finite("init_uniform_minmax", name, r, c, v);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      const float s = std::max((hi - lo) / (qmax - qmin), kUniformMinStep);
      steps(r, g) = s;
      offsets(r, g) = lo - qmin * s;
    }
  }
}

namespace quant::detail {

inline kernels::UniformKernelParams make_fake_quant_params(MatrixView<const float> w,
                                                       const UniformSpec& spec,
                                                       MatrixView<const float> steps,
                                                       MatrixView<const float> offsets,
                                                       MatrixView<float> out) noexcept {
  return {w.data(),       w.stride(),       out.data(), out.stride(),
          steps.data(),   steps.stride(),   offsets.data(), offsets.stride(),
          w.cols(),       spec.group,       static_cast<float>(spec.qmin()),
          static_cast<float>(spec.qmax())};
}

}  // namespace quant::detail

/// ŵ = fma(q, s', b) for every element, into `out` (may be `w` itself). Scalar
/// definition; fake_quantize_uniform dispatches to SIMD with the same bits. Non-finite
/// steps/offsets are rejected before anything is written; each row of weights is checked
/// just before it is quantized (no separate scan), so on a non-finite weight rows of
/// `out` before it may have been written.
inline void fake_quantize_uniform_reference(MatrixView<const float> w, const UniformSpec& spec,
                                            MatrixView<const float> steps,
                                            MatrixView<const float> offsets, MatrixView<float> out,
                                            const char* name = "weight") {
  quant::detail::check_uniform_params("fake_quantize_uniform", w, spec, steps, offsets);
  check_shape(out, w.rows(), w.cols(), "fake_quantize_uniform: output");
  const auto p = quant::detail::make_fake_quant_params(w, spec, steps, offsets, out);
  const std::int64_t bad = quant::kernels::reference::uniform_fake_quant_rows(p, 0, w.rows());
  if (bad >= 0)
    quant::detail::throw_first_non_finite("fake_quantize_uniform", w.row_range(bad, 1), name, bad);
}

/// ŵ = fma(q, s', b) for every element, into `out` (may be `w` itself), on the selected
/// ISA path, parallel over rows. Errors as fake_quantize_uniform_reference.
inline void fake_quantize_uniform(MatrixView<const float> w, const UniformSpec& spec,
                                  MatrixView<const float> steps, MatrixView<const float> offsets,
                                  MatrixView<float> out, const char* name = "weight") {
  quant::detail::check_uniform_params("fake_quantize_uniform", w, spec, steps, offsets);
  check_shape(out, w.rows(), w.cols(), "fake_quantize_uniform: output");
  const auto p = quant::detail::make_fake_quant_params(w, spec, steps, offsets, out);
  const Isa isa = selected_isa();
  // Each chunk stops at its first bad row; the smallest over chunks is the first overall.
  std::atomic<std::int64_t> first_bad{w.rows()};
  parallel_for_chunks(w.rows(), quant::detail::uniform_row_grain(w.cols()),
                      [&](std::int64_t r0, std::int64_t r1) {
                        std::int64_t bad = -1;
                        switch (isa) {
#if GSQ_HAVE_X86_SIMD
                          case Isa::kAvx512Vnni:
                            bad = quant::kernels::avx512::uniform_fake_quant_rows(p, r0, r1);
                            break;
                          case Isa::kAvx2:
                            bad = quant::kernels::avx2::uniform_fake_quant_rows(p, r0, r1);
                            break;
#endif
                          default:
                            bad = quant::kernels::reference::uniform_fake_quant_rows(p, r0, r1);
                            break;
                        }
                        if (bad < 0) return;
                        std::int64_t cur = first_bad.load(std::memory_order_relaxed);
                        while (bad < cur && !first_bad.compare_exchange_weak(cur, bad)) {
                        }
                      });
  const std::int64_t bad = first_bad.load();
  if (bad < w.rows())
    quant::detail::throw_first_non_finite("fake_quantize_uniform", w.row_range(bad, 1), name, bad);
}

/// Exports integer codes with the steps actually used (s') and the offsets; decoding the
/// result (dequantize_uniform, UniformMatrix::value) gives fake_quantize_uniform's bits.
inline UniformMatrix quantize_uniform(MatrixView<const float> w, const UniformSpec& spec,
                                      MatrixView<const float> steps,
                                      MatrixView<const float> offsets,
                                      MemoryCategory category = MemoryCategory::kWeights,
                                      const char* name = "weight") {
  quant::detail::check_uniform_inputs("quantize_uniform", w, spec, steps, offsets, name);
  UniformMatrix out(w.rows(), w.cols(), spec, category);
  const float qmin = static_cast<float>(spec.qmin()), qmax = static_cast<float>(spec.qmax());
  for (std::int64_t r = 0; r < w.rows(); ++r) {
    for (std::int64_t g = 0; g < out.groups_per_row(); ++g) {
      const float s = quant::kernels::uniform_effective_step(steps(r, g));
      const float b = offsets(r, g);
      out.step_row(r)[g] = s;
      out.offset_row(r)[g] = b;
      const std::int64_t c1 = std::min<std::int64_t>((g + 1) * spec.group, w.cols());
      for (std::int64_t c = g * spec.group; c < c1; ++c)
        out.set_code(
            r, c,
            static_cast<int>(quant::kernels::reference::uniform_code(w(r, c), s, b, qmin, qmax)));
    }
  }
  return out;
}

/// Decodes an exported matrix: out = fma(q, s, b).
inline void dequantize_uniform(const UniformMatrix& q, MatrixView<float> out) {
  check_shape(out, q.rows(), q.cols(), "dequantize_uniform: output");
  parallel_for_chunks(q.rows(), quant::detail::uniform_row_grain(q.cols()),
                      [&](std::int64_t r0, std::int64_t r1) {
                        for (std::int64_t r = r0; r < r1; ++r)
                          for (std::int64_t c = 0; c < q.cols(); ++c) out(r, c) = q.value(r, c);
                      });
}

/// LSQ+ backward. Writes grad_w = g on in-range elements and 0 on clamped ones (may
/// alias grad_out), and adds each group's ∂L/∂s and ∂L/∂b to grad_steps / grad_offsets
/// (summed in the lane order of kernels/uniform_reference.hpp). Dispatched to the
/// selected ISA path (identical bits), parallel over rows. Throws FormatError on a
/// non-finite step or offset before writing anything; a non-finite weight is found
/// during the pass (no separate scan of w) and throws after it, leaving the outputs
/// unspecified.
inline void uniform_backward(MatrixView<const float> w, const UniformSpec& spec,
                             MatrixView<const float> steps, MatrixView<const float> offsets,
                             MatrixView<const float> grad_out, MatrixView<float> grad_w,
                             MatrixView<float> grad_steps, MatrixView<float> grad_offsets,
                             const UniformGradOptions& options = {}, const char* name = "weight") {
  quant::detail::check_uniform_params("uniform_backward", w, spec, steps, offsets);
  check_shape(grad_out, w.rows(), w.cols(), "uniform_backward: grad_out");
  check_shape(grad_w, w.rows(), w.cols(), "uniform_backward: grad_w");
  check_shape(grad_steps, steps.rows(), steps.cols(), "uniform_backward: grad_steps");
  check_shape(grad_offsets, offsets.rows(), offsets.cols(), "uniform_backward: grad_offsets");
  const quant::kernels::UniformBackwardParams p{w.data(),
                                                w.stride(),
                                                grad_out.data(),
                                                grad_out.stride(),
                                                grad_w.data(),
                                                grad_w.stride(),
                                                steps.data(),
                                                steps.stride(),
                                                offsets.data(),
                                                offsets.stride(),
                                                grad_steps.data(),
                                                grad_steps.stride(),
                                                grad_offsets.data(),
                                                grad_offsets.stride(),
                                                w.cols(),
                                                spec.group,
                                                static_cast<float>(spec.qmin()),
                                                static_cast<float>(spec.qmax()),
                                                options.lsq_grad_scale};
  const Isa isa = selected_isa();
  std::atomic<bool> finite{true};
  parallel_for_chunks(w.rows(), quant::detail::uniform_row_grain(w.cols()),
                      [&](std::int64_t r0, std::int64_t r1) {
                        bool ok = true;
                        switch (isa) {
#if GSQ_HAVE_X86_SIMD
                          case Isa::kAvx512Vnni:
                            ok = quant::kernels::avx512::uniform_backward_rows(p, r0, r1);
                            break;
                          case Isa::kAvx2:
                            ok = quant::kernels::avx2::uniform_backward_rows(p, r0, r1);
                            break;
#endif
                          default:
                            ok = quant::kernels::reference::uniform_backward_rows(p, r0, r1);
                            break;
                        }
                        if (!ok) finite.store(false, std::memory_order_relaxed);
                      });
  if (!finite.load(std::memory_order_relaxed))
    quant::detail::throw_first_non_finite("uniform_backward", w, name);
}

GSQ_NAMESPACE_END
