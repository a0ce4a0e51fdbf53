// gsq/quant/kernels/gse_avx2.hpp — AVX2 GSE-INT quantize / dequantize kernels.
//
// The same algorithm as kernels/gse_avx512.hpp with 8 lanes (see there for why each step
// matches the reference bit for bit). AVX2 has no vscalefps, so x·2^−e is one multiply
// by the exact float 2^−e (2^−127 is a subnormal float, still exact), and for e = −128
// two multiplies by 2^64: scaling up never rounds, so either way the product is rounded
// once, like std::ldexp. The second factor is 1 otherwise, and a multiply by 1 is exact
// even if the compiler fuses it with the stochastic-rounding add.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gsq/core/rng.hpp"
#include "gsq/core/target.hpp"
#include "gsq/quant/kernels/gse_params.hpp"

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace quant::kernels::avx2 {

inline constexpr int kLanes = 8;

struct PhiloxKeys8 {
  __m256i k0[10], k1[10];
};

inline void philox_keys8(std::uint64_t seed, PhiloxKeys8& keys) noexcept {
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    keys.k0[round] = _mm256_set1_epi32(static_cast<int>(k0));
    keys.k1[round] = _mm256_set1_epi32(static_cast<int>(k1));
    k0 += gsq::detail::kPhiloxW0;
    k1 += gsq::detail::kPhiloxW1;
  }
}

GSQ_ALWAYS_INLINE void mul_hi_lo8(__m256i a, __m256i m, __m256i& hi, __m256i& lo) noexcept {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/// random_uniform(seed, stream, index + lane) for 8 consecutive indices.
GSQ_ALWAYS_INLINE __m256 philox_uniform8(const PhiloxKeys8& keys, std::uint64_t stream,
                                         std::uint64_t index) noexcept {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i base = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index)));
  __m256i c0 = _mm256_add_epi32(base, iota);
  // Lanes whose low word wrapped (c0 < base, unsigned) carry into the high word.
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  const __m256i carry =
      _mm256_cmpgt_epi32(_mm256_xor_si256(base, sign), _mm256_xor_si256(c0, sign));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index >> 32)));
  c1 = _mm256_sub_epi32(c1, carry);  // carry lanes are -1
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream)));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream >> 32)));
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(gsq::detail::kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(gsq::detail::kPhiloxM1));
  for (int round = 0; round < 10; ++round) {
    __m256i hi0, lo0, hi1, lo1;
    mul_hi_lo8(c0, m0, hi0, lo0);
    mul_hi_lo8(c2, m1, hi1, lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), keys.k0[round]);
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), keys.k1[round]);
    c3 = lo0;
  }
  const __m256 u = _mm256_cvtepi32_ps(_mm256_srli_epi32(c0, 8));
  return _mm256_mul_ps(u, _mm256_set1_ps(1.0f / 16777216.0f));
}

/// All-ones in the first n of 8 lanes.
GSQ_ALWAYS_INLINE __m256i lane_mask(std::int64_t n) noexcept {
  const int k = static_cast<int>(std::clamp<std::int64_t>(n, 0, kLanes));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

GSQ_ALWAYS_INLINE __m256i round_clamp8(__m256 scaled, bool stochastic, __m256 u,
                                       __m256 qmax) noexcept {
  const __m256 nqmax = _mm256_sub_ps(_mm256_setzero_ps(), qmax);
  if (!stochastic) {
    // cvtps rounds per MXCSR, i.e. to nearest even, as nearbyint in the reference.
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(scaled, nqmax), qmax));
  }
  const __m256 f =
      _mm256_round_ps(_mm256_add_ps(scaled, u), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  return _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(f, nqmax), qmax));
}

/// 2 × 8 int32 → 16 bytes (a then b).
GSQ_ALWAYS_INLINE __m128i to_int8x16(__m256i a, __m256i b) noexcept {
  const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
  return _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}

GSQ_ALWAYS_INLINE void store_bytes(std::int8_t* dst, __m128i v, std::int64_t n) noexcept {
  if (n >= 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), v);
  } else if (n == 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), v);
  } else if (n > 0) {
    alignas(16) std::int8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), v);
    std::memcpy(dst, tmp, static_cast<std::size_t>(n));
  }
}

