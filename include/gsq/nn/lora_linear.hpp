// gsq/nn/lora_linear.hpp — a LoRA linear layer over a frozen base weight (GSQ-Tuning).
//
//     Y = X·W0ᵀ + s·(X·Aᵀ)·Bᵀ,   s = alpha / rank,   H = X·Aᵀ
//
// W0 [out, in] is a FrozenWeight (NF4 by default), stored once. A [rank, in] starts
// Kaiming-uniform (bound 1/√in, as PEFT; seeded counter-based RNG, so the same seed
// gives the same A on any machine) and B [out, rank] starts at zero, so a new layer
// reproduces the base exactly; both are FP32 masters with gradients.
//
// Integer mode (DESIGN.md "LoRA dataflow"): all eight products are GSE-INT GEMMs.
//   forward    Y  = Xq·W0ᵀ             B = BOperand::nf4(W0)             k = in
//              H  = Xq·Aqᵀ             B = A  [rank, in]                  k = in
//              Y += s·Hq·Bqᵀ           B = B  [out, rank]                 k = rank
//   backward   dH = s·dYq·Bq           B = Bᵀ [rank, out]                 k = out
//              dX = dYq·W0             B = BOperand::nf4_transposed(W0)  k = out
//              dX += dHq·Aq            B = Aᵀ [in, rank]                  k = rank
//              dA += dHqᵀ·Xq           B = Xᵀ via gse_transposed(Xq)      k = tokens
//              dB += s·dYqᵀ·Hq         B = Hᵀ via gse_transposed(Hq)      k = tokens
// X (activation bits) is quantized once per forward and shared by the base and LoRA
// branches — and, given a SharedInput (nn/qcd.hpp), by every layer reading the same X
// (q/k/v, gate/up), which then keeps one copy between them; the cache keeps only Xq and Hq (GSE-INT, MemoryCategory::kActivations), and
// backward reads their transposes through the GEMM's regrouping, so no FP32 activation
// and no second orientation is ever stored. A and B (tiny) are quantized from their FP32
// masters in whichever orientation a product needs, with the weight bits; dY and dH use
// the gradient bits and the configured rounding.
//
// FP32 mode (Bits::fp32()): the same products in FP32 on W0's exact stored values; the
// cache keeps X and H in FP32. It is the reference every integer result is compared with.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/nn/bits.hpp"
#include "gsq/nn/frozen_weight.hpp"
#include "gsq/nn/linear.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/qcd.hpp"
#include "gsq/nn/scratch.hpp"
#include "gsq/nn/workspace.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN

struct LoraConfig {
  std::int64_t rank = 8;
  float alpha = 16.0f;
  Bits bits = Bits::w8a8g8();
  std::uint64_t seed = 0;  // A's initialisation and stochastic rounding of gradients
  Rounding gradient_rounding = Rounding::kNearestEven;

  float scale() const noexcept { return alpha / static_cast<float>(rank); }
  void validate() const {
    GSQ_CHECK(rank >= 1, ErrorCode::kInvalidArgument,
              "LoraConfig: rank must be >= 1, got " + std::to_string(rank));
    GSQ_CHECK(std::isfinite(alpha) && alpha > 0.0f, ErrorCode::kInvalidArgument,
              "LoraConfig: alpha must be finite and > 0, got " + std::to_string(alpha));
    bits.validate();
  }
};

namespace detail {
inline constexpr std::uint64_t kLoraInitStream = 0x4C6F5241;  // "LoRA"

/// Kaiming-uniform with a = √5 (PyTorch's nn.Linear default, used by PEFT for A):
/// U(−1/√fan_in, 1/√fan_in), element i drawn from (seed, kLoraInitStream, i).
inline void kaiming_uniform(Tensor<float>& t, std::int64_t fan_in, std::uint64_t seed) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  CounterRng rng(seed, kLoraInitStream);
  for (float& v : t) v = rng.next_uniform(-bound, bound);
}
}  // namespace detail

