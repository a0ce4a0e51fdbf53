// gsq/format/gse.hpp — GSE-INT⟨b, G, E⟩ storage: a group of G values shares one exponent.
//
// DESIGN.md (normative): a group stores one signed exponent e (E bits) and G mantissas
// m_i in [-(2^(b-1)-1), 2^(b-1)-1]; value x_i = m_i · 2^e. With b=8, G=32, E=8 the value
// set is OCP MXINT8.
//
// A GseMatrix is always stored the way the GEMM consumes it: [rows, cols] row-major with
// groups of G running along `cols` (the GEMM's k). A row holds ceil(cols/G) groups; the
// tail group is zero-padded, so kernels can always step whole groups. Mantissas are one
// int8 per element for b in 5..8, two per byte (low nibble first, 4-bit two's complement)
// for b <= 4. Exponents are one int8 per group (E = 5 uses the range [-16, 15]).
// Quantizing an fp32 matrix "transposed" (see quant/gse.hpp) produces a GseMatrix whose
// rows are the source's columns, without a float transpose copy.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"

GSQ_NAMESPACE_BEGIN

inline constexpr int kMinGseBits = 2;
inline constexpr int kMaxGseBits = 8;
inline constexpr int kMinGseGroup = 8;
inline constexpr int kMaxGseGroup = 256;

/// A GSE-INT format chosen at run time (bit-widths come from configuration).
struct GseSpec {
  int bits = 8;      // mantissa bits b, 2..8 (sign included)
  int group = 32;    // G, 8..256 values per shared exponent
  int exp_bits = 8;  // E, 5 or 8

  constexpr int max_mantissa() const noexcept { return (1 << (bits - 1)) - 1; }
  constexpr int exp_min() const noexcept { return -(1 << (exp_bits - 1)); }
  constexpr int exp_max() const noexcept { return (1 << (exp_bits - 1)) - 1; }
  /// Two mantissas per byte?
  constexpr bool is_packed() const noexcept { return bits <= 4; }
  /// Storage cost in bits per element, ignoring tail padding: b + E/G.
  constexpr double bits_per_element() const noexcept {
    return bits + static_cast<double>(exp_bits) / group;
  }
  constexpr bool operator==(const GseSpec&) const = default;

  /// "INT8/G32/E8", for messages and benchmark names.
  std::string name() const {
    return "INT" + std::to_string(bits) + "/G" + std::to_string(group) + "/E" +
           std::to_string(exp_bits);
  }

  /// Throws FormatError unless every field is in range.
  void validate() const {
    GSQ_CHECK(bits >= kMinGseBits && bits <= kMaxGseBits, ErrorCode::kInvalidFormat,
              "GSE-INT: mantissa bits must be 2..8, got " + std::to_string(bits));
    GSQ_CHECK(group >= kMinGseGroup && group <= kMaxGseGroup, ErrorCode::kInvalidFormat,
              "GSE-INT: group size must be 8..256, got " + std::to_string(group));
    GSQ_CHECK(exp_bits == 5 || exp_bits == 8, ErrorCode::kInvalidFormat,
              "GSE-INT: exponent bits must be 5 or 8, got " + std::to_string(exp_bits));
  }
};

/// A GSE-INT format fixed at compile time; `spec()` gives the runtime description.
template <int Bits, int Group, int ExpBits = 8>
struct GseFormat {
  static_assert(Bits >= kMinGseBits && Bits <= kMaxGseBits, "GSE-INT mantissa bits are 2..8");
  static_assert(Group >= kMinGseGroup && Group <= kMaxGseGroup, "GSE-INT groups are 8..256");
  static_assert(ExpBits == 5 || ExpBits == 8, "GSE-INT exponents have 5 or 8 bits");
  static constexpr int kBits = Bits;
  static constexpr int kGroup = Group;
  static constexpr int kExpBits = ExpBits;
  static constexpr GseSpec spec() noexcept { return {Bits, Group, ExpBits}; }
};

/// OCP MXINT8: the same value set as GSE-INT⟨8, 32, 8⟩.
using MxInt8Format = GseFormat<8, 32, 8>;

/// A matrix in GSE-INT, grouped along its columns (the GEMM's k axis).
class GseMatrix {
 public:
  GseMatrix() = default;
  GseMatrix(std::int64_t rows, std::int64_t cols, GseSpec spec,
            MemoryCategory category = MemoryCategory::kActivations)
      : spec_(spec), rows_(rows), cols_(cols) {
    spec.validate();
    GSQ_CHECK(rows >= 0 && cols >= 0, ErrorCode::kInvalidExtent,
              "GseMatrix: negative extent " + std::to_string(rows) + "x" + std::to_string(cols));
    groups_ = (cols + spec.group - 1) / spec.group;
    row_bytes_ = spec.is_packed() ? (groups_ * spec.group + 1) / 2 : groups_ * spec.group;
    mantissas_ = AlignedBuffer<std::int8_t>(rows * row_bytes_, category);
    exponents_ = AlignedBuffer<std::int8_t>(rows * groups_, category);
    for (auto& e : exponents_) e = static_cast<std::int8_t>(spec.exp_min());
  }

