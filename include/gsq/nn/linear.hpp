// gsq/nn/linear.hpp — a linear layer Y = X·Wᵀ (no bias, as in LLaMA), frozen or trainable.
//
// Frozen: W is a FrozenWeight (NF4, GSE-INT or FP32), stored once; backward only
// produces dX = dY·W, so the cache keeps nothing. Trainable: W is an FP32 master with a
// gradient (listed by parameters()), and the cache keeps X for dW = dYᵀ·X.
//
// With integer bits every product is a GSE-INT GEMM (DESIGN.md table):
//   Y  = X·Wᵀ   A = X  [tokens, in]  activation bits, B = W  [out, in]  weight bits, k = in
//   dX = dY·W   A = dY [tokens, out] gradient bits,   B = Wᵀ [in, out]  weight bits, k = out
//   dW = dYᵀ·X  A = dYᵀ [out, tokens] gradient bits,  B = Xᵀ [in, tokens] (the cached
//               quantized X, regrouped along tokens by the GEMM's packing), k = tokens
// A frozen NF4 / GSE-INT weight is read through BOperand::nf4 / nf4_transposed /
// gse / gse_transposed, never copied; an FP32 frozen weight under integer bits is
// quantized once, at construction, to GSE-INT with the weight bits. With Bits::fp32()
// the same products run in FP32 (gemm_f32) on the weight's exact stored values.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/nn/bits.hpp"
#include "gsq/nn/frozen_weight.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/qcd.hpp"
#include "gsq/nn/scratch.hpp"
#include "gsq/nn/workspace.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN

namespace detail {

/// The frozen branch of a layer: Y (+)= X·W0ᵀ and dX (+)= dY·W0 from the one stored W0.
class FrozenBase {
 public:
  FrozenBase() = default;
  FrozenBase(FrozenWeight w, const Bits& bits) : bits_(bits) {
    GSQ_CHECK(!w.empty(), ErrorCode::kInvalidArgument, "frozen weight is empty");
    bits.validate();
    if (!bits.is_fp32() && w.format() == WeightFormat::kFp32)
      w = FrozenWeight::gse(*w.fp32_tensor(), bits.weight_spec());
    if (!bits.is_fp32() && w.format() == WeightFormat::kGse)
      GSQ_CHECK(w.gse_matrix()->spec().group == bits.group, ErrorCode::kInvalidArgument,
                "a GSE-INT frozen weight (" + w.gse_matrix()->spec().name() +
                    ") must use the layer's group size " + std::to_string(bits.group));
    if (bits.is_fp32() && w.format() != WeightFormat::kFp32)
      decoded_ = w.dequantized(MemoryCategory::kScratch);
    w_ = std::move(w);
  }

  const FrozenWeight& weight() const noexcept { return w_; }
  std::int64_t out_features() const noexcept { return w_.out_features(); }
  std::int64_t in_features() const noexcept { return w_.in_features(); }

  /// Integer: Y (+)= alpha · Xq·W0ᵀ.
  void forward(const GseMatrix& xq, MatrixView<float> y, bool accumulate) const {
    gemm::gemm_nt(xq, forward_operand(), y, {1.0f, accumulate});
  }
  /// Integer: dX (+)= dYq·W0 (dYq grouped along out).
  void backward(const GseMatrix& dyq, MatrixView<float> dx, bool accumulate) const {
    gemm::gemm_nt(dyq, input_grad_operand(), dx, {1.0f, accumulate});
  }
  /// FP32: Y (+)= X·W0ᵀ.
  void forward(MatrixView<const float> x, MatrixView<float> y, bool accumulate) const {
    gemm::gemm_f32(x, false, fp32_weight(), true, y, {1.0f, accumulate});
  }
  /// FP32: dX (+)= dY·W0.
  void backward(MatrixView<const float> dy, MatrixView<float> dx, bool accumulate) const {
    gemm::gemm_f32(dy, false, fp32_weight(), false, dx, {1.0f, accumulate});
  }

 private:
  gemm::BOperand forward_operand() const {
    if (const Nf4Matrix* m = w_.nf4_matrix()) return gemm::BOperand::nf4(*m, bits_.weight_spec());
    return gemm::BOperand::gse(*w_.gse_matrix());
  }
  gemm::BOperand input_grad_operand() const {
    if (const Nf4Matrix* m = w_.nf4_matrix())
      return gemm::BOperand::nf4_transposed(*m, bits_.weight_spec());
    return gemm::BOperand::gse_transposed(*w_.gse_matrix(), bits_.weight_spec());
  }
  MatrixView<const float> fp32_weight() const noexcept {
    if (const Tensor<float>* t = w_.fp32_tensor()) return t->view();
    return decoded_.view();
  }

