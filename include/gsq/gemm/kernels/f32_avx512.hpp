// gsq/gemm/kernels/f32_avx512.hpp — the AVX-512 FP32 GEMM kernel.
//
// A tile of 12 rows × 32 columns (24 zmm accumulators; 16 columns for N <= 16) stays in
// registers for a whole B block. Per k step: load the B step (2 zmm), broadcast each A
// row's value and issue one FMA per accumulator. Every C element is one FMA chain in
// ascending k started from +0, the same chain as the scalar reference (std::fma), so the
// result is bit-identical to it and to the AVX2 kernel. A is read from a packed tile
// ([k][12]) or, for thin N, in place from the operand (row and k strides).
#pragma once

#include "gsq/core/config.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "gsq/core/target.hpp"
#include "gsq/gemm/float_pack.hpp"

GSQ_TARGET_BEGIN_AVX512
GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::f32_avx512 {

inline constexpr int kMr = 12;
inline constexpr int kNrWide = 32;
inline constexpr int kNrNarrow = 16;

GSQ_ALWAYS_INLINE __mmask16 column_mask(int valid) noexcept {
  if (valid >= 16) return 0xFFFF;
  if (valid <= 0) return 0;
  return static_cast<__mmask16>((1u << valid) - 1u);
}

/// Stores one accumulator tile: partial sums to `acc`, or the epilogue into C.
template <int MR, int NV>
GSQ_ALWAYS_INLINE void store_tile(const FloatKernelParams& p, __m512 (&r)[MR][NV], std::int64_t t,
                                  float* acc_tile, const __mmask16 (&cmask)[NV]) noexcept {
  if (!p.last) {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j) _mm512_store_ps(acc_tile + i * p.nr + j * 16, r[i][j]);
    return;
  }
  const __m512 alpha = _mm512_set1_ps(p.alpha);
  for (int i = 0; i < MR; ++i) {
    if (t * MR + i >= p.m_valid) break;
    float* c = p.c + (t * MR + i) * p.ldc;
    for (int j = 0; j < NV; ++j) {
      if (cmask[j] == 0) continue;
      const __m512 out =
          p.accumulate ? _mm512_fmadd_ps(alpha, r[i][j], _mm512_maskz_loadu_ps(cmask[j], c + j * 16))
                       : _mm512_mul_ps(alpha, r[i][j]);
      _mm512_mask_storeu_ps(c + j * 16, cmask[j], out);
    }
  }
}

/// All tiles of one call for a 12 × (NV·16) register tile; kDirect reads A in place.
template <int NV, bool kDirect>
inline void run_tiles(const FloatKernelParams& p) noexcept {
  constexpr int MR = kMr;
  const std::int64_t rs = kDirect ? p.a_row_stride : 1;
  const std::int64_t ks = kDirect ? p.a_step_stride : MR;
  __mmask16 cmask[NV];
  for (int j = 0; j < NV; ++j) cmask[j] = column_mask(p.n_valid - 16 * j);
  for (std::int64_t t = 0; t < p.tiles; ++t) {
    const float* a = static_cast<const float*>(p.a) + t * p.a_tile_stride;
    const float* b = static_cast<const float*>(p.b);
    float* acc_tile = p.acc != nullptr ? p.acc + t * MR * p.nr : nullptr;
    __m512 r[MR][NV];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NV; ++j)
        r[i][j] = p.first ? _mm512_setzero_ps() : _mm512_load_ps(acc_tile + i * p.nr + j * 16);
    for (std::int64_t s = 0; s < p.steps; ++s) {
      __m512 bv[NV];
      for (int j = 0; j < NV; ++j) bv[j] = _mm512_loadu_ps(b + j * 16);
      for (int i = 0; i < MR; ++i) {
        const __m512 av = _mm512_set1_ps(a[i * rs]);
        for (int j = 0; j < NV; ++j) r[i][j] = _mm512_fmadd_ps(av, bv[j], r[i][j]);
      }
      b += p.nr;
      a += ks;
    }
    store_tile<MR, NV>(p, r, t, acc_tile, cmask);
  }
}

/// 16 × 16 transpose of r (rows ↔ lanes), in place.
GSQ_ALWAYS_INLINE void transpose16(__m512 (&r)[16]) noexcept {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // r[4g + c], 128-bit lane j: element 4j + c of rows 4g..4g+3.
  for (int c = 0; c < 4; ++c) {
    const __m512 a0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
    const __m512 a1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
    const __m512 b0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    const __m512 b1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
    t[c] = _mm512_shuffle_f32x4(a0, b0, 0x88);
    t[8 + c] = _mm512_shuffle_f32x4(a0, b0, 0xDD);
    t[4 + c] = _mm512_shuffle_f32x4(a1, b1, 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(a1, b1, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

/// kF32 panels from an FP32 operand (the same layout and values as detail::pack_lines):
/// lines contiguous in k are transposed 16 × 16 in registers; steps contiguous across
/// lines are copied with masked loads. Lines past `count` and steps past k are zero.
inline void pack_f32(const float* data, std::int64_t stride, bool transposed, std::int64_t first,
                     std::int64_t count, int width, std::int64_t k_total, std::int64_t s0,
                     std::int64_t s1, float* out) noexcept {
  const std::int64_t steps = s1 - s0;
  if (transposed) {  // step s of the lines is data[s·stride + first .. + count)
    for (std::int64_t s = 0; s < steps; ++s) {
      const float* src = data + (s0 + s) * stride + first;
      for (int i0 = 0; i0 < width; i0 += 16) {
        const __mmask16 m = column_mask(static_cast<int>(count) - i0);
        const __mmask16 w = column_mask(width - i0);
        _mm512_mask_storeu_ps(out + s * width + i0, w, _mm512_maskz_loadu_ps(m, src + i0));
      }
    }
    return;
  }
  for (int i0 = 0; i0 < width; i0 += 16) {
    const __mmask16 w = column_mask(width - i0);
    for (std::int64_t sb = 0; sb < steps; sb += 16) {
      const __mmask16 km = column_mask(static_cast<int>(std::min<std::int64_t>(16, k_total - s0 - sb)));
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = i0 + i < count ? _mm512_maskz_loadu_ps(km, data + (first + i0 + i) * stride + s0 + sb)
                              : _mm512_setzero_ps();
      transpose16(r);
      const std::int64_t n = std::min<std::int64_t>(16, steps - sb);
      for (std::int64_t s = 0; s < n; ++s) _mm512_mask_storeu_ps(out + (sb + s) * width + i0, w, r[s]);
    }
  }
}

/// The path's kernel entry point.
inline void gemm_kernel(const FloatKernelParams& p) noexcept {
  const bool narrow = p.n_valid <= 16;
  if (p.a_row_stride > 0) {
    if (narrow) run_tiles<1, true>(p);
    else run_tiles<2, true>(p);
  } else {
    if (narrow) run_tiles<1, false>(p);
    else run_tiles<2, false>(p);
  }
}

}  // namespace gemm::kernels::f32_avx512
GSQ_NAMESPACE_END
GSQ_TARGET_END

#endif  // GSQ_HAVE_X86_SIMD
