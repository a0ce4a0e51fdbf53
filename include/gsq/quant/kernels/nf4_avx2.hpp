// gsq/quant/kernels/nf4_avx2.hpp — AVX2 NF4 quantize and decode.
//
// The algorithm of kernels/nf4_avx512.hpp with 8 lanes. AVX2's vpermps indexes only 8
// entries, so the codebook (and the threshold table) is looked up in two halves and the
// half chosen by bit 3 of the index; everything else is the reference's arithmetic.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gsq/core/target.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/quant/kernels/nf4_reference.hpp"

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace quant::kernels::avx2 {

/// table[idx & 15] for 8 lanes, table given as its two halves.
GSQ_ALWAYS_INLINE __m256 lookup16(__m256i idx, __m256 lo, __m256 hi) noexcept {
  const __m256 a = _mm256_permutevar8x32_ps(lo, idx);
  const __m256 b = _mm256_permutevar8x32_ps(hi, idx);
  // blendv picks by the sign bit: move bit 3 of the index there.
  return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/// 8 lanes [b0, b0 >> 4, ..., b3, b3 >> 4] from 4 code bytes (low 4 bits = the code).
GSQ_ALWAYS_INLINE __m256i nf4_code_lanes(const std::uint8_t* bytes) noexcept {
  int word;
  std::memcpy(&word, bytes, sizeof word);
  const __m256i q = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(word));
  return _mm256_or_si256(q, _mm256_slli_epi64(_mm256_srli_epi64(q, 4), 32));
}

inline void nf4_decode_blocks(const std::uint8_t* codes, const float* absmax, std::int64_t nblocks,
                              float* out) noexcept {
  const __m256 lo = _mm256_loadu_ps(kNf4Codebook.data());
  const __m256 hi = _mm256_loadu_ps(kNf4Codebook.data() + 8);
  const __m256i nibble = _mm256_set1_epi32(0xF);
  for (std::int64_t b = 0; b < nblocks; ++b) {
    const __m256 a = _mm256_set1_ps(absmax[b]);
    const std::uint8_t* in = codes + b * (kNf4Block / 2);
    float* dst = out + b * kNf4Block;
    for (int k = 0; k < kNf4Block / 8; ++k) {
      const __m256i idx = _mm256_and_si256(nf4_code_lanes(in + 4 * k), nibble);
      _mm256_storeu_ps(dst + 8 * k, _mm256_mul_ps(lookup16(idx, lo, hi), a));
    }
  }
}

GSQ_ALWAYS_INLINE __m256i nf4_codes8(__m256 x, __m256 t_lo, __m256 t_hi) noexcept {
  __m256i idx = _mm256_setzero_si256();
  for (int step = 8; step >= 1; step /= 2) {
    const __m256 t = lookup16(_mm256_add_epi32(idx, _mm256_set1_epi32(step - 1)), t_lo, t_hi);
    const __m256i up = _mm256_castps_si256(_mm256_cmp_ps(x, t, _CMP_GE_OQ));
    idx = _mm256_add_epi32(idx, _mm256_and_si256(up, _mm256_set1_epi32(step)));
  }
  return idx;
}

inline bool nf4_quantize_row(const float* src, std::int64_t cols, std::uint8_t* codes,
                             float* absmax) noexcept {
  const __m256 t_lo = _mm256_loadu_ps(nf4_thresholds().data());
  const __m256 t_hi = _mm256_loadu_ps(nf4_thresholds().data() + 8);
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const std::int64_t blocks = (cols + kNf4Block - 1) / kNf4Block;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t c0 = b * kNf4Block;
    const std::int64_t n = std::min<std::int64_t>(kNf4Block, cols - c0);
    __m256 x[8];
    __m256i acc = _mm256_setzero_si256();
    for (int k = 0; k < 8; ++k) {
      const int left = static_cast<int>(std::clamp<std::int64_t>(n - 8 * k, 0, 8));
      x[k] = left == 8 ? _mm256_loadu_ps(src + c0 + 8 * k)
                       : _mm256_maskload_ps(src + c0 + 8 * k,
                                            _mm256_cmpgt_epi32(_mm256_set1_epi32(left), iota));
      acc = _mm256_max_epu32(acc, _mm256_and_si256(_mm256_castps_si256(x[k]), abs_mask));
    }
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
    const auto amax_bits = static_cast<std::uint32_t>(_mm_cvtsi128_si32(m));
    if (amax_bits >= 0x7F800000u) return false;
    std::uint8_t* out = codes + b * (kNf4Block / 2);
    if (amax_bits == 0) {
      absmax[b] = 0.0f;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                          _mm256_set1_epi8(static_cast<char>(kNf4ZeroCode | (kNf4ZeroCode << 4))));
      continue;
    }
    const __m256 amax = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(amax_bits)));
    absmax[b] = _mm256_cvtss_f32(amax);
    for (int k = 0; k < 8; ++k) {
      const __m256i c = nf4_codes8(_mm256_div_ps(x[k], amax), t_lo, t_hi);
      const __m256i pairs = _mm256_or_si256(c, _mm256_srli_epi64(c, 28));
      // Low byte of each qword → 4 bytes.
      const __m256i bytes = _mm256_shuffle_epi8(
          pairs, _mm256_setr_epi8(0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0,
                                  8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
      const int lo2 = _mm_extract_epi16(_mm256_castsi256_si128(bytes), 0);
      const int hi2 = _mm_extract_epi16(_mm256_extracti128_si256(bytes, 1), 0);
      out[4 * k] = static_cast<std::uint8_t>(lo2);
      out[4 * k + 1] = static_cast<std::uint8_t>(lo2 >> 8);
      out[4 * k + 2] = static_cast<std::uint8_t>(hi2);
      out[4 * k + 3] = static_cast<std::uint8_t>(hi2 >> 8);
    }
  }
  return true;
}

}  // namespace quant::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
