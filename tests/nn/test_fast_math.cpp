#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gsq/nn/fast_math.hpp"

TEST_SUITE("nn") {
  TEST_CASE("fast math: exp_approx is within 2e-7 relative of exp on its range") {
    double worst = 0.0;
    for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
      const double exact = std::exp(static_cast<double>(x));
      worst = std::max(worst, std::fabs(gsq::nn::detail::exp_approx(x) - exact) / exact);
    }
    CHECK(worst < 2e-7);
    CHECK(gsq::nn::detail::exp_approx(0.0f) == 1.0f);
  }

  TEST_CASE("fast math: exp_approx flushes below the range and overflows to infinity above it") {
    const float tiny = gsq::nn::detail::exp_approx(-87.0f);
    CHECK(tiny > 0.0f);
    CHECK(gsq::nn::detail::exp_approx(-1000.0f) == tiny);
    CHECK(gsq::nn::detail::exp_approx(-std::numeric_limits<float>::infinity()) == tiny);
    CHECK(std::isinf(gsq::nn::detail::exp_approx(89.0f)));
  }

  TEST_CASE("fast math: a vectorised loop gives the same bits as single calls") {
    std::vector<float> x(1003), y(1003);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = -80.0f + 0.0797f * static_cast<float>(i);
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = gsq::nn::detail::exp_approx(x[i]);
    for (std::size_t i = 0; i < x.size(); i += 97) {
      volatile float xi = x[i];  // a scalar call the compiler cannot fold into the loop
      CHECK(gsq::nn::detail::exp_approx(xi) == y[i]);
    }
  }
}