GSQ_ALWAYS_INLINE __m128i load_bytes(const std::int8_t* src, std::int64_t n) noexcept {
  if (n >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  if (n == 8) return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
  alignas(16) std::int8_t tmp[16] = {};
  if (n > 0) std::memcpy(tmp, src, static_cast<std::size_t>(n));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
}

GSQ_ALWAYS_INLINE std::uint32_t reduce_max_epu32(__m256i v) noexcept {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(m));
}

GSQ_ALWAYS_INLINE void transpose16x16(__m128i* rows) noexcept {
  __m128i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = rows[i];
  for (int pass = 0; pass < 4; ++pass) {
    for (int i = 0; i < 8; ++i) {
      b[2 * i] = _mm_unpacklo_epi8(a[i], a[i + 8]);
      b[2 * i + 1] = _mm_unpackhi_epi8(a[i], a[i + 8]);
    }
    for (int i = 0; i < 16; ++i) a[i] = b[i];
  }
  for (int i = 0; i < 16; ++i) rows[i] = a[i];
}

/// 8 uniforms random_uniform(seed, stream, index + i) into out (tests, benchmarks).
inline void uniform_batch(std::uint64_t seed, std::uint64_t stream, std::uint64_t index,
                          float* out) noexcept {
  PhiloxKeys8 keys;
  philox_keys8(seed, keys);
  _mm256_storeu_ps(out, philox_uniform8(keys, stream, index));
}

inline void pack_nibbles(const std::int8_t* m, std::int64_t n, std::int8_t* out) noexcept {
  std::int64_t i = 0;
  const __m256i lo_mask = _mm256_set1_epi16(0x000F), hi_mask = _mm256_set1_epi16(0x00F0);
  for (; i + 64 <= n; i += 64) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + i + 32));
    const __m256i pa = _mm256_or_si256(_mm256_and_si256(a, lo_mask),
                                       _mm256_and_si256(_mm256_srli_epi16(a, 4), hi_mask));
    const __m256i pb = _mm256_or_si256(_mm256_and_si256(b, lo_mask),
                                       _mm256_and_si256(_mm256_srli_epi16(b, 4), hi_mask));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi16(pa, pb), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i / 2), packed);
  }
  pack_nibbles_scalar(m + i, n - i, out + i / 2);
}

inline void unpack_nibbles(const std::int8_t* packed, std::int64_t n, std::int8_t* m) noexcept {
  std::int64_t i = 0;
  const __m256i lo_mask = _mm256_set1_epi16(0x000F), hi_mask = _mm256_set1_epi16(0x0F00);
  const __m256i eight = _mm256_set1_epi8(8);
  for (; i + 32 <= n; i += 32) {
    const __m256i x =
        _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed + i / 2)));
    const __m256i w = _mm256_or_si256(_mm256_and_si256(x, lo_mask),
                                      _mm256_and_si256(_mm256_slli_epi16(x, 4), hi_mask));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + i),
                        _mm256_sub_epi8(_mm256_xor_si256(w, eight), eight));
  }
  if (i < n) unpack_nibbles_scalar(packed + i / 2, n - i, m + i);
}

/// 32 sign-extended 6-bit mantissas (4 per 3 bytes, format/gse.hpp) from the first
/// `count` fields at `packed` (count a multiple of 4 or the row's end; the rest are zero).
GSQ_ALWAYS_INLINE __m256i load_sixes32(const std::int8_t* packed, std::int64_t count) noexcept {
  alignas(32) std::uint8_t buf[32] = {};
  const std::int64_t bytes = gse_code_bytes(6, std::min<std::int64_t>(32, count));
  if (bytes >= 24)
    std::memcpy(buf, packed, 24);
  else if (bytes > 0)
    std::memcpy(buf, packed, static_cast<std::size_t>(bytes));
  // Dwords 3L..3L+2 (12 bytes, 16 fields) into 128-bit lane L, then each 3-byte word into a dword.
  const __m256i x = _mm256_permutevar8x32_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(buf)),
                                                _mm256_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0));
  const __m256i v = _mm256_shuffle_epi8(
      x, _mm256_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1,
                          0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1));
  const __m256i f = _mm256_or_si256(
      _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0x3F)),
                      _mm256_and_si256(_mm256_slli_epi32(v, 2), _mm256_set1_epi32(0x3F00))),
      _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(v, 4), _mm256_set1_epi32(0x3F0000)),
                      _mm256_and_si256(_mm256_slli_epi32(v, 6), _mm256_set1_epi32(0x3F000000))));
  const __m256i sign = _mm256_set1_epi8(32);
  const __m256i m = _mm256_sub_epi8(_mm256_xor_si256(f, sign), sign);
  if (count >= 32) return m;
  const __m256i iota = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                        17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
  const __m256i n = _mm256_set1_epi8(static_cast<char>(std::max<std::int64_t>(0, count)));
  return _mm256_and_si256(m, _mm256_cmpgt_epi8(n, iota));
}

