// gsq/format/gse.hpp — GSE-INT⟨b, G, E⟩ storage: a group of G values shares one exponent.
//
// DESIGN.md (normative): a group stores one signed exponent e (E bits) and G mantissas
// m_i in [-(2^(b-1)-1), 2^(b-1)-1]; value x_i = m_i · 2^e. With b=8, G=32, E=8 the value
// set is OCP MXINT8.
//
// A GseMatrix is always stored the way the GEMM consumes it: [rows, cols] row-major with
// groups of G running along `cols` (the GEMM's k). A row holds ceil(cols/G) groups; the
// tail group is zero-padded, so kernels can always step whole groups. Mantissas are stored
// packed in fields of `code_bits` = 4, 6 or 8 bits (memory falls with the bits; at most
// b + 1 bits per element):
//   b <= 4:  two per byte, low nibble first, 4-bit two's complement;
//   b = 5,6: four per three bytes: element c is bits [6·(c%4), 6·(c%4) + 6) of the
//            little-endian 24-bit word at byte 3·(c/4), 6-bit two's complement (a row of
//            n codes takes ceil(3n/4) bytes);
//   b = 7,8: one int8 per element.
// Exponents are one int8 per group (E = 5 uses the range [-16, 15]).
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

/// Bits of one stored mantissa field for b-bit mantissas (see the file comment).
constexpr int gse_code_bits(int bits) noexcept { return bits <= 4 ? 4 : (bits <= 6 ? 6 : 8); }

/// Bytes holding `n` mantissa fields of `code_bits` bits (a row of a GseMatrix).
constexpr std::int64_t gse_code_bytes(int code_bits, std::int64_t n) noexcept {
  return code_bits == 8 ? n : (code_bits == 4 ? (n + 1) / 2 : (3 * n + 3) / 4);
}

/// Mantissa c of a stored row of `code_bits`-bit fields, sign-extended.
inline int gse_load_code(const std::int8_t* row, int code_bits, std::int64_t c) noexcept {
  if (code_bits == 8) return row[c];
  if (code_bits == 4) {
    const int v = (static_cast<std::uint8_t>(row[c >> 1]) >> ((c & 1) * 4)) & 0xF;
    return v >= 8 ? v - 16 : v;
  }
  // 6-bit: field c % 4 of the 24-bit word at byte 3·(c / 4); a field spans at most two bytes.
  const auto* w = reinterpret_cast<const std::uint8_t*>(row) + 3 * (c >> 2);
  const int shift = static_cast<int>(c & 3) * 6;
  const int lo = shift >> 3;
  unsigned v = w[lo];
  if ((shift & 7) > 2) v |= static_cast<unsigned>(w[lo + 1]) << 8;
  const int f = static_cast<int>((v >> (shift & 7)) & 0x3Fu);
  return f >= 32 ? f - 64 : f;
}

/// Stores mantissa m (in range for the field) as element c of a stored row.
inline void gse_store_code(std::int8_t* row, int code_bits, std::int64_t c, int m) noexcept {
  if (code_bits == 8) {
    row[c] = static_cast<std::int8_t>(m);
    return;
  }
  auto* bytes = reinterpret_cast<std::uint8_t*>(row);
  if (code_bits == 4) {
    std::uint8_t& byte = bytes[c >> 1];
    const unsigned nibble = static_cast<unsigned>(m) & 0xFu;
    byte = static_cast<std::uint8_t>((c & 1) ? (byte & 0x0Fu) | (nibble << 4)
                                             : (byte & 0xF0u) | nibble);
    return;
  }
  std::uint8_t* w = bytes + 3 * (c >> 2);
  const int shift = static_cast<int>(c & 3) * 6;
  const int lo = shift >> 3, sh = shift & 7;
  const unsigned f = (static_cast<unsigned>(m) & 0x3Fu) << sh;  // up to 14 bits
  const unsigned mask = 0x3Fu << sh;
  w[lo] = static_cast<std::uint8_t>((w[lo] & ~mask) | (f & 0xFFu));
  if (sh > 2)
    w[lo + 1] = static_cast<std::uint8_t>((w[lo + 1] & ~(mask >> 8)) | (f >> 8));
}

