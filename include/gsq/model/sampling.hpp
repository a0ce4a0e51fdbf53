// gsq/model/sampling.hpp — choosing the next token from a row of logits.
//
// Greedy decoding takes the arg-max (the lowest id on ties, so results are exact and
// portable). Sampling divides the logits by a temperature, keeps the smallest set of
// most likely tokens whose probability reaches top_p (nucleus sampling), and draws from
// it with a counter-based random number keyed by (seed, step): the same seed gives the
// same text on any machine and thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/rng.hpp"

GSQ_NAMESPACE_BEGIN

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  std::uint64_t seed = 0;

  void validate() const {
    GSQ_CHECK(temperature >= 0.0f && std::isfinite(temperature), ErrorCode::kInvalidArgument,
              "SamplingOptions: temperature must be finite and >= 0, got " +
                  std::to_string(temperature));
    GSQ_CHECK(top_p > 0.0f && top_p <= 1.0f, ErrorCode::kInvalidArgument,
              "SamplingOptions: top_p must be in (0, 1], got " + std::to_string(top_p));
  }
};

/// The id of the largest logit (the lowest such id on ties).
inline std::int32_t argmax_token(std::span<const float> logits) {
  GSQ_CHECK(!logits.empty(), ErrorCode::kInvalidExtent, "argmax_token: no logits");
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<std::int32_t>(best);
}

/// The next token under `options` for generation step `step` (the random stream).
inline std::int32_t sample_token(std::span<const float> logits, const SamplingOptions& options,
                                 std::uint64_t step) {
  options.validate();
  if (options.temperature == 0.0f) return argmax_token(logits);
  const std::size_t n = logits.size();
  GSQ_CHECK(n > 0, ErrorCode::kInvalidExtent, "sample_token: no logits");
  const float m = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(n);
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i)
    sum += p[i] = std::exp(static_cast<double>(logits[i] - m) / options.temperature);
  std::vector<std::int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Most likely first; ties by id, so the order (and the draw) is fully determined.
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)] ||
           (p[static_cast<std::size_t>(a)] == p[static_cast<std::size_t>(b)] && a < b);
  });
  std::size_t keep = 0;
  double mass = 0.0;
  while (keep < n && (keep == 0 || mass < options.top_p * sum))
    mass += p[static_cast<std::size_t>(order[keep++])];
  const double u = static_cast<double>(random_uniform(options.seed, 0x53414D50 /* "SAMP" */, step)) * mass;
  double acc = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    acc += p[static_cast<std::size_t>(order[i])];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

GSQ_NAMESPACE_END
