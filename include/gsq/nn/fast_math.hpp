// gsq/nn/fast_math.hpp — exp for the softmax and cross-entropy loops, vectorisable.
//
// libm's expf is a function call per element, and the softmax over attention rows and
// vocabularies calls it millions of times per step. `exp_approx` is branch-free integer
// and float arithmetic that GCC and clang vectorise at the baseline ISA (no float
// compares or selects, which -ftrapping-math keeps from being if-converted):
//   * x below −87 (also −Inf) is raised to −87 through the unsigned order of negative
//     floats' bit patterns, so the result flushes to about 1.6e−38 instead of 0;
//   * n = round(x·log2 e) by the 1.5·2^23 trick, read back from the sum's low mantissa
//     bits (no float→int conversion, so no undefined behaviour on odd input);
//   * r = x − n·ln2 in two steps (Cody-Waite: n·ln2_hi is exact), |r| <= ln2/2;
//   * e^r by its Taylor series to degree 7, times 2^n put into the exponent bits.
// Relative error below 2e−7 on [−87, 88]. Callers pass x <= 0 (differences to a row
// maximum or to a log-sum-exp); x above ~88.3 gives +Inf, far larger x is not supported.
// Plain C++: the same bits on every thread, run and SIMD width.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN
namespace nn::detail {

inline float exp_approx(float x) noexcept {
  constexpr float kShift = 12582912.0f;  // 1.5·2^23
  x = std::bit_cast<float>(
      std::min(std::bit_cast<std::uint32_t>(x), std::bit_cast<std::uint32_t>(-87.0f)));
  const float shifted = x * 1.44269504088896341f + kShift;
  const float n = shifted - kShift;
  const std::int32_t exponent =
      std::min(std::bit_cast<std::int32_t>(shifted) - std::bit_cast<std::int32_t>(kShift), 128);
  float r = x - n * 0.693145751953125f;   // ln2_hi: 16 significant bits
  r = r - n * 1.42860676533018704e-6f;    // ln2_lo
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * std::bit_cast<float>(static_cast<std::uint32_t>(exponent + 127) << 23);
}

}  // namespace nn::detail
GSQ_NAMESPACE_END
