// gsq/nn/parameter.hpp — the vocabulary shared by layers and optimizers: named parameters.
//
// Layers are plain objects (DESIGN.md "Layer API (autograd-free)"): each owns its
// trainable FP32 masters and their gradients, and lists them as `Parameter`s — a name
// plus non-owning pointers to the value and gradient tensors. Optimizers, gradient
// clipping, checkpoints and adapter files all work from a `ParameterList`, so a model is
// composed by concatenating its layers' lists (with a name prefix per layer). Pointers
// stay valid as long as the layer is alive and not moved.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/tensor.hpp"

GSQ_NAMESPACE_BEGIN

/// One trainable tensor: `value` (the FP32 master) and `grad` (same shape), not owned.
struct Parameter {
  std::string name;
  Tensor<float>* value = nullptr;
  Tensor<float>* grad = nullptr;
};

using ParameterList = std::vector<Parameter>;

/// Appends `params` to `out`, each name prefixed with `prefix` (e.g. "layers.0.wq.").
inline void append_parameters(ParameterList& out, std::string_view prefix, ParameterList params) {
  for (Parameter& p : params) {
    p.name.insert(0, prefix);
    out.push_back(std::move(p));
  }
}

/// Sets every gradient in `params` to zero.
inline void zero_grads(const ParameterList& params) noexcept {
  for (const Parameter& p : params)
    if (p.grad != nullptr)
      for (float& g : *p.grad) g = 0.0f;
}

/// Total number of trainable scalars.
inline std::int64_t parameter_count(const ParameterList& params) noexcept {
  std::int64_t n = 0;
  for (const Parameter& p : params)
    if (p.value != nullptr) n += p.value->numel();
  return n;
}

/// Throws unless every entry has a value and a gradient of the same size and the names
/// are non-empty; `where` names the caller in the message.
inline void check_parameters(const ParameterList& params, std::string_view where) {
  for (const Parameter& p : params) {
    GSQ_CHECK(!p.name.empty() && p.value != nullptr && p.grad != nullptr,
              ErrorCode::kInvalidArgument,
              std::string(where) + ": parameter '" + p.name + "' lacks a name, value or gradient");
    GSQ_CHECK(p.value->numel() == p.grad->numel(), ErrorCode::kShapeMismatch,
              std::string(where) + ": parameter '" + p.name + "' has " +
                  std::to_string(p.value->numel()) + " values but " +
                  std::to_string(p.grad->numel()) + " gradients");
  }
}

GSQ_NAMESPACE_END
