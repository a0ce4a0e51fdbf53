// gsq/gemm/kernels/avx512_vnni.hpp — the AVX-512 VNNI GEMM kernel.
//
// Tiles of MR rows × NV·16 columns stay in registers for a whole k-block: NV·MR int32
// group sums (vpdpbusd, u8 A × s8 B, started from the packed −128·Σb correction) and as
// many fp32 accumulators. At the end of each k-group the int32 sums are rescaled exactly
// and added in ascending k: vcvtdq2ps (exact, |sum| < 2^24), vscalefps by e_a + e_b (one
// correctly rounded scaling, the same as ldexp for any exponent: overflow gives Inf and
// tiny results the same subnormals), vaddps. These do not compete with vpdpbusd for its
// ports (DESIGN.md "Machine facts"), so the rescale is almost free for G >= 32.
// Shapes: 4 × 48 (wide, 12 + 12 accumulators) and 12 × 16 (narrow, for N <= 32); the
// narrow one can read A's int8 rows in place (no A packing for thin N).
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "gsq/core/target.hpp"
#include "gsq/gemm/pack.hpp"
#include "gsq/gemm/params.hpp"

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::avx512_vnni {

GSQ_ALWAYS_INLINE __m512i broadcast_u32(const std::uint8_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, sizeof v);
  return _mm512_set1_epi32(v);
}

/// acc += Σ_4 a_u8 · b_s8 per int32 lane (vpdpbusd), written as an in-place update:
/// GCC 12 otherwise copies every accumulator twice per step around the k loop.
GSQ_ALWAYS_INLINE void dpbusd(__m512i& acc, __m512i a, __m512i b) noexcept {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
#else
  acc = _mm512_dpbusd_epi32(acc, a, b);
#endif
}

GSQ_ALWAYS_INLINE __mmask16 column_mask(int valid) noexcept {
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

/// All tiles of one kernel call for an MR × (NV·16) register tile. kDirect reads A's
/// int8 rows in place (see KernelParams) and flips them to u8 on the fly.
template <int MR, int NV, bool kDirect>
inline void run_tiles(const KernelParams& p) noexcept {
  constexpr int kNr = NV * 16;
  const std::int64_t data_bytes = std::int64_t{p.quads} * kNr * 4;
  // A bytes per group, and the step between rows (direct) or quads (packed).
  const std::int64_t a_group_bytes = kDirect ? std::int64_t{p.quads} * 4 : std::int64_t{p.quads} * MR * 4;
  const std::int64_t a_row = kDirect ? p.a_row_stride : 4;
  const std::int64_t a_quad = kDirect ? 4 : MR * 4;
  const std::int64_t e_row = kDirect ? p.a_exp_row_stride : 1;
  const std::int64_t e_group = kDirect ? 1 : MR;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512 alpha = _mm512_set1_ps(p.alpha);
  __mmask16 cmask[NV];
  for (int j = 0; j < NV; ++j) cmask[j] = column_mask(p.n_valid - 16 * j);

  for (std::int64_t t = 0; t < p.tiles; ++t) {
    const std::uint8_t* a = p.a + t * p.a_tile_stride;
    const float* ea = p.a_exp + t * p.a_exp_stride;
    // acc is null when the call has a single k-block (results go straight to C).
    float* acc_tile = p.acc != nullptr ? p.acc + t * MR * kNr : nullptr;
    __m512 facc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NV; ++j)
        facc[r][j] = p.first ? _mm512_setzero_ps() : _mm512_load_ps(acc_tile + (r * NV + j) * 16);

    const std::int8_t* rec = p.b;
    for (std::int64_t g = 0; g < p.groups; ++g) {
      const int nq = g == p.groups - 1 ? p.last_quads : p.quads;
      // Each int32 sum starts from the packed correction −128·Σb (loaded per sum: L1
      // hits, and it keeps GCC from carrying copies of it through the loop).
      __m512i iacc[MR][NV];
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j)
          iacc[r][j] = _mm512_load_si512(reinterpret_cast<const void*>(rec + data_bytes + j * 64));
      const std::int8_t* bq = rec;
      const std::uint8_t* aq = a;
      for (int q = 0; q < nq; ++q) {
        __m512i bv[NV];
        for (int j = 0; j < NV; ++j)
          bv[j] = _mm512_load_si512(reinterpret_cast<const void*>(bq + j * 64));
        for (int r = 0; r < MR; ++r) {
          __m512i av = broadcast_u32(aq + r * a_row);
          if (kDirect) av = _mm512_xor_si512(av, flip);
          for (int j = 0; j < NV; ++j) dpbusd(iacc[r][j], av, bv[j]);
        }
        bq += kNr * 4;
        aq += a_quad;
      }
      const float* eb_ptr = reinterpret_cast<const float*>(rec + data_bytes + kNr * 4);
      __m512 eb[NV];
      for (int j = 0; j < NV; ++j) eb[j] = _mm512_load_ps(eb_ptr + j * 16);
      for (int r = 0; r < MR; ++r) {
        const __m512 er = _mm512_set1_ps(ea[r * e_row]);
        for (int j = 0; j < NV; ++j) {
          const __m512 scaled =
              _mm512_scalef_ps(_mm512_cvtepi32_ps(iacc[r][j]), _mm512_add_ps(eb[j], er));
          facc[r][j] = _mm512_add_ps(facc[r][j], scaled);
        }
      }
      rec += p.b_record_bytes;
      a += a_group_bytes;
      ea += e_group;
    }

    if (!p.last) {
      for (int r = 0; r < MR; ++r)
        for (int j = 0; j < NV; ++j) _mm512_store_ps(acc_tile + (r * NV + j) * 16, facc[r][j]);
      continue;
    }
    for (int r = 0; r < MR; ++r) {
      const std::int64_t row = t * MR + r;
      if (row >= p.m_valid) break;
      float* c = p.c + row * p.ldc;
      for (int j = 0; j < NV; ++j) {
        if (cmask[j] == 0) continue;
        __m512 out;
        if (p.accumulate)
          out = _mm512_fmadd_ps(alpha, facc[r][j], _mm512_maskz_loadu_ps(cmask[j], c + j * 16));
        else
          out = _mm512_mul_ps(alpha, facc[r][j]);
        _mm512_mask_storeu_ps(c + j * 16, cmask[j], out);
      }
    }
  }
}

/// The path's kernel entry point (shapes from gemm/pack.hpp).
inline void gemm_kernel(const KernelParams& p) noexcept {
  if (p.mr == WideTile::kMr && p.nr == WideTile::kNr) {
    GSQ_ASSERT(p.a_row_stride == 0);
    run_tiles<WideTile::kMr, WideTile::kNr / 16, false>(p);
  } else {
    GSQ_ASSERT(p.mr == NarrowTile::kMr && p.nr == NarrowTile::kNr);
    if (p.a_row_stride > 0)
      run_tiles<NarrowTile::kMr, NarrowTile::kNr / 16, true>(p);
    else
      run_tiles<NarrowTile::kMr, NarrowTile::kNr / 16, false>(p);
  }
}

}  // namespace gemm::kernels::avx512_vnni
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
