// gsq/gemm/reference.hpp — the definition of the integer GEMM, as a plain triple loop.
//
// Kept apart from the packed, dispatched engine (as ruy's ReferenceMul): every ISA path
// and every thread count must reproduce these bits exactly, and tests compare against
// it. Per output element:
//     acc = 0.0f
//     for each k-group g, ascending:  acc += ldexp(float(Σ_{k in g} a_mk·b_nk), e_a + e_b)
//     C   = accumulate ? fma(alpha, acc, C) : alpha · acc
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/params.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

namespace detail {
inline void check_gemm_shapes(std::int64_t m, std::int64_t n, std::int64_t ka, std::int64_t kb,
                              MatrixView<float> c, const char* what) {
  GSQ_CHECK(ka == kb, ErrorCode::kShapeMismatch,
            std::string(what) + ": A has k=" + std::to_string(ka) + " but B has k=" +
                std::to_string(kb));
  check_shape(c, m, n, what);
}

inline void check_same_group(const GseSpec& a, const GseSpec& b, const char* what) {
  GSQ_CHECK(a.group == b.group, ErrorCode::kInvalidFormat,
            std::string(what) + ": A and B must share the group size (A " + a.name() + ", B " +
                b.name() + ")");
}
}  // namespace detail

/// The scalar reference: the definition every other path must reproduce bit for bit.
inline void gemm_nt_reference(const GseMatrix& a, const GseMatrix& b, MatrixView<float> c,
                              const GemmOptions& options = {}) {
  detail::check_gemm_shapes(a.rows(), b.rows(), a.cols(), b.cols(), c, "gemm_nt");
  detail::check_same_group(a.spec(), b.spec(), "gemm_nt");
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

}  // namespace gemm
GSQ_NAMESPACE_END
