// gsq/format/mx.hpp — OCP Microscaling MXINT8 blocks, for exchanging GSE-INT data.
//
// OCP MX v1.0: a block of 32 elements shares one E8M0 scale X = 2^(s − 127) (s = 255 is
// NaN); MXINT8 elements are 8-bit two's complement P with an implicit 2^−6, so element i
// is P_i · 2^−6 · X. GSE-INT⟨8, 32, 8⟩ has the same value set: m · 2^e with s = e + 133
// (the scale of a GSE group is 2^(e+6)). quant/mx.hpp converts in both directions; this
// file is only the storage and the MX decode.
//
// An MxInt8Matrix is [rows, cols] row-major in blocks of 32 along cols (the tail block
// zero-padded), each block its scale byte followed by its 32 elements (33 bytes, the
// "scale then elements" order of the spec's figures; MX leaves the layout to the user).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"

GSQ_NAMESPACE_BEGIN

inline constexpr int kMxBlock = 32;
inline constexpr std::uint8_t kE8M0Nan = 0xFF;
inline constexpr int kE8M0Bias = 127;
/// log2 of the implicit element scale of MXINT8 (elements are P · 2^−6).
inline constexpr int kMxInt8ElementShift = 6;

/// One MXINT8 block: the shared E8M0 scale and 32 int8 elements.
struct MxInt8Block {
  std::uint8_t scale = kE8M0Bias;  // X = 2^(scale − 127); 255 = NaN
  std::int8_t elements[kMxBlock] = {};

  /// Element i decoded: P_i · 2^(scale − 133), exact in fp32; NaN for a NaN scale.
  float value(int i) const noexcept {
    if (scale == kE8M0Nan) return std::numeric_limits<float>::quiet_NaN();
    return std::ldexp(static_cast<float>(elements[i]),
                      static_cast<int>(scale) - kE8M0Bias - kMxInt8ElementShift);
  }
};
static_assert(sizeof(MxInt8Block) == 1 + kMxBlock, "MXINT8 blocks are 33 bytes");

/// A [rows, cols] matrix of MXINT8 blocks along cols.
class MxInt8Matrix {
 public:
  MxInt8Matrix() = default;
  MxInt8Matrix(std::int64_t rows, std::int64_t cols,
               MemoryCategory category = MemoryCategory::kWeights)
      : rows_(rows), cols_(cols) {
    GSQ_CHECK(rows >= 0 && cols >= 0, ErrorCode::kInvalidExtent,
              "MxInt8Matrix: negative extent " + std::to_string(rows) + "x" + std::to_string(cols));
    blocks_per_row_ = (cols + kMxBlock - 1) / kMxBlock;
    blocks_ = AlignedBuffer<MxInt8Block>(rows * blocks_per_row_, category);
    for (MxInt8Block& b : blocks_) b = MxInt8Block{};
  }

  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t cols() const noexcept { return cols_; }
  std::int64_t blocks_per_row() const noexcept { return blocks_per_row_; }
  std::int64_t bytes() const noexcept { return blocks_.bytes(); }

  MxInt8Block& block(std::int64_t r, std::int64_t b) noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && b >= 0 && b < blocks_per_row_);
    return blocks_[r * blocks_per_row_ + b];
  }
  const MxInt8Block& block(std::int64_t r, std::int64_t b) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && b >= 0 && b < blocks_per_row_);
    return blocks_[r * blocks_per_row_ + b];
  }
  /// All blocks, row by row (for file I/O).
  MxInt8Block* data() noexcept { return blocks_.data(); }
  const MxInt8Block* data() const noexcept { return blocks_.data(); }

  /// The decoded element (r, c), exact in fp32 (NaN if its block's scale is NaN).
  float value(std::int64_t r, std::int64_t c) const noexcept {
    return block(r, c / kMxBlock).value(static_cast<int>(c % kMxBlock));
  }

 private:
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t blocks_per_row_ = 0;
  AlignedBuffer<MxInt8Block> blocks_;
};

GSQ_NAMESPACE_END
