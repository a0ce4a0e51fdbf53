// gsq/quant/kernels/gse_params.hpp — what a GSE-INT quantize / dequantize kernel is
// given, flattened into plain structs, plus the scalar helpers every path shares.
//
// quant/gse.hpp validates shapes and formats, allocates scratch, and hands each thread a
// range of output rows; kernels (kernels/gse_{avx2,avx512}.hpp) only see these structs,
// never throw, and report non-finite input by returning false (the caller then finds the
// first offending element and throws, so messages are the same on every path).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "gsq/core/config.hpp"
#include "gsq/format/gse.hpp"

GSQ_NAMESPACE_BEGIN
namespace quant::kernels {

/// Rows of a transposed tile: output rows (source columns) handled together, so each
/// source row segment read is one 64-byte cache line.
inline constexpr int kGseTileRows = 16;

struct GseQuantParams {
  const float* src = nullptr;  // source [src_rows, src_cols], row stride src_stride
  std::int64_t src_stride = 0;
  std::int64_t src_cols = 0;  // the source's column count (for SR indices)
  std::int64_t rows = 0;      // output rows (transpose ? src_cols : src_rows)
  std::int64_t cols = 0;      // output columns (transpose ? src_rows : src_cols)
  bool transpose = false;
  int bits = 8, group = 32, exp_min = -128, exp_max = 127;
  bool stochastic = false;
  std::uint64_t seed = 0, stream = 0;
  std::int8_t* mantissas = nullptr;  // GseMatrix storage
  std::int64_t row_bytes = 0;
  std::int8_t* exponents = nullptr;
  std::int64_t groups = 0;  // groups per output row
  int code_bits = 8;  // stored field width (format/gse.hpp): 4, 6 or 8
  // Packed formats (code_bits < 8): one int8 per element is written here first, then
  // packed. Holds padded_cols bytes (transpose = false) or kGseTileRows · padded_cols (true).
  std::int8_t* staging = nullptr;
};

struct GseDequantParams {
  const std::int8_t* mantissas = nullptr;
  std::int64_t row_bytes = 0;
  const std::int8_t* exponents = nullptr;
  std::int64_t groups = 0;
  std::int64_t rows = 0, cols = 0;  // of the GseMatrix
  int group = 32;
  bool packed = false;     // code_bits < 8
  int code_bits = 8;       // stored field width (format/gse.hpp): 4, 6 or 8
  bool transpose = false;  // dst is [cols, rows] instead of [rows, cols]
  float* dst = nullptr;
  std::int64_t dst_stride = 0;
  std::int8_t* staging = nullptr;  // packed: as GseQuantParams::staging
};

/// Bytes of scratch a kernel call needs for matrices with `padded_cols` columns.
inline std::int64_t gse_staging_bytes(bool packed, bool transpose,
                                      std::int64_t padded_cols) noexcept {
  if (!packed) return 0;
  return (transpose ? kGseTileRows : 1) * padded_cols + 64;
}

/// floor(log2 x) of a positive finite float given its bits (subnormals included).
constexpr int floor_log2_bits(std::uint32_t bits) noexcept {
  const int biased = static_cast<int>(bits >> 23);
  if (biased != 0) return biased - 127;
  return -149 + 31 - std::countl_zero(bits);  // subnormal: value = bits · 2^-149
}

/// The GSE exponent of a group whose largest magnitude has bits `amax_bits` (finite).
constexpr int gse_exponent(std::uint32_t amax_bits, int bits, int exp_min, int exp_max) noexcept {
  if (amax_bits == 0) return exp_min;
  const int e = floor_log2_bits(amax_bits) - (bits - 2);
  return e < exp_min ? exp_min : (e > exp_max ? exp_max : e);
}

/// 2^k exactly, for k in [-149, 127] (subnormal below -126).
inline float pow2f(int k) noexcept {
  const std::uint32_t bits =
      k >= -126 ? static_cast<std::uint32_t>(k + 127) << 23 : std::uint32_t{1} << (k + 149);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// Two factors with x·2^k == (x·first)·second exactly rounded once, for k in
/// [-127, 128]: 2^128 is not a float, so the largest scale is split as 2^64·2^64
/// (scaling up is exact, so only the second product can round, and it cannot).
struct Pow2Split {
  float first, second;
};
inline Pow2Split pow2_split(int k) noexcept {
  if (k <= 127) return {pow2f(k), 1.0f};
  return {pow2f(64), pow2f(k - 64)};
}

/// Packs n int8 values in [-8, 7] two per byte, low nibble first; an odd tail leaves
/// the last high nibble zero.
inline void pack_nibbles_scalar(const std::int8_t* m, std::int64_t n, std::int8_t* out) noexcept {
  for (std::int64_t i = 0; i + 1 < n; i += 2)
    out[i / 2] = static_cast<std::int8_t>((m[i] & 0xF) | ((m[i + 1] & 0xF) << 4));
  if (n & 1) out[n / 2] = static_cast<std::int8_t>(m[n - 1] & 0xF);
}

/// The inverse of pack_nibbles_scalar for n values (sign-extending each nibble).
inline void unpack_nibbles_scalar(const std::int8_t* packed, std::int64_t n,
                                  std::int8_t* m) noexcept {
  for (std::int64_t i = 0; i < n; ++i) {
    const int byte = static_cast<std::uint8_t>(packed[i >> 1]);
    const int v = (i & 1) ? (byte >> 4) : (byte & 0xF);
    m[i] = static_cast<std::int8_t>(v >= 8 ? v - 16 : v);
  }
}

}  // namespace quant::kernels
GSQ_NAMESPACE_END
