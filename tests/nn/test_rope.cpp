#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>

#include "component_test_support.hpp"
#include "gsq/core/error.hpp"
#include "gsq/nn/rope.hpp"
#include "support/test_support.hpp"

namespace {

// The rotation of one head written out from each convention's own definition, in double:
// llama2.c run.c (pairs 2i, 2i+1) and Hugging Face rotate_half (q·cos + rotate_half(q)·sin).
void reference_rope(const float* in, double* out, std::int64_t hs, std::int64_t pos, double theta,
                    gsq::RopeStyle style) {
  const std::int64_t half = hs / 2;
  if (style == gsq::RopeStyle::kInterleaved) {
    for (std::int64_t i = 0; i < hs; i += 2) {
      const double freq = 1.0 / std::pow(theta, static_cast<double>(i) / static_cast<double>(hs));
      const double a = static_cast<double>(pos) * freq;
      out[i] = in[i] * std::cos(a) - in[i + 1] * std::sin(a);
      out[i + 1] = in[i] * std::sin(a) + in[i + 1] * std::cos(a);
    }
  } else {
    for (std::int64_t j = 0; j < hs; ++j) {
      const std::int64_t i = j % half;
      const double freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hs));
      const double a = static_cast<double>(pos) * freq;
      const double rotated = j < half ? -static_cast<double>(in[j + half]) : in[j - half];
      out[j] = in[j] * std::cos(a) + rotated * std::sin(a);
    }
  }
}

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("rope: both styles match their reference definitions at every position") {
    for (gsq::RopeStyle style : {gsq::RopeStyle::kInterleaved, gsq::RopeStyle::kHalf}) {
      for (std::int64_t hs : {2, 8, 16, 64}) {
        CAPTURE(hs);
        CAPTURE(static_cast<int>(style));
        const std::int64_t batch = 2, seq = 37, heads = 3;
        gsq::Rope rope(hs, 64, 10000.0f, style);
        const auto x = gsq::test::normal_matrix(batch * seq, heads * hs, 1);
        auto y = x.clone();
        rope.forward(y, seq);
        std::vector<double> ref(static_cast<std::size_t>(hs));
        int bad = 0;
        for (std::int64_t r = 0; r < batch * seq; ++r)
          for (std::int64_t h = 0; h < heads; ++h) {
            reference_rope(x.view().row(r) + h * hs, ref.data(), hs, r % seq, 10000.0, style);
            for (std::int64_t d = 0; d < hs; ++d)
              bad += std::fabs(y(r, h * hs + d) - ref[static_cast<std::size_t>(d)]) > 2e-5;
          }
        CHECK(bad == 0);
      }
    }
  }

  TEST_CASE("rope: position zero is the identity and start_pos continues a sequence") {
    for (gsq::RopeStyle style : {gsq::RopeStyle::kInterleaved, gsq::RopeStyle::kHalf}) {
      gsq::Rope rope(16, 32, 500.0f, style);
      const auto x = gsq::test::normal_matrix(10, 32, 2);
      auto full = x.clone();
      rope.forward(full, 10);
      CHECK(gsq::test::bitwise_equal(full.data(), x.data(), 32));  // row 0 untouched
      // Rows 6..9 alone, starting at position 6, equal the tail of the full rotation.
      auto tail = gsq::Tensor<float>::copy_of(x.view().row_range(6, 4));
      rope.forward(tail, 4, 6);
      CHECK(gsq::test::bitwise_equal(tail.data(), full.view().row(6), 4 * 32));
    }
  }

  TEST_CASE("rope: backward is the transpose of forward") {
    for (gsq::RopeStyle style : {gsq::RopeStyle::kInterleaved, gsq::RopeStyle::kHalf}) {
      gsq::Rope rope(8, 16, 10000.0f, style);
      const auto x = gsq::test::normal_matrix(12, 24, 3);
      const auto w = gsq::test::normal_matrix(12, 24, 4);
      auto rx = x.clone();
      rope.forward(rx, 6);
      auto rtw = w.clone();
      rope.backward(rtw, 6);
      // <R x, w> == <x, Rᵀ w>, and Rᵀ R x == x.
      CHECK(gsq::test::weighted_sum(rx, w) ==
            doctest::Approx(gsq::test::weighted_sum(x, rtw)).epsilon(1e-6));
      rope.backward(rx, 6);
      for (std::int64_t i = 0; i < x.numel(); ++i) CHECK(rx[i] == doctest::Approx(x[i]).epsilon(1e-5));
    }
  }

  TEST_CASE("rope: odd head sizes and positions past the table throw") {
    CHECK_THROWS_AS(gsq::Rope(7, 8, 10000.0f, gsq::RopeStyle::kHalf), gsq::ConfigError);
    gsq::Rope rope(4, 8, 10000.0f, gsq::RopeStyle::kHalf);
    gsq::Tensor<float> x({9, 4});
    CHECK_THROWS_AS(rope.forward(x, 9), gsq::ShapeError);
    gsq::Tensor<float> y({3, 4});
    CHECK_THROWS_AS(rope.forward(y, 3, 6), gsq::ShapeError);
    gsq::Tensor<float> z({4, 6});
    CHECK_THROWS_AS(rope.forward(z, 4), gsq::ShapeError);  // 6 columns are not heads of 4
  }
}
