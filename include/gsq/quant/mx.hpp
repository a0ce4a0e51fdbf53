// gsq/quant/mx.hpp — GSE-INT ⇄ OCP MXINT8 (format/mx.hpp), exactly.
//
// Export (to_mxint8) takes a GseMatrix with G = 32 and b <= 8 (the MXINT8 value set is
// GSE-INT⟨8, 32, 8⟩; narrower mantissas are a subset) and writes, per group, the scale
// byte s = e + 133 and the mantissas as elements. Every group a GSE encoder produces has
// e <= 127 − (b − 2) <= 121, so s <= 254 fits E8M0. A stored exponent above 121 (set by
// hand) is lowered exactly when the mantissas allow (m · 2^k still within ±127),
// otherwise export throws FormatError (kBadEncoding) naming the row and group.
//
// Import (from_mxint8) gives a GseMatrix INT8/G32/E8 whose decode is bit-identical to
// the MX decode. Blocks no GSE encoder produces are handled exactly when possible:
//   * element −128 (GSE mantissas are symmetric): if all elements of the block are
//     even they are halved and the exponent raised by one;
//   * a scale below the GSE range (e = s − 133 < −128): elements are divided by
//     2^(−128 − e) if all are multiples of it (all-zero blocks always are);
//   * otherwise, and for a NaN scale (255), FormatError (kBadEncoding) naming the block.
// An element −128 at scale 254 is −2^128, beyond fp32: both decodes give −Inf there.
// Elements of the tail block past `cols` are not part of the tensor: they are ignored
// and the GSE tail padding stays zero. Both directions are serial, so the block named
// in an error does not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/mx.hpp"

GSQ_NAMESPACE_BEGIN

namespace detail {
inline constexpr int kMxScaleOffset = kE8M0Bias + kMxInt8ElementShift;  // s = e + 133

[[noreturn]] GSQ_NOINLINE GSQ_COLD inline void throw_bad_mx(const char* what, std::int64_t r,
                                                            std::int64_t b,
                                                            const std::string& why) {
  throw_error(ErrorCode::kBadEncoding, std::string(what) + ": row " + std::to_string(r) +
                                           ", block " + std::to_string(b) + ": " + why);
}
}  // namespace detail

/// Exports `q` (G = 32) as MXINT8 blocks; decoding either gives the same floats.
inline MxInt8Matrix to_mxint8(const GseMatrix& q,
                              MemoryCategory category = MemoryCategory::kWeights) {
  GSQ_CHECK(q.spec().group == kMxBlock, ErrorCode::kInvalidFormat,
            "to_mxint8: MXINT8 blocks hold 32 elements, the matrix is " + q.spec().name());
  MxInt8Matrix mx(q.rows(), q.cols(), category);
  constexpr int kMaxExponent = 254 - detail::kMxScaleOffset;  // 121
  for (std::int64_t r = 0; r < q.rows(); ++r) {
    for (std::int64_t g = 0; g < q.groups_per_row(); ++g) {
      MxInt8Block& block = mx.block(r, g);
      int e = q.exponent(r, g);
      int shift = 0;
      if (e > kMaxExponent) {
        shift = e - kMaxExponent;
        for (int i = 0; i < kMxBlock; ++i) {
          const int m = q.mantissa(r, g * kMxBlock + i);
          if ((m < 0 ? -m : m) > (127 >> shift))
            detail::throw_bad_mx(
                "to_mxint8", r, g,
                "exponent " + std::to_string(e) + " needs an E8M0 scale above 2^127 and mantissa " +
                    std::to_string(m) + " cannot absorb 2^" + std::to_string(shift));
        }
        e = kMaxExponent;
      }
      block.scale = static_cast<std::uint8_t>(e + detail::kMxScaleOffset);
      for (int i = 0; i < kMxBlock; ++i)
        block.elements[i] =
            static_cast<std::int8_t>(q.mantissa(r, g * kMxBlock + i) * (1 << shift));
    }
  }
  return mx;
}

/// Imports MXINT8 blocks as GSE-INT⟨8, 32, 8⟩ (see the file comment for which blocks
/// are rescaled and which are rejected).
inline GseMatrix from_mxint8(const MxInt8Matrix& mx,
                             MemoryCategory category = MemoryCategory::kWeights) {
  const GseSpec spec{8, kMxBlock, 8};
  GseMatrix q(mx.rows(), mx.cols(), spec, category);
  for (std::int64_t r = 0; r < mx.rows(); ++r) {
    for (std::int64_t b = 0; b < mx.blocks_per_row(); ++b) {
      const MxInt8Block& block = mx.block(r, b);
      if (block.scale == kE8M0Nan)
        detail::throw_bad_mx("from_mxint8", r, b, "the scale is NaN (0xFF)");
      const int n = static_cast<int>(std::min<std::int64_t>(kMxBlock, mx.cols() - b * kMxBlock));
      int e = static_cast<int>(block.scale) - detail::kMxScaleOffset;  // -133 .. 121
      int shift = e < spec.exp_min() ? spec.exp_min() - e : 0;         // 0 .. 5
      int any_bits = 0;  // OR of all elements: the lowest set bit bounds the exact shift
      bool has_min = false;
      for (int i = 0; i < n; ++i) {
        any_bits |= block.elements[i];
        has_min |= block.elements[i] == -128;
      }
      if (has_min && shift == 0) shift = 1;
      if (shift > 0 && (any_bits & ((1 << shift) - 1)) != 0)
        detail::throw_bad_mx("from_mxint8", r, b,
                             "cannot be represented exactly in GSE-INT8 (scale byte " +
                                 std::to_string(block.scale) + (has_min ? ", element -128" : "") +
                                 ": elements are not multiples of 2^" + std::to_string(shift) +
                                 ")");
      e += shift;
      q.exponent_row(r)[b] = static_cast<std::int8_t>(e);
      for (int i = 0; i < n; ++i)
        q.set_mantissa(r, b * kMxBlock + i, block.elements[i] / (1 << shift));
    }
  }
  return q;
}

/// Decodes MXINT8 blocks into `out` ([rows, cols]); NaN-scaled blocks decode to NaN.
inline void dequantize_mxint8(const MxInt8Matrix& mx, MatrixView<float> out) {
  check_shape(out, mx.rows(), mx.cols(), "dequantize_mxint8: output");
  for (std::int64_t r = 0; r < mx.rows(); ++r)
    for (std::int64_t c = 0; c < mx.cols(); ++c) out(r, c) = mx.value(r, c);
}

GSQ_NAMESPACE_END
