#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "component_test_support.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/nn/loss.hpp"
#include "support/test_support.hpp"

namespace {
double reference_ce(const gsq::Tensor<float>& logits, std::int64_t t, std::int32_t target) {
  const std::int64_t v = logits.view().cols();
  double m = -1e300;
  for (std::int64_t j = 0; j < v; ++j) m = std::max(m, static_cast<double>(logits(t, j)));
  double sum = 0.0;
  for (std::int64_t j = 0; j < v; ++j) sum += std::exp(logits(t, j) - m);
  return m + std::log(sum) - logits(t, target);
}
}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("loss: masked mean cross-entropy matches the definition") {
    const std::int64_t n = 7, v = 33;
    const auto logits = gsq::test::normal_matrix(n, v, 1, 3.0f);
    const std::vector<std::int32_t> targets = {0, 5, 32, 7, 7, 1, 20};
    const std::vector<std::uint8_t> mask = {0, 1, 1, 0, 1, 1, 0};
    const gsq::CrossEntropyResult r = gsq::cross_entropy(logits, targets, mask);
    double sum = 0.0;
    for (std::int64_t t = 0; t < n; ++t)
      if (mask[static_cast<std::size_t>(t)]) sum += reference_ce(logits, t, targets[static_cast<std::size_t>(t)]);
    CHECK(r.count == 4);
    CHECK(r.sum == doctest::Approx(sum).epsilon(1e-6));
    CHECK(r.loss == doctest::Approx(sum / 4).epsilon(1e-6));
    const gsq::CrossEntropyResult all = gsq::cross_entropy(logits, targets);
    CHECK(all.count == n);
    const std::vector<std::uint8_t> none(n, 0);
    CHECK(gsq::cross_entropy(logits, targets, none).loss == 0.0);
  }

  TEST_CASE("loss: the gradient matches finite differences and is zero off the mask") {
    const std::int64_t n = 6, v = 19;
    auto logits = gsq::test::normal_matrix(n, v, 2, 2.0f);
    const std::vector<std::int32_t> targets = {3, 18, 0, 4, 4, 9};
    const std::vector<std::uint8_t> mask = {1, 1, 0, 1, 0, 1};
    gsq::Tensor<float> d({n, v});
    const auto r = gsq::cross_entropy_backward(logits, targets, mask, d);
    CHECK(r.loss == doctest::Approx(gsq::cross_entropy(logits, targets, mask).loss).epsilon(1e-12));
    auto loss = [&] { return gsq::cross_entropy(logits, targets, mask).loss; };
    CHECK(gsq::test::check_gradient(logits.data(), d.data(), logits.numel(), loss, "dlogits", 1e-3f,
                                    1e-5, 1e-3, 200) == 0);
    for (std::int64_t j = 0; j < v; ++j) CHECK(d(2, j) == 0.0f);
    // A custom normalizer rescales the gradient, not the reported loss.
    gsq::Tensor<float> d2({n, v});
    const auto r2 = gsq::cross_entropy_backward(logits, targets, mask, d2, 8.0);
    CHECK(r2.loss == r.loss);
    CHECK(d2(0, 1) == doctest::Approx(d(0, 1) * 4.0 / 8.0).epsilon(1e-6));
  }

  TEST_CASE("loss: the gradient may overwrite the logits in place") {
    const std::int64_t n = 40, v = 300;
    auto logits = gsq::test::normal_matrix(n, v, 3, 4.0f);
    std::vector<std::int32_t> targets(n);
    for (std::int64_t t = 0; t < n; ++t) targets[static_cast<std::size_t>(t)] = static_cast<std::int32_t>((t * 37) % v);
    gsq::Tensor<float> d({n, v});
    const auto r = gsq::cross_entropy_backward(logits, targets, {}, d);
    const auto r_in_place = gsq::cross_entropy_backward(logits, targets, {}, logits);
    CHECK(r.loss == r_in_place.loss);
    CHECK(gsq::test::bitwise_equal(d.data(), logits.data(), n * v));
  }

  TEST_CASE("loss: one thread and two threads give identical results") {
    const std::int64_t n = 130, v = 257;
    const auto logits = gsq::test::random_matrix(n, v, 4);
    std::vector<std::int32_t> targets(n);
    for (std::int64_t t = 0; t < n; ++t) targets[static_cast<std::size_t>(t)] = static_cast<std::int32_t>((t * 11) % v);
    double losses[2];
    std::vector<float> grads[2];
    for (int threads : {1, 2}) {
      gsq::set_num_threads(threads);
      gsq::Tensor<float> d({n, v});
      losses[threads - 1] = gsq::cross_entropy_backward(logits, targets, {}, d).loss;
      grads[threads - 1].assign(d.begin(), d.end());
    }
    gsq::set_num_threads(0);
    CHECK(losses[0] == losses[1]);
    CHECK(gsq::test::bitwise_equal(grads[0].data(), grads[1].data(), n * v));
  }

  TEST_CASE("loss: targets outside the vocabulary and mismatched lengths throw") {
    gsq::Tensor<float> logits({3, 5});
    const std::vector<std::int32_t> bad = {0, 5, 1};
    CHECK_THROWS_AS(gsq::cross_entropy(logits, bad), gsq::ShapeError);
    const std::vector<std::uint8_t> skip_bad = {1, 0, 1};
    CHECK_NOTHROW(gsq::cross_entropy(logits, bad, skip_bad));  // masked-out targets are ignored
    const std::vector<std::int32_t> two = {0, 1};
    CHECK_THROWS_AS(gsq::cross_entropy(logits, two), gsq::ShapeError);
  }
}