/// Packs 32 int8 mantissas in [-32, 31] into 24 bytes of 6-bit fields (format/gse.hpp).
GSQ_ALWAYS_INLINE void store_sixes32(std::int8_t* out, __m256i m) noexcept {
  const __m256i u = _mm256_and_si256(m, _mm256_set1_epi8(0x3F));
  // b0 + 64·b1 per 16-bit word, then w0 + 4096·w1 per dword: the 24-bit word of 4 fields.
  const __m256i w = _mm256_maddubs_epi16(u, _mm256_set1_epi16(0x4001));
  const __m256i d = _mm256_madd_epi16(w, _mm256_set1_epi32(0x10000001));
  const __m256i b = _mm256_shuffle_epi8(
      d, _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                          0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
  const __m256i c = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(c));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out + 16), _mm256_extracti128_si256(c, 1));
}

/// Packs n int8 mantissas into `code_bits` fields (format/gse.hpp gse_pack_codes).
inline void pack_codes(const std::int8_t* m, std::int64_t n, int code_bits, std::int8_t* out) noexcept {
  if (code_bits == 4) return pack_nibbles(m, n, out);
  std::int64_t i = 0;
  if (code_bits == 6)
    for (; i + 32 <= n; i += 32)
      store_sixes32(out + i / 4 * 3, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(m + i)));
  gse_pack_codes(m + i, n - i, code_bits, out + gse_code_bytes(code_bits, i));
}

/// The inverse of pack_codes for n mantissas.
inline void unpack_codes(const std::int8_t* packed, std::int64_t n, int code_bits, std::int8_t* m) noexcept {
  if (code_bits == 4) return unpack_nibbles(packed, n, m);
  std::int64_t i = 0;
  if (code_bits == 6)
    for (; i + 32 <= n; i += 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(m + i), load_sixes32(packed + i / 4 * 3, 32));
  gse_unpack_codes(packed + gse_code_bytes(code_bits, i), n - i, code_bits, m + i);
}

template <int kGroup>
inline bool quantize_row(const GseQuantParams& p, std::int64_t r, std::int8_t* dst,
                         const PhiloxKeys8& keys) noexcept {
  const int group = kGroup > 0 ? kGroup : p.group;
  const float* src = p.src + r * p.src_stride;
  std::int8_t* exps = p.exponents + r * p.groups;
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256 qmax = _mm256_set1_ps(static_cast<float>((1 << (p.bits - 1)) - 1));
  const std::uint64_t row_index = static_cast<std::uint64_t>(r * p.src_cols);
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const std::int64_t c0 = g * group;
    const std::int64_t n = std::min<std::int64_t>(group, p.cols - c0);
    __m256i acc = _mm256_setzero_si256();
    if (n == group && group % 8 == 0) {
      for (std::int64_t k = 0; k < n; k += kLanes) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c0 + k));
        acc = _mm256_max_epu32(acc, _mm256_and_si256(v, abs_mask));
      }
    } else {
      for (std::int64_t k = 0; k < n; k += kLanes) {
        const __m256i v = _mm256_castps_si256(_mm256_maskload_ps(src + c0 + k, lane_mask(n - k)));
        acc = _mm256_max_epu32(acc, _mm256_and_si256(v, abs_mask));
      }
    }
    const std::uint32_t amax_bits = reduce_max_epu32(acc);
    if (amax_bits >= 0x7F800000u) return false;
    const int e = gse_exponent(amax_bits, p.bits, p.exp_min, p.exp_max);
    exps[g] = static_cast<std::int8_t>(e);
    const Pow2Split split = pow2_split(-e);
    const __m256 s1 = _mm256_set1_ps(split.first), s2 = _mm256_set1_ps(split.second);
    for (std::int64_t k = 0; k < group; k += 2 * kLanes) {
      __m256i q[2];
      for (int h = 0; h < 2; ++h) {
        const std::int64_t kk = k + h * kLanes;
        const __m256 v = (n == group && kk + kLanes <= group)
                             ? _mm256_loadu_ps(src + c0 + kk)
                             : _mm256_maskload_ps(src + c0 + kk, lane_mask(n - kk));
        const __m256 scaled = _mm256_mul_ps(_mm256_mul_ps(v, s1), s2);
        __m256 u = _mm256_setzero_ps();
        if (p.stochastic)
          u = philox_uniform8(keys, p.stream, row_index + static_cast<std::uint64_t>(c0 + kk));
        q[h] = round_clamp8(scaled, p.stochastic, u, qmax);
      }
      store_bytes(dst + c0 + k, to_int8x16(q[0], q[1]), group - k);
    }
  }
  return true;
}

