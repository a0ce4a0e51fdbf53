// gsq/gemm/f32.hpp — the FP32 twin of the integer GEMM, on Eigen.
//
// DESIGN.md: an FP32 path with the same API is the reference every integer result is
// compared with. BLAS semantics: C = alpha·op(A)·op(B) (overwrite) or
// C += alpha·op(A)·op(B) (accumulate), op = optional transpose of a row-major view.
// Eigen runs it on the calling thread (gsq builds Eigen without OpenMP: its thread
// count was process-wide state, and its split changed the bits).
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/gemm/params.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

namespace detail {
using RowMajorF32 = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMapF32 = Eigen::Map<const RowMajorF32, Eigen::Unaligned, Eigen::OuterStride<>>;
using MapF32 = Eigen::Map<RowMajorF32, Eigen::Unaligned, Eigen::OuterStride<>>;

inline ConstMapF32 eigen_map(MatrixView<const float> v) {
  return {v.data(), v.rows(), v.cols(), Eigen::OuterStride<>(v.stride())};
}
inline MapF32 eigen_map(MatrixView<float> v) {
  return {v.data(), v.rows(), v.cols(), Eigen::OuterStride<>(v.stride())};
}
}  // namespace detail

/// C (+)= alpha · op(A) · op(B) in FP32, op(X) = transpose ? Xᵀ : X.
inline void gemm_f32(MatrixView<const float> a, bool transpose_a, MatrixView<const float> b,
                     bool transpose_b, MatrixView<float> c, const GemmOptions& options = {}) {
  const std::int64_t m = transpose_a ? a.cols() : a.rows();
  const std::int64_t ka = transpose_a ? a.rows() : a.cols();
  const std::int64_t kb = transpose_b ? b.cols() : b.rows();
  const std::int64_t n = transpose_b ? b.rows() : b.cols();
  GSQ_CHECK(ka == kb, ErrorCode::kShapeMismatch,
            "gemm_f32: op(A) has k=" + std::to_string(ka) + " but op(B) has k=" +
                std::to_string(kb));
  check_shape(c, m, n, "gemm_f32: C");
  if (m == 0 || n == 0) return;
  auto cm = detail::eigen_map(c);
  if (ka == 0) {
    if (!options.accumulate) cm.setZero();
    return;
  }
  const auto am = detail::eigen_map(a);
  const auto bm = detail::eigen_map(b);
  const float alpha = options.alpha;
  // Four spellings so Eigen sees the transposes as expressions, never as copies.
  if (options.accumulate) {
    if (!transpose_a && !transpose_b) cm.noalias() += alpha * am * bm;
    else if (transpose_a && !transpose_b) cm.noalias() += alpha * am.transpose() * bm;
    else if (!transpose_a && transpose_b) cm.noalias() += alpha * am * bm.transpose();
    else cm.noalias() += alpha * am.transpose() * bm.transpose();
  } else {
    if (!transpose_a && !transpose_b) cm.noalias() = alpha * am * bm;
    else if (transpose_a && !transpose_b) cm.noalias() = alpha * am.transpose() * bm;
    else if (!transpose_a && transpose_b) cm.noalias() = alpha * am * bm.transpose();
    else cm.noalias() = alpha * am.transpose() * bm.transpose();
  }
}

}  // namespace gemm
GSQ_NAMESPACE_END
