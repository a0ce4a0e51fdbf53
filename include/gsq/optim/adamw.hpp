// gsq/optim/adamw.hpp — AdamW (Loshchilov & Hutter): Adam with decoupled weight decay.
//
// The update follows PyTorch's torch.optim.AdamW (amsgrad off), so hyperparameters mean
// the same thing as in the papers' recipes. For step t (1-based) and each element:
//     p  ← p · (1 − lr·wd)                         decoupled decay (not added to g)
//     m  ← β1·m + (1 − β1)·g
//     v  ← β2·v + (1 − β2)·g²
//     p  ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
// Bias corrections are computed in double once per step; the element loop is FP32 and
// element-wise, so results are identical for any thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/optim/optimizer.hpp"
#include "gsq/optim/slots.hpp"
#include "gsq/optim/state.hpp"

GSQ_NAMESPACE_BEGIN
namespace optim {

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;

  void validate() const {
    GSQ_CHECK(lr >= 0.0f && std::isfinite(lr), ErrorCode::kInvalidArgument,
              "AdamW: lr must be finite and >= 0, got " + std::to_string(lr));
    GSQ_CHECK(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f,
              ErrorCode::kInvalidArgument,
              "AdamW: betas must be in [0, 1), got " + std::to_string(beta1) + ", " +
                  std::to_string(beta2));
    GSQ_CHECK(eps > 0.0f, ErrorCode::kInvalidArgument,
              "AdamW: eps must be > 0, got " + std::to_string(eps));
    GSQ_CHECK(weight_decay >= 0.0f, ErrorCode::kInvalidArgument,
              "AdamW: weight_decay must be >= 0, got " + std::to_string(weight_decay));
  }
};

class AdamW final : public Optimizer {
 public:
  explicit AdamW(AdamWConfig config = {}) : config_(config) { config_.validate(); }

  void step(const ParameterList& params) override {
    check_parameters(params, "AdamW::step");
    const std::int64_t t = steps_ + 1;
    const double bc1 = 1.0 - std::pow(static_cast<double>(config_.beta1), static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(static_cast<double>(config_.beta2), static_cast<double>(t));
    const float step_size = static_cast<float>(config_.lr / bc1);
    const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    const float decay = 1.0f - config_.lr * config_.weight_decay;
    const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
    for (const Parameter& p : params) {
      float* m = slots_.get(p, "exp_avg").tensor.data();
      float* v = slots_.get(p, "exp_avg_sq").tensor.data();
      float* w = p.value->data();
      const float* g = p.grad->data();
      detail::for_each_chunk(p.value->numel(), [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) {
          const float gi = g[i];
          w[i] *= decay;
          m[i] = b1 * m[i] + (1.0f - b1) * gi;
          v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
          const float denom = std::sqrt(v[i]) * inv_sqrt_bc2 + eps;
          w[i] -= step_size * (m[i] / denom);
        }
      });
    }
    steps_ = t;
  }

  float lr() const noexcept override { return config_.lr; }
  void set_lr(float lr) override {
    GSQ_CHECK(lr >= 0.0f && std::isfinite(lr), ErrorCode::kInvalidArgument,
              "AdamW::set_lr: lr must be finite and >= 0, got " + std::to_string(lr));
    config_.lr = lr;
  }
  std::int64_t steps() const noexcept override { return steps_; }
  const AdamWConfig& config() const noexcept { return config_; }

  OptimizerState state() const override {
    return {std::string(name()), steps_, slots_.export_tensors()};
  }
  void load_state(const OptimizerState& state) override {
    GSQ_CHECK(state.optimizer == name(), ErrorCode::kInvalidArgument,
              "AdamW::load_state: state was saved by '" + state.optimizer + "', not adamw");
    GSQ_CHECK(state.step >= 0, ErrorCode::kInvalidArgument,
              "AdamW::load_state: negative step " + std::to_string(state.step));
    slots_.import_tensors(state.tensors);
    steps_ = state.step;
  }
  std::string_view name() const noexcept override { return "adamw"; }
  std::int64_t state_bytes() const noexcept override { return slots_.bytes(); }

 private:
  AdamWConfig config_;
  std::int64_t steps_ = 0;
  detail::SlotStore slots_;
};

}  // namespace optim
GSQ_NAMESPACE_END
