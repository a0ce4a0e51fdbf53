// gsq/quant/kernels/nf4_reference.hpp — the scalar NF4 kernels: the definition that the
// AVX2 / AVX-512 kernels reproduce bit for bit (quant/nf4.hpp documents the encoding).
//
// Kernels work on one row (quantize) or on whole 64-value blocks (decode); they take
// pointers and counts only and never throw: quant/nf4.hpp validates before calling.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "gsq/core/config.hpp"
#include "gsq/format/nf4.hpp"

GSQ_NAMESPACE_BEGIN
namespace quant::kernels {

/// The 15 decision thresholds of the nearest-entry search, padded to 16 with +inf:
/// code(x) = #{i : x >= t[i]}. t[i] is the smallest fp32 value that belongs to entry
/// i+1: above the exact midpoint m_i of entries i and i+1, or equal to it when the tie
/// goes up (towards zero, i.e. for midpoints below 0: i < 7).
inline const std::array<float, 16>& nf4_thresholds() noexcept {
  static const std::array<float, 16> t = [] {
    std::array<float, 16> r{};
    for (int i = 0; i < 15; ++i) {
      const double m = (static_cast<double>(kNf4Codebook[i]) + kNf4Codebook[i + 1]) * 0.5;
      float f = static_cast<float>(m);
      const bool tie_goes_up = i < 7;
      if (tie_goes_up ? static_cast<double>(f) < m : static_cast<double>(f) <= m)
        f = std::nextafter(f, 2.0f);
      r[i] = f;
    }
    r[15] = INFINITY;
    return r;
  }();
  return t;
}

namespace reference {

inline bool all_finite(const float* x, std::int64_t n) noexcept {
  // Accumulates a flag instead of branching per element, so it vectorises.
  bool ok = true;
  for (std::int64_t i = 0; i < n; ++i) ok &= std::isfinite(x[i]);
  return ok;
}

/// The code of a normalised value x = w / absmax, |x| <= 1.
inline int nf4_code(float x) noexcept {
  const std::array<float, 16>& t = nf4_thresholds();
  int code = 0;
  for (int i = 0; i < 15; ++i) code += x >= t[i];
  return code;
}

/// Quantizes one row of `cols` finite values: codes (two per byte, low nibble first, the
/// tail block padded with the zero code) and one absmax per 64-value block.
inline void nf4_quantize_row(const float* src, std::int64_t cols, std::uint8_t* codes,
                             float* absmax) noexcept {
  const std::int64_t blocks = (cols + kNf4Block - 1) / kNf4Block;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t c0 = b * kNf4Block;
    const std::int64_t n = std::min<std::int64_t>(kNf4Block, cols - c0);
    float amax = 0.0f;
    for (std::int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(src[c0 + i]));
    absmax[b] = amax;
    std::uint8_t* out = codes + b * (kNf4Block / 2);
    for (int i = 0; i < kNf4Block; i += 2) {
      int lo = kNf4ZeroCode, hi = kNf4ZeroCode;
      if (amax != 0.0f) {
        if (i < n) lo = nf4_code(src[c0 + i] / amax);
        if (i + 1 < n) hi = nf4_code(src[c0 + i + 1] / amax);
      }
      out[i / 2] = static_cast<std::uint8_t>(lo | (hi << 4));
    }
  }
}

/// Decodes `nblocks` whole blocks: out[64·b + i] = codebook[code] · absmax[b].
inline void nf4_decode_blocks(const std::uint8_t* codes, const float* absmax, std::int64_t nblocks,
                              float* out) noexcept {
  for (std::int64_t b = 0; b < nblocks; ++b) {
    const float a = absmax[b];
    const std::uint8_t* in = codes + b * (kNf4Block / 2);
    float* dst = out + b * kNf4Block;
    for (int i = 0; i < kNf4Block / 2; ++i) {
      dst[2 * i] = kNf4Codebook[in[i] & 0xF] * a;
      dst[2 * i + 1] = kNf4Codebook[in[i] >> 4] * a;
    }
  }
}

}  // namespace reference
}  // namespace quant::kernels
GSQ_NAMESPACE_END
