// gsq/quant/kernels/gse_avx512.hpp — AVX-512 GSE-INT quantize / dequantize kernels.
//
// Bit-identical to quantize_gse_reference / dequantize_gse_reference (quant/gse.hpp):
//   * amax is an unsigned max over |x| bit patterns, which orders finite values like the
//     float max and puts Inf/NaN above every finite value, so one compare per group
//     detects non-finite input;
//   * x·2^−e uses vscalefps: one correctly rounded scaling for every e, including
//     e = −128 (2^128 is not a float) and results that fall into the subnormals — the
//     same value std::ldexp gives;
//   * RNE clamps to ±qmax before converting (same result as round-then-clamp, and huge
//     values under E = 5 never reach the integer conversion); stochastic rounding adds
//     the same Philox uniform (16 lanes, _mm512_mul_epu32 products) and floors;
//   * dequantization multiplies m by the exact float 2^e (m·2^e is always exact).
// transpose = false walks each row group by group. transpose = true takes 16 source
// columns (16 output rows) at a time: each source row segment is one 64-byte line, the
// group's amax is a vertical max, and 16×16 byte tiles are transposed in registers
// before being written as output rows.
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

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace quant::kernels::avx512 {

inline constexpr int kLanes = 16;

/// Round keys of Philox4x32-10 for one seed, broadcast.
struct PhiloxKeys16 {
  __m512i k0[10], k1[10];
};

inline void philox_keys16(std::uint64_t seed, PhiloxKeys16& keys) noexcept {
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    keys.k0[round] = _mm512_set1_epi32(static_cast<int>(k0));
    keys.k1[round] = _mm512_set1_epi32(static_cast<int>(k1));
    k0 += gsq::detail::kPhiloxW0;
    k1 += gsq::detail::kPhiloxW1;
  }
}

/// hi and lo 32-bit halves of the 32×32→64 products a·m in each of the 16 lanes.
GSQ_ALWAYS_INLINE void mul_hi_lo16(__m512i a, __m512i m, __m512i& hi, __m512i& lo) noexcept {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

/// random_uniform(seed, stream, index + lane) for 16 consecutive indices.
GSQ_ALWAYS_INLINE __m512 philox_uniform16(const PhiloxKeys16& keys, std::uint64_t stream,
                                          std::uint64_t index) noexcept {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i base_lo = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index)));
  const __m512i base_hi =
      _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index >> 32)));
  __m512i c0 = _mm512_add_epi32(base_lo, iota);
  const __mmask16 carry = _mm512_cmplt_epu32_mask(c0, base_lo);
  __m512i c1 = _mm512_mask_add_epi32(base_hi, carry, base_hi, _mm512_set1_epi32(1));
  __m512i c2 = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream)));
  __m512i c3 = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream >> 32)));
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(gsq::detail::kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(gsq::detail::kPhiloxM1));
  for (int round = 0; round < 10; ++round) {
    __m512i hi0, lo0, hi1, lo1;
    mul_hi_lo16(c0, m0, hi0, lo0);
    mul_hi_lo16(c2, m1, hi1, lo1);
    c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), keys.k0[round]);
    c1 = lo1;
    c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), keys.k1[round]);
    c3 = lo0;
  }
  const __m512 u = _mm512_cvtepi32_ps(_mm512_srli_epi32(c0, 8));
  return _mm512_mul_ps(u, _mm512_set1_ps(1.0f / 16777216.0f));
}

GSQ_ALWAYS_INLINE __mmask16 lane_mask(std::int64_t n) noexcept {
  return n >= kLanes
             ? static_cast<__mmask16>(0xFFFF)
             : (n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1u));
}

