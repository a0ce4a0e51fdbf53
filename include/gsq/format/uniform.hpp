// gsq/format/uniform.hpp — uniform asymmetric integer storage (L4Q's deployed weights).
//
// DESIGN.md "Uniform asymmetric (L4Q)": groups of G (default 128) along the input axis
// (cols of an [out, in] weight), a step s > 0 and an offset b per group; an n-bit code
// q in [−2^(n−1), 2^(n−1) − 1] stands for ŵ = q·s + b, evaluated as one fused multiply-add
// (fma(q, s, b), a single rounding), so every path that decodes gives the same bits
// whatever the compiler contracts.
//
// A UniformMatrix is the export form: codes stored like GSE-INT mantissas (one int8 per
// element for n >= 5, two per byte, low nibble first, for n <= 4), [rows, cols] row-major
// with the tail group zero-padded, and fp32 steps and offsets, one per group
// ([rows, ceil(cols/G)] row-major).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"

GSQ_NAMESPACE_BEGIN

/// A uniform asymmetric format: code bits and group size.
struct UniformSpec {
  int bits = 4;     // n, 2..8
  int group = 128;  // G, values per (step, offset) pair, >= 1

  constexpr int qmin() const noexcept { return -(1 << (bits - 1)); }
  constexpr int qmax() const noexcept { return (1 << (bits - 1)) - 1; }
  constexpr bool is_packed() const noexcept { return bits <= 4; }
  /// Storage cost in bits per element, ignoring tail padding: n + 64/G.
  constexpr double bits_per_element() const noexcept {
    return bits + 64.0 / static_cast<double>(group);
  }
  constexpr bool operator==(const UniformSpec&) const = default;

  /// "ASYM4/G128": asymmetric n-bit codes in groups of G, for messages and names.
  std::string name() const { return "ASYM" + std::to_string(bits) + "/G" + std::to_string(group); }

  void validate() const {
    GSQ_CHECK(bits >= 2 && bits <= 8, ErrorCode::kInvalidFormat,
              "uniform: code bits must be 2..8, got " + std::to_string(bits));
    GSQ_CHECK(group >= 1, ErrorCode::kInvalidFormat,
              "uniform: group size must be >= 1, got " + std::to_string(group));
  }
};

/// The FP16 (IEEE binary16) value nearest to `f`, ties to even, as a float; beyond the
/// FP16 range ±65504. L4Q's FP16 grid option keeps step and minimum on these values so a
/// GGUF Q4_1 export (FP16 scale and minimum) holds the trained weights exactly.
inline float round_to_fp16_grid(float f) noexcept {
  if (!std::isfinite(f)) return f;
  const float a = std::fabs(f);
  if (a >= 65504.0f) return std::copysign(65504.0f, f);
  // Spacing of FP16 values around a: 2^(e-10) for normal a = m·2^e, 2^-24 below 2^-14.
  const int e = a < 0x1p-14f ? -14 : std::ilogb(a);
  const float ulp = std::ldexp(1.0f, e - 10);
  return std::nearbyint(f / ulp) * ulp;  // exact division by a power of two
}

/// Integer codes plus a step and an offset per group.
class UniformMatrix {
 public:
  UniformMatrix() = default;
  UniformMatrix(std::int64_t rows, std::int64_t cols, UniformSpec spec,
                MemoryCategory category = MemoryCategory::kWeights)
      : spec_(spec), rows_(rows), cols_(cols) {
    spec.validate();
    GSQ_CHECK(
        rows >= 0 && cols >= 0, ErrorCode::kInvalidExtent,
        "UniformMatrix: negative extent " + std::to_string(rows) + "x" + std::to_string(cols));
    groups_ = (cols + spec.group - 1) / spec.group;
    const std::int64_t padded = groups_ * spec.group;
    row_bytes_ = spec.is_packed() ? (padded + 1) / 2 : padded;
    codes_ = AlignedBuffer<std::int8_t>(rows * row_bytes_, category);
    steps_ = AlignedBuffer<float>(rows * groups_, category);
    offsets_ = AlignedBuffer<float>(rows * groups_, category);
  }

  const UniformSpec& spec() const noexcept { return spec_; }
  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t cols() const noexcept { return cols_; }
  std::int64_t groups_per_row() const noexcept { return groups_; }
  std::int64_t padded_cols() const noexcept { return groups_ * spec_.group; }
  std::int64_t row_bytes() const noexcept { return row_bytes_; }
  std::int64_t bytes() const noexcept { return codes_.bytes() + steps_.bytes() + offsets_.bytes(); }

  std::int8_t* code_row(std::int64_t r) noexcept { return codes_.data() + r * row_bytes_; }
  const std::int8_t* code_row(std::int64_t r) const noexcept {
    return codes_.data() + r * row_bytes_;
  }
  float* step_row(std::int64_t r) noexcept { return steps_.data() + r * groups_; }
  const float* step_row(std::int64_t r) const noexcept { return steps_.data() + r * groups_; }
  float* offset_row(std::int64_t r) noexcept { return offsets_.data() + r * groups_; }
  const float* offset_row(std::int64_t r) const noexcept { return offsets_.data() + r * groups_; }

  int code(std::int64_t r, std::int64_t c) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < padded_cols());
    if (!spec_.is_packed()) return code_row(r)[c];
    const int byte = static_cast<std::uint8_t>(code_row(r)[c >> 1]);
    const int v = (c & 1) ? (byte >> 4) : (byte & 0xF);
    return v >= 8 ? v - 16 : v;
  }
  void set_code(std::int64_t r, std::int64_t c, int q) noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < padded_cols());
    GSQ_ASSERT(q >= spec_.qmin() && q <= spec_.qmax());
    if (!spec_.is_packed()) {
      code_row(r)[c] = static_cast<std::int8_t>(q);
      return;
    }
    auto& byte = reinterpret_cast<std::uint8_t&>(code_row(r)[c >> 1]);
    const unsigned nibble = static_cast<unsigned>(q) & 0xFu;
    byte = static_cast<std::uint8_t>((c & 1) ? (byte & 0x0Fu) | (nibble << 4)
                                             : (byte & 0xF0u) | nibble);
  }
  float step(std::int64_t r, std::int64_t g) const noexcept { return step_row(r)[g]; }
  float offset(std::int64_t r, std::int64_t g) const noexcept { return offset_row(r)[g]; }

  /// ŵ = fma(q, s, b) of element (r, c).
  float value(std::int64_t r, std::int64_t c) const noexcept {
    const std::int64_t g = c / spec_.group;
    return std::fma(static_cast<float>(code(r, c)), step(r, g), offset(r, g));
  }

 private:
  UniformSpec spec_{};
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t groups_ = 0;
  std::int64_t row_bytes_ = 0;
  AlignedBuffer<std::int8_t> codes_;
  AlignedBuffer<float> steps_;
  AlignedBuffer<float> offsets_;
};

GSQ_NAMESPACE_END
