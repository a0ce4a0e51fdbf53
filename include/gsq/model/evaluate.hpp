// gsq/model/evaluate.hpp — held-out quality of a model: perplexity and multiple choice.
//
// Two measurements cover what fine-tuning papers report:
//   * mean negative log-likelihood per counted token over held-out batches (instruction
//     responses only, or every token of plain text), and its exponential, perplexity;
//   * multiple-choice accuracy by answer likelihood: each candidate continuation (e.g.
//     "the correct answer is answer2") is scored by the summed log-probability of its
//     tokens after the shared prompt, and the best-scoring candidate is the prediction
//     (the LLM-Adapters commonsense protocol, without free-form generation).
// Both run the forward only, with whatever precision the model was built with — evaluate
// an adapter with the forward it was trained with, and an FP32 forward separately
// (DESIGN.md, last note). Sums run in double in a fixed order, so results do not depend on
// the thread count.
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
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/trainer.hpp"
#include "gsq/nn/loss.hpp"

GSQ_NAMESPACE_BEGIN

/// Summed NLL over counted tokens.
struct EvalResult {
  double nll_sum = 0.0;
  std::int64_t tokens = 0;  // counted positions
  std::int64_t batches = 0;

  double mean_nll() const noexcept {
    return tokens > 0 ? nll_sum / static_cast<double>(tokens) : 0.0;
  }
  double perplexity() const noexcept { return std::exp(mean_nll()); }
  EvalResult& operator+=(const EvalResult& o) noexcept {
    nll_sum += o.nll_sum;
    tokens += o.tokens;
    batches += o.batches;
    return *this;
  }
};

/// NLL of one batch (forward only; trailing padding trimmed as in training).
inline EvalResult evaluate_batch(Llama& model, const BatchView& batch) {
  const OwnedBatch b = trim_batch(batch);
  const CrossEntropyResult ce = model.loss(b.inputs, b.targets, b.mask, b.rows);
  return {ce.sum, ce.count, 1};
}

/// NLL over every batch of `batches` (a range of TokenBatch values), summed in order.
template <class Range>
EvalResult evaluate(Llama& model, const Range& batches) {
  EvalResult r;
  for (const auto& b : batches) r += evaluate_batch(model, batch_view(b));
  return r;
}

/// Log-likelihood of candidate continuations after one prompt.
struct ChoiceScores {
  std::vector<double> log_likelihood;  // Σ log p(token) over each continuation
  std::vector<std::int64_t> tokens;    // tokens per continuation
  std::int64_t best = -1;              // arg-max of log_likelihood (the first on ties)
};

/// Scores each continuation (token ids, non-empty) following `prompt` (non-empty, with
/// BOS if the model expects one). All candidates run as one batch; prompt + continuation
/// must fit in the model's context.
inline ChoiceScores score_continuations(Llama& model, std::span<const std::int32_t> prompt,
                                        const std::vector<std::vector<std::int32_t>>& continuations) {
  GSQ_CHECK(!prompt.empty() && !continuations.empty(), ErrorCode::kInvalidArgument,
            "score_continuations: need a prompt and at least one continuation");
  std::size_t longest = 0;
  for (const auto& c : continuations) {
    GSQ_CHECK(!c.empty(), ErrorCode::kInvalidArgument,
              "score_continuations: an empty continuation has no likelihood to compare");
    longest = std::max(longest, c.size());
  }
  const auto rows = static_cast<std::int64_t>(continuations.size());
  // Row r: prompt + continuation r, padded; position t predicts token t + 1.
  const auto seq = static_cast<std::int64_t>(prompt.size() + longest - 1);
  GSQ_CHECK(seq <= model.config().max_seq_len, ErrorCode::kInvalidExtent,
            "score_continuations: prompt (" + std::to_string(prompt.size()) +
                " tokens) plus answer exceeds the model's context of " +
                std::to_string(model.config().max_seq_len));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(rows * seq), 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<std::int32_t> full(prompt.begin(), prompt.end());
    const auto& c = continuations[static_cast<std::size_t>(r)];
    full.insert(full.end(), c.begin(), c.end());
    for (std::int32_t id : full)
      GSQ_CHECK(id >= 0 && id < model.config().vocab_size, ErrorCode::kIndexOutOfRange,
                "score_continuations: token id " + std::to_string(id) +
                    " outside the vocabulary of " + std::to_string(model.config().vocab_size));
    for (std::int64_t t = 0; t < seq && t < static_cast<std::int64_t>(full.size()); ++t)
      ids[static_cast<std::size_t>(r * seq + t)] = full[static_cast<std::size_t>(t)];
  }
  Tensor<float> logits({rows * seq, model.config().vocab_size}, MemoryCategory::kScratch);
  model.forward(ids, rows, logits.view(), nullptr);
  ChoiceScores s;
  s.log_likelihood.assign(continuations.size(), 0.0);
  s.tokens.assign(continuations.size(), 0);
  const auto p = static_cast<std::int64_t>(prompt.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto& c = continuations[static_cast<std::size_t>(r)];
    double ll = 0.0;
    for (std::size_t j = 0; j < c.size(); ++j) {
      const std::int64_t t = r * seq + p - 1 + static_cast<std::int64_t>(j);  // predicts c[j]
      const float* row = logits.view().row(t);
      ll += static_cast<double>(row[c[j]]) - nn::detail::log_sum_exp(row, logits.view().cols());
    }
    s.log_likelihood[static_cast<std::size_t>(r)] = ll;
    s.tokens[static_cast<std::size_t>(r)] = static_cast<std::int64_t>(c.size());
    if (s.best < 0 || ll > s.log_likelihood[static_cast<std::size_t>(s.best)]) s.best = r;
  }
  return s;
}

GSQ_NAMESPACE_END