/// Packs n int8 mantissas (in range for the field) into `code_bits` fields at `out`
/// (gse_code_bytes(code_bits, n) bytes; the unused bits of a partial last byte are zero).
inline void gse_pack_codes(const std::int8_t* m, std::int64_t n, int code_bits,
                           std::int8_t* out) noexcept {
  if (code_bits == 8) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = m[i];
    return;
  }
  auto* o = reinterpret_cast<std::uint8_t*>(out);
  if (code_bits == 4) {
    for (std::int64_t i = 0; i + 1 < n; i += 2)
      o[i / 2] = static_cast<std::uint8_t>((m[i] & 0xF) | ((m[i + 1] & 0xF) << 4));
    if (n & 1) o[n / 2] = static_cast<std::uint8_t>(m[n - 1] & 0xF);
    return;
  }
  std::int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const std::uint32_t v = (static_cast<std::uint32_t>(m[i] & 0x3F)) |
                            (static_cast<std::uint32_t>(m[i + 1] & 0x3F) << 6) |
                            (static_cast<std::uint32_t>(m[i + 2] & 0x3F) << 12) |
                            (static_cast<std::uint32_t>(m[i + 3] & 0x3F) << 18);
    o[3 * (i / 4)] = static_cast<std::uint8_t>(v);
    o[3 * (i / 4) + 1] = static_cast<std::uint8_t>(v >> 8);
    o[3 * (i / 4) + 2] = static_cast<std::uint8_t>(v >> 16);
  }
  if (i < n) {
    std::uint32_t v = 0;
    for (std::int64_t j = i; j < n; ++j)
      v |= static_cast<std::uint32_t>(m[j] & 0x3F) << (6 * (j - i));
    const std::int64_t bytes = gse_code_bytes(6, n) - 3 * (i / 4);
    for (std::int64_t b = 0; b < bytes; ++b)
      o[3 * (i / 4) + b] = static_cast<std::uint8_t>(v >> (8 * b));
  }
}

/// The inverse of gse_pack_codes: n sign-extended int8 mantissas.
inline void gse_unpack_codes(const std::int8_t* packed, std::int64_t n, int code_bits,
                             std::int8_t* m) noexcept {
  for (std::int64_t i = 0; i < n; ++i)
    m[i] = static_cast<std::int8_t>(gse_load_code(packed, code_bits, i));
}

/// A GSE-INT format chosen at run time (bit-widths come from configuration).
struct GseSpec {
  int bits = 8;      // mantissa bits b, 2..8 (sign included)
  int group = 32;    // G, 8..256 values per shared exponent
  int exp_bits = 8;  // E, 5 or 8

  constexpr int max_mantissa() const noexcept { return (1 << (bits - 1)) - 1; }
  constexpr int exp_min() const noexcept { return -(1 << (exp_bits - 1)); }
  constexpr int exp_max() const noexcept { return (1 << (exp_bits - 1)) - 1; }
  /// Bits of one stored mantissa field: 4 (b <= 4), 6 (b = 5, 6) or 8 (b = 7, 8).
  constexpr int code_bits() const noexcept { return gse_code_bits(bits); }
  /// Sub-byte fields (more than one mantissa per byte)?
  constexpr bool is_packed() const noexcept { return code_bits() < 8; }
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
    row_bytes_ = gse_code_bytes(spec.code_bits(), groups_ * spec.group);
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
    const std::int64_t row_bytes = gse_code_bytes(spec_.code_bits(), groups * spec_.group);
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
  /// Bytes of mantissa storage per row (padded columns, packed into code_bits fields).
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
    return gse_load_code(mantissa_row(r), spec_.code_bits(), c);
  }
  void set_mantissa(std::int64_t r, std::int64_t c, int m) noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < padded_cols());
    GSQ_ASSERT(m >= -spec_.max_mantissa() && m <= spec_.max_mantissa());
    gse_store_code(mantissa_row(r), spec_.code_bits(), c, m);
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
