// AdamW and SGD: updates against hand-computed formulas, exact state save/restore,
// thread-count independence and argument checks.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gsq/core/parallel.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/optim/sgd.hpp"
#include "support/test_support.hpp"

namespace {

// Two parameters of odd sizes (one 2-D) with gradients from a fixed stream.
struct Toy {
  gsq::Tensor<float> w1{{3, 5}, gsq::MemoryCategory::kWeights};
  gsq::Tensor<float> g1{{3, 5}, gsq::MemoryCategory::kGradients};
  gsq::Tensor<float> w2{{40000}, gsq::MemoryCategory::kWeights};  // > one parallel chunk
  gsq::Tensor<float> g2{{40000}, gsq::MemoryCategory::kGradients};

  explicit Toy(std::uint64_t seed) {
    gsq::CounterRng rng(seed, 1);
    for (float& v : w1) v = rng.next_normal();
    for (float& v : w2) v = rng.next_normal();
  }
  gsq::ParameterList params() { return {{"a.w", &w1, &g1}, {"b.w", &w2, &g2}}; }
  void fill_grads(std::uint64_t step) {
    gsq::CounterRng rng(99, step);
    for (float& v : g1) v = rng.next_normal();
    for (float& v : g2) v = rng.next_normal() * 0.01f;
  }
};

}  // namespace