/// Per-lane exponents of 8 group maxima (bit patterns, finite).
GSQ_ALWAYS_INLINE __m256i group_exponents8(__m256i acc, const GseQuantParams& p) noexcept {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i biased = _mm256_srli_epi32(acc, 23);
  const __m256i sub = _mm256_cmpeq_epi32(biased, zero);
  const __m256 up =
      _mm256_mul_ps(_mm256_castsi256_ps(acc), _mm256_set1_ps(18446744073709551616.0f));
  const __m256i biased_up = _mm256_srli_epi32(_mm256_castps_si256(up), 23);
  const __m256i lg = _mm256_blendv_epi8(_mm256_sub_epi32(biased, _mm256_set1_epi32(127)),
                                        _mm256_sub_epi32(biased_up, _mm256_set1_epi32(191)), sub);
  __m256i e = _mm256_sub_epi32(lg, _mm256_set1_epi32(p.bits - 2));
  e = _mm256_min_epi32(_mm256_max_epi32(e, _mm256_set1_epi32(p.exp_min)),
                       _mm256_set1_epi32(p.exp_max));
  return _mm256_blendv_epi8(e, _mm256_set1_epi32(p.exp_min), _mm256_cmpeq_epi32(acc, zero));
}

/// Per-lane factors s1, s2 with x·2^k == (x·s1)·s2 (see gse_params.hpp pow2_split).
GSQ_ALWAYS_INLINE void pow2_split8(__m256i k, __m256& s1, __m256& s2) noexcept {
  const __m256i normal = _mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23);
  const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(-126), k);  // k == -127
  const __m256i is_big = _mm256_cmpgt_epi32(k, _mm256_set1_epi32(127));   // k == 128
  __m256i first = _mm256_blendv_epi8(normal, _mm256_set1_epi32(0x00400000), is_sub);
  first = _mm256_blendv_epi8(first, _mm256_set1_epi32(191 << 23), is_big);
  const __m256i second =
      _mm256_blendv_epi8(_mm256_set1_epi32(127 << 23), _mm256_set1_epi32(191 << 23), is_big);
  s1 = _mm256_castsi256_ps(first);
  s2 = _mm256_castsi256_ps(second);
}

