// gsq/quant/kernels/nf4_avx512.hpp — AVX-512 NF4 quantize and decode.
//
// Bit-identical to kernels/nf4_reference.hpp:
//   * decode: vpermps looks the 16-entry codebook up with each code (it reads only the
//     low 4 bits of an index, so a byte's high nibble can stay in the lane), then one
//     multiply by the block's absmax — the reference's expression;
//   * quantize: the absmax is an unsigned max over |w| bit patterns (which also flags
//     Inf/NaN), w / absmax is the same IEEE division, and the code is found by a 4-step
//     binary search over the same 15 thresholds (nf4_thresholds) that the reference
//     counts, so both give #{i : x >= t[i]}.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/quant/kernels/nf4_reference.hpp"

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace quant::kernels::avx512 {

/// 16 lanes [b0, b0 >> 4, b1, b1 >> 4, ...] from 8 code bytes: the low 4 bits of lane 2i
/// are the low nibble of byte i, those of lane 2i + 1 its high nibble.
GSQ_ALWAYS_INLINE __m512i nf4_code_lanes(const std::uint8_t* bytes) noexcept {
  const __m512i q = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
  return _mm512_or_si512(q, _mm512_slli_epi64(_mm512_srli_epi64(q, 4), 32));
}

inline void nf4_decode_blocks(const std::uint8_t* codes, const float* absmax, std::int64_t nblocks,
                              float* out) noexcept {
  const __m512 book = _mm512_loadu_ps(kNf4Codebook.data());
  for (std::int64_t b = 0; b < nblocks; ++b) {
    const __m512 a = _mm512_set1_ps(absmax[b]);
    const std::uint8_t* in = codes + b * (kNf4Block / 2);
    float* dst = out + b * kNf4Block;
    for (int k = 0; k < kNf4Block / 16; ++k) {
      const __m512 v = _mm512_permutexvar_ps(nf4_code_lanes(in + 8 * k), book);
      _mm512_storeu_ps(dst + 16 * k, _mm512_mul_ps(v, a));
    }
  }
}

/// Codes of 16 normalised values: #{i : x >= t[i]} by binary search over the sorted
/// thresholds (t[15] = +inf is never reached).
GSQ_ALWAYS_INLINE __m512i nf4_codes16(__m512 x, __m512 thresholds) noexcept {
  __m512i idx = _mm512_setzero_si512();
  for (int step = 8; step >= 1; step /= 2) {
    const __m512 t =
        _mm512_permutexvar_ps(_mm512_add_epi32(idx, _mm512_set1_epi32(step - 1)), thresholds);
    const __mmask16 up = _mm512_cmp_ps_mask(x, t, _CMP_GE_OQ);
    idx = _mm512_mask_add_epi32(idx, up, idx, _mm512_set1_epi32(step));
  }
  return idx;
}

/// Quantizes one row (see nf4_reference.hpp); false if it holds a non-finite value.
inline bool nf4_quantize_row(const float* src, std::int64_t cols, std::uint8_t* codes,
                             float* absmax) noexcept {
  const __m512 thresholds = _mm512_loadu_ps(nf4_thresholds().data());
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const std::int64_t blocks = (cols + kNf4Block - 1) / kNf4Block;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t c0 = b * kNf4Block;
    const std::int64_t n = std::min<std::int64_t>(kNf4Block, cols - c0);
    __m512 x[4];
    __m512i acc = _mm512_setzero_si512();
    if (n == kNf4Block) {
      for (int k = 0; k < 4; ++k) x[k] = _mm512_loadu_ps(src + c0 + 16 * k);
    } else {
      for (int k = 0; k < 4; ++k) {
        const std::int64_t left = n - 16 * k;
        const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xFFFF)
                                          : (left <= 0 ? static_cast<__mmask16>(0)
                                                       : static_cast<__mmask16>((1u << left) - 1u));
        x[k] = _mm512_maskz_loadu_ps(mask, src + c0 + 16 * k);
      }
    }
    for (int k = 0; k < 4; ++k)
      acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_castps_si512(x[k]), abs_mask));
    const auto amax_bits = static_cast<std::uint32_t>(_mm512_reduce_max_epu32(acc));
    if (amax_bits >= 0x7F800000u) return false;
    std::uint8_t* out = codes + b * (kNf4Block / 2);
    if (amax_bits == 0) {
      absmax[b] = 0.0f;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                          _mm256_set1_epi8(static_cast<char>(kNf4ZeroCode | (kNf4ZeroCode << 4))));
      continue;
    }
    const __m512 amax = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(amax_bits)));
    absmax[b] = _mm512_cvtss_f32(amax);
    for (int k = 0; k < 4; ++k) {
      // Zero padding past n normalises to 0, whose code is the zero code.
      const __m512i c = nf4_codes16(_mm512_div_ps(x[k], amax), thresholds);
      // Lane pairs (2i, 2i+1) → one byte c_2i | c_2i+1 << 4.
      const __m512i pairs = _mm512_or_si512(c, _mm512_srli_epi64(c, 28));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + 8 * k), _mm512_cvtepi64_epi8(pairs));
    }
  }
  return true;
}

}  // namespace quant::kernels::avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