/// The mantissas of 16 scaled values: RNE or floor(s + u), clamped to ±qmax. The clamp
/// is one vrangeps (smaller magnitude of x and qmax, sign of x), done before the
/// conversion; for RNE that equals round-then-clamp because qmax is an integer.
GSQ_ALWAYS_INLINE __m512i round_clamp16(__m512 scaled, bool stochastic, __m512 u,
                                        __m512 qmax) noexcept {
  constexpr int kMinAbsSignOfFirst = 0x02;  // imm[1:0] = 10 min |.|, imm[3:2] = 00 sign of a
  if (!stochastic) {
    const __m512 c = _mm512_range_ps(scaled, qmax, kMinAbsSignOfFirst);
    return _mm512_cvt_roundps_epi32(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  const __m512 f =
      _mm512_roundscale_ps(_mm512_add_ps(scaled, u), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  return _mm512_cvttps_epi32(_mm512_range_ps(f, qmax, kMinAbsSignOfFirst));
}

/// The exponents of 16 groups from their amax bit patterns (finite): floor(log2 amax)
/// from the biased exponent (subnormals first scaled by 2^64, exactly), minus b − 2,
/// clamped; all-zero groups get e_min.
GSQ_ALWAYS_INLINE __m512i group_exponents16(__m512i amax, int bits, int exp_min,
                                            int exp_max) noexcept {
  const __m512i biased = _mm512_srli_epi32(amax, 23);
  const __mmask16 sub = _mm512_cmpeq_epi32_mask(biased, _mm512_setzero_si512());
  const __m512 up =
      _mm512_mul_ps(_mm512_castsi512_ps(amax), _mm512_set1_ps(18446744073709551616.0f));
  const __m512i biased_up = _mm512_srli_epi32(_mm512_castps_si512(up), 23);
  const __m512i lg = _mm512_mask_blend_epi32(sub, _mm512_sub_epi32(biased, _mm512_set1_epi32(127)),
                                             _mm512_sub_epi32(biased_up, _mm512_set1_epi32(191)));
  __m512i e = _mm512_sub_epi32(lg, _mm512_set1_epi32(bits - 2));
  e = _mm512_min_epi32(_mm512_max_epi32(e, _mm512_set1_epi32(exp_min)), _mm512_set1_epi32(exp_max));
  const __mmask16 zero = _mm512_cmpeq_epi32_mask(amax, _mm512_setzero_si512());
  return _mm512_mask_mov_epi32(e, zero, _mm512_set1_epi32(exp_min));
}

/// Transposes 16×16 byte tiles in place, one per 128-bit lane of V (xmm: 1 tile, ymm: 2,
/// zmm: 4): rows[j] byte i ← rows[i] byte j, lane by lane. Four perfect-shuffle passes
/// of (row i, row i+8) transpose a 16×16 byte matrix; unpacks work per 128-bit lane, so
/// wider registers transpose several tiles for the price of one.
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
GSQ_ALWAYS_INLINE void transpose16x16(__m256i* rows) noexcept {
  __m256i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = rows[i];
  for (int pass = 0; pass < 4; ++pass) {
    for (int i = 0; i < 8; ++i) {
      b[2 * i] = _mm256_unpacklo_epi8(a[i], a[i + 8]);
      b[2 * i + 1] = _mm256_unpackhi_epi8(a[i], a[i + 8]);
    }
    for (int i = 0; i < 16; ++i) a[i] = b[i];
  }
  for (int i = 0; i < 16; ++i) rows[i] = a[i];
}
GSQ_ALWAYS_INLINE void transpose16x16(__m512i* rows) noexcept {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = rows[i];
  for (int pass = 0; pass < 4; ++pass) {
    for (int i = 0; i < 8; ++i) {
      b[2 * i] = _mm512_unpacklo_epi8(a[i], a[i + 8]);
      b[2 * i + 1] = _mm512_unpackhi_epi8(a[i], a[i + 8]);
    }
    for (int i = 0; i < 16; ++i) a[i] = b[i];
  }
  for (int i = 0; i < 16; ++i) rows[i] = a[i];
}

GSQ_ALWAYS_INLINE __mmask64 byte_mask(std::int64_t n) noexcept {
  return n >= 64 ? ~__mmask64{0} : (n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1);
}

/// Nibble-packs the first bytes of a vector (values in [-8, 7]): byte i of the result is
/// v[2i] & 15 | v[2i+1] << 4. Stores `count` (even) source values as count/2 bytes.
GSQ_ALWAYS_INLINE void store_packed(std::int8_t* out, __m512i v, std::int64_t count) noexcept {
  const __m512i w =
      _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi16(0x000F)),
                      _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi16(0x00F0)));
  _mm256_mask_storeu_epi8(out, static_cast<__mmask32>(byte_mask(count / 2)),
                          _mm512_cvtepi16_epi8(w));
}
GSQ_ALWAYS_INLINE void store_packed(std::int8_t* out, __m256i v, std::int64_t count) noexcept {
  const __m256i w =
      _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi16(0x000F)),
                      _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi16(0x00F0)));
  _mm_mask_storeu_epi8(out, static_cast<__mmask16>(byte_mask(count / 2)), _mm256_cvtepi16_epi8(w));
}
GSQ_ALWAYS_INLINE void store_packed(std::int8_t* out, __m128i v, std::int64_t count) noexcept {
  const __m128i w = _mm_or_si128(_mm_and_si128(v, _mm_set1_epi16(0x000F)),
                                 _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi16(0x00F0)));
  _mm_mask_storeu_epi8(out, static_cast<__mmask16>(byte_mask(count / 2)), _mm_cvtepi16_epi8(w));
}

