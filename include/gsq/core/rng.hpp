// gsq/core/rng.hpp — Philox4x32-10, a counter-based random generator (Salmon et al., SC'11).
//
// A counter-based generator is a pure function of (key, counter), so the random number
// for element i of tensor t under seed s is the same whichever thread asks for it and
// in whatever order: stochastic rounding and initialisation are reproducible for any
// thread count and any SIMD path. gsq keys it as key = seed, counter = (index, stream).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN

namespace detail {
inline constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
inline constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
inline constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
inline constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1
}  // namespace detail

/// Philox4x32 with 10 rounds: four 32-bit outputs from a 128-bit counter and 64-bit key.
constexpr std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> ctr,
                                                     std::array<std::uint32_t, 2> key) noexcept {
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(detail::kPhiloxM0) * ctr[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(detail::kPhiloxM1) * ctr[2];
    const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    key[0] += detail::kPhiloxW0;
    key[1] += detail::kPhiloxW1;
  }
  return ctr;
}

/// The 32-bit random word for (seed, stream, index): lane 0 of Philox with
/// key = seed and counter = (index lo, index hi, stream lo, stream hi). One block per
/// index keeps every lane of a SIMD implementation independent.
constexpr std::uint32_t random_u32(std::uint64_t seed, std::uint64_t stream,
                                   std::uint64_t index) noexcept {
  return philox4x32_10({static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                        static_cast<std::uint32_t>(stream),
                        static_cast<std::uint32_t>(stream >> 32)},
                       {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)})[0];
}

/// A uniform float in [0, 1) with 24 random bits: (random_u32 >> 8) · 2^-24.
constexpr float random_uniform(std::uint64_t seed, std::uint64_t stream,
                               std::uint64_t index) noexcept {
  return static_cast<float>(random_u32(seed, stream, index) >> 8) * (1.0f / 16777216.0f);
}

/// A sequential stream over the same function, for initialisation code that just wants
/// "the next number": element n of stream `stream` is random_u32(seed, stream, n).
class CounterRng {
 public:
  constexpr CounterRng(std::uint64_t seed, std::uint64_t stream) noexcept
      : seed_(seed), stream_(stream) {}
  constexpr std::uint32_t next_u32() noexcept { return random_u32(seed_, stream_, index_++); }
  /// Uniform in [0, 1).
  constexpr float next_uniform() noexcept { return random_uniform(seed_, stream_, index_++); }
  /// Uniform in [lo, hi).
  constexpr float next_uniform(float lo, float hi) noexcept {
    return lo + (hi - lo) * next_uniform();
  }
  /// Standard normal by Box-Muller (two draws per value; reproducible, not fast).
  float next_normal() noexcept {
    const float u1 = 1.0f - next_uniform();  // in (0, 1], so the log is finite
    const float u2 = next_uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853071795864769f * u2);
  }
  constexpr std::uint64_t position() const noexcept { return index_; }
  constexpr void seek(std::uint64_t index) noexcept { index_ = index; }

 private:
  std::uint64_t seed_;
  std::uint64_t stream_;
  std::uint64_t index_ = 0;
};

GSQ_NAMESPACE_END
