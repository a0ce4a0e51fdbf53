// gsq/nn/l4q_linear.hpp — L4Q (Jeon et al., arXiv 2402.04902): quantization-aware LoRA.
//
// The layer's weight is the quantized merge of a frozen base and a LoRA adapter,
//     W   = W0 + c·B·A            c = alpha / rank, A [rank, in], B [out, rank]
//     W_q = Q(W)                  uniform asymmetric, n bits, groups of G along in,
//                                 learnable step s and offset b per group (LSQ+)
//     Y   = X·W_qᵀ
// trained with straight-through gradients (nn/uniform_quant.hpp): with dŴ = dYᵀ·X,
//     dW = dŴ ⊙ [Qn ≤ (W − b)/s ≤ Qp],  dA = c·Bᵀ·dW,  dB = c·dW·Aᵀ,  ds, db from LSQ+,
// so the deployed artifact is one fully quantized matrix (merge()), not a base plus an
// adapter. Memory-optimised backward as in the paper: the cache keeps only X; W and W_q
// are recomputed from W0, A, B, s, b in backward (two reused [out, in] FP32 scratch
// buffers, MemoryCategory::kScratch).
//
// Warm-up: the first `warmup_steps` training forwards (forwards with a cache) use the
// unquantized W and train A and B only (s and b get zero gradients); the next one
// initialises s and b from the merged weight (min/max per group) and quantizes from
// then on. With warmup_steps = 0 this happens at construction (B = 0, so from W0).
//
// Integer mode (bits not FP32): the three large products are GSE-INT GEMMs,
//     Y  = Xq·W_qᵀ     W_q re-encoded to GSE-INT with the weight bits, groups along in
//     dX = dYq·W_q     W_q re-encoded with groups along out
//     dŴ = dYqᵀ·Xq     Xᵀ read from the cached Xq through BOperand::gse_transposed
// W_q = q·s + b is exact per L4Q group, but s and b are arbitrary floats and the GEMM
// scales each k-group by a power of two only, so an exact product on the codes would
// need a per-(row, group) FP32 scale inside the GEMM. Instead W_q is re-encoded the way
// an NF4 base weight is (≤ half a GSE step of error per element: ≈ 2^−(w−1) of the
// group's largest |W_q|; ≈ 6% of an L4Q step at 8 weight bits and n = 4). The deployed
// integer forward is defined the same way, so merge() reproduces it bit for bit. The
// adapter-sized products (c·B·A, Bᵀ·dW, dW·Aᵀ) stay FP32: they are cheap and feed the
// FP32 masters.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/nn/bits.hpp"
#include "gsq/nn/frozen_weight.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/qcd.hpp"
#include "gsq/nn/uniform_quant.hpp"
#include "gsq/nn/workspace.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN

struct L4qConfig {
  std::int64_t rank = 8;
  float alpha = 16.0f;
  int quant_bits = 4;     // n: code width of W_q (2..8)
  int quant_group = 128;  // G: weights per (step, offset) along in
  std::int64_t warmup_steps = 0;
  Bits bits = Bits::fp32();  // the GEMMs: FP32, or GSE-INT widths
  std::uint64_t seed = 0;    // A's initialisation, stochastic rounding of gradients
  Rounding gradient_rounding = Rounding::kNearestEven;

  float scale() const noexcept { return alpha / static_cast<float>(rank); }
  void validate() const {
    GSQ_CHECK(rank >= 1, ErrorCode::kInvalidArgument,
              "L4qConfig: rank must be >= 1, got " + std::to_string(rank));
    GSQ_CHECK(std::isfinite(alpha) && alpha > 0.0f, ErrorCode::kInvalidArgument,
              "L4qConfig: alpha must be finite and > 0, got " + std::to_string(alpha));
    (void)detail::UniformGrid::of(quant_bits);
    GSQ_CHECK(quant_group >= 1, ErrorCode::kInvalidArgument,
              "L4qConfig: quant_group must be >= 1, got " + std::to_string(quant_group));
    GSQ_CHECK(warmup_steps >= 0, ErrorCode::kInvalidArgument,
              "L4qConfig: warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
    bits.validate();
  }
};

/// The deployed form of an L4Q layer: integer codes with a step and an offset per group,
/// and their FP32 dequantization (the very W_q the forward used).
struct L4qMerged {
  int bits = 4;
  int group = 128;
  Tensor<std::int8_t> codes;  // [out, in], each in [−2^(n−1), 2^(n−1) − 1]
  Tensor<float> step;         // [out, groups]
  Tensor<float> offset;       // [out, groups]
  Tensor<float> weight;       // [out, in] = codes·step + offset