/// Up to 64 sign-extended nibbles (count even) from count/2 packed bytes.
GSQ_ALWAYS_INLINE __m512i load_unpacked(const std::int8_t* packed, std::int64_t count) noexcept {
  const __m256i bytes =
      _mm256_maskz_loadu_epi8(static_cast<__mmask32>(byte_mask(count / 2)), packed);
  const __m512i x = _mm512_cvtepu8_epi16(bytes);
  const __m512i w =
      _mm512_or_si512(_mm512_and_si512(x, _mm512_set1_epi16(0x000F)),
                      _mm512_and_si512(_mm512_slli_epi16(x, 4), _mm512_set1_epi16(0x0F00)));
  const __m512i eight = _mm512_set1_epi8(8);
  return _mm512_maskz_mov_epi8(byte_mask(count),
                               _mm512_sub_epi8(_mm512_xor_si512(w, eight), eight));
}

/// 16 uniforms random_uniform(seed, stream, index + i) into out (tests, benchmarks).
inline void uniform_batch(std::uint64_t seed, std::uint64_t stream, std::uint64_t index,
                          float* out) noexcept {
  PhiloxKeys16 keys;
  philox_keys16(seed, keys);
  _mm512_storeu_ps(out, philox_uniform16(keys, stream, index));
}

inline void pack_nibbles(const std::int8_t* m, std::int64_t n, std::int8_t* out) noexcept {
  std::int64_t i = 0;
  const __m512i lo_mask = _mm512_set1_epi16(0x000F), hi_mask = _mm512_set1_epi16(0x00F0);
  for (; i + 64 <= n; i += 64) {
    const __m512i w = _mm512_loadu_si512(m + i);
    const __m512i packed = _mm512_or_si512(_mm512_and_si512(w, lo_mask),
                                           _mm512_and_si512(_mm512_srli_epi16(w, 4), hi_mask));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i / 2), _mm512_cvtepi16_epi8(packed));
  }
  pack_nibbles_scalar(m + i, n - i, out + i / 2);
}

inline void unpack_nibbles(const std::int8_t* packed, std::int64_t n, std::int8_t* m) noexcept {
  std::int64_t i = 0;
  const __m512i lo_mask = _mm512_set1_epi16(0x000F), hi_mask = _mm512_set1_epi16(0x0F00);
  const __m512i eight = _mm512_set1_epi8(8);
  for (; i + 64 <= n; i += 64) {
    const __m512i x =
        _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i / 2)));
    const __m512i w = _mm512_or_si512(_mm512_and_si512(x, lo_mask),
                                      _mm512_and_si512(_mm512_slli_epi16(x, 4), hi_mask));
    _mm512_storeu_si512(m + i, _mm512_sub_epi8(_mm512_xor_si512(w, eight), eight));
  }
  if (i < n) {
    // Odd tails start on a byte boundary because i is even.
    unpack_nibbles_scalar(packed + i / 2, n - i, m + i);
  }
}

/// 64 sign-extended 6-bit mantissas (4 per 3 bytes, format/gse.hpp) from the first
/// `count` fields at `packed` (count a multiple of 4 or the row's end; the rest are zero).
GSQ_ALWAYS_INLINE __m512i load_sixes64(const std::int8_t* packed, std::int64_t count) noexcept {
  const std::int64_t bytes = gse_code_bytes(6, std::min<std::int64_t>(64, count));
  const __m512i raw = _mm512_maskz_loadu_epi8(byte_mask(bytes), packed);
  // Dwords 3L..3L+2 (12 bytes, 16 fields) into 128-bit lane L, then each 3-byte word into a dword.
  const __m512i x = _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 1, 2, 0, 3, 4, 5, 0, 6, 7, 8, 0, 9, 10, 11, 0), raw);
  const __m512i v = _mm512_shuffle_epi8(
      x, _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1)));
  const __m512i f = _mm512_or_si512(
      _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi32(0x3F)),
                      _mm512_and_si512(_mm512_slli_epi32(v, 2), _mm512_set1_epi32(0x3F00))),
      _mm512_or_si512(_mm512_and_si512(_mm512_slli_epi32(v, 4), _mm512_set1_epi32(0x3F0000)),
                      _mm512_and_si512(_mm512_slli_epi32(v, 6), _mm512_set1_epi32(0x3F000000))));
  const __m512i sign = _mm512_set1_epi8(32);
  return _mm512_maskz_mov_epi8(byte_mask(count), _mm512_sub_epi8(_mm512_xor_si512(f, sign), sign));
}

