// gsq/gemm/gemm.hpp — the integer GEMM's public entry points (DESIGN.md "GEMM convention").
//
// One form: C[M,N] (+)= alpha · Σ_k A[m,k]·B[n,k], both operands GSE-INT, grouped along
// k and stored k-contiguous ("NT"). Per output element, exactly:
//     acc = 0.0f
//     for each k-group g, ascending:  acc += ldexp(float(Σ_{k in g} a_mk·b_nk), e_a + e_b)
//     C   = accumulate ? fma(alpha, acc, C) : alpha · acc
// The int32 group sum converts to float exactly (G·(2^(b-1)-1)^2 < 2^24) and the ldexp is
// a single correctly-rounded scaling, so every ISA path and thread count gives the same
// bits. Work is split over M and N only, never over k.
//
// TODO(gemm): the entry points below run the reference kernel; the packed, dispatched
// AVX2 / AVX-512 VNNI engine replaces their bodies (same contract).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/nf4.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

struct GemmOptions {
  float alpha = 1.0f;
  bool accumulate = false;  // C = fma(alpha, acc, C) instead of C = alpha·acc
};

namespace detail {
inline void check_gemm_shapes(std::int64_t m, std::int64_t n, std::int64_t ka, std::int64_t kb,
                              MatrixView<float> c, const char* what) {
  GSQ_CHECK(ka == kb, ErrorCode::kShapeMismatch,
            std::string(what) + ": A has k=" + std::to_string(ka) + " but B has k=" +
                std::to_string(kb));
  check_shape(c, m, n, what);
}
}  // namespace detail

/// The scalar reference: the definition every other path must reproduce bit for bit.
inline void gemm_nt_reference(const GseMatrix& a, const GseMatrix& b, MatrixView<float> c,
                              const GemmOptions& options = {}) {
  detail::check_gemm_shapes(a.rows(), b.rows(), a.cols(), b.cols(), c, "gemm_nt");
  GSQ_CHECK(a.spec().group == b.spec().group, ErrorCode::kInvalidFormat,
            "gemm_nt: A and B must share the group size (A " + a.spec().name() + ", B " +
                b.spec().name() + ")");
  const int group = a.spec().group;
  for (std::int64_t m = 0; m < a.rows(); ++m) {
    for (std::int64_t n = 0; n < b.rows(); ++n) {
      float acc = 0.0f;
      for (std::int64_t g = 0; g < a.groups_per_row(); ++g) {
        std::int32_t sum = 0;
        for (std::int64_t k = g * group; k < (g + 1) * group; ++k)
          sum += a.mantissa(m, k) * b.mantissa(n, k);
        acc += std::ldexp(static_cast<float>(sum), a.exponent(m, g) + b.exponent(n, g));
      }
      c(m, n) = options.accumulate ? std::fma(options.alpha, acc, c(m, n)) : options.alpha * acc;
    }
  }
}

/// C (+)= alpha · A·Bᵀ for GSE-INT A [M, K] and B [N, K] on the selected ISA path.
inline void gemm_nt(const GseMatrix& a, const GseMatrix& b, MatrixView<float> c,
                    const GemmOptions& options = {}) {
  gemm_nt_reference(a, b, c, options);
}

}  // namespace gemm
GSQ_NAMESPACE_END
