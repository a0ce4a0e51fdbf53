// gsq/gemm/kernels/avx512_vnni_pack.hpp — AVX-512 packing: stored operands → panels.
//
// Produces exactly the bytes of the portable packers in gemm/pack.hpp (same layout, same
// regrouping arithmetic), only faster. Two shapes of work:
//   * horizontal (k runs along stored rows: A, B as stored, NF4 forward): 16 rows × 16
//     quads are loaded and transposed as a 16 × 16 matrix of 4-byte quads; NF4 rows are
//     first decoded and re-encoded per group into an int8 staging tile;
//   * vertical (k runs down stored columns: NF4 and GSE-INT transposed): 16 columns are
//     one vector, a k-group is G vectors, the group's amax is an elementwise max, and
//     four consecutive k rows are merged into the [column][4] quads with shifts.
// Re-encoding (DESIGN.md GSE-INT): e = getexp(amax) − (b − 2) clamped, amax = 0 → e_min,
// m = clamp(rint(x · 2^−e)) with vscalefps (exact) and round-half-even conversion:
// the same numbers as std::ilogb / ldexp / nearbyint in the portable code.
// Group sizes that are not a multiple of 4 use the portable packers.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "gsq/core/target.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/gemm/pack.hpp"
#include "gsq/quant/kernels/gse_avx512.hpp"

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::avx512_vnni {

namespace pack_detail {

/// Mask of the first `n` (0..64) bytes.
GSQ_ALWAYS_INLINE __mmask64 byte_mask(std::int64_t n) noexcept {
  if (n >= 64) return ~__mmask64{0};
  if (n <= 0) return 0;
  return (__mmask64{1} << n) - 1;
}
GSQ_ALWAYS_INLINE __mmask32 byte_mask32(std::int64_t n) noexcept {
  if (n >= 32) return ~__mmask32{0};
  if (n <= 0) return 0;
  return static_cast<__mmask32>((1ull << n) - 1);
}
GSQ_ALWAYS_INLINE __mmask16 lane_mask(std::int64_t n) noexcept {
  if (n >= 16) return 0xFFFF;
  if (n <= 0) return 0;
  return static_cast<__mmask16>((1u << n) - 1u);
}

/// 64 mantissas (int8) starting at element `c` of a stored row of `code_bits` fields:
/// bytes directly (8), 6-bit fields (c a multiple of 4), or two nibbles per byte (low
/// first, sign-extended; c even). `avail` counts the elements that may be read; the rest
/// are zero.
GSQ_ALWAYS_INLINE __m512i load_mantissas64(const std::int8_t* row, int code_bits, std::int64_t c,
                                           std::int64_t avail) noexcept {
  if (code_bits == 8) return _mm512_maskz_loadu_epi8(byte_mask(avail), row + c);
  if (code_bits == 6) return quant::kernels::avx512::load_sixes64(row + c / 4 * 3, avail);
  const __m256i packed = _mm256_maskz_loadu_epi8(byte_mask32((avail + 1) / 2), row + c / 2);
  const __m512i w = _mm512_cvtepu8_epi16(packed);  // byte i → word i
  const __m512i lo = _mm512_and_si512(w, _mm512_set1_epi16(0x0F));
  const __m512i hi = _mm512_and_si512(_mm512_slli_epi16(w, 4), _mm512_set1_epi16(0x0F00));
  const __m512i codes = _mm512_or_si512(lo, hi);  // bytes: lo0 hi0 lo1 hi1 ...
  const __m512i eight = _mm512_set1_epi8(8);
  return _mm512_sub_epi8(_mm512_xor_si512(codes, eight), eight);  // sign-extend 4 → 8 bits
}

/// In-place transpose of a 16 × 16 matrix of 32-bit elements (r[i] = row i).
GSQ_ALWAYS_INLINE void transpose16x16(__m512i r[16]) noexcept {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4b + c] now holds, in 128-bit lane L, element 4L + c of rows 4b..4b+3.
  for (int c = 0; c < 4; ++c) {
    const __m512i v0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44);
    const __m512i v1 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);       // column c
    t[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);   // column 4 + c
    t[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);   // column 8 + c
    t[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);  // column 12 + c
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

/// GSE-INT exponents of 16 groups from their amax: ilogb(amax) − (b − 2), clamped;
/// amax = 0 gives e_min.
GSQ_ALWAYS_INLINE __m512i group_exponents(__m512 amax, int bits, int exp_min, int exp_max) noexcept {
  const __m512i e = _mm512_sub_epi32(_mm512_cvttps_epi32(_mm512_getexp_ps(amax)),
                                     _mm512_set1_epi32(bits - 2));
  const __m512i clamped = _mm512_min_epi32(_mm512_max_epi32(e, _mm512_set1_epi32(exp_min)),
                                           _mm512_set1_epi32(exp_max));
  const __mmask16 zero = _mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_EQ_OQ);
  return _mm512_mask_mov_epi32(clamped, zero, _mm512_set1_epi32(exp_min));
}