  std::int64_t out_features() const noexcept { return codes.rank() ? codes.dim(0) : 0; }
  std::int64_t in_features() const noexcept { return codes.rank() ? codes.dim(1) : 0; }
  /// Deployed size: n bits per weight plus FP32 step and offset per group.
  std::int64_t packed_bytes() const noexcept {
    return (codes.numel() * bits + 7) / 8 + step.bytes() + offset.bytes();
  }
};

class L4qLinear {
 public:
  /// What forward keeps for backward: X only (Xq in integer mode).
  struct Cache {
    GseMatrix x_q;    // integer: [tokens, in], activation bits
    Tensor<float> x;  // FP32 mode
    std::int64_t tokens = 0;
    bool quantized = false;  // forward ran past the warm-up
    std::int64_t bytes() const noexcept { return x_q.bytes() + x.bytes(); }
  };

  L4qLinear(FrozenWeight w0, L4qConfig config)
      : config_((config.validate(), config)),
        grid_(detail::UniformGrid::of(config.quant_bits)),
        w0_(std::move(w0)) {
    GSQ_CHECK(!w0_.empty(), ErrorCode::kInvalidArgument, "L4qLinear: frozen weight is empty");
    out_ = w0_.out_features();
    in_ = w0_.in_features();
    groups_ = (in_ + config_.quant_group - 1) / config_.quant_group;
    a_ = Tensor<float>({config_.rank, in_}, MemoryCategory::kWeights);
    b_ = Tensor<float>({out_, config_.rank}, MemoryCategory::kWeights);
    s_ = Tensor<float>({out_, groups_}, MemoryCategory::kWeights);
    o_ = Tensor<float>({out_, groups_}, MemoryCategory::kWeights);
    a_grad_ = Tensor<float>({config_.rank, in_}, MemoryCategory::kGradients);
    b_grad_ = Tensor<float>({out_, config_.rank}, MemoryCategory::kGradients);
    s_grad_ = Tensor<float>({out_, groups_}, MemoryCategory::kGradients);
    o_grad_ = Tensor<float>({out_, groups_}, MemoryCategory::kGradients);
    detail::kaiming_uniform(a_, in_, config_.seed);
    if (config_.warmup_steps == 0) start_quantization();
  }

  std::int64_t in_features() const noexcept { return in_; }
  std::int64_t out_features() const noexcept { return out_; }
  std::int64_t rank() const noexcept { return config_.rank; }
  std::int64_t groups_per_row() const noexcept { return groups_; }
  float scale() const noexcept { return config_.scale(); }
  const L4qConfig& config() const noexcept { return config_; }
  const FrozenWeight& frozen_weight() const noexcept { return w0_; }
  Tensor<float>& lora_a() noexcept { return a_; }
  Tensor<float>& lora_b() noexcept { return b_; }
  Tensor<float>& quant_step() noexcept { return s_; }
  Tensor<float>& quant_offset() noexcept { return o_; }
  Tensor<float>& lora_a_grad() noexcept { return a_grad_; }
  Tensor<float>& lora_b_grad() noexcept { return b_grad_; }
  Tensor<float>& quant_step_grad() noexcept { return s_grad_; }
  Tensor<float>& quant_offset_grad() noexcept { return o_grad_; }
  /// Past the warm-up: the forward quantizes and s, b train.
  bool quantizing() const noexcept { return quantizing_; }
  /// Training forwards seen so far.
  std::int64_t training_steps() const noexcept { return training_steps_; }

  /// Initialises s and b from the current merged weight (min/max per group) and turns
  /// quantization on. Called automatically when the warm-up ends.
  void start_quantization() {
    MatrixView<float> w = ensure_matrix(w_, out_, in_, MemoryCategory::kScratch);
    merged_into(w);
    const std::int64_t g = config_.quant_group;
    parallel_for(out_, [&](std::int64_t r) {
      for (std::int64_t j = 0; j < groups_; ++j) {
        const std::int64_t k0 = j * g, n = std::min(g, in_ - k0);
        detail::uniform_init_minmax(w.row(r) + k0, n, grid_, s_(r, j), o_(r, j));
      }
    });
    quantizing_ = true;
  }

  /// Y = X·W_qᵀ for x [tokens, in] into y [tokens, out]; fills `cache` (a training step).
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache) {
    if (!quantizing_ && training_steps_ >= config_.warmup_steps) start_quantization();
    ++training_steps_;
    run_forward(x, y, cache);
  }
  Tensor<float> forward(MatrixView<const float> x, Cache& cache) {
    Tensor<float> y({x.rows(), out_});
    forward(x, y.view(), cache);
    return y;
  }
  /// Forward without keeping anything for backward and without counting a step.
  void forward(MatrixView<const float> x, MatrixView<float> y) { run_forward(x, y, eval_cache_); }

