// gsq/nn/frozen_weight.hpp — a frozen base weight W0 [out, in], stored once.
//
// DESIGN.md "Store once, regroup in the packing step": the frozen weight of a LoRA or
// linear layer lives in exactly one compact form — NF4 (QLoRA's default), GSE-INT, or
// FP32 for reference runs — and the GEMM's packing step reads it in whichever
// orientation a product needs (BOperand::nf4 for Y = X·W0ᵀ, nf4_transposed for
// dX = dY·W0). The storage is held by a shared_ptr to const, so a FrozenWeight is cheap
// to copy and several layers (an integer layer and its FP32 twin, or a layer and an
// L4Q export) share one copy instead of duplicating it. Bytes are counted under
// MemoryCategory::kWeights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/nf4.hpp"

GSQ_NAMESPACE_BEGIN

enum class WeightFormat { kFp32, kNf4, kGse };

constexpr std::string_view weight_format_name(WeightFormat f) noexcept {
  switch (f) {
    case WeightFormat::kFp32: return "fp32";
    case WeightFormat::kNf4: return "nf4";
    case WeightFormat::kGse: return "gse";
  }
  return "unknown";
}

class FrozenWeight {
 public:
  FrozenWeight() = default;

  /// Quantizes `w` [out, in] to NF4 (blocks of 64 along in), optionally with double
  /// quantization of the block scales.
  static FrozenWeight nf4(MatrixView<const float> w, bool double_quant = false) {
    return from_nf4(quantize_nf4(w, double_quant, MemoryCategory::kWeights, "frozen weight"));
  }
  /// Quantizes `w` [out, in] to GSE-INT `spec`, grouped along in.
  static FrozenWeight gse(MatrixView<const float> w, const GseSpec& spec) {
    spec.validate();
    QuantizeOptions q;
    q.name = "frozen weight";
    return from_gse(quantize_gse(w, spec, false, q, MemoryCategory::kWeights));
  }
  /// Keeps `w` [out, in] in FP32 (a copy).
  static FrozenWeight fp32(MatrixView<const float> w) {
    return from_fp32(Tensor<float>::copy_of(w, MemoryCategory::kWeights));
  }

  /// Adopts an already quantized or loaded weight.
  static FrozenWeight from_nf4(Nf4Matrix w) {
    FrozenWeight f(WeightFormat::kNf4, w.rows(), w.cols());
    f.nf4_ = std::make_shared<const Nf4Matrix>(std::move(w));
    return f;
  }
  static FrozenWeight from_gse(GseMatrix w) {
    FrozenWeight f(WeightFormat::kGse, w.rows(), w.cols());
    f.gse_ = std::make_shared<const GseMatrix>(std::move(w));
    return f;
  }
  static FrozenWeight from_fp32(Tensor<float> w) {
    GSQ_CHECK(w.rank() == 2, ErrorCode::kInvalidExtent,
              "FrozenWeight::from_fp32: weight must be 2-D [out, in], got rank " +
                  std::to_string(w.rank()));
    FrozenWeight f(WeightFormat::kFp32, w.dim(0), w.dim(1));
    f.fp32_ = std::make_shared<const Tensor<float>>(std::move(w));
    return f;
  }

  bool empty() const noexcept { return !nf4_ && !gse_ && !fp32_; }
  WeightFormat format() const noexcept { return format_; }
  std::int64_t out_features() const noexcept { return out_; }
  std::int64_t in_features() const noexcept { return in_; }
  /// Bytes of the stored form.
  std::int64_t bytes() const noexcept {
    if (nf4_) return nf4_->bytes();
    if (gse_) return gse_->bytes();
    if (fp32_) return fp32_->bytes();
    return 0;
  }

  /// The stored form (nullptr unless it is the format held).
  const Nf4Matrix* nf4_matrix() const noexcept { return nf4_.get(); }
  const GseMatrix* gse_matrix() const noexcept { return gse_.get(); }
  const Tensor<float>* fp32_tensor() const noexcept { return fp32_.get(); }

  /// Writes the weight's exact stored values into `out` [out, in].
  void dequantize(MatrixView<float> out) const {
    check_shape(out, out_, in_, "FrozenWeight::dequantize: output");
    if (nf4_) {
      dequantize_nf4(*nf4_, out);
    } else if (gse_) {
      dequantize_gse(*gse_, false, out);
    } else if (fp32_) {
      for (std::int64_t r = 0; r < out_; ++r)
        std::copy(fp32_->data() + r * in_, fp32_->data() + (r + 1) * in_, out.row(r));
    }
  }
  /// Writes rows [first, first + out.rows()) of the weight's stored values into `out`.
  void dequantize_rows(std::int64_t first, MatrixView<float> out) const {
    GSQ_CHECK(first >= 0 && first + out.rows() <= out_ && out.cols() == in_,
              ErrorCode::kShapeMismatch,
              "FrozenWeight::dequantize_rows: rows [" + std::to_string(first) + ", +" +
                  std::to_string(out.rows()) + ") x " + std::to_string(out.cols()) +
                  " outside the " + std::to_string(out_) + "x" + std::to_string(in_) + " weight");
    if (nf4_) {
      const std::int64_t full = in_ / kNf4Block;
      float tail[kNf4Block];
      for (std::int64_t i = 0; i < out.rows(); ++i) {
        decode_nf4_blocks(*nf4_, first + i, 0, full, out.row(i));
        if (full < nf4_->blocks_per_row()) {
          decode_nf4_blocks(*nf4_, first + i, full, 1, tail);
          std::copy(tail, tail + (in_ - full * kNf4Block), out.row(i) + full * kNf4Block);
        }
      }
    } else if (gse_) {
      const int group = gse_->spec().group;
      for (std::int64_t i = 0; i < out.rows(); ++i)
        for (std::int64_t g = 0; g < gse_->groups_per_row(); ++g) {
          const float scale = std::ldexp(1.0f, gse_->exponent(first + i, g));
          for (std::int64_t c = g * group; c < std::min<std::int64_t>((g + 1) * group, in_); ++c)
            out(i, c) = static_cast<float>(gse_->mantissa(first + i, c)) * scale;
        }
    } else if (fp32_) {
      for (std::int64_t i = 0; i < out.rows(); ++i)
        std::copy(fp32_->data() + (first + i) * in_, fp32_->data() + (first + i + 1) * in_,
                  out.row(i));
    }
  }

  /// The weight's values as a new FP32 tensor [out, in] (counted under `category`).
  Tensor<float> dequantized(MemoryCategory category = MemoryCategory::kScratch) const {
    Tensor<float> t({out_, in_}, category);
    dequantize(t.view());
    return t;
  }

 private:
  FrozenWeight(WeightFormat format, std::int64_t out, std::int64_t in)
      : format_(format), out_(out), in_(in) {}

  WeightFormat format_ = WeightFormat::kFp32;
  std::int64_t out_ = 0;
  std::int64_t in_ = 0;
  std::shared_ptr<const Nf4Matrix> nf4_;
  std::shared_ptr<const GseMatrix> gse_;
  std::shared_ptr<const Tensor<float>> fp32_;
};

GSQ_NAMESPACE_END