inline bool quantize_tile_transposed(const GseQuantParams& p, std::int64_t j0,
                                     const PhiloxKeys8& keys) noexcept {
  const int group = p.group;
  const int tile_rows = (group + 15) / 16 * 16;
  const std::int64_t jn = std::min<std::int64_t>(kGseTileRows, p.rows - j0);
  const __m256i cmask[2] = {lane_mask(jn), lane_mask(jn - kLanes)};
  const bool full = jn == kGseTileRows;
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256 qmax = _mm256_set1_ps(static_cast<float>((1 << (p.bits - 1)) - 1));
  const std::int64_t padded_cols = p.groups * group;
  alignas(64) __m128i tile[256];
  alignas(32) std::int32_t e32[16];
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const std::int64_t i0 = g * group;
    const std::int64_t n = std::min<std::int64_t>(group, p.cols - i0);
    const float* src = p.src + i0 * p.src_stride + j0;
    __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (std::int64_t i = 0; i < n; ++i) {
      for (int h = 0; h < 2; ++h) {
        const float* s = src + i * p.src_stride + h * kLanes;
        const __m256i v = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s))
                               : _mm256_castps_si256(_mm256_maskload_ps(s, cmask[h]));
        acc[h] = _mm256_max_epu32(acc[h], _mm256_and_si256(v, abs_mask));
      }
    }
    const __m256i limit = _mm256_set1_epi32(0x7F7FFFFF);
    const __m256i bad =
        _mm256_or_si256(_mm256_cmpgt_epi32(acc[0], limit), _mm256_cmpgt_epi32(acc[1], limit));
    if (!_mm256_testz_si256(bad, bad)) return false;
    __m256 s1[2], s2[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i e = group_exponents8(acc[h], p);
      _mm256_store_si256(reinterpret_cast<__m256i*>(e32 + h * kLanes), e);
      pow2_split8(_mm256_sub_epi32(_mm256_setzero_si256(), e), s1[h], s2[h]);
    }
    for (std::int64_t j = 0; j < jn; ++j)
      p.exponents[(j0 + j) * p.groups + g] = static_cast<std::int8_t>(e32[j]);
    for (std::int64_t i = 0; i < tile_rows; ++i) {
      if (i >= n) {
        tile[i] = _mm_setzero_si128();
        continue;
      }
      __m256i q[2];
      for (int h = 0; h < 2; ++h) {
        const float* s = src + i * p.src_stride + h * kLanes;
        const __m256 v = full ? _mm256_loadu_ps(s) : _mm256_maskload_ps(s, cmask[h]);
        const __m256 scaled = _mm256_mul_ps(_mm256_mul_ps(v, s1[h]), s2[h]);
        __m256 u = _mm256_setzero_ps();
        if (p.stochastic)
          u = philox_uniform8(keys, p.stream,
                              static_cast<std::uint64_t>((i0 + i) * p.src_cols + j0 + h * kLanes));
        q[h] = round_clamp8(scaled, p.stochastic, u, qmax);
      }
      tile[i] = to_int8x16(q[0], q[1]);
    }
    for (int b = 0; b < tile_rows; b += 16) transpose16x16(tile + b);
    for (std::int64_t j = 0; j < jn; ++j) {
      std::int8_t* out = p.staging != nullptr ? p.staging + j * padded_cols + i0
                                              : p.mantissas + (j0 + j) * p.row_bytes + i0;
      for (int b = 0; b < tile_rows; b += 16) store_bytes(out + b, tile[b + j], group - b);
    }
  }
  if (p.staging != nullptr) {
    for (std::int64_t j = 0; j < jn; ++j)
      pack_codes(p.staging + j * padded_cols, padded_cols, p.code_bits, p.mantissas + (j0 + j) * p.row_bytes);
  }
  return true;
}

inline bool quantize_gse_rows(const GseQuantParams& p, std::int64_t r0, std::int64_t r1) noexcept {
  PhiloxKeys8 keys;
  if (p.stochastic) philox_keys8(p.seed, keys);
  if (p.transpose) {
    for (std::int64_t j0 = r0; j0 < r1; j0 += kGseTileRows) {
      GseQuantParams tile = p;
      tile.rows = std::min(r1, p.rows);
      if (!quantize_tile_transposed(tile, j0, keys)) return false;
    }
    return true;
  }
  const bool packed = p.staging != nullptr;
  for (std::int64_t r = r0; r < r1; ++r) {
    std::int8_t* dst = packed ? p.staging : p.mantissas + r * p.row_bytes;
    bool ok;
    switch (p.group) {
      case 32:
        ok = quantize_row<32>(p, r, dst, keys);
        break;
      case 64:
        ok = quantize_row<64>(p, r, dst, keys);
        break;
      case 128:
        ok = quantize_row<128>(p, r, dst, keys);
        break;
      default:
        ok = quantize_row<0>(p, r, dst, keys);
        break;
    }
    if (!ok) return false;
    if (packed) pack_codes(dst, p.groups * p.group, p.code_bits, p.mantissas + r * p.row_bytes);
  }
  return true;
}

