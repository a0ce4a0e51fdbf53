// gsq/gemm/kernels/avx2_pack.hpp — AVX2 packing: stored operands → panels.
//
// The same bytes as the portable packers of gemm/pack.hpp, with 8-lane vectors and the
// same two shapes of work as the AVX-512 packers (see avx512_vnni_pack.hpp):
// horizontal sources are transposed 8 rows × 8 quads at a time (NF4 rows are decoded
// and transposed as floats first), regrouping sources are decoded k-major and encoded
// per column. AVX2 has no vgetexpps / vscalefps: the group exponent comes from the
// float's exponent field (subnormal maxima are scaled by 2^64 first), and x·2^k is two
// exact-then-rounded multiplies as in the kernel.
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
#include "gsq/gemm/kernels/avx2.hpp"
#include "gsq/gemm/pack.hpp"
#include "gsq/quant/kernels/gse_avx2.hpp"

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::avx2 {

namespace pack_detail {

/// The first min(n, 32) bytes at p (n may be <= 0), zero-filled beyond.
GSQ_ALWAYS_INLINE __m256i load_bytes32(const void* p, std::int64_t n) noexcept {
  if (n >= 32) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
  alignas(32) std::uint8_t buf[32] = {};
  if (n > 0) std::memcpy(buf, p, static_cast<std::size_t>(n));
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
}

/// 32 mantissas (int8) from element c of a stored row of `code_bits` fields (c even for
/// nibbles, a multiple of 4 for 6-bit fields); `avail` elements readable.
GSQ_ALWAYS_INLINE __m256i load_mantissas32(const std::int8_t* row, int code_bits, std::int64_t c,
                                           std::int64_t avail) noexcept {
  if (code_bits == 8) return load_bytes32(row + c, avail);
  if (code_bits == 6) return quant::kernels::avx2::load_sixes32(row + c / 4 * 3, avail);
  const __m128i packed = _mm256_castsi256_si128(load_bytes32(row + c / 2, std::min<std::int64_t>(16, (avail + 1) / 2)));
  const __m256i w = _mm256_cvtepu8_epi16(packed);
  const __m256i lo = _mm256_and_si256(w, _mm256_set1_epi16(0x0F));
  const __m256i hi = _mm256_and_si256(_mm256_slli_epi16(w, 4), _mm256_set1_epi16(0x0F00));
  const __m256i eight = _mm256_set1_epi8(8);
  return _mm256_sub_epi8(_mm256_xor_si256(_mm256_or_si256(lo, hi), eight), eight);
}

/// In-place transpose of an 8 × 8 matrix of 32-bit elements.
GSQ_ALWAYS_INLINE void transpose8x8(__m256i r[8]) noexcept {
  __m256i t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
  __m256i u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // u[4b + c], 128-bit lane L: element 4L + c of rows 4b..4b+3.
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
  }
}

/// Σ of the 4 signed bytes of each 32-bit lane.
GSQ_ALWAYS_INLINE __m256i quad_sums(__m256i v) noexcept {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
}

GSQ_ALWAYS_INLINE float* exps_of(std::int8_t* rec, const PanelGeometry& geo) noexcept {
  return reinterpret_cast<float*>(rec + geo.b_data_bytes() + geo.nr * 4);
}

/// x · 2^k (k lanes in [−252, 253]) for values whose exact product is only needed when
/// it is a normal number: two multiplies, the first exact.
GSQ_ALWAYS_INLINE __m256 scale8(__m256 x, __m256i k) noexcept {
  const __m256i k1 = _mm256_min_epi32(_mm256_max_epi32(k, _mm256_set1_epi32(-126)), _mm256_set1_epi32(127));
  const __m256i k2 = _mm256_max_epi32(_mm256_sub_epi32(k, k1), _mm256_set1_epi32(-126));
  return fence(_mm256_mul_ps(fence(_mm256_mul_ps(x, pow2(k1))), pow2(k2)));
}

/// floor(log2 a) for a > 0 (subnormals included).
GSQ_ALWAYS_INLINE __m256i ilogb8(__m256 a) noexcept {
  const __m256 tiny = _mm256_set1_ps(0x1p-126f);
  const __m256 small = _mm256_cmp_ps(a, tiny, _CMP_LT_OQ);
  const __m256 s = _mm256_blendv_ps(a, _mm256_mul_ps(a, _mm256_set1_ps(0x1p64f)), small);
  const __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_castps_si256(s), 23), _mm256_set1_epi32(127));
  return _mm256_sub_epi32(e, _mm256_and_si256(_mm256_castps_si256(small), _mm256_set1_epi32(64)));
}

