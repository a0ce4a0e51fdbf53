// Helpers shared by the Linear / LoraLinear / L4qLinear tests: similarity figures,
// loss probes for finite differences, copying matrices.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>

#include "gsq/core/tensor.hpp"

namespace gsq::test {

/// Cosine similarity of two equally sized arrays, in double.
inline double cosine(const float* a, const float* b, std::int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    ab += double{a[i]} * b[i];
    aa += double{a[i]} * a[i];
    bb += double{b[i]} * b[i];
  }
  return (aa == 0 || bb == 0) ? (aa == bb ? 1.0 : 0.0) : ab / std::sqrt(aa * bb);
}
inline double cosine(const Tensor<float>& a, const Tensor<float>& b) {
  REQUIRE(a.numel() == b.numel());
  return cosine(a.data(), b.data(), a.numel());
}

/// ‖a − b‖ / ‖b‖ and max |a − b|.
struct Diff {
  double rel = 0, max_abs = 0;
};
inline Diff diff(const float* a, const float* b, std::int64_t n) {
  double num = 0, den = 0, mx = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double d = double{a[i]} - b[i];
    num += d * d;
    den += double{b[i]} * b[i];
    mx = std::max(mx, std::fabs(d));
  }
  return {den == 0 ? std::sqrt(num) : std::sqrt(num / den), mx};
}

/// Σ y ⊙ r in double: a linear probe whose gradient with respect to y is r.
inline double probe(MatrixView<const float> y, MatrixView<const float> r) {
  double s = 0;
  for (std::int64_t i = 0; i < y.rows(); ++i)
    for (std::int64_t j = 0; j < y.cols(); ++j) s += double{y(i, j)} * r(i, j);
  return s;
}

/// Central-difference check of an analytic gradient `grad` of `loss` with respect to the
/// elements of `param`, on up to `samples` evenly spread elements.
inline void check_gradient(Tensor<float>& param, const Tensor<float>& grad,
                           const std::function<double()>& loss, float eps, double tol,
                           std::int64_t samples = 40) {
  REQUIRE(param.numel() == grad.numel());
  const std::int64_t n = param.numel();
  const std::int64_t stride = std::max<std::int64_t>(1, n / samples);
  for (std::int64_t i = 0; i < n; i += stride) {
    const float keep = param[i];
    param[i] = keep + eps;
    const double up = loss();
    param[i] = keep - eps;
    const double down = loss();
    param[i] = keep;
    const double fd = (up - down) / (2.0 * static_cast<double>(eps));
    CAPTURE(i);
    CHECK(grad[i] == doctest::Approx(fd).epsilon(tol).scale(1.0));
  }
}

inline void copy_into(MatrixView<const float> src, Tensor<float>& dst) {
  REQUIRE(dst.numel() == src.size());
  for (std::int64_t i = 0; i < src.rows(); ++i)
    std::copy(src.row(i), src.row(i) + src.cols(), dst.data() + i * src.cols());
}

}  // namespace gsq::test