/// Packs 64 int8 mantissas in [-32, 31] into 48 bytes of 6-bit fields (format/gse.hpp).
GSQ_ALWAYS_INLINE void store_sixes64(std::int8_t* out, __m512i m) noexcept {
  const __m512i u = _mm512_and_si512(m, _mm512_set1_epi8(0x3F));
  // b0 + 64·b1 per 16-bit word, then w0 + 4096·w1 per dword: the 24-bit word of 4 fields.
  const __m512i w = _mm512_maddubs_epi16(u, _mm512_set1_epi16(0x4001));
  const __m512i d = _mm512_madd_epi16(w, _mm512_set1_epi32(0x10000001));
  const __m512i b = _mm512_shuffle_epi8(
      d, _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1)));
  const __m512i c = _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 3, 7, 11, 15), b);
  _mm512_mask_storeu_epi8(out, byte_mask(48), c);
}

/// Packs n int8 mantissas into `code_bits` fields (format/gse.hpp gse_pack_codes).
inline void pack_codes(const std::int8_t* m, std::int64_t n, int code_bits, std::int8_t* out) noexcept {
  if (code_bits == 4) return pack_nibbles(m, n, out);
  std::int64_t i = 0;
  if (code_bits == 6)
    for (; i + 64 <= n; i += 64) store_sixes64(out + i / 4 * 3, _mm512_loadu_si512(m + i));
  gse_pack_codes(m + i, n - i, code_bits, out + gse_code_bytes(code_bits, i));
}

/// The inverse of pack_codes for n mantissas.
inline void unpack_codes(const std::int8_t* packed, std::int64_t n, int code_bits, std::int8_t* m) noexcept {
  if (code_bits == 4) return unpack_nibbles(packed, n, m);
  std::int64_t i = 0;
  if (code_bits == 6)
    for (; i + 64 <= n; i += 64) _mm512_storeu_si512(m + i, load_sixes64(packed + i / 4 * 3, 64));
  gse_unpack_codes(packed + gse_code_bytes(code_bits, i), n - i, code_bits, m + i);
}

/// |x| bit patterns of one group of V·16 values, max-reduced to 16 lanes.
template <int V>
GSQ_ALWAYS_INLINE __m512i group_abs_max(const float* src, __m512i abs_mask) noexcept {
  __m512i acc = _mm512_and_si512(_mm512_loadu_si512(src), abs_mask);
  for (int v = 1; v < V; ++v)
    acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_loadu_si512(src + 16 * v), abs_mask));
  return acc;
}

/// 16 whole groups of kGroup (a multiple of 16) values starting at src: the 16 group
/// maxima are reduced together (a transposing reduction, 3 shuffles per group instead
/// of a horizontal reduction each), and the exponents computed as one vector.
template <int kGroup>
inline bool quantize_16_groups(const GseQuantParams& p, const float* src, std::int8_t* exps,
                               std::int8_t* dst, std::uint64_t index,
                               const PhiloxKeys16& keys) noexcept {
  static_assert(kGroup % 16 == 0, "whole vectors per group");
  constexpr int V = kGroup / 16;
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  // Level 1: groups (2j, 2j+1) → 8 lanes each. Level 2: 4 groups × 4 lanes (128-bit
  // blocks). Level 3: block k holds groups k and k+4 (2 lanes each). Level 4: block k,
  // lane j holds group k + 4j; a final permutation puts group i in lane i.
  __m512i l1[8];
  for (int j = 0; j < 8; ++j) {
    const __m512i a = group_abs_max<V>(src + (2 * j) * kGroup, abs_mask);
    const __m512i b = group_abs_max<V>(src + (2 * j + 1) * kGroup, abs_mask);
    l1[j] = _mm512_max_epu32(_mm512_shuffle_i32x4(a, b, 0x44), _mm512_shuffle_i32x4(a, b, 0xEE));
  }
  __m512i l2[4];
  for (int j = 0; j < 4; ++j)
    l2[j] = _mm512_max_epu32(_mm512_shuffle_i32x4(l1[2 * j], l1[2 * j + 1], 0x88),
                             _mm512_shuffle_i32x4(l1[2 * j], l1[2 * j + 1], 0xDD));
  __m512i l3[2];
  for (int j = 0; j < 2; ++j) {
    const __m512 a = _mm512_castsi512_ps(l2[2 * j]), b = _mm512_castsi512_ps(l2[2 * j + 1]);
    l3[j] = _mm512_max_epu32(_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0x44)),
                             _mm512_castps_si512(_mm512_shuffle_ps(a, b, 0xEE)));
  }
  const __m512 a = _mm512_castsi512_ps(l3[0]), b = _mm512_castsi512_ps(l3[1]);
  const __m512i l4 = _mm512_max_epu32(_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0x88)),
                                      _mm512_castps_si512(_mm512_shuffle_ps(a, b, 0xDD)));
  const __m512i amax = _mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), l4);
  if (_mm512_cmpge_epu32_mask(amax, _mm512_set1_epi32(0x7F800000)) != 0) return false;
  const __m512i e = group_exponents16(amax, p.bits, p.exp_min, p.exp_max);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(exps), _mm512_cvtepi32_epi8(e));
  alignas(64) float neg_e[16];
  _mm512_store_ps(neg_e, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_setzero_si512(), e)));
  const __m512 qmax = _mm512_set1_ps(static_cast<float>((1 << (p.bits - 1)) - 1));
  for (int gi = 0; gi < 16; ++gi) {
    const __m512 scale = _mm512_set1_ps(neg_e[gi]);
    for (int v = 0; v < V; ++v) {
      const std::int64_t k = gi * kGroup + 16 * v;
      const __m512 scaled = _mm512_scalef_ps(_mm512_loadu_ps(src + k), scale);
      __m512 u = _mm512_setzero_ps();
      if (p.stochastic) u = philox_uniform16(keys, p.stream, index + static_cast<std::uint64_t>(k));
      const __m512i q = round_clamp16(scaled, p.stochastic, u, qmax);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm512_cvtepi32_epi8(q));
    }
  }
  return true;
}

