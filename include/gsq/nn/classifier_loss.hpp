// gsq/nn/classifier_loss.hpp — the float classifier and its masked cross-entropy, fused
// and chunked over the vocabulary.
//
// logits = H·Wᵀ is [tokens × vocab]: 250 MiB of FP32 for 512 tokens of Llama-3's 128,256
// words, and as much again for its gradient without in-place tricks. The training step
// needs only the loss and dH = dlogits·W, so this computes both a chunk of W's rows at a
// time and never holds more than one [tokens × chunk] block (thread scratch, slot
// kClassifier):
//   pass 1, per chunk: the logits, each row's running max and Σ exp(x − max) (rescaled
//           when the max grows; in double, in vocabulary order) and the target's logit;
//   pass 2, per chunk: the logits again, dlogits = (softmax − onehot)/normalizer, then
//           dH (+)= dlogits·W_chunk and, for a trainable W, dW_chunk += dlogitsᵀ·H.
// The extra cost is one more classifier product. With one chunk (vocab <= chunk) every
// step is the unfused one's — log_sum_exp and cross_entropy_backward in nn/loss.hpp, then
// one product for dH — so the bits are the same; with several, dH adds chunk products
// and the log-sum-exp rescales, which changes the last bits (tests compare within
// rounding). Either way the order is fixed by the chunk size, not the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/float_matrix.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/gemm/f32.hpp"
#include "gsq/nn/fast_math.hpp"
#include "gsq/nn/loss.hpp"
#include "gsq/nn/scratch.hpp"

GSQ_NAMESPACE_BEGIN

struct ClassifierLossOptions {
  bool bf16 = false;               // BF16 operands, FP32 accumulation (gemm_bf16)
  std::int64_t chunk = 8192;       // rows of W (words) per block; a multiple of 256
  double normalizer = 0.0;         // <= 0: the masked count (as cross_entropy_backward)
};

namespace nn::detail {

/// out = h·W[v0, v0+n)ᵀ through the classifier's product.
inline void classifier_chunk(MatrixView<const float> h, const FloatMatrix& w, std::int64_t v0, std::int64_t n,
                             bool bf16, MatrixView<float> out) {
  w.visit([&](auto all) {
    const auto rows = all.block(v0, 0, n, all.cols());
    if (bf16) gemm::gemm_bf16(h, false, rows, true, out);
    else gemm::gemm_f32(h, false, rows, true, out);
  });
}

}  // namespace nn::detail

