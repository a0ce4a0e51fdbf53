// gsq/quant/nf4.hpp — fp32 ⇄ NF4 (QLoRA's 4-bit NormalFloat) for frozen base weights.
//
// Encoding of a [rows, cols] weight (format/nf4.hpp has the storage layout):
//   * blocks of 64 consecutive values along cols; absmax = max|w| of the block;
//   * each value's code is the nearest codebook entry to w / absmax (fp32 division);
//     an all-zero block gets absmax 0 and the zero code (7) everywhere;
//   * tie rule: a value exactly halfway between two entries (midpoints taken exactly,
//     in double) goes to the entry of smaller magnitude, i.e. towards zero;
//   * double quantization (optional): offset = mean of all absmaxes (summed in double,
//     in block order), then per run of 256 absmaxes dq_scale = max|absmax − offset|/127
//     and dq_code = clamp(nearbyint((absmax − offset)/dq_scale), −127, 127) (0 when the
//     run's dq_scale is 0). Codes are chosen against the true absmax, as in QLoRA.
//   * decoding: w ≈ codebook[code] · absmax, one fp32 multiply (the decoded absmax when
//     double-quantized), the same expression as Nf4Matrix::value.
// Non-finite input throws FormatError naming the tensor, row and column.
//
// The nearest-entry search compares w / absmax against 15 fp32 thresholds derived once
// from the exact midpoints (see detail::nf4_thresholds), so every path — scalar, AVX2,
// AVX-512 — classifies a value by the same comparisons and produces the same codes.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/quant/kernels/nf4_avx2.hpp"
#include "gsq/quant/kernels/nf4_avx512.hpp"
#include "gsq/quant/kernels/nf4_reference.hpp"

GSQ_NAMESPACE_BEGIN

namespace detail {

[[noreturn]] GSQ_NOINLINE GSQ_COLD inline void throw_non_finite_nf4(const char* name,
                                                                    std::int64_t r, std::int64_t c,
                                                                    float v) {
  throw_error(ErrorCode::kNonFinite, std::string("tensor '") + name + "' holds " +
                                         (std::isnan(v) ? "NaN" : "Inf") + " at row " +
                                         std::to_string(r) + ", column " + std::to_string(c) +
                                         "; NF4 quantization needs finite input");
}

/// Rows per parallel chunk so a chunk holds roughly 64 K values.
inline std::int64_t nf4_row_grain(std::int64_t cols) noexcept {
  return std::max<std::int64_t>(1, 65536 / std::max<std::int64_t>(cols, 1));
}

/// Codes and absmaxes of rows [r0, r1) of `w` on the given path; throws on non-finite
/// input (the SIMD kernels detect it on the way, the reference checks first).
inline void quantize_nf4_rows(MatrixView<const float> w, Nf4Matrix& out, float* absmax,
                              std::int64_t r0, std::int64_t r1, Isa isa, const char* name) {
  const std::int64_t cols = w.cols();
  const std::int64_t blocks = out.blocks_per_row();
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* src = w.row(r);
    std::uint8_t* codes = out.code_row(r);
    float* amax = absmax + r * blocks;
    bool ok;
    switch (isa) {
#if GSQ_HAVE_X86_SIMD
      case Isa::kAvx512Vnni:
        ok = quant::kernels::avx512::nf4_quantize_row(src, cols, codes, amax);
        break;
      case Isa::kAvx2:
        ok = quant::kernels::avx2::nf4_quantize_row(src, cols, codes, amax);
        break;
#endif
      default:
        ok = quant::kernels::reference::all_finite(src, cols);
        if (ok) quant::kernels::reference::nf4_quantize_row(src, cols, codes, amax);
        break;
    }
    if (GSQ_UNLIKELY(!ok)) {
      for (std::int64_t c = 0; c < cols; ++c)
        if (!std::isfinite(src[c])) throw_non_finite_nf4(name, r, c, src[c]);
    }
  }
}

/// Fills the double-quantization fields of `out` from the absmaxes of every block.
inline void double_quantize_absmax(const float* absmax, std::int64_t n, Nf4Matrix& out) {
  double sum = 0.0;
  for (std::int64_t i = 0; i < n; ++i) sum += absmax[i];
  const float offset = n > 0 ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f;
  out.set_dq_offset(offset);
  std::int8_t* codes = out.dq_codes().data();
  float* scales = out.dq_scales().data();
  const std::int64_t runs = (n + kNf4DoubleQuantBlock - 1) / kNf4DoubleQuantBlock;
  for (std::int64_t j = 0; j < runs; ++j) {
    const std::int64_t i0 = j * kNf4DoubleQuantBlock;
    const std::int64_t i1 = std::min<std::int64_t>(i0 + kNf4DoubleQuantBlock, n);
    float dev = 0.0f;
    for (std::int64_t i = i0; i < i1; ++i) dev = std::max(dev, std::fabs(absmax[i] - offset));
    const float scale = dev / 127.0f;
    scales[j] = scale;
    for (std::int64_t i = i0; i < i1; ++i) {
      float q = 0.0f;
      if (scale > 0.0f)
        q = std::clamp(std::nearbyint((absmax[i] - offset) / scale), -127.0f, 127.0f);
      codes[i] = static_cast<std::int8_t>(q);
    }
  }
}

}  // namespace detail

