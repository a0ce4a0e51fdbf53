// gsq/nn/bits.hpp — the precision of a layer's matrix products (GSQ-Tuning's W·A·G).
//
// GSQ-Tuning sets the GSE-INT mantissa width separately for weights (W0, A, B), for
// activations (X, H) and for gradients (dY, dH): "W8A8G8", "W6A6G6", "W4A8G8". All eight
// LoRA products run as GSE-INT GEMMs with these widths and one shared group size (the
// GEMM needs both operands grouped alike along k). `Bits::fp32()` selects the FP32
// reference path with the same API, which every integer result is compared against.
#pragma once

#include <charconv>
#include <string>
#include <string_view>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/format/gse.hpp"

GSQ_NAMESPACE_BEGIN

struct Bits {
  int weight = 8;      // W0, A, B mantissa bits (2..8)
  int activation = 8;  // X, H
  int gradient = 8;    // dY, dH
  bool use_fp32 = false;  // true: the FP32 reference path, the widths are ignored
  int group = 32;      // GSE group size G shared by all operands
  int exp_bits = 8;    // GSE exponent bits E

  static constexpr Bits fp32() noexcept { return {8, 8, 8, true, 32, 8}; }
  static constexpr Bits w8a8g8() noexcept { return {8, 8, 8, false, 32, 8}; }
  static constexpr Bits w6a6g6() noexcept { return {6, 6, 6, false, 32, 8}; }
  static constexpr Bits w5a5g5() noexcept { return {5, 5, 5, false, 32, 8}; }
  static constexpr Bits w4a8g8() noexcept { return {4, 8, 8, false, 32, 8}; }

  constexpr bool is_fp32() const noexcept { return use_fp32; }
  GseSpec weight_spec() const noexcept { return {weight, group, exp_bits}; }
  GseSpec activation_spec() const noexcept { return {activation, group, exp_bits}; }
  GseSpec gradient_spec() const noexcept { return {gradient, group, exp_bits}; }

  /// Throws FormatError unless every GSE spec is valid (unused in FP32 mode).
  void validate() const {
    if (use_fp32) return;
    weight_spec().validate();
    activation_spec().validate();
    gradient_spec().validate();
  }

  /// "fp32" or "w8a8g8"; a group other than 32 is appended as "/G64".
  std::string name() const {
    if (use_fp32) return "fp32";
    std::string s = "w" + std::to_string(weight) + "a" + std::to_string(activation) + "g" +
                    std::to_string(gradient);
    if (group != 32) s += "/G" + std::to_string(group);
    return s;
  }

  /// Parses "fp32" or "w<b>a<b>g<b>[/G<n>]" (case-insensitive); throws ConfigError
  /// naming the text otherwise.
  static Bits parse(std::string_view text) {
    std::string s(text);
    for (char& c : s)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (s == "fp32") return fp32();
    Bits b;
    const char* p = s.data();
    const char* end = s.data() + s.size();
    auto field = [&](char tag, int& value) {
      if (p == end || *p != tag) return false;
      ++p;
      const auto r = std::from_chars(p, end, value);
      if (r.ec != std::errc() || r.ptr == p) return false;
      p = r.ptr;
      return true;
    };
    bool ok = field('w', b.weight) && field('a', b.activation) && field('g', b.gradient);
    if (ok && p != end) ok = *p++ == '/' && field('g', b.group);
    ok = ok && p == end;
    GSQ_CHECK(ok, ErrorCode::kInvalidArgument,
              "Bits: '" + std::string(text) +
                  "' is not a precision; expected fp32 or w<b>a<b>g<b>[/G<n>], e.g. w8a8g8");
    try {
      b.validate();
    } catch (const Error& e) {
      detail::throw_error(ErrorCode::kInvalidArgument,
                          "Bits: '" + std::string(text) + "': " + e.what());
    }
    return b;
  }

  constexpr bool operator==(const Bits&) const = default;
};

GSQ_NAMESPACE_END
