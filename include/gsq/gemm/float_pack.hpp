// gsq/gemm/float_pack.hpp — panels and kernel parameters of the floating-point GEMM
// (gemm_f32, gemm_bf16), and the packers that fill the panels.
//
// The float engine follows the integer one (gemm/pack.hpp, gemm/driver.hpp): op(A) is
// cut into tiles of MR rows, op(B) into panels of NR columns; packing reads the operand
// as stored (row-major, transposed or not, FP32 or BF16) and writes the layout the
// kernel streams, so no transposed copy of an operand is ever made. All layouts are in
// 4-byte units ("steps"):
//   * kF32: one step is one k. A tile: [k][MR] floats; B block: [k][NR] floats.
//   * kBf16Pairs (vdpbf16ps): one step is a pair of k (k, k+1) as two bf16, low half k.
//     A tile: [pair][MR] pairs; B block: [pair][NR] pairs. An odd K is padded with 0.
//   * kBf16AsF32: the BF16 product on an FP32 FMA kernel. The values are the bf16-rounded
//     operands widened to float, and each pair is stored odd k first: the FMA chain then
//     performs exactly vdpbf16ps's two roundings per pair (odd element, then even).
// Rows past M and columns past N are zero in a packed tile/block; the kernel computes them
// and never stores them. BF16 rounding flushes subnormal results to ±0 (vdpbf16ps treats
// subnormal inputs as zero), so every BF16 path sees the same operand values.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "gsq/core/bf16.hpp"
#include "gsq/core/config.hpp"
#include "gsq/core/tensor.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

/// What a packed panel holds (see the file comment).
enum class FloatKind { kF32, kBf16Pairs, kBf16AsF32 };

/// One float kernel call: `tiles` tiles of A (MR rows each) times one B block (the
/// `steps` steps of one NR-column panel). Accumulators start at +0 (first) or from `acc`
/// and end in `acc` or, on the last block, in C: C = alpha·acc or C = fma(alpha, acc, C).
/// Plain pointers and integers only, so it crosses into target regions unchanged.
struct FloatKernelParams {
  const void* a = nullptr;         // tile 0, step 0
  std::int64_t a_tile_stride = 0;  // 4-byte units from one tile to the next
  std::int64_t a_row_stride = 0;   // direct A: units between rows (0 = packed tile layout)
  std::int64_t a_step_stride = 0;  // direct A: units between k steps
  std::int64_t tiles = 0;
  const void* b = nullptr;         // packed B block, step 0
  std::int64_t steps = 0;          // k steps in this block
  int nr = 0;                      // panel width (units per B step)
  int n_valid = 0;                 // columns of C in this panel that exist (<= nr)
  std::int64_t m_valid = 0;        // rows of C from tile 0 that exist
  float* acc = nullptr;            // tiles × MR × nr partial sums between blocks
  bool first = true;
  bool last = true;
  float* c = nullptr;              // C at (tile 0 row 0, panel column 0)
  std::int64_t ldc = 0;
  float alpha = 1.0f;
  bool accumulate = false;
};

namespace detail {

/// Subnormal floats become zero of the same sign (vdpbf16ps's DAZ/FTZ).
inline float flush_subnormal(float x) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  return (u & 0x7F800000u) == 0 ? std::bit_cast<float>(u & 0x80000000u) : x;
}
inline bf16 flush_subnormal(bf16 h) noexcept {
  return (h.bits & 0x7F80u) == 0 ? bf16{static_cast<std::uint16_t>(h.bits & 0x8000u)} : h;
}

/// An element as the BF16 product sees it: rounded to bf16, subnormals flushed.
inline bf16 bf16_operand(float x) noexcept { return flush_subnormal(to_bf16(x)); }
inline bf16 bf16_operand(bf16 x) noexcept { return flush_subnormal(x); }
inline float f32_operand(float x) noexcept { return x; }
inline float f32_operand(bf16 x) noexcept { return x.to_float(); }

/// op(X)(i, k) of a row-major view: X(i, k), or X(k, i) when transposed.
template <class T>
struct OpView {
  const T* data;
  std::int64_t stride;
  bool transposed;
  const T& at(std::int64_t i, std::int64_t k) const noexcept {
    return transposed ? data[k * stride + i] : data[i * stride + k];
  }
};

/// Packs steps [s0, s1) of `count` (<= width) lines starting at line `first` of op(X)
/// (lines are rows of op(A) or columns of op(B); k runs along the other axis, K values
/// exist) into `dst` as [step][width] units; missing lines and k are zero.
template <class T>
void pack_lines(const OpView<T>& x, std::int64_t first, std::int64_t count, int width,
                std::int64_t k_total, std::int64_t s0, std::int64_t s1, FloatKind kind,
                void* dst) noexcept {
  const std::int64_t steps = s1 - s0;
  if (kind == FloatKind::kF32) {
    float* out = static_cast<float*>(dst);
    // Walk the source along its contiguous axis.
    if (!x.transposed) {  // line i is contiguous in k
      for (std::int64_t s = 0; s < steps; ++s)
        for (int i = count; i < width; ++i) out[s * width + i] = 0.0f;
      for (std::int64_t i = 0; i < count; ++i) {
        const T* src = x.data + (first + i) * x.stride + s0;
        for (std::int64_t s = 0; s < steps; ++s) out[s * width + i] = f32_operand(src[s]);
      }
    } else {  // step k is contiguous across lines
      for (std::int64_t s = 0; s < steps; ++s) {
        const T* src = x.data + (s0 + s) * x.stride + first;
        float* o = out + s * width;
        for (std::int64_t i = 0; i < count; ++i) o[i] = f32_operand(src[i]);
        for (int i = static_cast<int>(count); i < width; ++i) o[i] = 0.0f;
      }
    }
    return;
  }
  // BF16 kinds: steps are pairs of k.
  auto value = [&](std::int64_t i, std::int64_t k) noexcept {
    return i < count && k < k_total ? bf16_operand(x.at(first + i, k)) : bf16{};
  };
  if (kind == FloatKind::kBf16Pairs) {
    std::uint32_t* out = static_cast<std::uint32_t*>(dst);  // k in the low half
    for (std::int64_t s = 0; s < steps; ++s) {
      const std::int64_t k = 2 * (s0 + s);
      for (int i = 0; i < width; ++i)
        out[s * width + i] = static_cast<std::uint32_t>(value(i, k).bits) |
                             (static_cast<std::uint32_t>(value(i, k + 1).bits) << 16);
    }
  } else {  // kBf16AsF32: two float steps per pair, odd k first
    float* out = static_cast<float*>(dst);
    for (std::int64_t s = 0; s < steps; ++s) {
      const std::int64_t k = 2 * (s0 + s);
      for (int i = 0; i < width; ++i) {
        out[(2 * s) * width + i] = value(i, k + 1).to_float();
        out[(2 * s + 1) * width + i] = value(i, k).to_float();
      }
    }
  }
}

}  // namespace detail
}  // namespace gemm
GSQ_NAMESPACE_END
