// gsq/gemm/kernels/avx2.hpp — the AVX2 GEMM kernel (with AVX-VNNI where the CPU has it).
//
// Register tile: 2 rows × 16 columns (2 ymm per row), walking the rows of each packed A
// tile in pairs and each B panel in 16-column slabs, over a whole k-block. Two inner
// products, chosen at run time:
//   * AVX-VNNI: {vex} vpdpbusd, u8 A (a + 128) × s8 B, started from the packed −128·Σb
//     correction, exactly as the AVX-512 kernel (written as inline asm, so no extra
//     target region is needed for the VEX encoding);
//   * plain AVX2 (STYLE.md §5.9): a = byte ^ 0x80, vpmaddubsw(|a|, sign(b, a)) then
//     vpmaddwd with ones; pair sums are at most 2·127² < 2^15, so nothing saturates;
//     the correction is not used (sums start at 0).
// Rescale without vscalefps: x · 2^e is done as (x · 2^e1) · 2^e2 with
// e1 = clamp(e, −126, 127) and e2 = max(e − e1, −126). The first product is exact (x is
// an integer, |x| < 2^24), the second rounds once — the ldexp result — and e2 only
// clips when |x · 2^e| < 2^−230, which rounds to ±0 either way. Two multiplies into an
// add may not be fused (that would skip a rounding), so an empty asm fences the product.
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>

#include <atomic>
#include <cstdint>
#include <cstring>

#include "gsq/core/cpu.hpp"
#include "gsq/core/target.hpp"
#include "gsq/gemm/params.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::avx2 {
/// −1: use AVX-VNNI when the CPU has it; 0: never; 1: always (tests force both variants).
inline std::atomic<int>& vnni_override() noexcept {
  static std::atomic<int> v{-1};
  return v;
}
inline bool use_vnni() noexcept {
  const int o = vnni_override().load(std::memory_order_relaxed);
  return o < 0 ? cpu_features().avx_vnni : o > 0;
}
}  // namespace gemm::kernels::avx2
GSQ_NAMESPACE_END