/// One row, groups along the row (transpose = false). kGroup > 0 fixes the group size
/// at compile time (fast paths), 0 reads it from p.
template <int kGroup>
inline bool quantize_row(const GseQuantParams& p, std::int64_t r, std::int8_t* dst,
                         const PhiloxKeys16& keys) noexcept {
  const int group = kGroup > 0 ? kGroup : p.group;
  const float* src = p.src + r * p.src_stride;
  std::int8_t* exps = p.exponents + r * p.groups;
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512 qmax = _mm512_set1_ps(static_cast<float>((1 << (p.bits - 1)) - 1));
  const std::uint64_t row_index = static_cast<std::uint64_t>(r * p.src_cols);
  std::int64_t g = 0;
  if constexpr (kGroup > 0 && kGroup % 16 == 0) {
    const std::int64_t whole = p.cols / kGroup;
    for (; g + 16 <= whole; g += 16) {
      const std::int64_t c0 = g * kGroup;
      if (!quantize_16_groups<kGroup>(p, src + c0, exps + g, dst + c0,
                                      row_index + static_cast<std::uint64_t>(c0), keys))
        return false;
    }
  }
  for (; g < p.groups; ++g) {
    const std::int64_t c0 = g * group;
    const std::int64_t n = std::min<std::int64_t>(group, p.cols - c0);
    __m512i acc = _mm512_setzero_si512();
    for (std::int64_t k = 0; k < n; k += kLanes) {
      const __m512i v = _mm512_maskz_loadu_epi32(lane_mask(n - k), src + c0 + k);
      acc = _mm512_max_epu32(acc, _mm512_and_si512(v, abs_mask));
    }
    const auto amax_bits = static_cast<std::uint32_t>(_mm512_reduce_max_epu32(acc));
    if (amax_bits >= 0x7F800000u) return false;
    const int e = gse_exponent(amax_bits, p.bits, p.exp_min, p.exp_max);
    exps[g] = static_cast<std::int8_t>(e);
    const __m512 neg_e = _mm512_set1_ps(static_cast<float>(-e));
    for (std::int64_t k = 0; k < group; k += kLanes) {
      const __m512 v = _mm512_maskz_loadu_ps(lane_mask(n - k), src + c0 + k);
      const __m512 scaled = _mm512_scalef_ps(v, neg_e);
      __m512 u = _mm512_setzero_ps();
      if (p.stochastic)
        u = philox_uniform16(keys, p.stream, row_index + static_cast<std::uint64_t>(c0 + k));
      const __m512i q = round_clamp16(scaled, p.stochastic, u, qmax);
      // vpmovdb to a register and a plain store: the memory form is slow on Zen.
      const __m128i q8 = _mm512_cvtepi32_epi8(q);
      if (k + kLanes <= group)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + c0 + k), q8);
      else
        _mm_mask_storeu_epi8(dst + c0 + k, lane_mask(group - k), q8);
    }
  }
  return true;
}

/// Scratch of one transposed tile (kept out of the per-group function's frame).
struct TransposeScratch {
  alignas(64) __m512 strip[256];
  alignas(64) __m128i tile[256];
};

/// Writes transposed row j's `count` mantissas: as bytes, or nibble-packed in place.
template <class V>
GSQ_ALWAYS_INLINE void store_tile_row(std::int8_t* bytes_out, std::int8_t* packed_out, V v,
                                      std::int64_t count) noexcept {
  if (packed_out != nullptr) {
    store_packed(packed_out, v, count);
  } else if constexpr (sizeof(V) == 64) {
    _mm512_mask_storeu_epi8(bytes_out, byte_mask(count), v);
  } else if constexpr (sizeof(V) == 32) {
    _mm256_mask_storeu_epi8(bytes_out, static_cast<__mmask32>(byte_mask(count)), v);
  } else {
    _mm_mask_storeu_epi8(bytes_out, static_cast<__mmask16>(byte_mask(count)), v);
  }
}

