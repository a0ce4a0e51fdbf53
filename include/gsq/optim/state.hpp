// gsq/optim/state.hpp — optimizer state as plain data: named tensors plus a step count.
//
// Resuming training must reproduce the uninterrupted run bit for bit, so an optimizer's
// whole mutable state (moments, momentum buffers, its step counter) is exported as this
// plain struct and restored from it exactly. It holds no pointers into the optimizer or
// the model, so the checkpoint code can write it to disk and read it back without
// knowing which optimizer produced it. Tensor names are "<parameter>.<slot>" (PyTorch's
// slot names: exp_avg, exp_avg_sq, momentum_buffer).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"

GSQ_NAMESPACE_BEGIN
namespace optim {

struct NamedTensor {
  std::string name;
  Tensor<float> value;
};

struct OptimizerState {
  std::string optimizer;  // "adamw", "sgd": checked when restoring
  std::int64_t step = 0;  // optimizer steps taken
  std::vector<NamedTensor> tensors;

  OptimizerState clone() const {
    OptimizerState s{optimizer, step, {}};
    s.tensors.reserve(tensors.size());
    for (const NamedTensor& t : tensors) s.tensors.push_back({t.name, t.value.clone()});
    return s;
  }
  /// The tensor called `name`, or nullptr.
  const Tensor<float>* find(std::string_view name) const noexcept {
    for (const NamedTensor& t : tensors)
      if (t.name == name) return &t.value;
    return nullptr;
  }
  std::int64_t bytes() const noexcept {
    std::int64_t n = 0;
    for (const NamedTensor& t : tensors) n += t.value.bytes();
    return n;
  }
};

namespace detail {

/// A zero tensor with the shape of `like`, counted under `category`.
inline Tensor<float> zeros_like(const Tensor<float>& like, MemoryCategory category) {
  switch (like.rank()) {
    case 1: return Tensor<float>({like.dim(0)}, category);
    case 2: return Tensor<float>({like.dim(0), like.dim(1)}, category);
    case 3: return Tensor<float>({like.dim(0), like.dim(1), like.dim(2)}, category);
    case 4: return Tensor<float>({like.dim(0), like.dim(1), like.dim(2), like.dim(3)}, category);
    default: return Tensor<float>({like.numel()}, category);
  }
}

/// A copy of `src` counted under `category` (clone() would keep src's category).
inline Tensor<float> copy_as(const Tensor<float>& src, MemoryCategory category) {
  Tensor<float> t = zeros_like(src, category);
  std::copy(src.begin(), src.end(), t.begin());
  return t;
}

}  // namespace detail
}  // namespace optim
GSQ_NAMESPACE_END