GSQ_TARGET_BEGIN_AVX2
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::avx2 {

GSQ_ALWAYS_INLINE __m256i broadcast_u32(const std::uint8_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm256_set1_epi32(v);
}

/// acc += Σ_4 a_u8·b_s8 per int32 lane, AVX-VNNI (VEX-encoded vpdpbusd).
GSQ_ALWAYS_INLINE void dpbusd_vex(__m256i& acc, __m256i a, __m256i b) noexcept {
  __asm__("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(a), "x"(b));
}

/// Keeps the compiler from fusing a product into a following add.
GSQ_ALWAYS_INLINE __m256 fence(__m256 v) noexcept {
  __asm__("" : "+x"(v));
  return v;
}

/// 2^k for k in [−126, 127] (int lanes) as floats.
GSQ_ALWAYS_INLINE __m256 pow2(__m256i k) noexcept {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

/// Exactly rounded x · 2^e for integer-valued x (|x| < 2^24) and e in [−256, 254].
GSQ_ALWAYS_INLINE __m256 ldexp8(__m256 x, __m256i e) noexcept {
  const __m256i e1 = _mm256_min_epi32(_mm256_max_epi32(e, _mm256_set1_epi32(-126)), _mm256_set1_epi32(127));
  const __m256i e2 = _mm256_max_epi32(_mm256_sub_epi32(e, e1), _mm256_set1_epi32(-126));
  return fence(_mm256_mul_ps(fence(_mm256_mul_ps(x, pow2(e1))), pow2(e2)));
}

GSQ_ALWAYS_INLINE __m256i column_mask(int valid) noexcept {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lane);
}

/// Rows r0, r0+1 of one A tile × columns 16·slab .. +15 of the B block.
template <bool kVnni>
inline void run_pair(const KernelParams& p, std::int64_t t, int r0, int slab) noexcept {
  const std::int64_t data_bytes = std::int64_t{p.quads} * p.nr * 4;
  const std::int64_t a_group_bytes = std::int64_t{p.quads} * p.mr * 4;
  const std::uint8_t* a = p.a + t * p.a_tile_stride + r0 * 4;
  const float* ea = p.a_exp + t * p.a_exp_stride + r0;
  // acc is null when the call has a single k-block (results go straight to C).
  float* acc_tile = p.acc != nullptr ? p.acc + (t * p.mr + r0) * p.nr + slab * 16 : nullptr;
  __m256 facc[2][2];
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 2; ++j)
      facc[r][j] = p.first ? _mm256_setzero_ps() : _mm256_loadu_ps(acc_tile + r * p.nr + j * 8);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i ones16 = _mm256_set1_epi16(1);

  const std::int8_t* rec = p.b + slab * 64;
  for (std::int64_t g = 0; g < p.groups; ++g) {
    const int nq = g == p.groups - 1 ? p.last_quads : p.quads;
    __m256i iacc[2][2];
    for (int r = 0; r < 2; ++r)
      for (int j = 0; j < 2; ++j)
        iacc[r][j] = kVnni ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + data_bytes + j * 32))
                           : _mm256_setzero_si256();
    const std::int8_t* bq = rec;
    const std::uint8_t* aq = a;
    for (int q = 0; q < nq; ++q) {
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bq));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bq + 32));
      for (int r = 0; r < 2; ++r) {
        const __m256i au = broadcast_u32(aq + r * 4);
        if (kVnni) {
          dpbusd_vex(iacc[r][0], au, b0);
          dpbusd_vex(iacc[r][1], au, b1);
        } else {
          const __m256i as = _mm256_xor_si256(au, flip);
          const __m256i aa = _mm256_abs_epi8(as);
          iacc[r][0] = _mm256_add_epi32(
              iacc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(b0, as)), ones16));
          iacc[r][1] = _mm256_add_epi32(
              iacc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(b1, as)), ones16));
        }
      }
      bq += p.nr * 4;
      aq += p.mr * 4;
    }
    const float* eb_ptr = reinterpret_cast<const float*>(rec + data_bytes + p.nr * 4);
    const __m256i eb0 = _mm256_cvttps_epi32(_mm256_loadu_ps(eb_ptr));
    const __m256i eb1 = _mm256_cvttps_epi32(_mm256_loadu_ps(eb_ptr + 8));
    for (int r = 0; r < 2; ++r) {
      const __m256i er = _mm256_set1_epi32(static_cast<int>(ea[r]));
      facc[r][0] = _mm256_add_ps(facc[r][0], ldexp8(_mm256_cvtepi32_ps(iacc[r][0]), _mm256_add_epi32(eb0, er)));
      facc[r][1] = _mm256_add_ps(facc[r][1], ldexp8(_mm256_cvtepi32_ps(iacc[r][1]), _mm256_add_epi32(eb1, er)));
    }
    rec += p.b_record_bytes;
    a += a_group_bytes;
    ea += p.mr;
  }

  if (!p.last) {
    for (int r = 0; r < 2; ++r)
      for (int j = 0; j < 2; ++j) _mm256_storeu_ps(acc_tile + r * p.nr + j * 8, facc[r][j]);
    return;
  }
  const __m256 alpha = _mm256_set1_ps(p.alpha);
  for (int r = 0; r < 2; ++r) {
    const std::int64_t row = t * p.mr + r0 + r;
    if (row >= p.m_valid) break;
    float* c = p.c + row * p.ldc + slab * 16;
    for (int j = 0; j < 2; ++j) {
      const int valid = p.n_valid - slab * 16 - j * 8;
      if (valid <= 0) break;
      const __m256i mask = column_mask(valid);
      __m256 out;
      if (p.accumulate)
        out = _mm256_fmadd_ps(alpha, facc[r][j], _mm256_maskload_ps(c + j * 8, mask));
      else
        out = _mm256_mul_ps(alpha, facc[r][j]);
      _mm256_maskstore_ps(c + j * 8, mask, out);
    }
  }
}

template <bool kVnni>
inline void run_tiles(const KernelParams& p) noexcept {
  for (std::int64_t t = 0; t < p.tiles; ++t)
    for (int r0 = 0; r0 < p.mr; r0 += 2)
      for (int slab = 0; slab < p.nr / 16; ++slab) run_pair<kVnni>(p, t, r0, slab);
}

/// The path's kernel entry point (any even MR, NR a multiple of 16).
inline void gemm_kernel(const KernelParams& p) noexcept {
  if (use_vnni())
    run_tiles<true>(p);
  else
    run_tiles<false>(p);
}

}  // namespace gemm::kernels::avx2
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
