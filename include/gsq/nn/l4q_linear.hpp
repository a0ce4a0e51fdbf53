// gsq/nn/l4q_linear.hpp — L4Q (Jeon et al., arXiv 2402.04902): quantization-aware LoRA.
//
// The layer's weight is the quantized merge of a frozen base and a LoRA adapter,
//     W   = W0 + c·B·A            c = alpha / rank, A [rank, in], B [out, rank]
//     W_q = Q(W)                  uniform asymmetric, n bits, groups of G along in,
//                                 learnable step s and offset b per group (LSQ+;
//                                 quant/uniform.hpp: the quantizer, its gradients and
//                                 the export format)
//     Y   = X·W_qᵀ
// trained with straight-through gradients: with dŴ = dYᵀ·X,
//     dW = dŴ ⊙ [Qn ≤ (W − b)/s ≤ Qp],  dA = c·Bᵀ·dW,  dB = c·dW·Aᵀ,  ds, db from LSQ+,
// so the deployed artifact is one fully quantized matrix (merge()), not a base plus an
// adapter. Memory-optimised backward as in the paper: the cache keeps only X; W and W_q
// are recomputed from W0, A, B, s, b in backward, block by block of rows (decode W0,
// add c·B·A row by row, quantize). Weight-sized temporaries live in the per-thread
// scratch shared by all layers (nn/scratch.hpp), not in each layer.
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
// adapter gradients dB = c·dW·Aᵀ (k = in) and dA = c·Bᵀ·dW (k = out) are GSE-INT GEMMs
// too (dW with the gradient bits, A and B with the weight bits); the merge c·B·A stays
// FP32, since it feeds the quantizer's rounding decisions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/nn/bits.hpp"
#include "gsq/nn/frozen_weight.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/nn/lora_merge.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/qcd.hpp"
#include "gsq/nn/scratch.hpp"
#include "gsq/nn/workspace.hpp"
#include "gsq/format/uniform.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/uniform.hpp"

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
  // Keep each step s and minimum b − 2^(n−1)·s on the FP16 grid (rounded when quantization
  // starts and before every forward, i.e. after each optimizer step), so a GGUF Q4_1
  // export (FP16 scale and minimum per 32) is exactly the trained model.
  bool fp16_grid = false;

  float scale() const noexcept { return alpha / static_cast<float>(rank); }
  UniformSpec quant_spec() const noexcept { return {quant_bits, quant_group}; }
  void validate() const {
    GSQ_CHECK(rank >= 1, ErrorCode::kInvalidArgument,
              "L4qConfig: rank must be >= 1, got " + std::to_string(rank));
    GSQ_CHECK(std::isfinite(alpha) && alpha > 0.0f, ErrorCode::kInvalidArgument,
              "L4qConfig: alpha must be finite and > 0, got " + std::to_string(alpha));
    GSQ_CHECK(quant_bits >= 2 && quant_bits <= 8, ErrorCode::kInvalidArgument,
              "L4qConfig: quant_bits must be 2..8, got " + std::to_string(quant_bits));
    GSQ_CHECK(quant_group >= 1, ErrorCode::kInvalidArgument,
              "L4qConfig: quant_group must be >= 1, got " + std::to_string(quant_group));
    GSQ_CHECK(warmup_steps >= 0, ErrorCode::kInvalidArgument,
              "L4qConfig: warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
    bits.validate();
  }
};