/// Group g of the 16 output rows [j0, j0 + jn) of a transposed quantization (source
/// columns). The G source row segments (16 floats, one cache line each) are read once
/// into `strip`; their vertical max gives 16 exponents; source row i's 16 mantissas are
/// byte row i of a G × 16 tile. Transposing it 16×16 block by block — four blocks per
/// zmm, two per ymm, in registers — gives output row j's G bytes. Output: `staging` rows
/// (pitch padded_cols) if given, else the GseMatrix (nibble-packed in place when packed,
/// which needs an even G).
inline bool quantize_tile_group(const GseQuantParams& p, std::int64_t j0, std::int64_t jn,
                                std::int64_t g, std::int8_t* staging, const PhiloxKeys16& keys,
                                TransposeScratch& scratch) noexcept {
  const int group = p.group;
  const int blocks = (group + 15) / 16;
  const __mmask16 cmask = lane_mask(jn);
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const std::int64_t i0 = g * group;  // first source row of the group
  const std::int64_t n = std::min<std::int64_t>(group, p.cols - i0);
  const float* src = p.src + i0 * p.src_stride + j0;
  __m512* strip = scratch.strip;
  __m128i* tile = scratch.tile;
  __m512i acc = _mm512_setzero_si512();
  for (std::int64_t i = 0; i < n; ++i) {
    const __m512 v = _mm512_maskz_loadu_ps(cmask, src + i * p.src_stride);
    strip[i] = v;
    acc = _mm512_max_epu32(acc, _mm512_and_si512(_mm512_castps_si512(v), abs_mask));
  }
  if (_mm512_cmpge_epu32_mask(acc, _mm512_set1_epi32(0x7F800000)) != 0) return false;
  const __m512i e = group_exponents16(acc, p.bits, p.exp_min, p.exp_max);
  alignas(16) std::int8_t e8[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(e8), _mm512_cvtepi32_epi8(e));
  for (std::int64_t j = 0; j < jn; ++j) p.exponents[(j0 + j) * p.groups + g] = e8[j];
  const __m512 neg_e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_setzero_si512(), e));
  const __m512 qmax = _mm512_set1_ps(static_cast<float>((1 << (p.bits - 1)) - 1));
  for (std::int64_t i = 0; i < 16 * blocks; ++i) {
    if (i >= n) {
      tile[i] = _mm_setzero_si128();
      continue;
    }
    const __m512 scaled = _mm512_scalef_ps(strip[i], neg_e);
    __m512 u = _mm512_setzero_ps();
    if (p.stochastic)
      u = philox_uniform16(keys, p.stream, static_cast<std::uint64_t>((i0 + i) * p.src_cols + j0));
    tile[i] = _mm512_cvtepi32_epi8(round_clamp16(scaled, p.stochastic, u, qmax));
  }
  const std::int64_t padded_cols = p.groups * group;
  const bool pack_in_place = staging == nullptr && p.staging != nullptr;  // nibbles, even G
  std::int8_t* bytes_out[16];
  std::int8_t* packed_out[16];
  for (std::int64_t j = 0; j < jn; ++j) {
    bytes_out[j] = pack_in_place ? nullptr
                                 : (staging != nullptr ? staging + j * padded_cols + i0
                                                       : p.mantissas + (j0 + j) * p.row_bytes + i0);
    packed_out[j] = pack_in_place ? p.mantissas + (j0 + j) * p.row_bytes + i0 / 2 : nullptr;
  }
  for (int b = 0; b < blocks;) {
    const int c = 16 * b;  // first column of the chunk within the group
    if (blocks - b >= 4) {
      __m512i rows[16];
      for (int r = 0; r < 16; ++r) {
        __m512i v = _mm512_castsi128_si512(tile[c + r]);
        v = _mm512_inserti32x4(v, tile[c + 16 + r], 1);
        v = _mm512_inserti32x4(v, tile[c + 32 + r], 2);
        rows[r] = _mm512_inserti32x4(v, tile[c + 48 + r], 3);
      }
      transpose16x16(rows);
      for (std::int64_t j = 0; j < jn; ++j)
        store_tile_row(bytes_out[j] ? bytes_out[j] + c : nullptr,
                       packed_out[j] ? packed_out[j] + c / 2 : nullptr, rows[j],
                       std::min(64, group - c));
      b += 4;
    } else if (blocks - b >= 2) {
      __m256i rows[16];
      for (int r = 0; r < 16; ++r)
        rows[r] = _mm256_inserti128_si256(_mm256_castsi128_si256(tile[c + r]), tile[c + 16 + r], 1);
      transpose16x16(rows);
      for (std::int64_t j = 0; j < jn; ++j)
        store_tile_row(bytes_out[j] ? bytes_out[j] + c : nullptr,
                       packed_out[j] ? packed_out[j] + c / 2 : nullptr, rows[j],
                       std::min(32, group - c));
      b += 2;
    } else {
      __m128i rows[16];
      for (int r = 0; r < 16; ++r) rows[r] = tile[c + r];
      transpose16x16(rows);
      for (std::int64_t j = 0; j < jn; ++j)
        store_tile_row(bytes_out[j] ? bytes_out[j] + c : nullptr,
                       packed_out[j] ? packed_out[j] + c / 2 : nullptr, rows[j],
                       std::min(16, group - c));
      b += 1;
    }
  }
  return true;
}