/// Group exponents of 8 columns from their amax (see pack.hpp).
GSQ_ALWAYS_INLINE __m256i group_exponents(__m256 amax, int bits, int exp_min, int exp_max) noexcept {
  const __m256i e = _mm256_sub_epi32(ilogb8(amax), _mm256_set1_epi32(bits - 2));
  const __m256i clamped = _mm256_min_epi32(_mm256_max_epi32(e, _mm256_set1_epi32(exp_min)), _mm256_set1_epi32(exp_max));
  const __m256i zero = _mm256_castps_si256(_mm256_cmp_ps(amax, _mm256_setzero_ps(), _CMP_EQ_OQ));
  return _mm256_blendv_epi8(clamped, _mm256_set1_epi32(exp_min), zero);
}

/// clamp(rint(x · 2^−e), ±qmax) as int32.
GSQ_ALWAYS_INLINE __m256i encode8(__m256 x, __m256i neg_e, __m256 qmax) noexcept {
  const __m256 r = _mm256_round_ps(scale8(x, neg_e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_sub_ps(_mm256_setzero_ps(), qmax)), qmax));
}

/// 8 NF4 values: codes k .. k+7 of a code row (k even) times `absmax`.
GSQ_ALWAYS_INLINE __m256 nf4_decode8(const std::uint8_t* codes, std::int64_t k, __m256 absmax,
                                     std::int64_t avail = 4) noexcept {
  std::int32_t raw = 0;
  std::memcpy(&raw, codes + k / 2, static_cast<std::size_t>(std::min<std::int64_t>(avail, 4)));
  const __m128i b4 = _mm_cvtsi32_si128(raw);
  const __m256i idx = _mm256_and_si256(
      _mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b4, b4)), _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4)),
      _mm256_set1_epi32(0xF));
  const __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kNf4Codebook.data()), idx);
  const __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(kNf4Codebook.data() + 8), idx);
  const __m256 v = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  return _mm256_mul_ps(v, absmax);
}