/// Quantizes a [rows, cols] weight into `out` (already [rows, cols]; its double_quant()
/// decides the scale form), reusing its storage: no allocation without double
/// quantization. On the selected ISA path; `name` is used in error messages.
/// Deterministic and identical for every path and thread count.
inline void quantize_nf4(MatrixView<const float> w, Nf4Matrix& out, const char* name = "weight") {
  GSQ_CHECK(out.rows() == w.rows() && out.cols() == w.cols(), ErrorCode::kShapeMismatch,
            std::string("quantize_nf4: output for '") + name + "' is " +
                std::to_string(out.rows()) + "x" + std::to_string(out.cols()) + ", expected " +
                shape_string(w));
  const Isa isa = selected_isa();
  const std::int64_t nblocks = w.rows() * out.blocks_per_row();
  if (!out.double_quant()) {
    float* absmax = out.absmax().data();
    parallel_for_chunks(w.rows(), detail::nf4_row_grain(w.cols()),
                        [&](std::int64_t r0, std::int64_t r1) {
                          detail::quantize_nf4_rows(w, out, absmax, r0, r1, isa, name);
                        });
    return;
  }
  AlignedBuffer<float> absmax(nblocks, MemoryCategory::kScratch, kUninitialized);
  parallel_for_chunks(w.rows(), detail::nf4_row_grain(w.cols()),
                      [&](std::int64_t r0, std::int64_t r1) {
                        detail::quantize_nf4_rows(w, out, absmax.data(), r0, r1, isa, name);
                      });
  detail::double_quantize_absmax(absmax.data(), nblocks, out);
}

/// Quantizes a [rows, cols] weight to a new Nf4Matrix (see the in-place overload).
inline Nf4Matrix quantize_nf4(MatrixView<const float> w, bool double_quant = false,
                              MemoryCategory category = MemoryCategory::kWeights,
                              const char* name = "weight") {
  Nf4Matrix out(w.rows(), w.cols(), double_quant, category);
  quantize_nf4(w, out, name);
  return out;
}

/// Decodes blocks [block_begin, block_begin + block_count) of row r into `out`
/// (64 floats per block; values past cols decode to ±0). For the GEMM's packing step:
/// the same bits as dequantize_nf4 and Nf4Matrix::value, on the path `isa`.
inline void decode_nf4_blocks(const Nf4Matrix& w, std::int64_t r, std::int64_t block_begin,
                              std::int64_t block_count, float* out,
                              Isa isa = selected_isa()) noexcept {
  GSQ_ASSERT(r >= 0 && r < w.rows() && block_begin >= 0 &&
             block_begin + block_count <= w.blocks_per_row());
  constexpr std::int64_t kChunk = 64;  // blocks per absmax batch (stack buffer)
  float absmax[kChunk];
  for (std::int64_t b0 = 0; b0 < block_count; b0 += kChunk) {
    const std::int64_t nb = std::min(kChunk, block_count - b0);
    for (std::int64_t b = 0; b < nb; ++b) absmax[b] = w.block_absmax(r, block_begin + b0 + b);
    const std::uint8_t* codes = w.code_row(r) + (block_begin + b0) * (kNf4Block / 2);
    float* dst = out + b0 * kNf4Block;
    switch (isa) {
#if GSQ_HAVE_X86_SIMD
      case Isa::kAvx512Vnni:
        quant::kernels::avx512::nf4_decode_blocks(codes, absmax, nb, dst);
        break;
      case Isa::kAvx2:
        quant::kernels::avx2::nf4_decode_blocks(codes, absmax, nb, dst);
        break;
#endif
      default:
        quant::kernels::reference::nf4_decode_blocks(codes, absmax, nb, dst);
        break;
    }
  }
}

/// Decodes the whole of row r into `out` (padded: blocks_per_row() · 64 floats).
inline void decode_nf4_row(const Nf4Matrix& w, std::int64_t r, float* out,
                           Isa isa = selected_isa()) noexcept {
  decode_nf4_blocks(w, r, 0, w.blocks_per_row(), out, isa);
}

/// Dequantizes `w` into `out` ([rows, cols]) on the selected ISA path.
inline void dequantize_nf4(const Nf4Matrix& w, MatrixView<float> out) {
  check_shape(out, w.rows(), w.cols(), "dequantize_nf4: output");
  const Isa isa = selected_isa();
  const std::int64_t cols = w.cols();
  const std::int64_t blocks = w.blocks_per_row();
  parallel_for_chunks(w.rows(), detail::nf4_row_grain(cols), [&](std::int64_t r0, std::int64_t r1) {
    float tail[kNf4Block];
    for (std::int64_t r = r0; r < r1; ++r) {
      float* dst = out.row(r);
      const std::int64_t full = cols / kNf4Block;
      decode_nf4_blocks(w, r, 0, full, dst, isa);
      if (full < blocks) {
        decode_nf4_blocks(w, r, full, 1, tail, isa);
        std::copy(tail, tail + (cols - full * kNf4Block), dst + full * kNf4Block);
      }
    }
  });
}

GSQ_NAMESPACE_END