/// The deployed form of an L4Q layer: integer codes with a step and an offset per group
/// (format/uniform.hpp), and their FP32 dequantization — the very W_q the forward used.
struct L4qMerged {
  UniformMatrix quantized;  // [out, in] codes, steps s' and offsets per group
  Tensor<float> weight;     // [out, in] = fma(code, step, offset)
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
      : config_((config.validate(), config)), spec_(config.quant_spec()), w0_(std::move(w0)) {
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
  /// Puts the layer where it was after `steps` training forwards (resuming a run): in or
  /// past the warm-up exactly as then. Step and offset are not touched: past the warm-up
  /// the caller restores them (Trainer::load_state does, with every other parameter).
  void restore_training_steps(std::int64_t steps) {
    GSQ_CHECK(steps >= 0, ErrorCode::kInvalidArgument,
              "L4qLinear::restore_training_steps: steps must be >= 0, got " + std::to_string(steps));
    training_steps_ = steps;
    quantizing_ = config_.warmup_steps == 0 || steps > config_.warmup_steps;
  }

  /// Initialises s and b from the current merged weight (min/max per group) and turns
  /// quantization on. Called automatically when the warm-up ends.
  void start_quantization() {
    const MatrixView<const float> a = strided_a();
    for_each_row_block(kRowBlock, [&](std::int64_t r0, std::int64_t rows) {
      MatrixView<float> w = detail::shared_scratch(detail::ScratchSlot::kBlock, rows, in_);
      merged_rows(r0, w, a);
      init_uniform_minmax(w, spec_, s_.view().row_range(r0, rows), o_.view().row_range(r0, rows),
                          "L4Q merged weight");
    });
    quantizing_ = true;
    snap_to_fp16_grid();
  }

  /// With config().fp16_grid: rounds every step s and minimum m = b − 2^(n−1)·s to FP16
  /// values (s > 0 kept) and sets b = m + 2^(n−1)·s. No effect otherwise; idempotent.
  /// Forward calls it; call it before merge() if an optimizer step came after the last forward.
  void snap_to_fp16_grid() noexcept {
    if (!config_.fp16_grid) return;
    const auto half = static_cast<float>(1 << (config_.quant_bits - 1));
    for (std::int64_t i = 0; i < s_.numel(); ++i) {
      float s = round_to_fp16_grid(s_.data()[i]);
      if (!(s > 0.0f)) s = 0x1p-24f;  // the smallest FP16 step
      const float m = round_to_fp16_grid(o_.data()[i] - half * s);
      s_.data()[i] = s;
      o_.data()[i] = m + half * s;
    }
  }

  /// Y = X·W_qᵀ for x [tokens, in] into y [tokens, out]; fills `cache` (a training step).
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache) {
    if (!quantizing_ && training_steps_ >= config_.warmup_steps) start_quantization();
    ++training_steps_;
    run_forward(x, y, &cache);
  }
  Tensor<float> forward(MatrixView<const float> x, Cache& cache) {
    Tensor<float> y({x.rows(), out_});
    forward(x, y.view(), cache);
    return y;
  }
  /// Forward without keeping anything for backward and without counting a step.
  void forward(MatrixView<const float> x, MatrixView<float> y) { run_forward(x, y, nullptr); }

  /// Keys the stochastic rounding of the next backward: stream `n` (by default the
  /// number of earlier backward calls). The trainer sets it per micro-batch (step × M +
  /// index) so data-parallel processes and resumed runs round exactly as one process.
  void set_rounding_stream(std::uint64_t n) noexcept { backward_calls_ = n; }

