#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "component_test_support.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/nn/embedding.hpp"
#include "support/test_support.hpp"

TEST_SUITE("nn") {
  TEST_CASE("embedding: forward gathers the rows of the ids") {
    gsq::Embedding emb(gsq::test::normal_matrix(11, 7, 1));
    const std::vector<std::int32_t> ids = {3, 0, 10, 3, 5};
    gsq::Tensor<float> out({5, 7});
    emb.forward(ids, out);
    for (std::size_t t = 0; t < ids.size(); ++t)
      CHECK(gsq::test::bitwise_equal(out.view().row(static_cast<std::int64_t>(t)),
                                     emb.weight().view().row(ids[t]), 7));
    CHECK(emb.parameters().empty());  // frozen by default
  }

  TEST_CASE("embedding: backward scatter-adds repeated ids and matches finite differences") {
    gsq::Embedding emb(gsq::test::normal_matrix(9, 70, 2), /*trainable=*/true);
    const std::vector<std::int32_t> ids = {4, 1, 4, 8, 4, 0};
    const auto w = gsq::test::normal_matrix(6, 70, 3);
    emb.backward(ids, w);
    auto loss = [&] {
      gsq::Tensor<float> y({6, 70});
      emb.forward(ids, y);
      return gsq::test::weighted_sum(y, w);
    };
    CHECK(gsq::test::check_gradient(emb.weight().data(), emb.grad().data(), emb.weight().numel(),
                                    loss, "dW", 1e-2f, 1e-4, 1e-4, 630) == 0);
    // Row 4 got three contributions, row 2 none.
    for (std::int64_t c = 0; c < 70; ++c) {
      CHECK(emb.grad()(2, c) == 0.0f);
      CHECK(emb.grad()(4, c) == doctest::Approx(w(0, c) + w(2, c) + w(4, c)).epsilon(1e-6));
    }
    const auto params = emb.parameters();
    REQUIRE(params.size() == 1);
    CHECK(params[0].name == "weight");
  }

  TEST_CASE("embedding: one thread and two threads give identical gradients") {
    std::vector<std::int32_t> ids(300);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int32_t>((i * 7) % 13);
    const auto dy = gsq::test::normal_matrix(300, 130, 4);
    std::vector<float> grads[2];
    for (int threads : {1, 2}) {
      gsq::set_num_threads(threads);
      gsq::Embedding emb(gsq::test::normal_matrix(13, 130, 5), true);
      emb.backward(ids, dy);
      grads[threads - 1].assign(emb.grad().begin(), emb.grad().end());
    }
    gsq::set_num_threads(0);
    CHECK(gsq::test::bitwise_equal(grads[0].data(), grads[1].data(), 13 * 130));
  }

  TEST_CASE("embedding: ids outside the vocabulary and wrong shapes throw") {
    gsq::Embedding emb(gsq::test::normal_matrix(5, 4, 6));
    gsq::Tensor<float> out({2, 4});
    const std::vector<std::int32_t> bad = {1, 5};
    CHECK_THROWS_AS(emb.forward(bad, out), gsq::ShapeError);
    const std::vector<std::int32_t> negative = {-1, 0};
    CHECK_THROWS_AS(emb.forward(negative, out), gsq::ShapeError);
    const std::vector<std::int32_t> three = {0, 1, 2};
    CHECK_THROWS_AS(emb.forward(three, out), gsq::ShapeError);
  }
}