/// Transposed output rows [r0, r1) (r0 a multiple of kGseTileRows). Groups are the
/// outer loop: the G source rows of a group are streamed left to right across all the
/// tiles of the range, and each output row receives its G bytes in ascending order.
/// Nibble formats with an odd G (groups straddle bytes) and 6-bit formats go tile by
/// tile through the staging rows instead, and are packed once a tile's rows are complete.
inline bool quantize_transposed(const GseQuantParams& p, std::int64_t r0, std::int64_t r1,
                                const PhiloxKeys16& keys) noexcept {
  TransposeScratch scratch;
  const bool packed = p.staging != nullptr;
  if (!packed || (p.code_bits == 4 && p.group % 2 == 0)) {
    for (std::int64_t g = 0; g < p.groups; ++g)
      for (std::int64_t j0 = r0; j0 < r1; j0 += kGseTileRows)
        if (!quantize_tile_group(p, j0, std::min<std::int64_t>(kLanes, r1 - j0), g, nullptr, keys,
                                 scratch))
          return false;
    return true;
  }
  const std::int64_t padded_cols = p.groups * p.group;
  for (std::int64_t j0 = r0; j0 < r1; j0 += kGseTileRows) {
    const std::int64_t jn = std::min<std::int64_t>(kLanes, r1 - j0);
    for (std::int64_t g = 0; g < p.groups; ++g)
      if (!quantize_tile_group(p, j0, jn, g, p.staging, keys, scratch)) return false;
    for (std::int64_t j = 0; j < jn; ++j)
      pack_codes(p.staging + j * padded_cols, padded_cols, p.code_bits, p.mantissas + (j0 + j) * p.row_bytes);
  }
  return true;
}

