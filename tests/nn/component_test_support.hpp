// Helpers for the model-component tests (embedding, RMSNorm, RoPE, attention, MLP, loss):
// a central-difference gradient check and a plain FP32 linear layer to plug into the MLP.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/workspace.hpp"

namespace gsq::test {

/// A [rows, cols] matrix of N(0, scale) values.
inline Tensor<float> normal_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                                   float scale = 1.0f) {
  Tensor<float> t({rows, cols});
  CounterRng rng(seed, 7);
  for (float& v : t) v = rng.next_normal() * scale;
  return t;
}

/// Σ w·y in double: the scalar whose gradient with respect to y is w.
inline double weighted_sum(MatrixView<const float> y, MatrixView<const float> w) {
  double s = 0.0;
  for (std::int64_t r = 0; r < y.rows(); ++r)
    for (std::int64_t c = 0; c < y.cols(); ++c)
      s += static_cast<double>(y(r, c)) * static_cast<double>(w(r, c));
  return s;
}

/// Compares `analytic` (the gradient of loss() with respect to x) with central differences
/// at up to `max_checks` evenly spread coordinates of x. `loss` reads x as it is now.
/// Returns the number of coordinates outside |num − ana| <= atol + rtol·max(|num|, |ana|).
inline int check_gradient(float* x, const float* analytic, std::int64_t n,
                          const std::function<double()>& loss, const char* what,
                          float eps = 1e-2f, double atol = 2e-3, double rtol = 2e-2,
                          std::int64_t max_checks = 48) {
  int bad = 0;
  const std::int64_t step = std::max<std::int64_t>(1, n / max_checks);
  for (std::int64_t i = (n > 1 ? 1 : 0) % std::max<std::int64_t>(n, 1); i < n; i += step) {
    const float saved = x[i];
    x[i] = saved + eps;
    const double plus = loss();
    x[i] = saved - eps;
    const double minus = loss();
    x[i] = saved;
    const double numeric = (plus - minus) / (2.0 * static_cast<double>(eps));
    const double a = analytic[i];
    if (std::fabs(numeric - a) > atol + rtol * std::max(std::fabs(numeric), std::fabs(a))) {
      if (bad < 5)
        MESSAGE(what << "[" << i << "]: numeric " << numeric << " analytic " << a);
      ++bad;
    }
  }
  return bad;
}

/// A plain FP32 linear layer y = x·Wᵀ with a trainable W, in the `LinearLayer` shape; the
/// tests plug it into the MLP so the MLP's gradient can be checked on its own.
class TestLinear {
 public:
  struct Cache {
    Tensor<float> x;
  };
  TestLinear() = default;
  TestLinear(std::int64_t out, std::int64_t in, std::uint64_t seed)
      : w_(normal_matrix(out, in, seed, 1.0f / std::sqrt(static_cast<float>(in)))),
        dw_({out, in}) {}
  std::int64_t in_features() const { return w_.dim(1); }
  std::int64_t out_features() const { return w_.dim(0); }
  Tensor<float>& weight() { return w_; }
  Tensor<float>& grad() { return dw_; }

  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache) {
    for (std::int64_t t = 0; t < x.rows(); ++t)
      for (std::int64_t o = 0; o < out_features(); ++o) {
        double s = 0.0;
        for (std::int64_t i = 0; i < in_features(); ++i)
          s += static_cast<double>(x(t, i)) * w_(o, i);
        y(t, o) = static_cast<float>(s);
      }
    cache.x = Tensor<float>::copy_of(x);
  }
  void backward(MatrixView<const float> dy, Cache& cache, MatrixView<float> dx,
                bool accumulate_dx = false) {
    for (std::int64_t t = 0; t < dy.rows(); ++t)
      for (std::int64_t i = 0; i < in_features(); ++i) {
        double s = 0.0;
        for (std::int64_t o = 0; o < out_features(); ++o)
          s += static_cast<double>(dy(t, o)) * w_(o, i);
        dx(t, i) = static_cast<float>(s) + (accumulate_dx ? dx(t, i) : 0.0f);
      }
    for (std::int64_t o = 0; o < out_features(); ++o)
      for (std::int64_t i = 0; i < in_features(); ++i) {
        double s = 0.0;
        for (std::int64_t t = 0; t < dy.rows(); ++t)
          s += static_cast<double>(dy(t, o)) * cache.x(t, i);
        dw_(o, i) += static_cast<float>(s);
      }
  }
  ParameterList parameters() { return {Parameter{"weight", &w_, &dw_}}; }

 private:
  Tensor<float> w_;
  Tensor<float> dw_;
};

}  // namespace gsq::test