/// Mantissas of 16 values under per-lane exponents: clamp(rint(x · 2^−e), ±qmax).
/// With 8-bit exponents |x·2^−e| < 2^(b−1) (the exponent is never clamped from above),
/// so `float_clamp` may be false and the clamp is done on bytes after packing.
GSQ_ALWAYS_INLINE __m512i encode16(__m512 x, __m512 neg_e, __m512 qmax, bool float_clamp) noexcept {
  __m512 scaled = _mm512_scalef_ps(x, neg_e);
  if (float_clamp)
    scaled = _mm512_min_ps(_mm512_max_ps(scaled, _mm512_sub_ps(_mm512_setzero_ps(), qmax)), qmax);
  return _mm512_cvt_roundps_epi32(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/// NF4 indices of codes k .. k+15 of a code row (k even), lane i = code k + i. Only the
/// low 4 bits of each lane are meaningful (vpermps ignores the rest).
/// `avail` bounds the code bytes read (codes past it decode as code 0).
GSQ_ALWAYS_INLINE __m512i nf4_index16(const std::uint8_t* codes, std::int64_t k,
                                      std::int64_t avail = 8) noexcept {
  const __m512i q = _mm512_castsi128_si512(
      _mm_maskz_loadu_epi8(static_cast<__mmask16>(lane_mask(std::min<std::int64_t>(avail, 8))), codes + k / 2));
  const __m512i dw = _mm512_permutexvar_epi32(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0), q);
  return _mm512_srlv_epi32(dw, _mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0));
}

/// The same 16 codes in the lane order 0, 8, 1, 9, ..., 7, 15 (lane 2i = code k + i,
/// lane 2i + 1 = code k + 8 + i): one broadcast and one shift. For rows that are
/// transposed afterwards, where the order only decides which k row a vector lands in.
GSQ_ALWAYS_INLINE __m512i nf4_index16_interleaved(const std::uint8_t* codes, std::int64_t k) noexcept {
  std::int64_t raw;
  std::memcpy(&raw, codes + k / 2, sizeof raw);
  return _mm512_srlv_epi32(_mm512_set1_epi64(raw),
                           _mm512_set_epi32(28, 28, 24, 24, 20, 20, 16, 16, 12, 12, 8, 8, 4, 4, 0, 0));
}

/// The k offset (within a 16-chunk) of lane L of nf4_index16_interleaved.
constexpr int interleaved_k(int lane) noexcept { return lane % 2 == 0 ? lane / 2 : 8 + lane / 2; }

/// The NF4 codebook scaled by one block's absmax: entry c = codebook[c] · absmax, the
/// same single rounding as decoding element by element.
GSQ_ALWAYS_INLINE __m512 nf4_scaled_book(float absmax) noexcept {
  return _mm512_mul_ps(_mm512_loadu_ps(kNf4Codebook.data()), _mm512_set1_ps(absmax));
}