  FrozenWeight w_;
  Bits bits_;
  Tensor<float> decoded_;  // FP32 mode over NF4 / GSE storage: decoded once
};

}  // namespace detail

struct LinearConfig {
  Bits bits = Bits::w8a8g8();
  std::uint64_t seed = 0;  // stochastic rounding of gradients
  Rounding gradient_rounding = Rounding::kNearestEven;
};

class Linear {
 public:
  /// What forward keeps for backward: the quantized X (integer) or X (FP32), and only
  /// for a trainable weight. Reuse one Cache per layer across steps.
  struct Cache {
    GseMatrix x_q;       // [tokens, in], activation bits, groups along in
    Tensor<float> x;     // FP32 mode
    std::int64_t tokens = 0;
    // X kept by a SharedInput (then x_q / x stay empty); counted by its owner.
    const GseMatrix* shared_x_q = nullptr;
    const Tensor<float>* shared_x = nullptr;
    const GseMatrix& input_q() const noexcept { return shared_x_q != nullptr ? *shared_x_q : x_q; }
    const Tensor<float>& input() const noexcept { return shared_x != nullptr ? *shared_x : x; }
    std::int64_t bytes() const noexcept { return x_q.bytes() + x.bytes(); }
  };

  /// A frozen layer over `w` [out, in].
  explicit Linear(FrozenWeight w, LinearConfig config = {})
      : config_(config), base_(std::move(w), config.bits) {
    out_ = base_.out_features();
    in_ = base_.in_features();
  }

  /// A trainable layer initialised from `w` [out, in] (FP32 master, gradient zero).
  static Linear trainable(MatrixView<const float> w, LinearConfig config = {}) {
    config.bits.validate();
    Linear layer(config);
    layer.out_ = w.rows();
    layer.in_ = w.cols();
    layer.weight_ = Tensor<float>::copy_of(w, MemoryCategory::kWeights);
    layer.weight_grad_ = Tensor<float>({w.rows(), w.cols()}, MemoryCategory::kGradients);
    layer.trainable_ = true;
    return layer;
  }

  bool is_trainable() const noexcept { return trainable_; }
  std::int64_t in_features() const noexcept { return in_; }
  std::int64_t out_features() const noexcept { return out_; }
  const LinearConfig& config() const noexcept { return config_; }
  /// The FP32 master (trainable layers) and its gradient.
  Tensor<float>& weight() noexcept { return weight_; }
  Tensor<float>& weight_grad() noexcept { return weight_grad_; }
  /// The frozen weight (frozen layers).
  const FrozenWeight& frozen_weight() const noexcept { return base_.weight(); }

