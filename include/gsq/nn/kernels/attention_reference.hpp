// gsq/nn/kernels/attention_reference.hpp — the scalar definition of fused attention's two
// block products, FP32 and BF16, and the flat parameters every path takes.
//
// Fused attention (nn/attention.hpp) is built from two small products on blocks of at
// most 64 queries × 64 keys:
//   scores:      s[i, j] = scale · Σ_d a[i, d]·b[j, d]       (S = Q·Kᵀ, dP = dO·Vᵀ)
//   accumulate:  out[r, :] += Σ_t c(r, t)·x[t, :]            (O += P·V, dQ += dS·K,
//                                                             dV += Pᵀ·dO, dK += dSᵀ·Q)
// FP32: each element is an fma chain in ascending d (or t) starting from 0 (or from
// out), one rounding per term; the scores are multiplied by `scale` once at the end. The
// SIMD kernels vectorise across j (or across out's columns), never across the chain, so
// they give the same bits.
//
// BF16: operands are rounded to bfloat16 once (round to nearest even; subnormals
// flushed to zero, as the hardware treats them) and stored in pairs along the chain; a
// pair adds its odd term then its even term, each an exact product added with one
// rounding and subnormal results flushed to zero — the definition of AVX512-BF16's
// vdpbf16ps, which the AVX-512 kernel uses. Accumulation and everything around the
// products (softmax, rescaling) stay FP32.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN
namespace nn::kernels {

/// s [m, n] (row stride lds) = scale · a [m, k] · btᵀ, with b given transposed:
/// bt [k, ≥n], row stride ldb.
struct ScoresF32 {
  const float* a = nullptr;
  std::int64_t lda = 0;
  const float* bt = nullptr;
  std::int64_t ldb = 0;
  float* s = nullptr;
  std::int64_t lds = 0;
  std::int64_t m = 0, n = 0, k = 0;
  float scale = 1.0f;
};

/// out [rows, width] (row stride ldo) += c · x, c(r, t) = c[r·cr + t·ct], x [terms, width]
/// with row stride ldx.
struct AccumulateF32 {
  float* out = nullptr;
  std::int64_t ldo = 0;
  const float* c = nullptr;
  std::int64_t cr = 0, ct = 0;
  const float* x = nullptr;
  std::int64_t ldx = 0;
  std::int64_t rows = 0, terms = 0, width = 0;
};

/// BF16 scores: a [m, 2·kp] bf16 rows (row stride lda, in bf16 elements); bt pairs
/// bt[(t·ldb + j)·2 + e] = b[j, 2t + e] for pair t < kp, key j < n.
struct ScoresBf16 {
  const std::uint16_t* a = nullptr;
  std::int64_t lda = 0;
  const std::uint16_t* bt = nullptr;
  std::int64_t ldb = 0;  // pairs per pair-row (≥ n)
  float* s = nullptr;
  std::int64_t lds = 0;
  std::int64_t m = 0, n = 0, kp = 0;
  float scale = 1.0f;
};

/// BF16 accumulate: c [rows, 2·tp] bf16 rows (row stride cr, in bf16 elements); x pairs
/// x[(t·ldx + d)·2 + e] = x[2t + e, d] for pair t < tp, column d < width.
struct AccumulateBf16 {
  float* out = nullptr;
  std::int64_t ldo = 0;
  const std::uint16_t* c = nullptr;
  std::int64_t cr = 0;
  const std::uint16_t* x = nullptr;
  std::int64_t ldx = 0;  // pairs per pair-row (≥ width)
  std::int64_t rows = 0, tp = 0, width = 0;
};

/// FP32 → BF16 bits: subnormals to signed zero, round to nearest even (inputs finite).
/// Integer arithmetic only, so every path and compiler gives the same bits.
inline std::uint16_t bf16_bits(float x) noexcept {
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
inline float bf16_value(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}
/// Flush-to-zero of an FP32 result, as vdpbf16ps does.
inline float flush_subnormal(float x) noexcept {
  return std::fabs(x) < std::numeric_limits<float>::min() ? std::copysign(0.0f, x) : x;
}

namespace reference {

inline void scores_f32(const ScoresF32& p) noexcept {
  for (std::int64_t i = 0; i < p.m; ++i)
    for (std::int64_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::int64_t d = 0; d < p.k; ++d) acc = std::fma(p.a[i * p.lda + d], p.bt[d * p.ldb + j], acc);
      p.s[i * p.lds + j] = acc * p.scale;
    }
}

inline void accumulate_f32(const AccumulateF32& p) noexcept {
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (std::int64_t d = 0; d < p.width; ++d) {
      float acc = p.out[r * p.ldo + d];
      for (std::int64_t t = 0; t < p.terms; ++t)
        acc = std::fma(p.c[r * p.cr + t * p.ct], p.x[t * p.ldx + d], acc);
      p.out[r * p.ldo + d] = acc;
    }
}

/// acc + a1·b1 + a0·b0 as vdpbf16ps computes it.
inline float dot_pair_bf16(float acc, const std::uint16_t* a, const std::uint16_t* b) noexcept {
  acc = flush_subnormal(std::fma(bf16_value(a[1]), bf16_value(b[1]), acc));
  return flush_subnormal(std::fma(bf16_value(a[0]), bf16_value(b[0]), acc));
}

inline void scores_bf16(const ScoresBf16& p) noexcept {
  for (std::int64_t i = 0; i < p.m; ++i)
    for (std::int64_t j = 0; j < p.n; ++j) {
      float acc = 0.0f;
      for (std::int64_t t = 0; t < p.kp; ++t)
        acc = dot_pair_bf16(acc, p.a + i * p.lda + 2 * t, p.bt + (t * p.ldb + j) * 2);
      p.s[i * p.lds + j] = acc * p.scale;
    }
}

inline void accumulate_bf16(const AccumulateBf16& p) noexcept {
  for (std::int64_t r = 0; r < p.rows; ++r)
    for (std::int64_t d = 0; d < p.width; ++d) {
      float acc = flush_subnormal(p.out[r * p.ldo + d]);  // inputs are read as zero too
      for (std::int64_t t = 0; t < p.tp; ++t)
        acc = dot_pair_bf16(acc, p.c + r * p.cr + 2 * t, p.x + (t * p.ldx + d) * 2);
      p.out[r * p.ldo + d] = acc;
    }
}

}  // namespace reference
}  // namespace nn::kernels
GSQ_NAMESPACE_END