  /// dX (+)= dY·W_q into dx (empty dx skips it); accumulates dA, dB and, past the
  /// warm-up, ds and db. Recomputes W and W_q from W0, A, B, s, b.
  void backward(MatrixView<const float> dy, Cache& cache, MatrixView<float> dx,
                bool accumulate_dx = false) {
    GSQ_CHECK(cache.tokens > 0, ErrorCode::kInvalidArgument,
              "L4qLinear::backward: the cache was not filled by forward");
    detail::check_tokens(dy, out_, "L4qLinear::backward: dy");
    GSQ_CHECK(dy.rows() == cache.tokens, ErrorCode::kShapeMismatch,
              "L4qLinear::backward: dy has " + std::to_string(dy.rows()) +
                  " tokens but forward saw " + std::to_string(cache.tokens));
    const bool want_dx = !dx.empty();
    if (want_dx) check_shape(dx, dy.rows(), in_, "L4qLinear::backward: dx");
    const std::uint64_t step = backward_calls_++;
    const bool quantized = cache.quantized;

    // Recompute W (kept for the LSQ+ masks) and W_q.
    MatrixView<float> w = ensure_matrix(w_, out_, in_, MemoryCategory::kScratch);
    MatrixView<float> work = ensure_matrix(work_, out_, in_, MemoryCategory::kScratch);
    merged_into(w);
    MatrixView<const float> wq = w;
    if (quantized) {
      fake_quantize(w, work);
      wq = work;
    }
    // dX = dY·W_q, then dŴ = dYᵀ·X into `work` (W_q is no longer needed).
    if (config_.bits.is_fp32()) {
      if (want_dx) gemm::gemm_f32(dy, false, wq, false, dx, {1.0f, accumulate_dx});
      gemm::gemm_f32(dy, true, cache.x, false, work);
    } else {
      const Bits& bits = config_.bits;
      const GseSpec gspec = bits.gradient_spec();
      const QuantizeOptions qdy = detail::gradient_options(
          config_.gradient_rounding, config_.seed, step, 1, "L4Q output gradient dY");
      if (want_dx) {
        detail::quantize_into(dy_q_, dy, gspec, false, qdy);
        detail::quantize_into(wq_q_, wq, bits.weight_spec(), true,
                              detail::nearest_options("L4Q weight W_q"));
        gemm::gemm_nt(dy_q_, gemm::BOperand::gse(wq_q_), dx, {1.0f, accumulate_dx});
      }
      detail::quantize_into(dy_q_, dy, gspec, true, qdy);
      gemm::gemm_nt(dy_q_, gemm::BOperand::gse_transposed(cache.x_q, bits.activation_spec()),
                    work);
    }
    // dW = mask ⊙ dŴ with ds, db (LSQ+); then dA = c·Bᵀ·dW and dB = c·dW·Aᵀ.
    if (quantized) {
      const std::int64_t g = config_.quant_group;
      parallel_for(out_, [&](std::int64_t r) {
        for (std::int64_t j = 0; j < groups_; ++j) {
          const std::int64_t k0 = j * g, n = std::min(g, in_ - k0);
          detail::uniform_lsq_backward(w.row(r) + k0, work.row(r) + k0, n, s_(r, j), o_(r, j),
                                       grid_, work.row(r) + k0, s_grad_(r, j), o_grad_(r, j));
        }
      });
    }
    gemm::gemm_f32(b_, true, work, false, a_grad_, {scale(), true});
    gemm::gemm_f32(work, false, a_, true, b_grad_, {scale(), true});
  }
  Tensor<float> backward(MatrixView<const float> dy, Cache& cache) {
    Tensor<float> dx({dy.rows(), in_});
    backward(dy, cache, dx.view());
    return dx;
  }

  void zero_grad() noexcept {
    for (Tensor<float>* g : {&a_grad_, &b_grad_, &s_grad_, &o_grad_})
      for (float& v : *g) v = 0.0f;
  }
  /// {"lora_a", "lora_b", "quant_step", "quant_offset"}. Exclude the last two from weight
  /// decay (decaying a step shrinks the grid).
  ParameterList parameters() {
    return {{"lora_a", &a_, &a_grad_},
            {"lora_b", &b_, &b_grad_},
            {"quant_step", &s_, &s_grad_},
            {"quant_offset", &o_, &o_grad_}};
  }