/// Quantizes output rows [r0, r1); false if the source holds a non-finite value there.
/// Transposed calls need r0 to be a multiple of kGseTileRows.
inline bool quantize_gse_rows(const GseQuantParams& p, std::int64_t r0, std::int64_t r1) noexcept {
  PhiloxKeys16 keys;
  if (p.stochastic) philox_keys16(p.seed, keys);
  if (p.transpose) return quantize_transposed(p, r0, r1, keys);
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

/// 16 floats of output row c0 + c (columns j0 .. j0 + jn) from transposed tile row c.
GSQ_ALWAYS_INLINE void store_column(const GseDequantParams& p, std::int64_t c, std::int64_t j0,
                                    __mmask16 cmask, __m128i q, __m512 scale) noexcept {
  const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  _mm512_mask_storeu_ps(p.dst + c * p.dst_stride + j0, cmask, _mm512_mul_ps(v, scale));
}

/// Group g of GseMatrix rows [j0, j0 + jn), transposed into output rows c0 .. c0 + G,
/// columns j0 .. j0 + jn. The rows' G mantissas are loaded straight into registers as a
/// 16 × G byte tile (four 16×16 blocks per zmm, two per ymm); transposing the blocks
/// gives, in register row r, block k, the 16 mantissas of column 16k + r: 16 contiguous
/// floats of that output row. Mantissas come from `unpacked` rows (pitch padded_cols) if
/// given, else from the GseMatrix (nibbles unpacked on the fly, which needs an even G).
inline void dequantize_tile_group(const GseDequantParams& p, std::int64_t j0, std::int64_t jn,
                                  std::int64_t g, const std::int8_t* unpacked) noexcept {
  const int group = p.group;
  const int blocks = (group + 15) / 16;
  const std::int64_t padded_cols = p.groups * group;
  const std::int64_t c0 = g * group;
  const std::int64_t n = std::min<std::int64_t>(group, p.cols - c0);
  alignas(64) std::int32_t e32[16];
  for (int j = 0; j < kLanes; ++j) e32[j] = j < jn ? p.exponents[(j0 + j) * p.groups + g] : 0;
  const __m512 scale =
      _mm512_scalef_ps(_mm512_set1_ps(1.0f), _mm512_cvtepi32_ps(_mm512_load_si512(e32)));
  const __mmask16 cmask = lane_mask(jn);
  const std::int8_t* rows_src[16];
  for (std::int64_t j = 0; j < jn; ++j)
    rows_src[j] =
        unpacked != nullptr ? unpacked + j * padded_cols : p.mantissas + (j0 + j) * p.row_bytes;
  const bool nibbles = unpacked == nullptr && p.packed;
  for (int b = 0; b < blocks;) {
    const int c = 16 * b;  // first column of the chunk within the group
    const int width = blocks - b >= 4 ? 64 : (blocks - b >= 2 ? 32 : 16);
    const std::int64_t count = std::min(width, group - c);
    __m512i rows512[16];
    for (int j = 0; j < 16; ++j) {
      if (j >= jn) {
        rows512[j] = _mm512_setzero_si512();
      } else if (nibbles) {
        rows512[j] = load_unpacked(rows_src[j] + (c0 + c) / 2, count);
      } else {
        rows512[j] = _mm512_maskz_loadu_epi8(byte_mask(count), rows_src[j] + c0 + c);
      }
    }
    if (width == 64) {
      transpose16x16(rows512);
      for (int r = 0; r < 16; ++r) {
        if (c + r < n)
          store_column(p, c0 + c + r, j0, cmask, _mm512_castsi512_si128(rows512[r]), scale);
        if (c + 16 + r < n)
          store_column(p, c0 + c + 16 + r, j0, cmask, _mm512_extracti32x4_epi32(rows512[r], 1),
                       scale);
        if (c + 32 + r < n)
          store_column(p, c0 + c + 32 + r, j0, cmask, _mm512_extracti32x4_epi32(rows512[r], 2),
                       scale);
        if (c + 48 + r < n)
          store_column(p, c0 + c + 48 + r, j0, cmask, _mm512_extracti32x4_epi32(rows512[r], 3),
                       scale);
      }
      b += 4;
    } else if (width == 32) {
      __m256i rows[16];
      for (int j = 0; j < 16; ++j) rows[j] = _mm512_castsi512_si256(rows512[j]);
      transpose16x16(rows);
      for (int r = 0; r < 16; ++r) {
        if (c + r < n)
          store_column(p, c0 + c + r, j0, cmask, _mm256_castsi256_si128(rows[r]), scale);
        if (c + 16 + r < n)
          store_column(p, c0 + c + 16 + r, j0, cmask, _mm256_extracti128_si256(rows[r], 1), scale);
      }
      b += 2;
    } else {
      __m128i rows[16];
      for (int j = 0; j < 16; ++j) rows[j] = _mm512_castsi512_si128(rows512[j]);
      transpose16x16(rows);
      for (int r = 0; r < 16; ++r)
        if (c + r < n) store_column(p, c0 + c + r, j0, cmask, rows[r], scale);
      b += 1;
    }
  }
}

/// Dequantizes GseMatrix rows [r0, r1) (transposed: r0 a multiple of kGseTileRows).
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
        const __m512 s = _mm512_set1_ps(pow2f(exps[g]));
        for (std::int64_t k = 0; k < n; k += kLanes) {
          const __mmask16 mask = lane_mask(n - k);
          const __m128i q = _mm_maskz_loadu_epi8(mask, m + c0 + k);
          const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
          _mm512_mask_storeu_ps(dst + c0 + k, mask, _mm512_mul_ps(v, s));
        }
      }
    }
    return;
  }
  // Transposed: tile by tile (16 GseMatrix rows), groups in order. Each tile reads its
  // rows front to back; the output is written 64 bytes per row. (Groups as the outer
  // loop made the writes sequential per output row but measured slower.) Nibble rows
  // with an odd G straddle bytes per group, and 6-bit rows always may, so they are
  // unpacked whole first.
  const bool unpack_rows = p.packed && (p.code_bits != 4 || group % 2 != 0);
  for (std::int64_t j0 = r0; j0 < r1; j0 += kGseTileRows) {
    const std::int64_t jn = std::min<std::int64_t>(kLanes, r1 - j0);
    if (unpack_rows) {
      for (std::int64_t j = 0; j < jn; ++j)
        unpack_codes(p.mantissas + (j0 + j) * p.row_bytes, padded_cols, p.code_bits,
                     p.staging + j * padded_cols);
    }
    for (std::int64_t g = 0; g < p.groups; ++g)
      dequantize_tile_group(p, j0, jn, g, unpack_rows ? p.staging : nullptr);
  }
}

}  // namespace quant::kernels::avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
