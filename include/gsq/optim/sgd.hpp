// gsq/optim/sgd.hpp — stochastic gradient descent with momentum (PyTorch semantics).
//
// For each element, with coupled L2 weight decay as torch.optim.SGD does it:
//     g  ← g + wd·p
//     b  ← g at the first step, else μ·b + (1 − dampening)·g
//     g  ← nesterov ? g + μ·b : b          (momentum μ = 0 skips the buffer)
//     p  ← p − lr·g
// Element-wise, so results are identical for any thread count.
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

struct SgdConfig {
  float lr = 1e-2f;
  float momentum = 0.9f;
  float dampening = 0.0f;
  bool nesterov = false;
  float weight_decay = 0.0f;

  void validate() const {
    GSQ_CHECK(lr >= 0.0f && std::isfinite(lr), ErrorCode::kInvalidArgument,
              "SGD: lr must be finite and >= 0, got " + std::to_string(lr));
    GSQ_CHECK(momentum >= 0.0f && momentum < 1.0f, ErrorCode::kInvalidArgument,
              "SGD: momentum must be in [0, 1), got " + std::to_string(momentum));
    GSQ_CHECK(dampening >= 0.0f && dampening <= 1.0f, ErrorCode::kInvalidArgument,
              "SGD: dampening must be in [0, 1], got " + std::to_string(dampening));
    GSQ_CHECK(!nesterov || (momentum > 0.0f && dampening == 0.0f), ErrorCode::kInvalidArgument,
              "SGD: nesterov needs momentum > 0 and dampening 0");
    GSQ_CHECK(weight_decay >= 0.0f, ErrorCode::kInvalidArgument,
              "SGD: weight_decay must be >= 0, got " + std::to_string(weight_decay));
  }
};

class Sgd final : public Optimizer {
 public:
  explicit Sgd(SgdConfig config = {}) : config_(config) { config_.validate(); }

  void step(const ParameterList& params) override {
    check_parameters(params, "Sgd::step");
    const float lr = config_.lr, mu = config_.momentum, wd = config_.weight_decay;
    const float keep = 1.0f - config_.dampening;
    const bool nesterov = config_.nesterov;
    for (const Parameter& p : params) {
      float* w = p.value->data();
      const float* g = p.grad->data();
      float* buf = nullptr;
      bool first = false;
      if (mu != 0.0f) {
        auto slot = slots_.get(p, "momentum_buffer");
        buf = slot.tensor.data();
        first = slot.created;
      }
      detail::for_each_chunk(p.value->numel(), [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) {
          float d = g[i] + wd * w[i];
          if (buf != nullptr) {
            buf[i] = first ? d : mu * buf[i] + keep * d;
            d = nesterov ? d + mu * buf[i] : buf[i];
          }
          w[i] -= lr * d;
        }
      });
    }
    ++steps_;
  }

  float lr() const noexcept override { return config_.lr; }
  void set_lr(float lr) override {
    GSQ_CHECK(lr >= 0.0f && std::isfinite(lr), ErrorCode::kInvalidArgument,
              "Sgd::set_lr: lr must be finite and >= 0, got " + std::to_string(lr));
    config_.lr = lr;
  }
  std::int64_t steps() const noexcept override { return steps_; }
  const SgdConfig& config() const noexcept { return config_; }

  OptimizerState state() const override {
    return {std::string(name()), steps_, slots_.export_tensors()};
  }
  void load_state(const OptimizerState& state) override {
    GSQ_CHECK(state.optimizer == name(), ErrorCode::kInvalidArgument,
              "Sgd::load_state: state was saved by '" + state.optimizer + "', not sgd");
    GSQ_CHECK(state.step >= 0, ErrorCode::kInvalidArgument,
              "Sgd::load_state: negative step " + std::to_string(state.step));
    slots_.import_tensors(state.tensors);
    steps_ = state.step;
  }
  std::string_view name() const noexcept override { return "sgd"; }
  std::int64_t state_bytes() const noexcept override { return slots_.bytes(); }

 private:
  SgdConfig config_;
  std::int64_t steps_ = 0;
  detail::SlotStore slots_;
};

}  // namespace optim
GSQ_NAMESPACE_END