  GseMatrix clone() const {
    GseMatrix m;
    m.spec_ = spec_;
    m.rows_ = rows_;
    m.cols_ = cols_;
    m.groups_ = groups_;
    m.row_bytes_ = row_bytes_;
    m.mantissas_ = mantissas_.clone();
    m.exponents_ = exponents_.clone();
    return m;
  }

  /// Makes this a [rows, cols] matrix of the same spec inside the storage it already
  /// holds, when that is large enough (grow-only scratch reuses one buffer for varying
  /// shapes); returns false and changes nothing otherwise. Contents are unspecified
  /// afterwards (quantizing rewrites every byte of the new shape, padding included).
  bool reshape_within(std::int64_t rows, std::int64_t cols) noexcept {
    if (rows < 0 || cols < 0 || spec_.group <= 0) return false;
    const std::int64_t groups = (cols + spec_.group - 1) / spec_.group;
    const std::int64_t row_bytes =
        spec_.is_packed() ? (groups * spec_.group + 1) / 2 : groups * spec_.group;
    if (rows * row_bytes > mantissas_.size() || rows * groups > exponents_.size()) return false;
    rows_ = rows;
    cols_ = cols;
    groups_ = groups;
    row_bytes_ = row_bytes;
    return true;
  }

  const GseSpec& spec() const noexcept { return spec_; }
  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t cols() const noexcept { return cols_; }
  std::int64_t groups_per_row() const noexcept { return groups_; }
  /// Columns including the zero padding of the tail group.
  std::int64_t padded_cols() const noexcept { return groups_ * spec_.group; }
  /// Bytes of mantissa storage per row (padded columns; halved when packed).
  std::int64_t row_bytes() const noexcept { return row_bytes_; }
  /// Bytes held: mantissas + exponents.
  std::int64_t bytes() const noexcept { return mantissas_.bytes() + exponents_.bytes(); }

  std::int8_t* mantissa_row(std::int64_t r) noexcept { return mantissas_.data() + r * row_bytes_; }
  const std::int8_t* mantissa_row(std::int64_t r) const noexcept {
    return mantissas_.data() + r * row_bytes_;
  }
  std::int8_t* exponent_row(std::int64_t r) noexcept { return exponents_.data() + r * groups_; }
  const std::int8_t* exponent_row(std::int64_t r) const noexcept {
    return exponents_.data() + r * groups_;
  }

  /// The mantissa of element (r, c), c may reach into the tail padding.
  int mantissa(std::int64_t r, std::int64_t c) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < padded_cols());
    if (!spec_.is_packed()) return mantissa_row(r)[c];
    return unpack_nibble(static_cast<std::uint8_t>(mantissa_row(r)[c >> 1]), c & 1);
  }
  void set_mantissa(std::int64_t r, std::int64_t c, int m) noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < padded_cols());
    GSQ_ASSERT(m >= -spec_.max_mantissa() && m <= spec_.max_mantissa());
    if (!spec_.is_packed()) {
      mantissa_row(r)[c] = static_cast<std::int8_t>(m);
      return;
    }
    auto& byte = reinterpret_cast<std::uint8_t&>(mantissa_row(r)[c >> 1]);
    const unsigned nibble = static_cast<unsigned>(m) & 0xFu;
    byte = static_cast<std::uint8_t>((c & 1) ? (byte & 0x0Fu) | (nibble << 4)
                                             : (byte & 0xF0u) | nibble);
  }
  int exponent(std::int64_t r, std::int64_t group) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && group >= 0 && group < groups_);
    return exponent_row(r)[group];
  }
  /// The value m · 2^e of element (r, c), exact in fp32.
  float value(std::int64_t r, std::int64_t c) const noexcept {
    return std::ldexp(static_cast<float>(mantissa(r, c)), exponent(r, c / spec_.group));
  }

  /// Sign-extends nibble `high` (0 = low, 1 = high) of a packed byte.
  static constexpr int unpack_nibble(std::uint8_t byte, int high) noexcept {
    const int v = high ? (byte >> 4) : (byte & 0xF);
    return v >= 8 ? v - 16 : v;
  }

 private:
  GseSpec spec_{};
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t groups_ = 0;
  std::int64_t row_bytes_ = 0;
  AlignedBuffer<std::int8_t> mantissas_;
  AlignedBuffer<std::int8_t> exponents_;
};

GSQ_NAMESPACE_END
