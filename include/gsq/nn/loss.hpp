// gsq/nn/loss.hpp — masked token cross-entropy and its gradient.
//
// Instruction tuning trains on the response only: every position has a target id and a
// mask bit, and the loss is the mean of −log softmax(logits[t])[target[t]] over masked
// positions. The gradient of that mean, written in place of (or next to) the logits, is
//     dlogits[t] = (softmax(logits[t]) − onehot(target[t])) / normalizer   (masked t)
//     dlogits[t] = 0                                                        (other t)
// with normalizer = number of masked positions unless the caller gives one (e.g. the
// token count of a whole gradient-accumulation step). Row sums run in double; the total
// is summed over rows in order, so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/fast_math.hpp"

GSQ_NAMESPACE_BEGIN

struct CrossEntropyResult {
  double loss = 0.0;       // sum / count (0 when nothing is masked)
  double sum = 0.0;        // Σ −log p(target) over masked positions
  std::int64_t count = 0;  // masked positions
};

namespace nn::detail {

inline void check_cross_entropy_args(MatrixView<const float> logits,
                                     std::span<const std::int32_t> targets,
                                     std::span<const std::uint8_t> mask) {
  GSQ_CHECK(static_cast<std::int64_t>(targets.size()) == logits.rows(), ErrorCode::kShapeMismatch,
            "cross_entropy: " + std::to_string(targets.size()) + " targets for " +
                std::to_string(logits.rows()) + " logit rows");
  GSQ_CHECK(mask.empty() || mask.size() == targets.size(), ErrorCode::kShapeMismatch,
            "cross_entropy: mask has " + std::to_string(mask.size()) + " entries for " +
                std::to_string(targets.size()) + " targets");
  for (std::size_t t = 0; t < targets.size(); ++t) {
    if (!mask.empty() && mask[t] == 0) continue;
    GSQ_CHECK(targets[t] >= 0 && targets[t] < logits.cols(), ErrorCode::kIndexOutOfRange,
              "cross_entropy: target " + std::to_string(targets[t]) + " at position " +
                  std::to_string(t) + " is outside the vocabulary of " +
                  std::to_string(logits.cols()));
  }
}

/// sum + Σ exp(row[j] − m): exponentials in vectorised blocks, added in double in order
/// (the fused classifier loss continues the same sum across vocabulary chunks).
inline double add_exp_sum(const float* row, std::int64_t n, float m, double sum) noexcept {
  constexpr std::int64_t kBlock = 256;
  float e[kBlock];
  for (std::int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const std::int64_t len = std::min(kBlock, n - j0);
    for (std::int64_t j = 0; j < len; ++j) e[j] = exp_approx(row[j0 + j] - m);
    for (std::int64_t j = 0; j < len; ++j) sum += e[j];
  }
  return sum;
}

/// log Σ exp(row), from the row's max.
inline double log_sum_exp(const float* row, std::int64_t n) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < n; ++j) m = std::max(m, row[j]);
  return static_cast<double>(m) + std::log(add_exp_sum(row, n, m, 0.0));
}

}  // namespace nn::detail

/// Mean masked cross-entropy of logits [tokens, vocab] against targets [tokens]; an empty
/// mask means every position counts. Forward only.
inline CrossEntropyResult cross_entropy(MatrixView<const float> logits,
                                        std::span<const std::int32_t> targets,
                                        std::span<const std::uint8_t> mask = {}) {
  nn::detail::check_cross_entropy_args(logits, targets, mask);
  std::vector<double> row_loss(targets.size(), 0.0);
  parallel_for(logits.rows(), [&](std::int64_t t) {
    if (!mask.empty() && mask[static_cast<std::size_t>(t)] == 0) return;
    const float* row = logits.row(t);
    row_loss[static_cast<std::size_t>(t)] =
        nn::detail::log_sum_exp(row, logits.cols()) - row[targets[static_cast<std::size_t>(t)]];
  }, 4);
  CrossEntropyResult r;
  for (std::size_t t = 0; t < targets.size(); ++t) {
    if (!mask.empty() && mask[t] == 0) continue;
    r.sum += row_loss[t];
    ++r.count;
  }
  r.loss = r.count > 0 ? r.sum / static_cast<double>(r.count) : 0.0;
  return r;
}

/// As above, and writes d(sum / normalizer)/dlogits into `dlogits` (which may be the
/// logits' own storage). normalizer <= 0 means the masked count.
inline CrossEntropyResult cross_entropy_backward(MatrixView<const float> logits,
                                                 std::span<const std::int32_t> targets,
                                                 std::span<const std::uint8_t> mask,
                                                 MatrixView<float> dlogits,
                                                 double normalizer = 0.0) {
  nn::detail::check_cross_entropy_args(logits, targets, mask);
  check_shape(dlogits, logits.rows(), logits.cols(), "cross_entropy dlogits");
  std::int64_t count = 0;
  for (std::size_t t = 0; t < targets.size(); ++t) count += (mask.empty() || mask[t] != 0);
  const double norm = normalizer > 0.0 ? normalizer : static_cast<double>(std::max<std::int64_t>(count, 1));
  const auto inv_norm = static_cast<float>(1.0 / norm);
  std::vector<double> row_loss(targets.size(), 0.0);
  const std::int64_t v = logits.cols();
  parallel_for(logits.rows(), [&](std::int64_t t) {
    const auto i = static_cast<std::size_t>(t);
    const float* row = logits.row(t);
    float* drow = dlogits.row(t);
    if (!mask.empty() && mask[i] == 0) {
      std::fill(drow, drow + v, 0.0f);
      return;
    }
    const double lse = nn::detail::log_sum_exp(row, v);
    const std::int32_t target = targets[i];
    row_loss[i] = lse - row[target];  // read before drow (which may alias row) is written
    const auto lse_f = static_cast<float>(lse);
    for (std::int64_t j = 0; j < v; ++j) drow[j] = nn::detail::exp_approx(row[j] - lse_f) * inv_norm;
    drow[target] -= inv_norm;
  }, 4);
  CrossEntropyResult r;
  for (std::size_t t = 0; t < targets.size(); ++t) {
    if (!mask.empty() && mask[t] == 0) continue;
    r.sum += row_loss[t];
  }
  r.count = count;
  r.loss = count > 0 ? r.sum / static_cast<double>(count) : 0.0;
  return r;
}

GSQ_NAMESPACE_END