  /// dX (+)= dY·W_q into dx (empty dx skips it); accumulates dA, dB and, past the
  /// warm-up, ds and db. Recomputes W and W_q from W0, A, B, s, b.
  void backward(MatrixView<const float> dy, Cache& cache, MatrixView<float> dx,
                bool accumulate_dx = false) {
    const bool want_dx = detail::check_backward_args("L4qLinear", cache.tokens, dy, out_, dx, in_);
    const std::uint64_t step = backward_calls_++;
    const bool quantized = cache.quantized;
    using detail::ScratchSlot;
    MatrixView<float> w = detail::shared_scratch(ScratchSlot::kWeight, out_, in_);
    MatrixView<float> work = detail::shared_scratch(ScratchSlot::kWeightWork, out_, in_);
    const MatrixView<const float> a = strided_a();

    if (config_.bits.is_fp32()) {
      // W and W_q, then dX = dY·W_q and dŴ = dYᵀ·X (over W_q, no longer needed).
      for_each_row_block(kRowBlock, [&](std::int64_t r0, std::int64_t rows) {
        merged_rows(r0, w.row_range(r0, rows), a);
        if (quantized) fake_quant_rows(r0, w.row_range(r0, rows), work.row_range(r0, rows));
      });
      if (want_dx)
        gemm::gemm_f32(dy, false, quantized ? work : w, false, dx, {1.0f, accumulate_dx});
      gemm::gemm_f32(dy, true, cache.x, false, work);
      if (quantized) lsq_backward(w, work);
      gemm::gemm_f32(b_, true, work, false, a_grad_, {scale(), true});
      gemm::gemm_f32(work, false, a_, true, b_grad_, {scale(), true});
      return;
    }

    const Bits& bits = config_.bits;
    const GseSpec wspec = bits.weight_spec(), gspec = bits.gradient_spec();
    const std::int64_t group = bits.group;
    // W (kept for the LSQ+ masks) and W_qᵀ in GSE-INT grouped along out, one group of
    // rows at a time: each block of `group` rows is one k-group of every row of W_qᵀ.
    GseMatrix& wq_t = detail::shared_gse(ScratchSlot::kWeightWork, in_, out_, wspec);
    if (want_dx) {
      for_each_row_block(group, [&](std::int64_t r0, std::int64_t rows) {
        merged_rows(r0, w.row_range(r0, rows), a);
        MatrixView<const float> src = w.row_range(r0, rows);
        if (quantized) {
          MatrixView<float> blk = detail::shared_scratch(ScratchSlot::kBlock, rows, in_);
          fake_quant_rows(r0, w.row_range(r0, rows), blk);
          src = blk;
        }
        GseMatrix& qt = detail::shared_gse(ScratchSlot::kBlock, in_, rows, wspec);
        quantize_gse(src, true, qt, detail::nearest_options("L4Q weight W_q"));
        copy_group_column(qt, wq_t, r0 / group);
      });
    } else {
      for_each_row_block(kRowBlock, [&](std::int64_t r0, std::int64_t rows) {
        merged_rows(r0, w.row_range(r0, rows), a);
      });
    }
    const QuantizeOptions qdy = detail::gradient_options(config_.gradient_rounding, config_.seed,
                                                         step, 1, "L4Q output gradient dY");
    if (want_dx) {
      GseMatrix& dy_q = detail::shared_gse(ScratchSlot::kGradient, dy.rows(), out_, gspec);
      quantize_gse(dy, false, dy_q, qdy);
      gemm::gemm_nt(dy_q, gemm::BOperand::gse(wq_t), dx, {1.0f, accumulate_dx});
    }
    // dŴ = dYᵀ·X (k = tokens), then dW = mask ⊙ dŴ in place.
    GseMatrix& dy_qt = detail::shared_gse(ScratchSlot::kGradientT, out_, dy.rows(), gspec);
    quantize_gse(dy, true, dy_qt, qdy);
    gemm::gemm_nt(dy_qt, gemm::BOperand::gse_transposed(cache.x_q, bits.activation_spec()), work);
    if (quantized) lsq_backward(w, work);
    // dB += c·dW·Aᵀ (k = in) and dA += c·Bᵀ·dW (k = out, dWᵀ regrouped from dWq).
    GseMatrix& dwq = detail::shared_gse(ScratchSlot::kWeight, out_, in_, gspec);
    quantize_gse(work, false, dwq,
                 detail::gradient_options(config_.gradient_rounding, config_.seed, step, 3,
                                          "L4Q weight gradient dW"));
    detail::quantize_into(a_q_, a_, wspec, false, detail::nearest_options("L4Q A"));
    gemm::gemm_nt(dwq, gemm::BOperand::gse(a_q_), b_grad_, {scale(), true});
    detail::quantize_into(b_qt_, b_, wspec, true, detail::nearest_options("L4Q B"));
    gemm::gemm_nt(b_qt_, gemm::BOperand::gse_transposed(dwq, gspec), a_grad_, {scale(), true});
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
    m.weight = Tensor<float>({out_, in_}, MemoryCategory::kWeights);
    const MatrixView<const float> a = strided_a();
    for_each_row_block(kRowBlock, [&](std::int64_t r0, std::int64_t rows) {
      merged_rows(r0, m.weight.view().row_range(r0, rows), a);
    });
    m.quantized = quantize_uniform(m.weight, spec_, s_, o_, MemoryCategory::kWeights,
                                   "L4Q merged weight");
    fake_quant_rows(0, m.weight, m.weight);
    return m;
  }