TEST_SUITE("optim") {
  TEST_CASE("adamw: three steps match the textbook formula with bias correction") {
    const gsq::optim::AdamWConfig cfg{.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f,
                                      .weight_decay = 0.1f};
    gsq::optim::AdamW opt(cfg);
    Toy toy(1);
    // Expected values in double, written the textbook way: m̂ = m/(1-β1^t), v̂ = v/(1-β2^t).
    std::vector<double> p(toy.w1.begin(), toy.w1.end()), m(p.size(), 0.0), v(p.size(), 0.0);
    for (int t = 1; t <= 3; ++t) {
      toy.fill_grads(static_cast<std::uint64_t>(t));
      opt.step(toy.params());
      for (std::size_t i = 0; i < p.size(); ++i) {
        const double g = toy.g1[static_cast<std::int64_t>(i)];
        p[i] -= cfg.lr * cfg.weight_decay * p[i];
        m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g;
        v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g * g;
        const double mhat = m[i] / (1 - std::pow(double{cfg.beta1}, t));
        const double vhat = v[i] / (1 - std::pow(double{cfg.beta2}, t));
        p[i] -= cfg.lr * mhat / (std::sqrt(vhat) + cfg.eps);
      }
    }
    CHECK(opt.steps() == 3);
    for (std::size_t i = 0; i < p.size(); ++i)
      CHECK(toy.w1[static_cast<std::int64_t>(i)] == doctest::Approx(p[i]).epsilon(1e-6));
  }

  TEST_CASE("adamw: the first step moves each weight by lr against the gradient sign") {
    gsq::optim::AdamW opt({.lr = 0.5f, .eps = 1e-12f});
    Toy toy(2);
    const gsq::Tensor<float> before = toy.w1.clone();
    toy.fill_grads(1);
    opt.step(toy.params());
    for (std::int64_t i = 0; i < toy.w1.numel(); ++i) {
      if (toy.g1[i] == 0.0f) continue;
      CHECK(toy.w1[i] - before[i] == doctest::Approx(toy.g1[i] > 0 ? -0.5 : 0.5).epsilon(1e-5));
    }
  }

  TEST_CASE("sgd: momentum and nesterov match the PyTorch recurrence") {
    for (bool nesterov : {false, true}) {
      CAPTURE(nesterov);
      const gsq::optim::SgdConfig cfg{.lr = 0.1f, .momentum = 0.8f, .dampening = 0.0f,
                                      .nesterov = nesterov, .weight_decay = 0.01f};
      gsq::optim::Sgd opt(cfg);
      Toy toy(3);
      std::vector<double> p(toy.w1.begin(), toy.w1.end()), b(p.size(), 0.0);
      for (int t = 1; t <= 3; ++t) {
        toy.fill_grads(static_cast<std::uint64_t>(t));
        opt.step(toy.params());
        for (std::size_t i = 0; i < p.size(); ++i) {
          const double g = toy.g1[static_cast<std::int64_t>(i)] + cfg.weight_decay * p[i];
          b[i] = t == 1 ? g : cfg.momentum * b[i] + g;
          p[i] -= cfg.lr * (nesterov ? g + cfg.momentum * b[i] : b[i]);
        }
      }
      for (std::size_t i = 0; i < p.size(); ++i)
        CHECK(toy.w1[static_cast<std::int64_t>(i)] == doctest::Approx(p[i]).epsilon(1e-5));
    }
  }

  TEST_CASE("optim: state save and restore resumes bit for bit") {
    auto run = [](gsq::optim::Optimizer& first, gsq::optim::Optimizer& second) {
      Toy toy(4);
      for (std::uint64_t t = 1; t <= 3; ++t) {
        toy.fill_grads(t);
        first.step(toy.params());
      }
      const gsq::optim::OptimizerState saved = first.state();
      CHECK(saved.step == 3);
      CHECK(saved.tensors.size() >= 2);
      const gsq::Tensor<float> w1 = toy.w1.clone(), w2 = toy.w2.clone();
      for (std::uint64_t t = 4; t <= 5; ++t) {
        toy.fill_grads(t);
        first.step(toy.params());
      }
      // A fresh optimizer restored from the saved state, on restored weights.
      second.load_state(saved);
      CHECK(second.steps() == 3);
      Toy resumed(4);
      std::copy(w1.begin(), w1.end(), resumed.w1.begin());
      std::copy(w2.begin(), w2.end(), resumed.w2.begin());
      for (std::uint64_t t = 4; t <= 5; ++t) {
        resumed.fill_grads(t);
        second.step(resumed.params());
      }
      CHECK(gsq::test::bitwise_equal(toy.w1.data(), resumed.w1.data(), toy.w1.numel()));
      CHECK(gsq::test::bitwise_equal(toy.w2.data(), resumed.w2.data(), toy.w2.numel()));
      // state() of both optimizers agrees exactly.
      const gsq::optim::OptimizerState a = first.state(), b = second.state();
      REQUIRE(a.tensors.size() == b.tensors.size());
      CHECK(a.step == b.step);
      for (std::size_t i = 0; i < a.tensors.size(); ++i) {
        CHECK(a.tensors[i].name == b.tensors[i].name);
        REQUIRE(a.tensors[i].value.numel() == b.tensors[i].value.numel());
        CHECK(gsq::test::bitwise_equal(a.tensors[i].value.data(), b.tensors[i].value.data(),
                                       a.tensors[i].value.numel()));
      }
    };
    SUBCASE("adamw") {
      gsq::optim::AdamW a({.lr = 0.01f, .weight_decay = 0.1f}), b({.lr = 0.01f, .weight_decay = 0.1f});
      run(a, b);
      CHECK(a.state().find("a.w.exp_avg") != nullptr);
      CHECK(a.state().find("b.w.exp_avg_sq") != nullptr);
    }
    SUBCASE("sgd") {
      gsq::optim::Sgd a({.lr = 0.05f}), b({.lr = 0.05f});
      run(a, b);
      CHECK(a.state().find("a.w.momentum_buffer") != nullptr);
    }
  }

  TEST_CASE("optim: restoring state from another optimizer is rejected") {
    gsq::optim::Sgd sgd;
    gsq::optim::AdamW adamw;
    CHECK_THROWS_AS(adamw.load_state(sgd.state()), gsq::ConfigError);
    CHECK_THROWS_AS(sgd.load_state(adamw.state()), gsq::ConfigError);
  }

  TEST_CASE("optim: one thread and two threads give identical updates") {
    auto run = [](int threads) {
      gsq::set_num_threads(threads);
      Toy toy(5);
      gsq::optim::AdamW opt({.lr = 0.01f, .weight_decay = 0.05f});
      for (std::uint64_t t = 1; t <= 3; ++t) {
        toy.fill_grads(t);
        opt.step(toy.params());
      }
      gsq::set_num_threads(0);
      return toy.w2.clone();
    };
    const gsq::Tensor<float> one = run(1), two = run(2);
    CHECK(gsq::test::bitwise_equal(one.data(), two.data(), one.numel()));
  }

  TEST_CASE("optim: bad hyperparameters and mismatched state throw") {
    CHECK_THROWS_AS(gsq::optim::AdamW({.lr = -1.0f}), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::optim::AdamW({.beta1 = 1.0f}), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::optim::Sgd({.momentum = 0.0f, .nesterov = true}), gsq::ConfigError);
    gsq::optim::AdamW opt;
    Toy toy(6);
    opt.step(toy.params());
    gsq::Tensor<float> small({4}, gsq::MemoryCategory::kWeights), small_g({4});
    // Same name, different size: the saved moments cannot apply.
    CHECK_THROWS_AS(opt.step({{"a.w", &small, &small_g}}), gsq::ShapeError);
    gsq::Tensor<float> g_short({3});
    CHECK_THROWS_AS(opt.step({{"c", &small, &g_short}}), gsq::ShapeError);
    CHECK(opt.state_bytes() ==
          2 * static_cast<std::int64_t>(sizeof(float)) * (toy.w1.numel() + toy.w2.numel()));
  }
}