inline void dequantize_gse_rows(const GseDequantParams& p, std::int64_t r0,
                                std::int64_t r1) noexcept {
  const int group = p.group;
  const std::int64_t padded_cols = p.groups * group;
  if (!p.transpose) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int8_t* m = p.mantissas + r * p.row_bytes;
      if (p.packed) {
        unpack_codes(m, padded_cols, p.code_bits, p.staging);
        m = p.staging;
      }
      const std::int8_t* exps = p.exponents + r * p.groups;
      float* dst = p.dst + r * p.dst_stride;
      for (std::int64_t g = 0; g < p.groups; ++g) {
        const std::int64_t c0 = g * group;
        const std::int64_t n = std::min<std::int64_t>(group, p.cols - c0);
        const __m256 s = _mm256_set1_ps(pow2f(exps[g]));
        for (std::int64_t k = 0; k < n; k += kLanes) {
          const __m128i q = k + kLanes <= n
                                ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m + c0 + k))
                                : load_bytes(m + c0 + k, n - k);
          const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), s);
          if (k + kLanes <= n)
            _mm256_storeu_ps(dst + c0 + k, v);
          else
            _mm256_maskstore_ps(dst + c0 + k, lane_mask(n - k), v);
        }
      }
    }
    return;
  }
  const int tile_rows = (group + 15) / 16 * 16;
  alignas(64) __m128i tile[256];
  alignas(32) std::int32_t e32[16];
  for (std::int64_t j0 = r0; j0 < r1; j0 += kGseTileRows) {
    const std::int64_t jn = std::min<std::int64_t>(kGseTileRows, r1 - j0);
    const __m256i cmask[2] = {lane_mask(jn), lane_mask(jn - kLanes)};
    const std::int8_t* rows[kGseTileRows];
    for (std::int64_t j = 0; j < jn; ++j) {
      const std::int8_t* m = p.mantissas + (j0 + j) * p.row_bytes;
      if (p.packed) {
        unpack_codes(m, padded_cols, p.code_bits, p.staging + j * padded_cols);
        m = p.staging + j * padded_cols;
      }
      rows[j] = m;
    }
    for (std::int64_t g = 0; g < p.groups; ++g) {
      const std::int64_t c0 = g * group;
      const std::int64_t n = std::min<std::int64_t>(group, p.cols - c0);
      for (int j = 0; j < kGseTileRows; ++j)
        e32[j] = j < jn ? p.exponents[(j0 + j) * p.groups + g] : 0;
      __m256 s[2];
      for (int h = 0; h < 2; ++h) {
        // The float 2^e for e in [-128, 127]: a biased exponent, or below -126 the
        // subnormal with the single bit e + 149.
        const __m256i e = _mm256_load_si256(reinterpret_cast<const __m256i*>(e32 + h * kLanes));
        const __m256i normal = _mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23);
        const __m256i subnormal =
            _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_add_epi32(e, _mm256_set1_epi32(149)));
        s[h] = _mm256_castsi256_ps(
            _mm256_blendv_epi8(normal, subnormal, _mm256_cmpgt_epi32(_mm256_set1_epi32(-126), e)));
      }
      for (int b = 0; b < tile_rows; b += 16) {
        for (int j = 0; j < kGseTileRows; ++j)
          tile[b + j] = j < jn ? load_bytes(rows[j] + c0 + b, group - b) : _mm_setzero_si128();
        transpose16x16(tile + b);
      }
      for (std::int64_t c = 0; c < n; ++c) {
        float* dst = p.dst + (c0 + c) * p.dst_stride + j0;
        const __m128i t = tile[c];
        const __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(t)), s[0]);
        const __m256 v1 =
            _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(t, t))), s[1]);
        if (jn == kGseTileRows) {
          _mm256_storeu_ps(dst, v0);
          _mm256_storeu_ps(dst + kLanes, v1);
        } else {
          _mm256_maskstore_ps(dst, cmask[0], v0);
          _mm256_maskstore_ps(dst + kLanes, cmask[1], v1);
        }
      }
    }
  }
}

}  // namespace quant::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