/// Lanes [0, n) set (n clamped to 0..8), as an all-ones-per-lane mask.
GSQ_ALWAYS_INLINE __m256i lanes8(std::int64_t n) noexcept {
  const int v = static_cast<int>(std::max<std::int64_t>(0, std::min<std::int64_t>(8, n)));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// Encodes one k-group of 8 columns (rows_in decoded vectors at xg, stride 8 floats)
/// into half `h` of slab j of record `rec`.
GSQ_ALWAYS_INLINE void encode_vertical(const float* xg, std::int64_t rows_in, __m256 amax, __m256i cols_ok,
                                       const BSourceView& s, const PanelGeometry& geo, int j, int h,
                                       std::int8_t* rec) noexcept {
  const __m256i ev = group_exponents(amax, s.bits, s.exp_min, s.exp_max);
  const __m256i neg_e = _mm256_sub_epi32(_mm256_setzero_si256(), ev);
  const __m256 qmax = _mm256_set1_ps(static_cast<float>((1 << (s.bits - 1)) - 1));
  const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                         0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m256i sum = _mm256_setzero_si256();
  for (int q = 0; q < geo.quads; ++q) {
    __m256i m[4];
    for (int b = 0; b < 4; ++b) {
      const std::int64_t i = q * 4 + b;
      m[b] = i < rows_in ? encode8(_mm256_loadu_ps(xg + i * 8), neg_e, qmax) : _mm256_setzero_si256();
    }
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(m[0], m[1]), _mm256_packs_epi32(m[2], m[3]));
    const __m256i quad = _mm256_shuffle_epi8(bytes, order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rec + q * geo.nr * 4 + j * 64 + h * 32), quad);
    sum = _mm256_add_epi32(sum, quad_sums(quad));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(rec + geo.b_data_bytes() + j * 64 + h * 32),
                      _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
  _mm256_storeu_ps(exps_of(rec, geo) + j * 16 + h * 8,
                   _mm256_and_ps(_mm256_castsi256_ps(cols_ok), _mm256_cvtepi32_ps(ev)));
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
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
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
      for (std::int64_t q0 = 0; q0 < total_quads; q0 += 8) {
        __m256i v[4];
        for (int i = 0; i < 4; ++i)
          v[i] = _mm256_xor_si256(
              rows[i] ? load_mantissas32(rows[i], code_bits, q0 * 4, avail - q0 * 4) : _mm256_setzero_si256(), flip);
        const __m256i t0v = _mm256_unpacklo_epi32(v[0], v[1]);
        const __m256i t1v = _mm256_unpackhi_epi32(v[0], v[1]);
        const __m256i t2v = _mm256_unpacklo_epi32(v[2], v[3]);
        const __m256i t3v = _mm256_unpackhi_epi32(v[2], v[3]);
        // u[c], lane L: quad 4L + c of the four rows (16 bytes).
        const __m256i u[4] = {_mm256_unpacklo_epi64(t0v, t2v), _mm256_unpackhi_epi64(t0v, t2v),
                              _mm256_unpacklo_epi64(t1v, t3v), _mm256_unpackhi_epi64(t1v, t3v)};
        const std::int64_t nq = std::min<std::int64_t>(8, total_quads - q0);
        for (int i = 0; i < nq; ++i) {
          const __m256i src = u[i % 4];
          const __m128i quad = i < 4 ? _mm256_castsi256_si128(src) : _mm256_extracti128_si256(src, 1);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(tile + (q0 + i) * geo.mr * 4 + r4 * 4), quad);
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
  const int halves = geo.nr / 8;  // 8-column halves of the 16-column slabs

  if (s.kind == BSourceView::Kind::kGse) {
    const int code_bits = gse_code_bits(s.src_bits);
    const std::int64_t total_quads = groups * geo.quads;
    const std::int64_t avail = groups * geo.group;
    for (int hh = 0; hh < halves; ++hh) {
      const int j = hh / 2, h = hh % 2;
      const std::int8_t* rows[8];
      for (int i = 0; i < 8; ++i) {
        const std::int64_t n = n0 + hh * 8 + i;
        const bool valid = n < s.rows;
        rows[i] = valid ? s.mant + n * s.mant_stride : nullptr;
        for (std::int64_t g = 0; g < groups; ++g)
          exps_of(out + g * rec, geo)[hh * 8 + i] = valid ? static_cast<float>(s.exps[n * s.exp_stride + g0 + g]) : 0.0f;
      }
      for (std::int64_t q0 = 0; q0 < total_quads; q0 += 8) {
        __m256i v[8];
        for (int i = 0; i < 8; ++i)
          v[i] = rows[i] ? load_mantissas32(rows[i], code_bits, k0 + q0 * 4, avail - q0 * 4) : _mm256_setzero_si256();
        transpose8x8(v);
        const std::int64_t nq = std::min<std::int64_t>(8, total_quads - q0);
        for (int i = 0; i < nq; ++i) {
          const std::int64_t quad = q0 + i;
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (quad / geo.quads) * rec +
                                                         (quad % geo.quads) * geo.nr * 4 + j * 64 + h * 32),
                              v[i]);
        }
      }
    }
    for (std::int64_t g = 0; g < groups; ++g) {
      std::int8_t* r = out + g * rec;
      for (int hh = 0; hh < halves; ++hh) {
        __m256i sum = _mm256_setzero_si256();
        for (int q = 0; q < geo.quads; ++q)
          sum = _mm256_add_epi32(sum, quad_sums(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + q * geo.nr * 4 + hh * 32))));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + geo.b_data_bytes() + hh * 32),
                            _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 7)));
      }
    }
    return;
  }

  const __m256 sign_off = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  float* xg = scratch;  // [G][8]
  for (std::int64_t g = 0; g < groups; ++g) {
    std::int8_t* r = out + g * rec;
    const std::int64_t kg = k0 + g * geo.group;
    const std::int64_t rows_in = std::min<std::int64_t>(geo.group, s.cols - kg);
    for (int hh = 0; hh < halves; ++hh) {
      const int j = hh / 2, h = hh % 2;
      const std::int64_t nj = n0 + hh * 8;
      const __m256i cols_ok = lanes8(s.rows - nj);
      __m256 amax = _mm256_setzero_ps();
      if (nj >= s.rows) {
        // A half-slab wholly past N (last panel): zeros, and no reads past the stored tensor.
        std::memset(xg, 0, static_cast<std::size_t>(rows_in) * 8 * sizeof(float));
      } else if (s.kind == BSourceView::Kind::kNf4) {
        for (std::int64_t kk = 0; kk < rows_in; kk += 8) {
          const __m256i k_ok = lanes8(rows_in - kk);
          __m256i v[8];
          for (int i = 0; i < 8; ++i) {
            const std::int64_t n = nj + i;
            if (n >= s.rows) {
              v[i] = _mm256_setzero_si256();
              continue;
            }
            const std::int64_t k = kg + kk;
            const float* am = s.absmax + n * s.absmax_stride;
            const std::int64_t blk = k / kNf4Block, split = (blk + 1) * kNf4Block - k;
            __m256 amv = _mm256_set1_ps(am[blk]);
            if (split < 8 && blk + 1 < s.absmax_stride)
              amv = _mm256_blendv_ps(amv, _mm256_set1_ps(am[blk + 1]), _mm256_castsi256_ps(_mm256_xor_si256(lanes8(split), _mm256_set1_epi32(-1))));
            const std::int64_t bytes = std::min<std::int64_t>(4, s.code_stride - k / 2);  // stay in the row
            v[i] = _mm256_and_si256(k_ok, _mm256_castps_si256(nf4_decode8(s.codes + n * s.code_stride, k, amv, bytes)));
          }
          transpose8x8(v);
          const std::int64_t nk = std::min<std::int64_t>(8, rows_in - kk);
          for (int i = 0; i < nk; ++i) {
            const __m256 x = _mm256_castsi256_ps(v[i]);
            _mm256_storeu_ps(xg + (kk + i) * 8, x);
            amax = _mm256_max_ps(amax, _mm256_and_ps(x, sign_off));
          }
        }
      } else if (s.kind == BSourceView::Kind::kNf4Transposed) {
        for (std::int64_t i = 0; i < rows_in; ++i) {
          const std::int64_t k = kg + i;
          const __m256 x = _mm256_and_ps(_mm256_castsi256_ps(cols_ok),
                                         nf4_decode8(s.codes + k * s.code_stride, nj,
                                                     _mm256_set1_ps(s.absmax[k * s.absmax_stride + nj / kNf4Block])));
          _mm256_storeu_ps(xg + i * 8, x);
          amax = _mm256_max_ps(amax, _mm256_and_ps(x, sign_off));
        }
      } else {
        const std::int64_t base = nj / s.src_group;
        alignas(32) std::int32_t idxs[8];
        for (int l = 0; l < 8; ++l) idxs[l] = static_cast<int>((nj + l) / s.src_group - base);
        const __m256i eidx = _mm256_load_si256(reinterpret_cast<const __m256i*>(idxs));
        const std::int64_t n_exp = std::min<std::int64_t>(8, s.exp_stride - base);
        const int code_bits = gse_code_bits(s.src_bits);
        for (std::int64_t i = 0; i < rows_in; ++i) {
          const std::int64_t k = kg + i;
          const std::int8_t* mrow = s.mant + k * s.mant_stride;
          const __m128i m8 = _mm256_castsi256_si128(load_mantissas32(mrow, code_bits, nj, s.rows - nj));
          const __m128i e8 = _mm256_castsi256_si128(load_bytes32(s.exps + k * s.exp_stride + base, n_exp));
          const __m256i ev = _mm256_permutevar8x32_epi32(_mm256_cvtepi8_epi32(e8), eidx);
          const __m256 x = _mm256_and_ps(_mm256_castsi256_ps(cols_ok),
                                         ldexp8(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(m8)), ev));
          _mm256_storeu_ps(xg + i * 8, x);
          amax = _mm256_max_ps(amax, _mm256_and_ps(x, sign_off));
        }
      }
      encode_vertical(xg, rows_in, amax, cols_ok, s, geo, j, h, r);
    }
  }
}

}  // namespace gemm::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
