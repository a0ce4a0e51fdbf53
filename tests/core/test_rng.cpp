#include <doctest/doctest.h>

#include <cmath>

#include "gsq/core/rng.hpp"

TEST_SUITE("core") {
  TEST_CASE("rng: Philox4x32-10 matches the Random123 known-answer vectors") {
    using A4 = std::array<std::uint32_t, 4>;
    CHECK(gsq::philox4x32_10({0, 0, 0, 0}, {0, 0}) ==
          A4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
    CHECK(gsq::philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                             {0xffffffffu, 0xffffffffu}) ==
          A4{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
    CHECK(gsq::philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                             {0xa4093822u, 0x299f31d0u}) ==
          A4{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
  }

  TEST_CASE("rng: uniform draws lie in 0..1 with mean 1/2 and variance 1/12") {
    const int n = 200000;
    double sum = 0, sum2 = 0;
    for (int i = 0; i < n; ++i) {
      const double u = gsq::random_uniform(42, 3, static_cast<std::uint64_t>(i));
      REQUIRE(u >= 0.0);
      REQUIRE(u < 1.0);
      sum += u;
      sum2 += u * u;
    }
    const double mean = sum / n, var = sum2 / n - mean * mean;
    // 5 standard errors: sd of the mean is sqrt(1/12/n) ≈ 6.5e-4.
    CHECK(std::fabs(mean - 0.5) < 5 * std::sqrt(1.0 / 12 / n));
    CHECK(std::fabs(var - 1.0 / 12) < 0.002);
  }

  TEST_CASE("rng: streams and seeds differ and positions are reproducible") {
    CHECK(gsq::random_u32(1, 0, 5) != gsq::random_u32(1, 1, 5));
    CHECK(gsq::random_u32(1, 0, 5) != gsq::random_u32(2, 0, 5));
    gsq::CounterRng a(7, 9);
    for (int i = 0; i < 10; ++i) a.next_u32();
    gsq::CounterRng b(7, 9);
    b.seek(10);
    CHECK(a.next_u32() == b.next_u32());
  }
}