/// Encodes one k-group of 16 columns held as `rows_in` decoded float vectors at `xg`
/// (row i at xg + 16·i) with `amax` their elementwise max magnitude: writes the quads
/// of slab j, its correction and its exponents into record `rec`. Four k rows merge into
/// one quad per column with two saturating packs and a byte shuffle (values are already
/// clamped to ±qmax, so saturation never triggers).
GSQ_ALWAYS_INLINE void encode_vertical(const float* xg, std::int64_t rows_in, __m512 amax,
                                       __mmask16 cols_ok, const BSourceView& s,
                                       const PanelGeometry& geo, int j, std::int8_t* rec) noexcept {
  const __m512i ev = group_exponents(amax, s.bits, s.exp_min, s.exp_max);
  const __m512 neg_e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_setzero_si512(), ev));
  const __m512 qmax = _mm512_set1_ps(static_cast<float>((1 << (s.bits - 1)) - 1));
  const __m512i order = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  const __m512i u128 = _mm512_set1_epi8(static_cast<char>(0x80));
  const bool float_clamp = s.exp_max < 127;
  const __m512i qmax8 = _mm512_set1_epi8(static_cast<char>((1 << (s.bits - 1)) - 1));
  const __m512i qmin8 = _mm512_set1_epi8(static_cast<char>(1 - (1 << (s.bits - 1))));
  __m512i sum = _mm512_setzero_si512();
  for (int q = 0; q < geo.quads; ++q) {
    __m512i m[4];
    for (int b = 0; b < 4; ++b) {
      const std::int64_t i = q * 4 + b;
      m[b] = i < rows_in ? encode16(_mm512_load_ps(xg + i * 16), neg_e, qmax, float_clamp)
                         : _mm512_setzero_si512();
    }
    // Saturating packs keep every value in int8; the byte clamp gives ±qmax.
    __m512i bytes = _mm512_packs_epi16(_mm512_packs_epi32(m[0], m[1]), _mm512_packs_epi32(m[2], m[3]));
    if (!float_clamp) bytes = _mm512_min_epi8(_mm512_max_epi8(bytes, qmin8), qmax8);
    const __m512i quad = _mm512_shuffle_epi8(bytes, order);
    _mm512_store_si512(reinterpret_cast<void*>(rec + q * geo.nr * 4 + j * 64), quad);
    sum = _mm512_dpbusd_epi32(sum, u128, quad);
  }
  _mm512_store_si512(reinterpret_cast<void*>(rec + geo.b_data_bytes() + j * 64),
                     _mm512_sub_epi32(_mm512_setzero_si512(), sum));
  _mm512_store_ps(reinterpret_cast<float*>(rec + geo.b_data_bytes() + geo.nr * 4) + j * 16,
                  _mm512_maskz_mov_ps(cols_ok, _mm512_cvtepi32_ps(ev)));
}

/// Packs 16 horizontal source rows (rows `base + i·stride` for i < `valid`, zero beyond;
/// k-contiguous int8 or nibbles, from element `c0`, `avail` elements readable per row)
/// into the data part of the records for slab `j` (columns 16j..16j+15 of the panel).
/// Writes quads [0, total_quads) of the block; G % 4 == 0.
GSQ_ALWAYS_INLINE void transpose_slab(const std::int8_t* base, std::int64_t stride, int valid,
                                      int code_bits, std::int64_t c0, std::int64_t avail,
                                      std::int64_t total_quads, const PanelGeometry& geo, int j,
                                      std::int8_t* out) noexcept {
  const std::int64_t rec = geo.b_record_bytes();
  const std::int64_t quad_step = std::int64_t{geo.nr} * 4;
  // The destination of quad q0 + i, walked incrementally (no division per store).
  std::int8_t* group_base = out + j * 64;
  int q_in_group = 0;
  for (std::int64_t q0 = 0; q0 < total_quads; q0 += 16) {
    __m512i r[16];
    const std::int64_t left = avail - q0 * 4;
    const std::int8_t* p = base + gse_code_bytes(code_bits, c0 + q0 * 4);  // c0 + 4·q0: whole fields
    if (code_bits == 8) {
      const __mmask64 mask = byte_mask(left);
      for (int i = 0; i < 16; ++i)
        r[i] = i < valid ? _mm512_maskz_loadu_epi8(mask, p + i * stride) : _mm512_setzero_si512();
    } else {
      for (int i = 0; i < 16; ++i)
        r[i] = i < valid ? load_mantissas64(p + i * stride, code_bits, 0, left) : _mm512_setzero_si512();
    }
    transpose16x16(r);
    const std::int64_t nq = std::min<std::int64_t>(16, total_quads - q0);
    for (int i = 0; i < nq; ++i) {
      _mm512_store_si512(reinterpret_cast<void*>(group_base + q_in_group * quad_step), r[i]);
      if (++q_in_group == geo.quads) {
        q_in_group = 0;
        group_base += rec;
      }
    }
  }
}