/// Loss of logits = h·wᵀ against targets (mask empty: every position counts) and, when
/// `dh` is not empty, dh = d(sum / normalizer)/dh (overwritten); `dw`, when given,
/// accumulates d(sum / normalizer)/dw (w must then be FP32 and trainable).
inline CrossEntropyResult classifier_cross_entropy(MatrixView<const float> h, const FloatMatrix& w,
                                                   std::span<const std::int32_t> targets,
                                                   std::span<const std::uint8_t> mask, MatrixView<float> dh,
                                                   Tensor<float>* dw = nullptr,
                                                   const ClassifierLossOptions& o = {}) {
  const std::int64_t tokens = h.rows(), vocab = w.rows();
  GSQ_CHECK(o.chunk > 0 && o.chunk % 256 == 0, ErrorCode::kInvalidArgument,
            "classifier_cross_entropy: chunk must be a positive multiple of 256, got " + std::to_string(o.chunk));
  GSQ_CHECK(w.cols() == h.cols(), ErrorCode::kShapeMismatch,
            "classifier_cross_entropy: h has " + std::to_string(h.cols()) + " columns, the classifier " +
                std::to_string(w.cols()));
  const bool backward = dh.rows() > 0;
  if (backward) check_shape(dh, tokens, h.cols(), "classifier_cross_entropy dh");
  // check_cross_entropy_args wants a [tokens, vocab] view; only its shape is read.
  nn::detail::check_cross_entropy_args(MatrixView<const float>(nullptr, tokens, vocab), targets, mask);
  auto counts = [&](std::int64_t t) { return mask.empty() || mask[static_cast<std::size_t>(t)] != 0; };

  const std::int64_t chunk = std::min(o.chunk, vocab);
  const std::int64_t chunks = (vocab + chunk - 1) / chunk;
  MatrixView<float> block = detail::shared_scratch(detail::ScratchSlot::kClassifier, tokens, chunk);
  std::vector<float> row_max(static_cast<std::size_t>(tokens), -std::numeric_limits<float>::infinity());
  std::vector<double> row_sum(static_cast<std::size_t>(tokens), 0.0);
  std::vector<float> target_logit(static_cast<std::size_t>(tokens), 0.0f);

  for (std::int64_t c = 0; c < chunks; ++c) {  // pass 1: log Σ exp and the target logits
    const std::int64_t v0 = c * chunk, n = std::min(chunk, vocab - v0);
    MatrixView<float> logits = block.block(0, 0, tokens, n);
    nn::detail::classifier_chunk(h, w, v0, n, o.bf16, logits);
    parallel_for(tokens, [&](std::int64_t t) {
      if (!counts(t)) return;
      const auto i = static_cast<std::size_t>(t);
      const float* row = logits.row(t);
      float m = row_max[i];
      for (std::int64_t j = 0; j < n; ++j) m = std::max(m, row[j]);
      double sum = row_sum[i];
      if (c > 0 && m > row_max[i]) sum *= std::exp(static_cast<double>(row_max[i]) - static_cast<double>(m));
      row_max[i] = m;
      row_sum[i] = nn::detail::add_exp_sum(row, n, m, sum);  // log_sum_exp's arithmetic
      const std::int32_t target = targets[i];
      if (target >= v0 && target < v0 + n) target_logit[i] = row[target - v0];
    }, 4);
  }

  std::int64_t count = 0;
  for (std::int64_t t = 0; t < tokens; ++t) count += counts(t);
  std::vector<double> lse(static_cast<std::size_t>(tokens), 0.0);
  CrossEntropyResult r;
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (!counts(t)) continue;
    const auto i = static_cast<std::size_t>(t);
    lse[i] = static_cast<double>(row_max[i]) + std::log(row_sum[i]);
    r.sum += lse[i] - target_logit[i];
  }
  r.count = count;
  r.loss = count > 0 ? r.sum / static_cast<double>(count) : 0.0;
  if (!backward) return r;

  const double norm = o.normalizer > 0.0 ? o.normalizer : static_cast<double>(std::max<std::int64_t>(count, 1));
  const auto inv_norm = static_cast<float>(1.0 / norm);
  for (std::int64_t c = 0; c < chunks; ++c) {  // pass 2: dlogits, dh and dw chunk by chunk
    const std::int64_t v0 = c * chunk, n = std::min(chunk, vocab - v0);
    MatrixView<float> d = block.block(0, 0, tokens, n);
    if (chunks > 1) nn::detail::classifier_chunk(h, w, v0, n, o.bf16, d);  // one chunk: still there
    parallel_for(tokens, [&](std::int64_t t) {
      const auto i = static_cast<std::size_t>(t);
      float* row = d.row(t);
      if (!counts(t)) {
        std::fill(row, row + n, 0.0f);
        return;
      }
      const auto lse_f = static_cast<float>(lse[i]);
      for (std::int64_t j = 0; j < n; ++j) row[j] = nn::detail::exp_approx(row[j] - lse_f) * inv_norm;
      const std::int32_t target = targets[i];
      if (target >= v0 && target < v0 + n) row[target - v0] -= inv_norm;
    }, 4);
    const MatrixView<const float> dc = d;
    w.visit([&](auto all) {
      const auto rows = all.block(v0, 0, n, all.cols());
      const gemm::GemmOptions go{.alpha = 1.0f, .accumulate = c > 0};
      if (o.bf16) gemm::gemm_bf16(dc, false, rows, false, dh, go);
      else gemm::gemm_f32(dc, false, rows, false, dh, go);
    });
    if (dw != nullptr)
      gemm::gemm_f32(dc, true, h, false, dw->view().block(v0, 0, n, h.cols()), {.alpha = 1.0f, .accumulate = true});
  }
  return r;
}

GSQ_NAMESPACE_END
