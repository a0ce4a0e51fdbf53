// gsq/nn/qcd.hpp — the quantize → integer GEMM → dequantize steps shared by the layers.
//
// Every integer product of a layer quantizes an FP32 operand into GSE-INT (activations
// with the activation width, weights with the weight width, gradients with the gradient
// width; DESIGN.md "LoRA dataflow") and hands it to gemm::gemm_nt. The quantized
// buffers are reused from step to step (page faults are slow on the target machines),
// so each quantization writes into a GseMatrix that is reallocated only when its shape
// or format changes (ensure_gse, nn/workspace.hpp). Gradients may use stochastic
// rounding; their random stream is keyed by (layer seed, backward-call count, tensor
// tag), never by thread or order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/nn/workspace.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN

/// One stored copy of an input that several layers read — q, k and v all read the
/// attention's normalised input, gate and up the MLP's (DESIGN.md "one copy per input").
/// The owner calls begin() before the group's forwards; the first layer to need the
/// quantized X (or, in FP32 mode, X itself) fills it, the others find it filled and
/// reuse it, and each layer's cache points here instead of keeping its own copy. The
/// owner keeps the object in place, and counts its bytes() once, until the group's
/// backwards have run. A layer with another activation format keeps its own copy.
struct SharedInput {
  GseMatrix x_q;     // integer layers: X with the activation bits
  Tensor<float> x;   // FP32 layers: X
  bool has_q = false, has_x = false;

  void begin() noexcept { has_q = has_x = false; }
  std::int64_t bytes() const noexcept { return x_q.bytes() + x.bytes(); }

  /// X quantized with `spec`: quantized now by the first caller of this group.
  /// Returns nullptr when another caller filled it with a different format (the caller
  /// then keeps its own copy).
  const GseMatrix* quantized(MatrixView<const float> src, const GseSpec& spec, const char* name) {
    if (has_q) {
      return x_q.spec() == spec && x_q.rows() == src.rows() && x_q.cols() == src.cols() ? &x_q
                                                                                        : nullptr;
    }
    ensure_gse(x_q, src.rows(), src.cols(), spec, MemoryCategory::kActivations);
    QuantizeOptions q;
    q.name = name;
    quantize_gse(src, false, x_q, q);
    has_q = true;
    return &x_q;
  }
  /// X in FP32, copied by the first caller of this group.
  const Tensor<float>* fp32(MatrixView<const float> src) {
    if (has_x) return x.dim(0) == src.rows() && x.dim(1) == src.cols() ? &x : nullptr;
    MatrixView<float> dst = ensure_matrix(x, src.rows(), src.cols(), MemoryCategory::kActivations);
    for (std::int64_t r = 0; r < src.rows(); ++r)
      std::copy(src.row(r), src.row(r) + src.cols(), dst.row(r));
    has_x = true;
    return &x;
  }
};

namespace detail {

/// Quantizes `src` (or srcᵀ with `transpose`) into the reused buffer `out`.
inline GseMatrix& quantize_into(GseMatrix& out, MatrixView<const float> src, const GseSpec& spec,
                                bool transpose, const QuantizeOptions& options,
                                MemoryCategory category = MemoryCategory::kScratch) {
  ensure_gse(out, transpose ? src.cols() : src.rows(), transpose ? src.rows() : src.cols(), spec,
             category);
  quantize_gse(src, transpose, out, options);
  return out;
}

/// Quantization options for activations and weights: round-half-even.
inline QuantizeOptions nearest_options(const char* name) {
  QuantizeOptions q;
  q.name = name;
  return q;
}

/// Quantization options for a gradient tensor: `rounding` with a stream unique to
/// (backward call `step`, tensor `tag`); both orientations of one tensor share it.
inline QuantizeOptions gradient_options(Rounding rounding, std::uint64_t seed, std::uint64_t step,
                                        std::uint64_t tag, const char* name) {
  QuantizeOptions q;
  q.rounding = rounding;
  q.seed = seed;
  q.stream = (step << 4) | (tag & 0xF);
  q.name = name;
  return q;
}

/// Throws unless `x` has `cols` columns and at least one row; `what` names the call.
inline void check_tokens(MatrixView<const float> x, std::int64_t cols, const char* what) {
  GSQ_CHECK(x.rows() >= 1 && x.cols() == cols, ErrorCode::kShapeMismatch,
            std::string(what) + ": expected [tokens >= 1, " + std::to_string(cols) + "], got " +
                shape_string(x));
}

/// The checks every layer's backward makes: `cached_tokens` says forward filled the
/// cache, dy is [cached_tokens, out] and a non-empty dx is [cached_tokens, in]. `layer`
/// names the class ("LoraLinear"). Returns whether dx is wanted.
inline bool check_backward_args(const char* layer, std::int64_t cached_tokens, MatrixView<const float> dy,
                                std::int64_t out, MatrixView<float> dx, std::int64_t in) {
  // Messages are built only when a check fails: this runs for every layer of every step.
  auto call = [layer](const char* what) { return std::string(layer) + "::backward" + what; };
  GSQ_CHECK(cached_tokens > 0, ErrorCode::kInvalidArgument, call(": the cache was not filled by forward"));
  if (dy.rows() < 1 || dy.cols() != out) check_tokens(dy, out, call(": dy").c_str());
  GSQ_CHECK(dy.rows() == cached_tokens, ErrorCode::kShapeMismatch,
            call(": dy has ") + std::to_string(dy.rows()) + " tokens but forward saw " +
                std::to_string(cached_tokens));
  if (dx.empty()) return false;
  if (dx.rows() != dy.rows() || dx.cols() != in) check_shape(dx, dy.rows(), in, call(": dx").c_str());
  return true;
}

}  // namespace detail
GSQ_NAMESPACE_END