class LoraLinear {
 public:
  /// What forward keeps for backward. Reuse one Cache per layer across steps: its
  /// buffers are reallocated only when the token count changes.
  struct Cache {
    GseMatrix x_q;  // integer: X [tokens, in], activation bits, groups along in
    GseMatrix h_q;  // integer: H [tokens, rank], activation bits, groups along rank
    Tensor<float> x, h;  // FP32 mode
    std::int64_t tokens = 0;
    // X kept by a SharedInput (then x_q / x stay empty); counted by its owner.
    const GseMatrix* shared_x_q = nullptr;
    const Tensor<float>* shared_x = nullptr;
    const GseMatrix& input_q() const noexcept { return shared_x_q != nullptr ? *shared_x_q : x_q; }
    const Tensor<float>& input() const noexcept { return shared_x != nullptr ? *shared_x : x; }
    std::int64_t bytes() const noexcept { return x_q.bytes() + h_q.bytes() + x.bytes() + h.bytes(); }
  };

  LoraLinear(FrozenWeight w0, LoraConfig config)
      : config_((config.validate(), config)), base_(std::move(w0), config.bits) {
    out_ = base_.out_features();
    in_ = base_.in_features();
    a_ = Tensor<float>({config_.rank, in_}, MemoryCategory::kWeights);
    b_ = Tensor<float>({out_, config_.rank}, MemoryCategory::kWeights);
    a_grad_ = Tensor<float>({config_.rank, in_}, MemoryCategory::kGradients);
    b_grad_ = Tensor<float>({out_, config_.rank}, MemoryCategory::kGradients);
    detail::kaiming_uniform(a_, in_, config_.seed);
  }

  std::int64_t in_features() const noexcept { return in_; }
  std::int64_t out_features() const noexcept { return out_; }
  std::int64_t rank() const noexcept { return config_.rank; }
  float scale() const noexcept { return config_.scale(); }
  const LoraConfig& config() const noexcept { return config_; }
  const FrozenWeight& frozen_weight() const noexcept { return base_.weight(); }
  Tensor<float>& lora_a() noexcept { return a_; }
  Tensor<float>& lora_b() noexcept { return b_; }
  const Tensor<float>& lora_a() const noexcept { return a_; }
  const Tensor<float>& lora_b() const noexcept { return b_; }
  Tensor<float>& lora_a_grad() noexcept { return a_grad_; }
  Tensor<float>& lora_b_grad() noexcept { return b_grad_; }

