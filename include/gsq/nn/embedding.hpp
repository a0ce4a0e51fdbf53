// gsq/nn/embedding.hpp — token embedding: a row gather forward, a scatter-add backward.
//
// `y[t] = W[ids[t]]` for a batch of token ids laid out [batch·seq]. The table is frozen
// by default (LoRA fine-tuning leaves it alone); made trainable, backward accumulates
// `dW[ids[t]] += dy[t]`. Several tokens may hit the same row, so the scatter-add is split
// over embedding columns, never over tokens: each column's sum runs over the tokens in
// order, and the result is bit-identical for any thread count.
//
// With a tied classifier (LLaMA models of this size), the same table is also the output
// projection; the model reads it through `weight()` and never copies it. A frozen table
// keeps the dtype it was loaded in (BF16 for real checkpoints: half the memory, read
// exactly); a trainable one is FP32.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/float_matrix.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/parameter.hpp"

GSQ_NAMESPACE_BEGIN

class Embedding {
 public:
  Embedding() = default;
  /// `weight` is [vocab, dim].
  explicit Embedding(Tensor<float> weight, bool trainable = false)
      : Embedding(FloatMatrix(std::move(weight)), trainable) {}
  /// `weight` is [vocab, dim], FP32 or BF16 (widened to FP32 when trainable).
  explicit Embedding(FloatMatrix weight, bool trainable = false) : weight_(std::move(weight)) {
    GSQ_CHECK(weight_.rows() > 0 && weight_.cols() > 0, ErrorCode::kInvalidExtent,
              "Embedding: the table must be a non-empty [vocab, dim] matrix");
    set_trainable(trainable);
  }

  std::int64_t vocab_size() const noexcept { return weight_.rows(); }
  std::int64_t dim() const noexcept { return weight_.cols(); }
  const FloatMatrix& weight() const noexcept { return weight_; }
  bool trainable() const noexcept { return grad_.numel() > 0; }
  /// The gradient of the table (empty while frozen).
  const Tensor<float>& grad() const noexcept { return grad_; }
  Tensor<float>& grad() noexcept { return grad_; }

  /// Allocates (zeroed) or frees the gradient of the table.
  void set_trainable(bool trainable) {
    if (trainable == this->trainable()) return;
    if (trainable) weight_.to_f32();  // the optimizer updates FP32 masters
    grad_ = trainable ? Tensor<float>({vocab_size(), dim()}, MemoryCategory::kGradients)
                      : Tensor<float>();
  }

  /// out[t] = W[ids[t]]; `out` is [ids.size(), dim]. Throws on an id outside the vocab.
  void forward(std::span<const std::int32_t> ids, MatrixView<float> out) const {
    check_shape(out, static_cast<std::int64_t>(ids.size()), dim(), "Embedding::forward output");
    check_ids(ids);
    parallel_for(static_cast<std::int64_t>(ids.size()), [&](std::int64_t t) {
      weight_.copy_row(ids[t], out.row(t));
    }, 16);
  }

  /// dW[ids[t]] += dout[t] when trainable; a frozen table has nothing to accumulate.
  void backward(std::span<const std::int32_t> ids, MatrixView<const float> dout) {
    check_shape(dout, static_cast<std::int64_t>(ids.size()), dim(), "Embedding::backward dout");
    if (!trainable()) return;
    check_ids(ids);
    const std::int64_t d = dim();
    const auto n = static_cast<std::int64_t>(ids.size());
    constexpr std::int64_t kColumns = 64;  // one chunk of columns per task
    parallel_for((d + kColumns - 1) / kColumns, [&](std::int64_t chunk) {
      const std::int64_t c0 = chunk * kColumns;
      const std::int64_t c1 = std::min(c0 + kColumns, d);
      for (std::int64_t t = 0; t < n; ++t) {
        float* g = grad_.data() + static_cast<std::int64_t>(ids[t]) * d;
        const float* src = dout.row(t);
        for (std::int64_t c = c0; c < c1; ++c) g[c] += src[c];
      }
    });
  }

  /// {"weight"} when trainable, else nothing.
  ParameterList parameters() {
    if (!trainable()) return {};
    return {Parameter{"weight", &weight_.f32(), &grad_}};
  }

 private:
  void check_ids(std::span<const std::int32_t> ids) const {
    const std::int64_t v = vocab_size();
    for (std::size_t t = 0; t < ids.size(); ++t)
      GSQ_CHECK(ids[t] >= 0 && ids[t] < v, ErrorCode::kIndexOutOfRange,
                "Embedding: token id " + std::to_string(ids[t]) + " at position " +
                    std::to_string(t) + " is outside the vocabulary of " + std::to_string(v));
  }

  FloatMatrix weight_;
  Tensor<float> grad_;
};

GSQ_NAMESPACE_END