/// Copies the exponents of 16 stored rows (base + i·stride, i < valid; zero beyond) for
/// `groups` groups into the records' exponent rows, slab j: 16 groups at a time as a
/// 16 × 16 transpose of floats.
GSQ_ALWAYS_INLINE void copy_exponents(const std::int8_t* base, std::int64_t stride, int valid,
                                      std::int64_t groups, const PanelGeometry& geo, int j,
                                      std::int8_t* out) noexcept {
  const std::int64_t rec = geo.b_record_bytes();
  float* first = reinterpret_cast<float*>(out + geo.b_data_bytes() + geo.nr * 4) + j * 16;
  for (std::int64_t g0 = 0; g0 < groups; g0 += 16) {
    const __mmask16 m = lane_mask(groups - g0);
    __m512i e[16];
    for (int i = 0; i < 16; ++i)
      e[i] = i < valid ? _mm512_castps_si512(_mm512_cvtepi32_ps(
                             _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, base + i * stride + g0))))
                       : _mm512_setzero_si512();
    transpose16x16(e);  // e[g]: group g0 + g of the 16 rows
    const std::int64_t ng = std::min<std::int64_t>(16, groups - g0);
    for (int g = 0; g < ng; ++g)
      _mm512_store_si512(reinterpret_cast<void*>(reinterpret_cast<std::int8_t*>(first) + (g0 + g) * rec), e[g]);
  }
}

/// The correction −128·Σb of every record and slab, from the packed data.
GSQ_ALWAYS_INLINE void write_corrections(const PanelGeometry& geo, std::int64_t groups,
                                         std::int8_t* out) noexcept {
  const __m512i u128 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (std::int64_t g = 0; g < groups; ++g) {
    std::int8_t* rec = out + g * geo.b_record_bytes();
    for (int j = 0; j < geo.nr / 16; ++j) {
      __m512i sum = _mm512_setzero_si512();
      for (int q = 0; q < geo.quads; ++q)
        sum = _mm512_dpbusd_epi32(sum, u128,
                                  _mm512_load_si512(reinterpret_cast<const void*>(rec + q * geo.nr * 4 + j * 64)));
      _mm512_store_si512(reinterpret_cast<void*>(rec + geo.b_data_bytes() + j * 64),
                         _mm512_sub_epi32(_mm512_setzero_si512(), sum));
    }
  }
}

/// The exponent row of a B record.
GSQ_ALWAYS_INLINE float* exps_of(std::int8_t* rec, const PanelGeometry& geo) noexcept {
  return reinterpret_cast<float*>(rec + geo.b_data_bytes() + geo.nr * 4);
}

}  // namespace pack_detail

