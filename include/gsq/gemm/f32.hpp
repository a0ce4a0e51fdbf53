// gsq/gemm/f32.hpp — floating-point products: gemm_f32 and gemm_bf16 (BLAS semantics).
//
// C = alpha·op(A)·op(B) (overwrite) or C = fma(alpha, op(A)·op(B), C) (accumulate),
// op = optional transpose of a row-major view (strides allowed); the transposes are
// handled by packing, never by a transposed copy. Both run on gsq's own engine
// (float_driver.hpp): runtime-dispatched kernels (AVX-512 FMA, AVX-512-BF16 vdpbf16ps,
// AVX2 FMA) and the always-compiled reference (float_reference.hpp), chosen like the
// integer GEMM (core/isa.hpp: program, GSQ_ISA, CPUID).
//
// Same bits everywhere:
//   * gemm_f32: every C element is one FMA chain in ascending k from +0, then the
//     alpha epilogue. Reference, AVX2 and AVX-512 give identical bits, for any thread
//     count (work is split over M and N only) and any blocking.
//   * gemm_bf16: FP32 operands are rounded to bf16 (nearest even) in the packing step
//     (bf16 operands are used as stored), products accumulate in FP32 by pairs of k as
//     vdpbf16ps does (odd element then even, each rounded), in flush-to-zero mode. The
//     reference and the FP32-kernel emulation (CPUs without AVX512_BF16) perform the
//     same roundings, so all paths agree bit for bit (checked against the instruction on
//     Zen 4) except where a partial sum lands within one rounding of the subnormal
//     boundary. Identical for any thread count on every path.
// Error against the exact product: FP32 ≈ K·2^-24·Σ|a·b|; BF16 adds the operand rounding,
// ≈ 2·2^-9·Σ|a·b|.
#pragma once

#include <cstdint>

#include "gsq/core/bf16.hpp"
#include "gsq/core/config.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/gemm/float_driver.hpp"
#include "gsq/gemm/float_reference.hpp"
#include "gsq/gemm/params.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

/// C (+)= alpha · op(A) · op(B) in FP32, op(X) = transpose ? Xᵀ : X.
inline void gemm_f32(MatrixView<const float> a, bool transpose_a, MatrixView<const float> b,
                     bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  detail::float_gemm<float, float>(a, transpose_a, b, transpose_b, c, options, false, "gemm_f32");
}

/// The same with op(B) stored as BF16 (a frozen table kept in its checkpoint's dtype):
/// widened exactly in packing, so the bits are those of gemm_f32 over B's FP32 copy.
inline void gemm_f32(MatrixView<const float> a, bool transpose_a, MatrixView<const bf16> b,
                     bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  detail::float_gemm<float, bf16>(a, transpose_a, b, transpose_b, c, options, false, "gemm_f32");
}

/// C (+)= alpha · op(A) · op(B) with BF16 operands (FP32 ones rounded in packing) and
/// FP32 accumulation (vdpbf16ps).
inline void gemm_bf16(MatrixView<const float> a, bool transpose_a, MatrixView<const float> b,
                      bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  detail::float_gemm<float, float>(a, transpose_a, b, transpose_b, c, options, true, "gemm_bf16");
}
inline void gemm_bf16(MatrixView<const float> a, bool transpose_a, MatrixView<const bf16> b,
                      bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  detail::float_gemm<float, bf16>(a, transpose_a, b, transpose_b, c, options, true, "gemm_bf16");
}
inline void gemm_bf16(MatrixView<const bf16> a, bool transpose_a, MatrixView<const float> b,
                      bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  detail::float_gemm<bf16, float>(a, transpose_a, b, transpose_b, c, options, true, "gemm_bf16");
}
inline void gemm_bf16(MatrixView<const bf16> a, bool transpose_a, MatrixView<const bf16> b,
                      bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  detail::float_gemm<bf16, bf16>(a, transpose_a, b, transpose_b, c, options, true, "gemm_bf16");
}

/// The definition of gemm_f32 (plain loops; what GSQ_ISA=reference runs).
inline void gemm_f32_reference(MatrixView<const float> a, bool transpose_a,
                               MatrixView<const float> b, bool transpose_b, MatrixView<float> c,
                               const GemmOptions& options = {}) {
  detail::float_gemm<float, float>(a, transpose_a, b, transpose_b, c, options, false,
                                   "gemm_f32_reference", true);
}
/// The definition of gemm_bf16 (plain loops; what GSQ_ISA=reference runs).
template <class TA, class TB>
void gemm_bf16_reference(MatrixView<const TA> a, bool transpose_a, MatrixView<const TB> b,
                         bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  detail::float_gemm<TA, TB>(a, transpose_a, b, transpose_b, c, options, true,
                             "gemm_bf16_reference", true);
}

}  // namespace gemm
GSQ_NAMESPACE_END
