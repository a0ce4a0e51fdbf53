// gsq/optim/optimizer.hpp — the interface every optimizer offers to training drivers.
//
// Drivers choose the optimizer from configuration, so they hold an `Optimizer&`. An
// optimizer updates the FP32 masters listed in a ParameterList from their gradients; it
// never zeroes gradients (the caller does, with zero_grads), so gradient accumulation
// over micro-batches is the caller's choice. Per-parameter state is keyed by the
// parameter's name, so the list may be rebuilt between steps (pointers may change) as
// long as names and sizes stay the same.
#pragma once

#include <cstdint>
#include <string_view>

#include "gsq/core/config.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/optim/state.hpp"

GSQ_NAMESPACE_BEGIN
namespace optim {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  /// One update of every parameter in `params` from its gradient.
  virtual void step(const ParameterList& params) = 0;
  /// Learning rate of the next step (schedules set it before each step).
  virtual float lr() const noexcept = 0;
  virtual void set_lr(float lr) = 0;
  /// Steps taken so far.
  virtual std::int64_t steps() const noexcept = 0;
  /// A deep copy of the mutable state; load_state(state()) changes nothing.
  virtual OptimizerState state() const = 0;
  /// Replaces the mutable state with a deep copy of `state`; throws ConfigError if it
  /// was saved by another optimizer.
  virtual void load_state(const OptimizerState& state) = 0;
  virtual std::string_view name() const noexcept = 0;
  /// Bytes of optimizer state held (counted under MemoryCategory::kOptimizerState).
  virtual std::int64_t state_bytes() const noexcept = 0;
};

}  // namespace optim
GSQ_NAMESPACE_END
