// Global-norm gradient clipping and learning-rate schedules.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "gsq/optim/clip.hpp"
#include "gsq/optim/schedule.hpp"
#include "support/test_support.hpp"

TEST_SUITE("optim") {
  TEST_CASE("clip: the global norm spans all parameters and clipping rescales to max_norm") {
    gsq::Tensor<float> w1({2}), g1({2}), w2({1}), g2({1});
    g1[0] = 3.0f;
    g1[1] = 0.0f;
    g2[0] = 4.0f;  // global norm 5
    const gsq::ParameterList params = {{"p1", &w1, &g1}, {"p2", &w2, &g2}};
    CHECK(gsq::optim::global_grad_norm(params) == doctest::Approx(5.0));
    // Below the threshold: untouched.
    CHECK(gsq::optim::clip_grad_norm(params, 10.0) == doctest::Approx(5.0));
    CHECK(g1[0] == 3.0f);
    // Above: scaled to norm 1, direction kept.
    CHECK(gsq::optim::clip_grad_norm(params, 1.0) == doctest::Approx(5.0));
    CHECK(gsq::optim::global_grad_norm(params) == doctest::Approx(1.0).epsilon(1e-5));
    CHECK(g1[0] / g2[0] == doctest::Approx(0.75));
  }

  TEST_CASE("clip: a non-finite gradient is reported by name") {
    gsq::Tensor<float> w({3}), g({3});
    g[1] = std::numeric_limits<float>::quiet_NaN();
    try {
      gsq::optim::clip_grad_norm({{"layer.lora_b", &w, &g}}, 1.0);
      FAIL("expected a FormatError");
    } catch (const gsq::FormatError& e) {
      CHECK(e.code() == gsq::ErrorCode::kNonFinite);
      CHECK(std::string(e.what()).find("layer.lora_b") != std::string::npos);
    }
  }

  TEST_CASE("schedule: warm-up rises linearly then cosine decays to the minimum") {
    const auto s = gsq::optim::Schedule::warmup_cosine(1.0f, 4, 14, 0.1f);
    // Strictly increasing during warm-up, peak right after it.
    for (int i = 0; i + 1 < 4; ++i) CHECK(s.at(i) < s.at(i + 1));
    CHECK(s.at(0) == doctest::Approx(1.0 / 5));
    CHECK(s.at(4) == doctest::Approx(1.0));
    // Half way through the decay: the midpoint of peak and min.
    CHECK(s.at(9) == doctest::Approx(0.55));
    for (int i = 4; i < 14; ++i) CHECK(s.at(i) > s.at(i + 1));
    CHECK(s.at(14) == doctest::Approx(0.1));
    CHECK(s.at(1000) == doctest::Approx(0.1));
    const auto c = gsq::optim::Schedule::constant(0.3f);
    CHECK(c.at(0) == 0.3f);
    CHECK(c.at(123456) == 0.3f);
  }

  TEST_CASE("schedule: invalid ranges throw") {
    CHECK_THROWS_AS(gsq::optim::Schedule::warmup_cosine(1.0f, 10, 10), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::optim::Schedule::warmup_cosine(1.0f, 0, 10, 2.0f), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::optim::Schedule::constant(-1.0f), gsq::ConfigError);
  }
}
