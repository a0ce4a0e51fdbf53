// gsq/gemm/float_reference.hpp — the definition of gemm_f32 and gemm_bf16, as plain loops.
//
// This is the always-compiled reference path (GSQ_ISA=reference) and what the tests
// compare every kernel with, bit for bit:
//   FP32: acc = +0; for k ascending: acc = fma(op(A)[i,k], op(B)[k,j], acc);
//         C = alpha·acc, or C = fma(alpha, acc, C) when accumulating.
//   BF16: both operands rounded to bf16 (nearest even) and subnormals flushed to zero;
//         for each pair of k (2p, 2p+1) ascending, as vdpbf16ps does it:
//           acc = ftz(fma(a[2p+1], b[2p+1], acc)); acc = ftz(fma(a[2p], b[2p], acc));
//         an odd K ends with a zero pair element. The epilogue as FP32, in flush-to-zero
//         mode (subnormal C, alpha or result read as / written as zero), which is how the
//         kernels run it (MXCSR.FTZ|DAZ for the whole BF16 product).
// Products of two bf16 values are exact in FP32, so each fma rounds once, exactly like
// the instruction. Identical to the hardware wherever no partial sum lands within one
// rounding of the subnormal boundary (tininess detection there is not pinned down).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "gsq/core/bf16.hpp"
#include "gsq/core/config.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/gemm/float_pack.hpp"
#include "gsq/gemm/params.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

namespace detail {

template <class TA, class TB>
void gemm_float_reference(const OpView<TA>& a, const OpView<TB>& b, std::int64_t k,
                          MatrixView<float> c, const GemmOptions& o, bool bf16_product) {
  const std::int64_t m = c.rows(), n = c.cols();
  std::vector<float> acc(static_cast<std::size_t>(n));
  auto ftz = [&](float x) { return bf16_product ? flush_subnormal(x) : x; };
  // op(B)[k, j]: b is a view of op(B)ᵀ lines (j, k).
  for (std::int64_t i = 0; i < m; ++i) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    if (!bf16_product) {
      for (std::int64_t kk = 0; kk < k; ++kk) {
        const float av = f32_operand(a.at(i, kk));
        for (std::int64_t j = 0; j < n; ++j)
          acc[static_cast<std::size_t>(j)] =
              std::fma(av, f32_operand(b.at(j, kk)), acc[static_cast<std::size_t>(j)]);
      }
    } else {
      auto av = [&](std::int64_t kk) {
        return kk < k ? bf16_operand(a.at(i, kk)).to_float() : 0.0f;
      };
      auto bv = [&](std::int64_t j, std::int64_t kk) {
        return kk < k ? bf16_operand(b.at(j, kk)).to_float() : 0.0f;
      };
      for (std::int64_t kk = 0; kk < k; kk += 2) {
        const float a_odd = av(kk + 1), a_even = av(kk);
        for (std::int64_t j = 0; j < n; ++j) {
          float& s = acc[static_cast<std::size_t>(j)];
          s = flush_subnormal(std::fma(a_odd, bv(j, kk + 1), s));
          s = flush_subnormal(std::fma(a_even, bv(j, kk), s));
        }
      }
    }
    const float alpha = ftz(o.alpha);
    for (std::int64_t j = 0; j < n; ++j) {
      const float s = acc[static_cast<std::size_t>(j)];
      c(i, j) = o.accumulate ? ftz(std::fma(alpha, s, ftz(c(i, j)))) : ftz(alpha * s);
    }
  }
}

}  // namespace detail

}  // namespace gemm
GSQ_NAMESPACE_END