  /// Y = X·W0ᵀ + s·(X·Aᵀ)·Bᵀ for x [tokens, in] into y [tokens, out]; fills `cache`.
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache) {
    run_forward(x, y, &cache, nullptr);
  }
  /// As above, with X stored once in `shared` for every layer that reads the same x.
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache, SharedInput* shared) {
    run_forward(x, y, &cache, shared);
  }
  Tensor<float> forward(MatrixView<const float> x, Cache& cache) {
    Tensor<float> y({x.rows(), out_});
    forward(x, y.view(), cache);
    return y;
  }
  /// Forward without keeping anything for backward (evaluation, generation): Xq and Hq
  /// go to the per-thread scratch shared by all layers (nn/scratch.hpp).
  void forward(MatrixView<const float> x, MatrixView<float> y) { run_forward(x, y, nullptr, nullptr); }

  /// True when `cache` holds what recompute_forward needs (a forward with this cache ran).
  bool can_recompute_forward(const Cache& cache) const noexcept {
    return cache.tokens > 0 &&
           (config_.bits.is_fp32() ? cache.input().rank() == 2 && cache.h.rank() == 2
                                   : cache.input_q().rows() == cache.tokens && cache.h_q.rows() == cache.tokens);
  }
  /// y = the forward's output again, from what the cache keeps (Xq and Hq, or X and H):
  /// the same two products in the same order, so the same bits. Lets a caller drop an
  /// FP32 copy of the output (e.g. the MLP's g and u) and rebuild it in backward.
  void recompute_forward(const Cache& cache, MatrixView<float> y) {
    GSQ_CHECK(can_recompute_forward(cache), ErrorCode::kInvalidArgument,
              "LoraLinear::recompute_forward: the cache was not filled by a forward");
    check_shape(y, cache.tokens, out_, "LoraLinear::recompute_forward: y");
    if (config_.bits.is_fp32()) {
      base_.forward(cache.input().view(), y, false);
      gemm::gemm_f32(cache.h.view(), false, b_, true, y, {scale(), true});
      return;
    }
    base_.forward(cache.input_q(), y, false);
    detail::quantize_into(b_q_, b_, config_.bits.weight_spec(), false,
                          detail::nearest_options("LoRA B"));
    gemm::gemm_nt(cache.h_q, gemm::BOperand::gse(b_q_), y, {scale(), true});
  }

  /// Keys the stochastic rounding of the next backward: stream `n` (by default the
  /// number of earlier backward calls). The trainer sets it per micro-batch (step × M +
  /// index) so data-parallel processes and resumed runs round exactly as one process.
  void set_rounding_stream(std::uint64_t n) noexcept { backward_calls_ = n; }

  /// Backward for dy [tokens, out]: dx (+)= ∂L/∂X into dx [tokens, in] (an empty dx
  /// skips it), and accumulates the gradients of A and B.
  void backward(MatrixView<const float> dy, Cache& cache, MatrixView<float> dx,
                bool accumulate_dx = false) {
    const bool want_dx = detail::check_backward_args("LoraLinear", cache.tokens, dy, out_, dx, in_);
    const std::int64_t t = dy.rows(), r = config_.rank;
    const std::uint64_t step = backward_calls_++;
    using detail::ScratchSlot;
    MatrixView<float> dh = detail::shared_scratch(ScratchSlot::kAdapterGradient, t, r);

    if (config_.bits.is_fp32()) {
      gemm::gemm_f32(dy, false, b_, false, dh, {scale(), false});
      if (want_dx) {
        base_.backward(dy, dx, accumulate_dx);
        gemm::gemm_f32(dh, false, a_, false, dx, {1.0f, true});
      }
      gemm::gemm_f32(dh, true, cache.input(), false, a_grad_, {1.0f, true});
      gemm::gemm_f32(dy, true, cache.h, false, b_grad_, {scale(), true});
      return;
    }

    const Bits& bits = config_.bits;
    const GseSpec gspec = bits.gradient_spec(), wspec = bits.weight_spec();
    const QuantizeOptions qdy = detail::gradient_options(config_.gradient_rounding, config_.seed,
                                                         step, 1, "LoRA output gradient dY");
    const QuantizeOptions qdh = detail::gradient_options(config_.gradient_rounding, config_.seed,
                                                         step, 2, "LoRA hidden gradient dH");
    // dH = s·dY·B (k = out), and dX = dY·W0 from the same quantized dY.
    GseMatrix& dy_q = detail::shared_gse(ScratchSlot::kGradient, t, out_, gspec);
    quantize_gse(dy, false, dy_q, qdy);
    detail::quantize_into(b_qt_, b_, wspec, true, detail::nearest_options("LoRA B"));
    gemm::gemm_nt(dy_q, gemm::BOperand::gse(b_qt_), dh, {scale(), false});
    if (want_dx) base_.backward(dy_q, dx, accumulate_dx);
    // dX += dH·A (k = rank).
    GseMatrix& dh_q = detail::shared_gse(ScratchSlot::kAdapterGradient, t, r, gspec);
    quantize_gse(dh, false, dh_q, qdh);
    if (want_dx) {
      detail::quantize_into(a_qt_, a_, wspec, true, detail::nearest_options("LoRA A"));
      gemm::gemm_nt(dh_q, gemm::BOperand::gse(a_qt_), dx, {1.0f, true});
    }
    // dA += dHᵀ·X and dB += s·dYᵀ·H (k = tokens; Xᵀ, Hᵀ regrouped from the cache).
    GseMatrix& dh_qt = detail::shared_gse(ScratchSlot::kAdapterGradientT, r, t, gspec);
    quantize_gse(dh, true, dh_qt, qdh);
    gemm::gemm_nt(dh_qt, gemm::BOperand::gse_transposed(cache.input_q(), bits.activation_spec()),
                  a_grad_, {1.0f, true});
    GseMatrix& dy_qt = detail::shared_gse(ScratchSlot::kGradientT, out_, t, gspec);
    quantize_gse(dy, true, dy_qt, qdy);
    gemm::gemm_nt(dy_qt, gemm::BOperand::gse_transposed(cache.h_q, bits.activation_spec()),
                  b_grad_, {scale(), true});
  }
  Tensor<float> backward(MatrixView<const float> dy, Cache& cache) {
    Tensor<float> dx({dy.rows(), in_});
    backward(dy, cache, dx.view());
    return dx;
  }

  void zero_grad() noexcept {
    for (float& g : a_grad_) g = 0.0f;
    for (float& g : b_grad_) g = 0.0f;
  }
  /// {"lora_a", "lora_b"}: the adapters' FP32 masters and gradients.
  ParameterList parameters() {
    return {{"lora_a", &a_, &a_grad_}, {"lora_b", &b_, &b_grad_}};
  }

  /// W0 + s·B·A in FP32 [out, in] (W0's stored values): the merged weight, e.g. to
  /// export the adapted layer or to quantize it afterwards.
  Tensor<float> merged_weight(MemoryCategory category = MemoryCategory::kScratch) const {
    Tensor<float> w = base_.weight().dequantized(category);
    gemm::gemm_f32(b_, false, a_, false, w.view(), {scale(), true});
    return w;
  }

 private:
  void run_forward(MatrixView<const float> x, MatrixView<float> y, Cache* cache,
                   SharedInput* shared) {
    detail::check_tokens(x, in_, "LoraLinear::forward: x");
    check_shape(y, x.rows(), out_, "LoraLinear::forward: y");
    const std::int64_t t = x.rows(), r = config_.rank;
    if (cache != nullptr) {
      cache->tokens = t;
      cache->shared_x_q = nullptr;
      cache->shared_x = nullptr;
    }
    if (cache == nullptr) shared = nullptr;
    using detail::ScratchSlot;
    if (config_.bits.is_fp32()) {
      MatrixView<float> h = cache != nullptr
                                ? ensure_matrix(cache->h, t, r, MemoryCategory::kActivations)
                                : detail::shared_scratch(ScratchSlot::kAdapter, t, r);
      if (cache != nullptr) {
        cache->shared_x = shared != nullptr ? shared->fp32(x) : nullptr;
        if (cache->shared_x != nullptr) {
          cache->x = Tensor<float>();  // a copy kept by an earlier unshared forward
        } else {
          MatrixView<float> xc = ensure_matrix(cache->x, t, in_, MemoryCategory::kActivations);
          for (std::int64_t i = 0; i < t; ++i) std::copy(x.row(i), x.row(i) + in_, xc.row(i));
        }
      }
      base_.forward(x, y, false);
      gemm::gemm_f32(x, false, a_, true, h);
      gemm::gemm_f32(h, false, b_, true, y, {scale(), true});
      return;
    }
    const Bits& bits = config_.bits;
    // X quantized once: in the group's SharedInput, else in this layer's cache.
    const GseMatrix* sq =
        shared != nullptr ? shared->quantized(x, bits.activation_spec(), "LoRA input X") : nullptr;
    if (sq != nullptr) {
      cache->shared_x_q = sq;
      cache->x_q = GseMatrix();  // a copy kept by an earlier unshared forward
    } else {
      GseMatrix& own =
          cache != nullptr
              ? ensure_gse(cache->x_q, t, in_, bits.activation_spec(), MemoryCategory::kActivations)
              : detail::shared_gse(ScratchSlot::kActivation, t, in_, bits.activation_spec());
      quantize_gse(x, false, own, detail::nearest_options("LoRA input X"));
      sq = &own;
    }
    const GseMatrix& xq = *sq;
    GseMatrix& hq =
        cache != nullptr
            ? ensure_gse(cache->h_q, t, r, bits.activation_spec(), MemoryCategory::kActivations)
            : detail::shared_gse(ScratchSlot::kAdapter, t, r, bits.activation_spec());
    base_.forward(xq, y, false);
    detail::quantize_into(a_q_, a_, bits.weight_spec(), false,
                          detail::nearest_options("LoRA A"));
    MatrixView<float> h = detail::shared_scratch(ScratchSlot::kAdapter, t, r);
    gemm::gemm_nt(xq, gemm::BOperand::gse(a_q_), h);
    quantize_gse(h, false, hq, detail::nearest_options("LoRA hidden H = X·Aᵀ"));
    detail::quantize_into(b_q_, b_, bits.weight_spec(), false,
                          detail::nearest_options("LoRA B"));
    gemm::gemm_nt(hq, gemm::BOperand::gse(b_q_), y, {scale(), true});
  }

  LoraConfig config_;
  detail::FrozenBase base_;
  std::int64_t out_ = 0, in_ = 0;
  Tensor<float> a_, b_, a_grad_, b_grad_;
  std::uint64_t backward_calls_ = 0;
  // The adapters quantized for the GEMMs (kScratch, adapter-sized); the activation- and
  // gradient-sized temporaries are the thread's shared scratch (nn/scratch.hpp).
  GseMatrix a_q_, b_q_, a_qt_, b_qt_;
};

GSQ_NAMESPACE_END