  /// The deployed layer: codes, step and offset per group, and W_q in FP32 — exactly the
  /// weight the forward uses (FP32 forward: Y = X·weightᵀ; integer forward: the same
  /// after re-encoding weight to GSE-INT with the weight bits). Throws during warm-up.
  L4qMerged merge() const {
    GSQ_CHECK(quantizing_, ErrorCode::kInvalidArgument,
              "L4qLinear::merge: still in warm-up (call start_quantization() first)");
    L4qMerged m;
    m.bits = config_.quant_bits;
    m.group = config_.quant_group;
    m.codes = Tensor<std::int8_t>({out_, in_}, MemoryCategory::kWeights);
    m.step = s_.clone();
    m.offset = o_.clone();
    m.weight = Tensor<float>({out_, in_}, MemoryCategory::kWeights);
    MatrixView<float> w = m.weight.view();
    merged_into(w);
    const std::int64_t g = config_.quant_group;
    for (std::int64_t r = 0; r < out_; ++r) {
      for (std::int64_t j = 0; j < groups_; ++j) {
        const std::int64_t k0 = j * g, n = std::min(g, in_ - k0);
        float* row = w.row(r) + k0;
        detail::uniform_codes(row, n, s_(r, j), o_(r, j), grid_, row);
        for (std::int64_t k = 0; k < n; ++k) {
          GSQ_CHECK(std::isfinite(row[k]), ErrorCode::kNonFinite,
                    "L4qLinear::merge: merged weight is not finite at row " + std::to_string(r) +
                        ", column " + std::to_string(k0 + k));
          m.codes(r, k0 + k) = static_cast<std::int8_t>(row[k]);
        }
        detail::uniform_dequantize(row, n, s_(r, j), o_(r, j), row);
      }
    }
    return m;
  }

 private:
  /// W = W0 + c·B·A into w [out, in] (W0's exact stored values).
  void merged_into(MatrixView<float> w) const {
    w0_.dequantize(w);
    gemm::gemm_f32(b_, false, a_, false, w, {scale(), true});
  }

  /// W_q = Q(W) row by row, group by group (dst may alias src).
  void fake_quantize(MatrixView<const float> src, MatrixView<float> dst) const {
    const std::int64_t g = config_.quant_group;
    parallel_for(out_, [&](std::int64_t r) {
      for (std::int64_t j = 0; j < groups_; ++j) {
        const std::int64_t k0 = j * g, n = std::min(g, in_ - k0);
        float* out = dst.row(r) + k0;
        detail::uniform_codes(src.row(r) + k0, n, s_(r, j), o_(r, j), grid_, out);
        detail::uniform_dequantize(out, n, s_(r, j), o_(r, j), out);
      }
    });
  }

  void run_forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache) {
    detail::check_tokens(x, in_, "L4qLinear::forward: x");
    check_shape(y, x.rows(), out_, "L4qLinear::forward: y");
    cache.tokens = x.rows();
    cache.quantized = quantizing_;
    // W_q in one reused buffer: merge, then quantize in place.
    MatrixView<float> wq = ensure_matrix(work_, out_, in_, MemoryCategory::kScratch);
    merged_into(wq);
    if (quantizing_) fake_quantize(wq, wq);
    if (config_.bits.is_fp32()) {
      MatrixView<float> xc = ensure_matrix(cache.x, x.rows(), in_, MemoryCategory::kActivations);
      for (std::int64_t i = 0; i < x.rows(); ++i) std::copy(x.row(i), x.row(i) + in_, xc.row(i));
      gemm::gemm_f32(x, false, wq, true, y);
      return;
    }
    const Bits& bits = config_.bits;
    detail::quantize_into(cache.x_q, x, bits.activation_spec(), false,
                          detail::nearest_options("L4Q input X"), MemoryCategory::kActivations);
    detail::quantize_into(wq_q_, wq, bits.weight_spec(), false,
                          detail::nearest_options("L4Q weight W_q"));
    gemm::gemm_nt(cache.x_q, gemm::BOperand::gse(wq_q_), y);
  }

  L4qConfig config_;
  detail::UniformGrid grid_;
  FrozenWeight w0_;
  std::int64_t out_ = 0, in_ = 0, groups_ = 0;
  Tensor<float> a_, b_, s_, o_;
  Tensor<float> a_grad_, b_grad_, s_grad_, o_grad_;
  bool quantizing_ = false;
  std::int64_t training_steps_ = 0;
  std::uint64_t backward_calls_ = 0;
  Cache eval_cache_;
  // Reused scratch (kScratch): merged W, W_q / dŴ, and GSE-INT operands.
  Tensor<float> w_, work_;
  GseMatrix wq_q_, dy_q_;
};

GSQ_NAMESPACE_END
