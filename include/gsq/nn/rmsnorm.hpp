// gsq/nn/rmsnorm.hpp — RMSNorm, y = x · rsqrt(mean(x²) + eps) · w, row by row.
//
// LLaMA normalises every token's hidden vector before attention, before the MLP and
// before the classifier. The weight is frozen for LoRA fine-tuning and may be made
// trainable. Forward keeps in the cache what backward needs: the input row and its
// reciprocal RMS r — or only r (keep_input = false) when the caller can hand backward the
// input again (the LLaMA block rebuilds the MLP norm's input h = x + o_proj(·) from
// what it keeps anyway, so h is not stored twice). With x̂ = x·r:
//     dx = r · (dy⊙w − x̂ · mean(dy⊙w⊙x̂)),      dw += Σ_tokens dy⊙x̂.
// Row sums accumulate in double (cheap next to the products around it, and closer to
// the float64 goldens); dw is split over columns, each summing tokens in order, so every
// result is bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/workspace.hpp"

GSQ_NAMESPACE_BEGIN

class RmsNorm {
 public:
  /// What backward needs: the input [tokens, dim] (unless the caller keeps it) and
  /// 1/rms per token.
  struct Cache {
    Tensor<float> x;
    Tensor<float> inv_rms;  // [tokens, 1]
    std::int64_t bytes() const noexcept { return x.bytes() + inv_rms.bytes(); }
  };

  RmsNorm() = default;
  /// `weight` is [dim]; `eps` from the model config (1e-5 llama2.c, rms_norm_eps for HF).
  RmsNorm(Tensor<float> weight, float eps, bool trainable = false)
      : weight_(std::move(weight)), eps_(eps) {
    GSQ_CHECK(weight_.numel() > 0, ErrorCode::kInvalidExtent, "RmsNorm: empty weight");
    GSQ_CHECK(eps > 0.0f, ErrorCode::kInvalidArgument,
              "RmsNorm: eps must be > 0, got " + std::to_string(eps));
    set_trainable(trainable);
  }

  std::int64_t dim() const noexcept { return weight_.numel(); }
  float eps() const noexcept { return eps_; }
  const Tensor<float>& weight() const noexcept { return weight_; }
  Tensor<float>& weight() noexcept { return weight_; }
  const Tensor<float>& grad() const noexcept { return grad_; }
  Tensor<float>& grad() noexcept { return grad_; }
  bool trainable() const noexcept { return grad_.numel() > 0; }
  void set_trainable(bool trainable) {
    if (trainable == this->trainable()) return;
    grad_ = trainable ? Tensor<float>({dim()}, MemoryCategory::kGradients) : Tensor<float>();
  }

  /// y = rmsnorm(x) · w for x, y [tokens, dim] (y may alias x).
  /// With a cache, keeps 1/rms and (keep_input) x for backward.
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache* cache,
               bool keep_input = true) const {
    check_shape(x, x.rows(), dim(), "RmsNorm::forward input");
    check_shape(y, x.rows(), dim(), "RmsNorm::forward output");
    float* inv = nullptr;
    float* saved = nullptr;
    if (cache != nullptr) {
      inv = ensure_matrix(cache->inv_rms, x.rows(), 1, MemoryCategory::kActivations).data();
      if (keep_input) saved = ensure_matrix(cache->x, x.rows(), dim(), MemoryCategory::kActivations).data();
      else cache->x = Tensor<float>();
    }
    const std::int64_t d = dim();
    const float* w = weight_.data();
    parallel_for(x.rows(), [&](std::int64_t t) {
      const float* xr = x.row(t);
      double ss = 0.0;
      for (std::int64_t c = 0; c < d; ++c) ss += static_cast<double>(xr[c]) * xr[c];
      const auto r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps_));
      if (inv != nullptr) inv[t] = r;
      if (saved != nullptr) std::copy(xr, xr + d, saved + t * d);
      float* yr = y.row(t);
      for (std::int64_t c = 0; c < d; ++c) yr[c] = xr[c] * r * w[c];
    }, 8);
  }

  /// dx from dy (both [tokens, dim]; dx may alias dy); accumulates dw when trainable.
  void backward(MatrixView<const float> dy, MatrixView<float> dx, Cache& cache) {
    GSQ_CHECK(cache.x.rank() == 2, ErrorCode::kInvalidArgument,
              "RmsNorm::backward: the cache is empty (or forward kept no input: pass it)");
    backward(dy, dx, cache, cache.x.view());
  }
  /// As above, with the forward's input x given by the caller (bit-identical values).
  void backward(MatrixView<const float> dy, MatrixView<float> dx, Cache& cache,
                MatrixView<const float> input) {
    const std::int64_t n = cache.inv_rms.rank() == 2 ? cache.inv_rms.dim(0) : -1;
    GSQ_CHECK(n >= 0, ErrorCode::kInvalidArgument, "RmsNorm::backward: the cache is empty");
    check_shape(input, n, dim(), "RmsNorm::backward input");
    check_shape(dy, n, dim(), "RmsNorm::backward dy");
    check_shape(dx, n, dim(), "RmsNorm::backward dx");
    const std::int64_t d = dim();
    const std::int64_t xstride = input.stride();
    const float* w = weight_.data();
    const float* xs = input.data();
    const float* inv = cache.inv_rms.data();
    if (trainable()) {  // before dx, which may overwrite dy
      float* g = grad_.data();
      constexpr std::int64_t kColumns = 64;
      parallel_for((d + kColumns - 1) / kColumns, [&](std::int64_t chunk) {
        const std::int64_t c0 = chunk * kColumns;
        const std::int64_t c1 = std::min(c0 + kColumns, d);
        for (std::int64_t t = 0; t < n; ++t) {
          const float* dyr = dy.row(t);
          const float* xr = xs + t * xstride;
          for (std::int64_t c = c0; c < c1; ++c) g[c] += dyr[c] * (xr[c] * inv[t]);
        }
      });
    }
    parallel_for(n, [&](std::int64_t t) {
      const float* dyr = dy.row(t);
      const float* xr = xs + t * xstride;
      const float r = inv[t];
      double dot = 0.0;  // Σ (dy⊙w)·x̂
      for (std::int64_t c = 0; c < d; ++c)
        dot += static_cast<double>(dyr[c] * w[c]) * static_cast<double>(xr[c] * r);
      const auto mean = static_cast<float>(dot / static_cast<double>(d));
      float* dxr = dx.row(t);
      for (std::int64_t c = 0; c < d; ++c) dxr[c] = r * (dyr[c] * w[c] - xr[c] * r * mean);
    }, 8);
  }

  /// {"weight"} when trainable, else nothing.
  ParameterList parameters() {
    if (!trainable()) return {};
    return {Parameter{"weight", &weight_, &grad_}};
  }

 private:
  Tensor<float> weight_;
  Tensor<float> grad_;
  float eps_ = 1e-5f;
};

GSQ_NAMESPACE_END
