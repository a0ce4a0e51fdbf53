#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "component_test_support.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/nn/rmsnorm.hpp"
#include "support/test_support.hpp"

namespace {
gsq::Tensor<float> norm_weight(std::int64_t dim, std::uint64_t seed) {
  auto w = gsq::test::normal_matrix(1, dim, seed, 0.3f);
  gsq::Tensor<float> out({dim});
  for (std::int64_t i = 0; i < dim; ++i) out[i] = 1.0f + w[i];
  return out;
}
}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("rmsnorm: forward matches the float64 formula") {
    for (std::int64_t dim : {1, 7, 64, 131}) {
      CAPTURE(dim);
      gsq::RmsNorm norm(norm_weight(dim, 1), 1e-5f);
      const auto x = gsq::test::random_matrix(9, dim, 2);
      gsq::Tensor<float> y({9, dim});
      norm.forward(x, y, nullptr);
      for (std::int64_t t = 0; t < 9; ++t) {
        double ss = 0.0;
        for (std::int64_t c = 0; c < dim; ++c) ss += static_cast<double>(x(t, c)) * x(t, c);
        const double r = 1.0 / std::sqrt(ss / static_cast<double>(dim) + 1e-5);
        for (std::int64_t c = 0; c < dim; ++c)
          CHECK(y(t, c) == doctest::Approx(x(t, c) * r * norm.weight()[c]).epsilon(1e-6));
      }
    }
  }

  TEST_CASE("rmsnorm: backward matches finite differences for input and weight") {
    const std::int64_t n = 6, dim = 40;
    gsq::RmsNorm norm(norm_weight(dim, 3), 1e-5f, /*trainable=*/true);
    auto x = gsq::test::normal_matrix(n, dim, 4);
    const auto w = gsq::test::normal_matrix(n, dim, 5);
    gsq::RmsNorm::Cache cache;
    gsq::Tensor<float> y({n, dim}), dx({n, dim});
    norm.forward(x, y, &cache);
    norm.backward(w, dx, cache);
    auto loss = [&] {
      gsq::Tensor<float> out({n, dim});
      norm.forward(x, out, nullptr);
      return gsq::test::weighted_sum(out, w);
    };
    CHECK(gsq::test::check_gradient(x.data(), dx.data(), x.numel(), loss, "dx", 1e-3f) == 0);
    CHECK(gsq::test::check_gradient(norm.weight().data(), norm.grad().data(), dim, loss, "dw",
                                    1e-3f) == 0);
    CHECK(norm.parameters().size() == 1);
  }

  TEST_CASE("rmsnorm: a frozen weight has no gradient and dx may overwrite dy") {
    const std::int64_t n = 5, dim = 33;
    gsq::RmsNorm norm(norm_weight(dim, 6), 1e-6f);
    const auto x = gsq::test::normal_matrix(n, dim, 7);
    auto dy = gsq::test::normal_matrix(n, dim, 8);
    gsq::RmsNorm::Cache cache;
    gsq::Tensor<float> y({n, dim}), dx({n, dim});
    norm.forward(x, y, &cache);
    norm.backward(dy, dx, cache);
    norm.backward(dy, dy, cache);  // in place
    CHECK(gsq::test::bitwise_equal(dx.data(), dy.data(), dx.numel()));
    CHECK(norm.parameters().empty());
    CHECK(norm.grad().numel() == 0);
  }

  TEST_CASE("rmsnorm: a cache without the input, given it back, gives the same bits") {
    for (std::int64_t n : {1, 17, 33}) {
      const std::int64_t dim = 31;
      gsq::RmsNorm a(norm_weight(dim, 9), 1e-5f, true), b(norm_weight(dim, 9), 1e-5f, true);
      const auto x = gsq::test::normal_matrix(n, dim, 10);
      const auto dy = gsq::test::normal_matrix(n, dim, 11);
      gsq::RmsNorm::Cache ca, cb;
      gsq::Tensor<float> ya({n, dim}), yb({n, dim}), dxa({n, dim}), dxb({n, dim});
      a.forward(x, ya, &ca);
      b.forward(x, yb, &cb, /*keep_input=*/false);
      CHECK(cb.x.numel() == 0);
      CHECK(cb.bytes() < ca.bytes());
      a.backward(dy, dxa, ca);
      CHECK_THROWS_AS(b.backward(dy, dxb, cb), gsq::ConfigError);
      b.backward(dy, dxb, cb, x.view());
      CHECK(gsq::test::bitwise_equal(ya.data(), yb.data(), ya.numel()));
      CHECK(gsq::test::bitwise_equal(dxa.data(), dxb.data(), dxa.numel()));
      CHECK(gsq::test::bitwise_equal(a.grad().data(), b.grad().data(), dim));
    }
  }

  TEST_CASE("rmsnorm: one thread and two threads give identical results") {
    const std::int64_t n = 77, dim = 200;
    const auto x = gsq::test::random_matrix(n, dim, 9);
    const auto dy = gsq::test::normal_matrix(n, dim, 10);
    std::vector<float> out[2], grad[2];
    for (int threads : {1, 2}) {
      gsq::set_num_threads(threads);
      gsq::RmsNorm norm(norm_weight(dim, 11), 1e-5f, true);
      gsq::RmsNorm::Cache cache;
      gsq::Tensor<float> y({n, dim}), dx({n, dim});
      norm.forward(x, y, &cache);
      norm.backward(dy, dx, cache);
      out[threads - 1].assign(dx.begin(), dx.end());
      grad[threads - 1].assign(norm.grad().begin(), norm.grad().end());
    }
    gsq::set_num_threads(0);
    CHECK(gsq::test::bitwise_equal(out[0].data(), out[1].data(), n * dim));
    CHECK(gsq::test::bitwise_equal(grad[0].data(), grad[1].data(), dim));
  }
}