  /// Y = X·Wᵀ for x [tokens, in] into y [tokens, out]; fills `cache` for backward.
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache) {
    forward(x, y, cache, nullptr);
  }
  /// As above; a trainable layer keeps X in `shared` (one copy for every layer reading
  /// the same x). A frozen layer keeps nothing, so it ignores `shared`.
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache, SharedInput* shared) {
    detail::check_tokens(x, in_, "Linear::forward: x");
    check_shape(y, x.rows(), out_, "Linear::forward: y");
    cache.tokens = x.rows();
    cache.shared_x_q = nullptr;
    cache.shared_x = nullptr;
    if (!trainable_) shared = nullptr;
    const bool fp32 = config_.bits.is_fp32();
    if (fp32) {
      if (trainable_) {
        cache.shared_x = shared != nullptr ? shared->fp32(x) : nullptr;
        if (cache.shared_x != nullptr) {
          cache.x = Tensor<float>();
        } else {
          ensure_matrix(cache.x, x.rows(), in_, MemoryCategory::kActivations);
          copy_rows(x, cache.x.view());
        }
        gemm::gemm_f32(x, false, weight_, true, y);
      } else {
        base_.forward(x, y, false);
      }
      return;
    }
    const GseSpec aspec = config_.bits.activation_spec();
    const GseMatrix* sq = shared != nullptr ? shared->quantized(x, aspec, "Linear input X") : nullptr;
    if (sq != nullptr) {
      cache.shared_x_q = sq;
      cache.x_q = GseMatrix();
    } else {
      GseMatrix& own = trainable_ ? ensure_gse(cache.x_q, x.rows(), in_, aspec, MemoryCategory::kActivations)
                                  : detail::shared_gse(detail::ScratchSlot::kActivation, x.rows(), in_, aspec);
      quantize_gse(x, false, own, detail::nearest_options("Linear input X"));
      sq = &own;
    }
    const GseMatrix& xq = *sq;
    if (trainable_) {
      detail::quantize_into(w_q_, weight_, config_.bits.weight_spec(), false,
                            detail::nearest_options("Linear weight W"));
      gemm::gemm_nt(xq, gemm::BOperand::gse(w_q_), y);
    } else {
      base_.forward(xq, y, false);
    }
  }
  Tensor<float> forward(MatrixView<const float> x, Cache& cache) {
    Tensor<float> y({x.rows(), out_});
    forward(x, y.view(), cache);
    return y;
  }

  /// dX (+)= dY·W for dy [tokens, out] into dx [tokens, in]; accumulates dW when
  /// trainable. An empty dx skips the input gradient.
  void backward(MatrixView<const float> dy, Cache& cache, MatrixView<float> dx,
                bool accumulate_dx = false) {
    const bool want_dx = detail::check_backward_args("Linear", cache.tokens, dy, out_, dx, in_);
    const std::uint64_t step = backward_calls_++;
    if (config_.bits.is_fp32()) {
      if (trainable_) {
        if (want_dx) gemm::gemm_f32(dy, false, weight_, false, dx, {1.0f, accumulate_dx});
        gemm::gemm_f32(dy, true, cache.input(), false, weight_grad_, {1.0f, true});
      } else if (want_dx) {
        base_.backward(dy, dx, accumulate_dx);
      }
      return;
    }
    const GseSpec gspec = config_.bits.gradient_spec();
    const QuantizeOptions qdy = detail::gradient_options(config_.gradient_rounding, config_.seed,
                                                         step, 1, "Linear output gradient dY");
    using detail::ScratchSlot;
    if (want_dx) {
      GseMatrix& dy_q = detail::shared_gse(ScratchSlot::kGradient, dy.rows(), out_, gspec);
      quantize_gse(dy, false, dy_q, qdy);
      if (trainable_) {
        detail::quantize_into(w_qt_, weight_, config_.bits.weight_spec(), true,
                              detail::nearest_options("Linear weight W"));
        gemm::gemm_nt(dy_q, gemm::BOperand::gse(w_qt_), dx, {1.0f, accumulate_dx});
      } else {
        base_.backward(dy_q, dx, accumulate_dx);
      }
    }
    if (trainable_) {
      GseMatrix& dy_qt = detail::shared_gse(ScratchSlot::kGradientT, out_, dy.rows(), gspec);
      quantize_gse(dy, true, dy_qt, qdy);
      gemm::gemm_nt(dy_qt,
                    gemm::BOperand::gse_transposed(cache.input_q(), config_.bits.activation_spec()),
                    weight_grad_, {1.0f, true});
    }
  }
  Tensor<float> backward(MatrixView<const float> dy, Cache& cache) {
    Tensor<float> dx({dy.rows(), in_});
    backward(dy, cache, dx.view());
    return dx;
  }

  void zero_grad() noexcept {
    for (float& g : weight_grad_) g = 0.0f;
  }
  /// {"weight"} when trainable, empty when frozen.
  ParameterList parameters() {
    if (!trainable_) return {};
    return {{"weight", &weight_, &weight_grad_}};
  }

 private:
  explicit Linear(LinearConfig config) : config_(config) {}

  static void copy_rows(MatrixView<const float> src, MatrixView<float> dst) {
    for (std::int64_t r = 0; r < src.rows(); ++r)
      std::copy(src.row(r), src.row(r) + src.cols(), dst.row(r));
  }

  LinearConfig config_;
  detail::FrozenBase base_;
  Tensor<float> weight_, weight_grad_;
  bool trainable_ = false;
  std::int64_t out_ = 0, in_ = 0;
  std::uint64_t backward_calls_ = 0;
  // A trainable weight quantized in both orientations (kScratch); X of a frozen layer and
  // dY are the thread's shared scratch (nn/scratch.hpp).
  GseMatrix w_q_, w_qt_;
};

GSQ_NAMESPACE_END
