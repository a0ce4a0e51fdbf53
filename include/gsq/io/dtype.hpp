// gsq/io/dtype.hpp — element types found in model files and their conversion to float.
//
// safetensors names a dtype per tensor. gsq computes in float, so loaders convert
// F32 / F16 / BF16 to float on load; the other types are still recognised (with their
// sizes) so that size checks and `gsq-inspect` work on any valid file, but asking for
// their values as float is an error. BF16 export rounds to nearest, ties to even, and
// keeps NaN a NaN (plain truncation would turn a NaN with a low payload into Inf).
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <string_view>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN

enum class DType : int {
  kBool,
  kU8,
  kI8,
  kF8E4M3,
  kF8E5M2,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // safetensors spelling
  int bytes;              // per element
  bool to_float;          // convertible by `convert_to_float`
};

inline constexpr DTypeInfo kDTypeInfos[] = {
    {DType::kBool, "BOOL", 1, false},   {DType::kU8, "U8", 1, false},
    {DType::kI8, "I8", 1, false},       {DType::kF8E4M3, "F8_E4M3", 1, false},
    {DType::kF8E5M2, "F8_E5M2", 1, false}, {DType::kI16, "I16", 2, false},
    {DType::kU16, "U16", 2, false},     {DType::kF16, "F16", 2, true},
    {DType::kBF16, "BF16", 2, true},    {DType::kI32, "I32", 4, false},
    {DType::kU32, "U32", 4, false},     {DType::kF32, "F32", 4, true},
    {DType::kF64, "F64", 8, false},     {DType::kI64, "I64", 8, false},
    {DType::kU64, "U64", 8, false},
};

constexpr const DTypeInfo& dtype_info(DType t) noexcept { return kDTypeInfos[static_cast<int>(t)]; }
constexpr std::string_view dtype_name(DType t) noexcept { return dtype_info(t).name; }
constexpr int dtype_bytes(DType t) noexcept { return dtype_info(t).bytes; }

/// The dtype spelled `name` in a safetensors header, or nullopt.
constexpr std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (const DTypeInfo& info : kDTypeInfos)
    if (info.name == name) return info.dtype;
  return std::nullopt;
}

inline float bf16_to_float(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

/// Round to nearest, ties to even; NaN stays a quiet NaN with its sign.
inline std::uint16_t float_to_bf16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  const std::uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

/// IEEE binary16 to float, exactly (every half is a float), subnormals included.
inline float f16_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits = 0;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // Inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);  // 112 = 127 - 15
  } else if (mant == 0) {
    bits = sign;  // ±0
  } else {
    int e = -1;  // normalise the subnormal: value = mant · 2^-24
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mant & 0x3FFu) << 13);
  }
  return std::bit_cast<float>(bits);
}

GSQ_NAMESPACE_END