/// Packs tiles [t0, t1) of A (see pack_a_reference).
inline void pack_a(const GseMatrix& a, const PanelGeometry& geo, std::int64_t t0, std::int64_t t1,
                   std::uint8_t* out, float* out_exp) noexcept {
  using namespace pack_detail;
  if (geo.group % 4 != 0 || geo.mr % 4 != 0) {
    pack_a_reference(a, geo, t0, t1, out, out_exp);
    return;
  }
  const int code_bits = a.spec().code_bits();
  const std::int64_t total_quads = geo.groups * geo.quads;
  const std::int64_t avail = a.padded_cols();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (std::int64_t t = t0; t < t1; ++t) {
    std::uint8_t* tile = out + (t - t0) * geo.a_tile_bytes();
    float* texp = out_exp + (t - t0) * geo.a_tile_exps();
    for (int r = 0; r < geo.mr; ++r) {
      const std::int64_t row = t * geo.mr + r;
      const bool valid = row < a.rows();
      for (std::int64_t g = 0; g < geo.groups; ++g)
        texp[g * geo.mr + r] = valid ? static_cast<float>(a.exponent_row(row)[g]) : 0.0f;
    }
    for (int r4 = 0; r4 < geo.mr; r4 += 4) {
      const std::int8_t* rows[4];
      for (int i = 0; i < 4; ++i) {
        const std::int64_t row = t * geo.mr + r4 + i;
        rows[i] = row < a.rows() ? a.mantissa_row(row) : nullptr;
      }
      for (std::int64_t q0 = 0; q0 < total_quads; q0 += 16) {
        __m512i v[4];
        for (int i = 0; i < 4; ++i)
          v[i] = _mm512_xor_si512(
              rows[i] ? load_mantissas64(rows[i], code_bits, q0 * 4, avail - q0 * 4) : _mm512_setzero_si512(),
              flip);
        // Interleave the four rows quad by quad (see transpose16x16 for the scheme).
        const __m512i t0v = _mm512_unpacklo_epi32(v[0], v[1]);
        const __m512i t1v = _mm512_unpackhi_epi32(v[0], v[1]);
        const __m512i t2v = _mm512_unpacklo_epi32(v[2], v[3]);
        const __m512i t3v = _mm512_unpackhi_epi32(v[2], v[3]);
        const __m512i u0 = _mm512_unpacklo_epi64(t0v, t2v);
        const __m512i u1 = _mm512_unpackhi_epi64(t0v, t2v);
        const __m512i u2 = _mm512_unpacklo_epi64(t1v, t3v);
        const __m512i u3 = _mm512_unpackhi_epi64(t1v, t3v);
        const __m512i w0 = _mm512_shuffle_i32x4(u0, u1, 0x44);
        const __m512i w1 = _mm512_shuffle_i32x4(u0, u1, 0xEE);
        const __m512i w2 = _mm512_shuffle_i32x4(u2, u3, 0x44);
        const __m512i w3 = _mm512_shuffle_i32x4(u2, u3, 0xEE);
        const __m512i o[4] = {_mm512_shuffle_i32x4(w0, w2, 0x88), _mm512_shuffle_i32x4(w0, w2, 0xDD),
                              _mm512_shuffle_i32x4(w1, w3, 0x88), _mm512_shuffle_i32x4(w1, w3, 0xDD)};
        // o[c] holds quads q0+4c .. q0+4c+3, each as 16 bytes (4 rows × 4).
        const std::int64_t nq = std::min<std::int64_t>(16, total_quads - q0);
        if (geo.mr == 4 && nq == 16) {
          for (int c = 0; c < 4; ++c)
            _mm512_storeu_si512(reinterpret_cast<void*>(tile + (q0 + 4 * c) * 16), o[c]);
          continue;
        }
        // Other tile heights: each quad's 16 bytes go to their own place (stride MR·4).
        std::uint8_t* dst = tile + q0 * geo.mr * 4 + r4 * 4;
        const std::int64_t stride = std::int64_t{geo.mr} * 4;
        for (int c = 0; c < 4 && 4 * c < nq; ++c) {
          std::uint8_t* d = dst + 4 * c * stride;
          const std::int64_t left = nq - 4 * c;
          _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm512_castsi512_si128(o[c]));
          if (left > 1) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + stride), _mm512_extracti32x4_epi32(o[c], 1));
          if (left > 2) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * stride), _mm512_extracti32x4_epi32(o[c], 2));
          if (left > 3) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 3 * stride), _mm512_extracti32x4_epi32(o[c], 3));
        }
      }
    }
  }
}