 private:
  static constexpr std::int64_t kRowBlock = 16;  // rows per parallel chunk of FP32 work

  /// A copied with a row stride that is not a multiple of 4 KiB: the merge kernel reads
  /// all rank rows of A at the same column, and power-of-two strides would map them all
  /// to the same L1 sets. Valid until the next call on this thread.
  MatrixView<const float> strided_a() const {
    const std::int64_t stride = (in_ + 15) / 16 * 16 + 16;
    MatrixView<float> buf =
        detail::shared_scratch(detail::ScratchSlot::kAdapter, config_.rank, stride);
    for (std::int64_t j = 0; j < config_.rank; ++j)
      std::copy(a_.data() + j * in_, a_.data() + (j + 1) * in_, buf.row(j));
    return MatrixView<const float>(buf.data(), config_.rank, in_, stride);
  }

  /// Rows [r0, r0 + w.rows()) of W = W0 + c·B·A into w (a = strided_a()): W0's stored
  /// values, then the fma chain over the rank of nn/lora_merge.hpp (bit-identical on
  /// every ISA).
  void merged_rows(std::int64_t r0, MatrixView<float> w, MatrixView<const float> a) const {
    w0_.dequantize_rows(r0, w);
    const float c = scale();
    std::vector<float> coef(static_cast<std::size_t>(w.rows() * config_.rank));
    for (std::int64_t i = 0; i < w.rows(); ++i)
      for (std::int64_t j = 0; j < config_.rank; ++j)
        coef[static_cast<std::size_t>(i * config_.rank + j)] = c * b_(r0 + i, j);
    detail::lora_merge_rows(w, MatrixView<const float>(coef.data(), w.rows(), config_.rank), a);
  }

  /// W_q = Q(W) for rows [r0, r0 + w.rows()) (out may alias w).
  void fake_quant_rows(std::int64_t r0, MatrixView<const float> w, MatrixView<float> out) const {
    fake_quantize_uniform(w, spec_, s_.view().row_range(r0, w.rows()),
                          o_.view().row_range(r0, w.rows()), out, "L4Q merged weight");
  }

  /// dW = mask ⊙ dŴ in place over `grad`, and ds, db accumulated (LSQ+).
  void lsq_backward(MatrixView<const float> w, MatrixView<float> grad) {
    uniform_backward(w, spec_, s_, o_, grad, grad, s_grad_, o_grad_, {}, "L4Q merged weight");
  }

  /// Calls body(first_row, rows) for consecutive blocks of `block` rows of W (the last
  /// may be shorter), blocks spread over threads. Each block is one unit of work
  /// whatever the thread count, so block-shaped scratch stays small.
  template <class Body>
  void for_each_row_block(std::int64_t block, Body&& body) const {
    const std::int64_t blocks = (out_ + block - 1) / block;
    parallel_for(blocks, [&](std::int64_t i) {
      const std::int64_t r0 = i * block;
      body(r0, std::min(block, out_ - r0));
    });
  }

  /// Copies the single k-group of every row of `block` ([rows, ≤ G]) into k-group
  /// `group` of the same rows of `dst`.
  static void copy_group_column(const GseMatrix& block, GseMatrix& dst, std::int64_t group) {
    const std::int64_t bytes = block.row_bytes();
    // Whole bytes per group (G · code_bits a multiple of 8): copy them; else field by field.
    const bool whole_bytes = bytes * 8 == block.padded_cols() * block.spec().code_bits();
    for (std::int64_t i = 0; i < block.rows(); ++i) {
      if (whole_bytes) {
        std::copy(block.mantissa_row(i), block.mantissa_row(i) + bytes,
                  dst.mantissa_row(i) + group * bytes);
      } else {
        for (std::int64_t c = 0; c < block.padded_cols(); ++c)
          dst.set_mantissa(i, group * block.padded_cols() + c, block.mantissa(i, c));
      }
      dst.exponent_row(i)[group] = block.exponent_row(i)[0];
    }
  }

