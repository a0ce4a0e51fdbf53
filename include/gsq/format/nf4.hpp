// gsq/format/nf4.hpp — NF4 storage for frozen base weights (as QLoRA).
//
// An Nf4Matrix holds a [rows, cols] weight (rows = out, cols = in) in blocks of 64
// consecutive values along `cols`; each block has one absmax, and each value is a 4-bit
// index into the NF4 codebook: w ≈ codebook[code] · absmax. Codes are two per byte, low
// nibble first; every row is padded to whole blocks (32 bytes per block), pad codes are
// the code of 0.0 (index 7).
//
// Block scales are FP32, or, with double quantization, int8 codes in blocks of 256
// scales: absmax ≈ dq_offset + dq_code · dq_scale[block / 256], where dq_offset is the
// mean of all absmaxes (as QLoRA subtracts it) and dq_scale = max|absmax - offset| / 127.
// 0.56 bytes per parameter with FP32 scales (0.5 + 4/64), 0.52 with double quantization.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"

GSQ_NAMESPACE_BEGIN

/// The NF4 codebook (normal-float quantiles, QLoRA appendix E), ascending.
inline constexpr std::array<float, 16> kNf4Codebook = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f};
inline constexpr std::uint8_t kNf4ZeroCode = 7;
inline constexpr int kNf4Block = 64;
inline constexpr int kNf4DoubleQuantBlock = 256;

class Nf4Matrix {
 public:
  Nf4Matrix() = default;
  Nf4Matrix(std::int64_t rows, std::int64_t cols, bool double_quant,
            MemoryCategory category = MemoryCategory::kWeights)
      : rows_(rows), cols_(cols), double_quant_(double_quant) {
    GSQ_CHECK(rows >= 0 && cols >= 0, ErrorCode::kInvalidExtent,
              "Nf4Matrix: negative extent " + std::to_string(rows) + "x" + std::to_string(cols));
    blocks_ = (cols + kNf4Block - 1) / kNf4Block;
    codes_ = AlignedBuffer<std::uint8_t>(rows * row_bytes(), category, kUninitialized);
    for (auto& b : codes_) b = kNf4ZeroCode | (kNf4ZeroCode << 4);
    const std::int64_t nblocks = rows * blocks_;
    if (double_quant) {
      dq_codes_ = AlignedBuffer<std::int8_t>(nblocks, category);
      dq_scales_ = AlignedBuffer<float>((nblocks + kNf4DoubleQuantBlock - 1) / kNf4DoubleQuantBlock,
                                        category);
    } else {
      absmax_ = AlignedBuffer<float>(nblocks, category);
    }
  }

  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t cols() const noexcept { return cols_; }
  std::int64_t blocks_per_row() const noexcept { return blocks_; }
  std::int64_t row_bytes() const noexcept { return blocks_ * (kNf4Block / 2); }
  bool double_quant() const noexcept { return double_quant_; }
  std::int64_t bytes() const noexcept {
    return codes_.bytes() + absmax_.bytes() + dq_codes_.bytes() + dq_scales_.bytes() +
           (double_quant_ ? static_cast<std::int64_t>(sizeof(float)) : 0);
  }

  std::uint8_t* code_row(std::int64_t r) noexcept { return codes_.data() + r * row_bytes(); }
  const std::uint8_t* code_row(std::int64_t r) const noexcept {
    return codes_.data() + r * row_bytes();
  }
  int code(std::int64_t r, std::int64_t c) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < blocks_ * kNf4Block);
    const std::uint8_t byte = code_row(r)[c >> 1];
    return (c & 1) ? (byte >> 4) : (byte & 0xF);
  }
  void set_code(std::int64_t r, std::int64_t c, int code) noexcept {
    GSQ_ASSERT(code >= 0 && code < 16);
    std::uint8_t& byte = code_row(r)[c >> 1];
    byte = static_cast<std::uint8_t>((c & 1) ? (byte & 0x0F) | (code << 4) : (byte & 0xF0) | code);
  }

  /// The absmax of block b of row r (decoded when double-quantized).
  float block_absmax(std::int64_t r, std::int64_t b) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && b >= 0 && b < blocks_);
    const std::int64_t i = r * blocks_ + b;
    if (!double_quant_) return absmax_[i];
    return dq_offset_ + static_cast<float>(dq_codes_[i]) * dq_scales_[i / kNf4DoubleQuantBlock];
  }
  /// The decoded weight codebook[code] · absmax.
  float value(std::int64_t r, std::int64_t c) const noexcept {
    return kNf4Codebook[code(r, c)] * block_absmax(r, c / kNf4Block);
  }

  // Raw scale storage, for the quantizer and file I/O.
  AlignedBuffer<float>& absmax() noexcept { return absmax_; }
  const AlignedBuffer<float>& absmax() const noexcept { return absmax_; }
  AlignedBuffer<std::int8_t>& dq_codes() noexcept { return dq_codes_; }
  const AlignedBuffer<std::int8_t>& dq_codes() const noexcept { return dq_codes_; }
  AlignedBuffer<float>& dq_scales() noexcept { return dq_scales_; }
  const AlignedBuffer<float>& dq_scales() const noexcept { return dq_scales_; }
  float dq_offset() const noexcept { return dq_offset_; }
  void set_dq_offset(float offset) noexcept { dq_offset_ = offset; }

 private:
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t blocks_ = 0;
  bool double_quant_ = false;
  AlignedBuffer<std::uint8_t> codes_;
  AlignedBuffer<float> absmax_;
  AlignedBuffer<std::int8_t> dq_codes_;
  AlignedBuffer<float> dq_scales_;
  float dq_offset_ = 0.0f;
};

GSQ_NAMESPACE_END
