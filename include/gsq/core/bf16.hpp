// gsq/core/bf16.hpp — bfloat16 as a storage type: the upper half of an IEEE float.
//
// gsq computes in FP32 and stores some operands (a frozen classifier, an embedding) or
// packed GEMM panels in BF16. Conversion from float rounds to nearest, ties to even (the
// rounding of vcvtne2ps2bf16 and of PyTorch's .to(bfloat16)); NaN stays a quiet NaN with
// its sign; the conversion to float is exact. No arithmetic is defined on the type: widen,
// compute in FP32, round back.
#pragma once

#include <bit>
#include <cstdint>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN

/// One bfloat16 value (its bits). Trivially copyable, two bytes, zero-initialised.
struct bf16 {
  std::uint16_t bits = 0;

  /// Round to nearest, ties to even; NaN stays a quiet NaN with its sign.
  static constexpr bf16 from_float(float f) noexcept {
    const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return {static_cast<std::uint16_t>((u >> 16) | 0x0040u)};
    return {static_cast<std::uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
  }
  /// The exact float value.
  constexpr float to_float() const noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
  }
  friend constexpr bool operator==(bf16, bf16) noexcept = default;
};
static_assert(sizeof(bf16) == 2, "bf16 is two bytes");

/// `f` rounded to bf16 (round to nearest even).
constexpr bf16 to_bf16(float f) noexcept { return bf16::from_float(f); }
/// The float value of `h` (exact).
constexpr float to_float(bf16 h) noexcept { return h.to_float(); }

GSQ_NAMESPACE_END
