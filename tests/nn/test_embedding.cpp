#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "component_test_support.hpp"
#include "gsq/core/bf16.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/float_matrix.hpp"
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
                                     emb.weight().f32().view().row(ids[t]), 7));
    CHECK(emb.parameters().empty());  // frozen by default
  }

  TEST_CASE("embedding: a BF16 table gathers exactly the rows of its FP32 copy, and widens to train") {
    const gsq::Tensor<float> w = gsq::test::normal_matrix(17, 33, 6);
    gsq::Tensor<gsq::bf16> h({17, 33}, gsq::MemoryCategory::kWeights);
    gsq::Tensor<float> wide({17, 33});
    for (std::int64_t i = 0; i < w.numel(); ++i) {
      h.data()[i] = gsq::to_bf16(w.data()[i]);
      wide.data()[i] = h.data()[i].to_float();
    }
    gsq::Embedding half(gsq::FloatMatrix(h.clone())), full(wide.clone());
    CHECK(half.weight().is_bf16());
    CHECK(half.weight().bytes() * 2 == full.weight().bytes());
    const std::vector<std::int32_t> ids = {16, 0, 5, 5, 1, 15, 2};
    gsq::Tensor<float> a({7, 33}), b({7, 33});
    half.forward(ids, a);
    full.forward(ids, b);
    CHECK(gsq::test::bitwise_equal(a.data(), b.data(), a.numel()));
    gsq::Embedding trained(gsq::FloatMatrix(h.clone()), /*trainable=*/true);
    CHECK(!trained.weight().is_bf16());
    CHECK(gsq::test::bitwise_equal(trained.weight().f32().data(), wide.data(), wide.numel()));
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
    gsq::Tensor<float>& table = *emb.parameters().at(0).value;
    CHECK(gsq::test::check_gradient(table.data(), emb.grad().data(), table.numel(),
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