  void run_forward(MatrixView<const float> x, MatrixView<float> y, Cache* cache) {
    if (quantizing_) snap_to_fp16_grid();  // after the optimizer moved s and b
    detail::check_tokens(x, in_, "L4qLinear::forward: x");
    check_shape(y, x.rows(), out_, "L4qLinear::forward: y");
    if (cache != nullptr) {
      cache->tokens = x.rows();
      cache->quantized = quantizing_;
    }
    using detail::ScratchSlot;
    const MatrixView<const float> a = strided_a();
    if (config_.bits.is_fp32()) {
      MatrixView<float> wq = detail::shared_scratch(ScratchSlot::kWeightWork, out_, in_);
      for_each_row_block(kRowBlock, [&](std::int64_t r0, std::int64_t rows) {
        merged_rows(r0, wq.row_range(r0, rows), a);
        if (quantizing_) fake_quant_rows(r0, wq.row_range(r0, rows), wq.row_range(r0, rows));
      });
      if (cache != nullptr) {
        MatrixView<float> xc =
            ensure_matrix(cache->x, x.rows(), in_, MemoryCategory::kActivations);
        for (std::int64_t i = 0; i < x.rows(); ++i) std::copy(x.row(i), x.row(i) + in_, xc.row(i));
      }
      gemm::gemm_f32(x, false, wq, true, y);
      return;
    }
    const Bits& bits = config_.bits;
    const GseSpec wspec = bits.weight_spec();
    // W_q in GSE-INT grouped along in, built block by block of rows.
    GseMatrix& wq = detail::shared_gse(ScratchSlot::kWeightWork, out_, in_, wspec);
    for_each_row_block(kRowBlock, [&](std::int64_t r0, std::int64_t rows) {
      MatrixView<float> blk = detail::shared_scratch(ScratchSlot::kBlock, rows, in_);
      merged_rows(r0, blk, a);
      if (quantizing_) fake_quant_rows(r0, blk, blk);
      GseMatrix& q = detail::shared_gse(ScratchSlot::kBlock, rows, in_, wspec);
      quantize_gse(blk, false, q, detail::nearest_options("L4Q weight W_q"));
      for (std::int64_t i = 0; i < rows; ++i) {
        std::copy(q.mantissa_row(i), q.mantissa_row(i) + q.row_bytes(), wq.mantissa_row(r0 + i));
        std::copy(q.exponent_row(i), q.exponent_row(i) + q.groups_per_row(),
                  wq.exponent_row(r0 + i));
      }
    });
    GseMatrix& xq = cache != nullptr
                        ? ensure_gse(cache->x_q, x.rows(), in_, bits.activation_spec(),
                                     MemoryCategory::kActivations)
                        : detail::shared_gse(ScratchSlot::kActivation, x.rows(), in_,
                                             bits.activation_spec());
    quantize_gse(x, false, xq, detail::nearest_options("L4Q input X"));
    gemm::gemm_nt(xq, gemm::BOperand::gse(wq), y);
  }

  L4qConfig config_;
  UniformSpec spec_;
  FrozenWeight w0_;
  std::int64_t out_ = 0, in_ = 0, groups_ = 0;
  Tensor<float> a_, b_, s_, o_;
  Tensor<float> a_grad_, b_grad_, s_grad_, o_grad_;
  bool quantizing_ = false;
  std::int64_t training_steps_ = 0;
  std::uint64_t backward_calls_ = 0;
  // The adapters quantized for the GEMMs (kScratch); the gradient-sized temporaries are
  // the thread's shared scratch (nn/scratch.hpp).
  GseMatrix a_q_, b_qt_;
};

GSQ_NAMESPACE_END