/// Packs groups [g0, g1) of the B panel at column n0 (see pack_b_reference).
inline void pack_b(const BSourceView& s, const PanelGeometry& geo, std::int64_t n0, std::int64_t g0,
                   std::int64_t g1, std::int8_t* out, float* scratch) noexcept {
  using namespace pack_detail;
  if (geo.group % 4 != 0) {
    pack_b_reference(s, geo, n0, g0, g1, out, scratch);
    return;
  }
  const std::int64_t groups = g1 - g0;
  const std::int64_t rec = geo.b_record_bytes();
  const std::int64_t k0 = g0 * geo.group;
  const int slabs = geo.nr / 16;

  if (s.kind == BSourceView::Kind::kGse) {
    // As stored: transpose 16 rows × 16 quads at a time; exponents copied.
    for (int j = 0; j < slabs; ++j) {
      const std::int64_t nj = n0 + j * 16;
      const int valid = static_cast<int>(std::clamp<std::int64_t>(s.rows - nj, 0, 16));
      const std::int8_t* rows = valid > 0 ? s.mant + nj * s.mant_stride : s.mant;
      const std::int8_t* exps = valid > 0 ? s.exps + nj * s.exp_stride + g0 : s.exps;
      copy_exponents(exps, s.exp_stride, valid, groups, geo, j, out);
      transpose_slab(rows, s.mant_stride, valid, gse_code_bits(s.src_bits), k0, groups * geo.group,
                     groups * geo.quads, geo, j, out);
    }
    write_corrections(geo, groups, out);
    return;
  }

  const __m512 sign_off = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  float* xg = scratch;

  if (s.kind == BSourceView::Kind::kNf4 && 128 % geo.group == 0) {
    // NF4 rows, G | 128: transpose the *codes* of 16 rows × 128 k (16 × 64 bytes, as a
    // 16 × 16 matrix of 4-byte words); then the codes of one k for the 16 rows are one
    // shift away, and decoding is a vpermps and a multiply by the rows' block scales.
    const __m512 book = _mm512_loadu_ps(kNf4Codebook.data());
    const std::int64_t k_end = std::min(g1 * geo.group, s.cols);
    for (int j = 0; j < slabs; ++j) {
      const std::int64_t nj = n0 + j * 16;
      const __mmask16 cols_ok = lane_mask(s.rows - nj);
      for (std::int64_t c0 = k0; c0 < k_end; c0 += 128) {
        __m512i v[16];
        alignas(64) float am[2][16];
        for (int i = 0; i < 16; ++i) {
          const std::int64_t n = nj + i;
          const bool valid = n < s.rows;
          const std::int64_t avail = valid ? s.code_stride - c0 / 2 : 0;  // stay in the row
          v[i] = _mm512_maskz_loadu_epi8(byte_mask(avail), valid ? s.codes + n * s.code_stride + c0 / 2 : s.codes);
          for (int b = 0; b < 2; ++b) {
            const std::int64_t blk = c0 / kNf4Block + b;
            am[b][i] = valid && blk < s.absmax_stride ? s.absmax[n * s.absmax_stride + blk] : 0.0f;
          }
        }
        transpose16x16(v);  // v[w]: code bytes 4w .. 4w+3 (k = c0 + 8w .. +7) of 16 rows
        const __m512 scale[2] = {_mm512_load_ps(am[0]), _mm512_load_ps(am[1])};
        const std::int64_t c1 = std::min<std::int64_t>(c0 + 128, k_end);
        for (std::int64_t kg = c0; kg < c1; kg += geo.group) {
          const std::int64_t rows_in = std::min<std::int64_t>(geo.group, k_end - kg);
          __m512 amax = _mm512_setzero_ps();
          for (std::int64_t i = 0; i < rows_in; ++i) {
            const std::int64_t kk = kg + i - c0;  // 0..127
            const __m512i idx = _mm512_srlv_epi32(v[kk / 8], _mm512_set1_epi32(static_cast<int>(4 * (kk % 8))));
            const __m512 x = _mm512_mul_ps(_mm512_permutexvar_ps(idx, book), scale[kk / kNf4Block]);
            _mm512_store_ps(xg + i * 16, x);
            amax = _mm512_max_ps(amax, _mm512_and_ps(x, sign_off));
          }
          encode_vertical(xg, rows_in, amax, cols_ok, s, geo, j, out + ((kg - k0) / geo.group) * rec);
        }
      }
    }
    return;
  }

  // Regrouping: decode one k-group of 16 columns into xg ([G][16] floats, k-major), then
  // encode it vertically.
  for (std::int64_t g = 0; g < groups; ++g) {
    std::int8_t* r = out + g * rec;
    const std::int64_t kg = k0 + g * geo.group;
    const std::int64_t rows_in = std::min<std::int64_t>(geo.group, s.cols - kg);
    for (int j = 0; j < slabs; ++j) {
      const std::int64_t nj = n0 + j * 16;
      const __mmask16 cols_ok = lane_mask(s.rows - nj);
      __m512 amax = _mm512_setzero_ps();
      if (nj >= s.rows) {
        // A slab wholly past N (last panel): zeros, and no reads past the stored tensor.
        std::memset(xg, 0, static_cast<std::size_t>(rows_in) * 16 * sizeof(float));
      } else if (s.kind == BSourceView::Kind::kNf4) {
        // B's rows are NF4 rows: decode 16 rows × 16 k, transpose to k-major. Each row's
        // block codebook is scaled once per chunk (two when the chunk crosses a block).
        for (std::int64_t kk = 0; kk < rows_in; kk += 16) {
          const std::int64_t k = kg + kk;
          const std::int64_t blk = k / kNf4Block;
          const std::int64_t split = (blk + 1) * kNf4Block - k;  // lanes in block blk
          __m512i v[16];
          for (int i = 0; i < 16; ++i) {
            const std::int64_t n = nj + i;
            if (n >= s.rows) {
              v[i] = _mm512_setzero_si512();
              continue;
            }
            const float* am = s.absmax + n * s.absmax_stride;
            const std::uint8_t* codes = s.codes + n * s.code_stride;
            __m512 x;
            if (split >= 16) {
              x = _mm512_permutexvar_ps(nf4_index16_interleaved(codes, k), nf4_scaled_book(am[blk]));
            } else {
              // Crossing into block blk + 1 (G not a multiple of 16): natural lane order.
              // Never read past the row: lanes from split on belong to block blk + 1.
              const std::int64_t bytes = blk + 1 < s.absmax_stride ? 8 : split / 2;
              const __m512i idx = nf4_index16(codes, k, bytes);
              x = _mm512_permutexvar_ps(idx, nf4_scaled_book(am[blk]));
              if (blk + 1 < s.absmax_stride)
                x = _mm512_mask_permutexvar_ps(x, static_cast<__mmask16>(~lane_mask(split)), idx,
                                               nf4_scaled_book(am[blk + 1]));
              // Reorder to the interleaved lane order used below.
              x = _mm512_permutexvar_ps(_mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0), x);
            }
            v[i] = _mm512_castps_si512(x);
          }
          transpose16x16(v);
          // v[L] holds k offset interleaved_k(L) of the 16 rows.
          for (int l = 0; l < 16; ++l) {
            const std::int64_t kr = kk + interleaved_k(l);
            if (kr >= rows_in) continue;
            const __m512 x = _mm512_castsi512_ps(v[l]);
            _mm512_store_ps(xg + kr * 16, x);
            amax = _mm512_max_ps(amax, _mm512_and_ps(x, sign_off));
          }
        }
      } else if (s.kind == BSourceView::Kind::kNf4Transposed) {
        // B's rows are NF4 columns: 16 columns of one stored row share one block scale
        // (16-column slabs never cross a 64-column block), and nj + 16 stays in the row.
        const __m512 book = _mm512_loadu_ps(kNf4Codebook.data());
        const __m512i pick = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        const __m512i shifts = _mm512_set_epi32(28, 24, 20, 16, 12, 8, 4, 0, 28, 24, 20, 16, 12, 8, 4, 0);
        for (std::int64_t i = 0; i < rows_in; ++i) {
          const std::int64_t k = kg + i;
          const __m512i q = _mm512_castsi128_si512(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(s.codes + k * s.code_stride + nj / 2)));
          const __m512i idx = _mm512_srlv_epi32(_mm512_permutexvar_epi32(pick, q), shifts);
          const __m512 x = _mm512_maskz_mul_ps(cols_ok, _mm512_permutexvar_ps(idx, book),
                                               _mm512_set1_ps(s.absmax[k * s.absmax_stride + nj / kNf4Block]));
          _mm512_store_ps(xg + i * 16, x);
          amax = _mm512_max_ps(amax, _mm512_and_ps(x, sign_off));
        }
      } else {
        // GSE-INT [K, N] grouped along N: value = m · 2^e(k, n / Gs).
        const std::int64_t base = nj / s.src_group;
        alignas(64) std::int32_t idxs[16];
        for (int l = 0; l < 16; ++l) idxs[l] = static_cast<int>((nj + l) / s.src_group - base);
        const __m512i eidx = _mm512_load_si512(reinterpret_cast<const void*>(idxs));
        const __mmask16 exp_ok = lane_mask(s.exp_stride - base);
        const int code_bits = gse_code_bits(s.src_bits);
        for (std::int64_t i = 0; i < rows_in; ++i) {
          const std::int64_t k = kg + i;
          const std::int8_t* mrow = s.mant + k * s.mant_stride;
          const __m128i m8 = code_bits != 8 ? _mm512_castsi512_si128(load_mantissas64(mrow, code_bits, nj, s.rows - nj))
                                 : _mm_maskz_loadu_epi8(cols_ok, mrow + nj);
          const __m512i e16 = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(exp_ok, s.exps + k * s.exp_stride + base));
          const __m512 ev = _mm512_cvtepi32_ps(_mm512_permutexvar_epi32(eidx, e16));
          const __m512 x = _mm512_maskz_scalef_ps(cols_ok, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(m8)), ev);
          _mm512_store_ps(xg + i * 16, x);
          amax = _mm512_max_ps(amax, _mm512_and_ps(x, sign_off));
        }
      }
      encode_vertical(xg, rows_in, amax, cols_ok, s, geo, j, r);
    }
  }
}

}  // namespace gemm::kernels::avx512_vnni
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
