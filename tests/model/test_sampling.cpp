#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "gsq/core/error.hpp"
#include "gsq/model/sampling.hpp"

TEST_SUITE("model") {
  TEST_CASE("sampling: greedy takes the arg-max and the lowest id on ties") {
    const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f};
    CHECK(gsq::argmax_token(logits) == 1);
    CHECK(gsq::sample_token(logits, {}, 0) == 1);
  }

  TEST_CASE("sampling: draws follow the tempered softmax") {
    const std::vector<float> logits = {1.0f, 0.0f, -1.0f, 0.5f};
    gsq::SamplingOptions options;
    options.temperature = 2.0f;
    options.seed = 99;
    std::vector<int> counts(logits.size(), 0);
    const int draws = 20000;
    for (int i = 0; i < draws; ++i) counts[static_cast<std::size_t>(gsq::sample_token(logits, options, static_cast<std::uint64_t>(i)))]++;
    double z = 0.0;
    for (float l : logits) z += std::exp(l / 2.0);
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const double p = std::exp(logits[i] / 2.0) / z;
      const double sigma = std::sqrt(p * (1 - p) / draws);
      CHECK(std::fabs(counts[i] / static_cast<double>(draws) - p) < 5 * sigma);
    }
  }

  TEST_CASE("sampling: top-p keeps only the most likely tokens reaching the mass") {
    // Probabilities at temperature 1: about 0.64, 0.24, 0.09, 0.03.
    const std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f};
    gsq::SamplingOptions options;
    options.temperature = 1.0f;
    options.top_p = 0.8f;  // needs the first two tokens
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < 4000; ++i) counts[static_cast<std::size_t>(gsq::sample_token(logits, options, static_cast<std::uint64_t>(i)))]++;
    CHECK(counts[0] > 0);
    CHECK(counts[1] > 0);
    CHECK(counts[2] == 0);
    CHECK(counts[3] == 0);
    // The same (seed, step) gives the same token.
    CHECK(gsq::sample_token(logits, options, 17) == gsq::sample_token(logits, options, 17));
  }

  TEST_CASE("sampling: invalid options throw") {
    const std::vector<float> logits = {0.0f, 1.0f};
    gsq::SamplingOptions bad;
    bad.temperature = -1.0f;
    CHECK_THROWS_AS(gsq::sample_token(logits, bad, 0), gsq::ConfigError);
    bad.temperature = 1.0f;
    bad.top_p = 0.0f;
    CHECK_THROWS_AS(gsq::sample_token(logits, bad, 0), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::argmax_token({}), gsq::ShapeError);
  }
}
