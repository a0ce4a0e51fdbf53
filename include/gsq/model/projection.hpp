// gsq/model/projection.hpp — one projection slot of a LLaMA block (q, k, v, o, gate, up, down).
//
// Fine-tuning picks, per slot, what sits there: a frozen `Linear` (NF4, GSE-INT or FP32
// storage), a `LoraLinear` (frozen base + trainable adapters), or an `L4qLinear`
// (quantization-aware LoRA whose deployed weight is one quantized matrix). The
// block code is the same whichever it is, so a `Projection` holds one of them and
// forwards the explicit forward/backward API (nn/mlp.hpp `LinearLayer`) to it; its Cache
// holds the matching layer's cache. This is the only place the model names the layer
// types: adding a new kind of layer adds one alternative here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/l4q_linear.hpp"
#include "gsq/nn/linear.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/nn/parameter.hpp"

GSQ_NAMESPACE_BEGIN

/// What fills a projection slot.
enum class ProjectionKind { kFrozen, kLora, kL4q };

constexpr std::string_view projection_kind_name(ProjectionKind k) noexcept {
  switch (k) {
    case ProjectionKind::kFrozen: return "frozen";
    case ProjectionKind::kLora: return "lora";
    case ProjectionKind::kL4q: return "l4q";
  }
  return "unknown";
}

class Projection {
 public:
  using Layer = std::variant<std::monostate, Linear, LoraLinear, L4qLinear>;

  /// The cache of whichever layer fills the slot (set up by the first forward).
  struct Cache {
    std::variant<std::monostate, Linear::Cache, LoraLinear::Cache, L4qLinear::Cache> layer;
    std::int64_t bytes() const noexcept {
      return std::visit(
          [](const auto& c) -> std::int64_t {
            if constexpr (std::is_same_v<std::decay_t<decltype(c)>, std::monostate>) return 0;
            else return c.bytes();
          },
          layer);
    }
  };

  Projection() = default;
  explicit Projection(Linear layer) : layer_(std::move(layer)) {}
  explicit Projection(LoraLinear layer) : layer_(std::move(layer)) {}
  explicit Projection(L4qLinear layer) : layer_(std::move(layer)) {}

  ProjectionKind kind() const noexcept {
    if (std::holds_alternative<LoraLinear>(layer_)) return ProjectionKind::kLora;
    if (std::holds_alternative<L4qLinear>(layer_)) return ProjectionKind::kL4q;
    return ProjectionKind::kFrozen;
  }
  bool empty() const noexcept { return std::holds_alternative<std::monostate>(layer_); }
  /// The layer as type T, or nullptr if the slot holds something else.
  template <class T>
  T* get_if() noexcept { return std::get_if<T>(&layer_); }
  template <class T>
  const T* get_if() const noexcept { return std::get_if<T>(&layer_); }

  std::int64_t in_features() const noexcept {
    return visit_layer([](const auto& l) { return l.in_features(); });
  }
  std::int64_t out_features() const noexcept {
    return visit_layer([](const auto& l) { return l.out_features(); });
  }

  /// y = layer(x), filling `cache` for backward. With `shared`, layers that can keep X
  /// there (LoRA, trainable Linear) share one copy with the other slots reading the
  /// same x (nn/qcd.hpp SharedInput); the others ignore it.
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache& cache,
               SharedInput* shared = nullptr) {
    std::visit(
        [&](auto& l) {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same_v<L, std::monostate>) {
            throw_empty();
          } else {
            using C = typename L::Cache;
            if (!std::holds_alternative<C>(cache.layer)) cache.layer.template emplace<C>();
            if constexpr (requires { l.forward(x, y, std::get<C>(cache.layer), shared); })
              l.forward(x, y, std::get<C>(cache.layer), shared);
            else
              l.forward(x, y, std::get<C>(cache.layer));
          }
        },
        layer_);
  }
  /// y = layer(x) without keeping anything for backward (evaluation, generation).
  void forward(MatrixView<const float> x, MatrixView<float> y) { forward(x, y, eval_cache_, nullptr); }

  /// dx (+)= ∂L/∂x from dy (an empty dx skips it); accumulates the layer's gradients.
  void backward(MatrixView<const float> dy, Cache& cache, MatrixView<float> dx,
                bool accumulate_dx = false) {
    std::visit(
        [&](auto& l) {
          using L = std::decay_t<decltype(l)>;
          if constexpr (std::is_same_v<L, std::monostate>) {
            throw_empty();
          } else {
            using C = typename L::Cache;
            GSQ_CHECK(std::holds_alternative<C>(cache.layer), ErrorCode::kInvalidArgument,
                      "Projection::backward: the cache was not filled by this layer's forward");
            l.backward(dy, std::get<C>(cache.layer), dx, accumulate_dx);
          }
        },
        layer_);
  }

  /// Can recompute_forward rebuild this slot's output from `cache`? (LoRA layers only:
  /// a frozen Linear keeps no input, and an L4Q layer would rebuild its whole W_q.)
  bool can_recompute_forward(const Cache& cache) const noexcept {
    const LoraLinear* l = std::get_if<LoraLinear>(&layer_);
    const LoraLinear::Cache* c = std::get_if<LoraLinear::Cache>(&cache.layer);
    return l != nullptr && c != nullptr && l->can_recompute_forward(*c);
  }
  /// y = the output of the forward that filled `cache`, bit for bit (see LoraLinear).
  void recompute_forward(const Cache& cache, MatrixView<float> y) {
    LoraLinear* l = std::get_if<LoraLinear>(&layer_);
    const LoraLinear::Cache* c = std::get_if<LoraLinear::Cache>(&cache.layer);
    GSQ_CHECK(l != nullptr && c != nullptr, ErrorCode::kInvalidArgument,
              "Projection::recompute_forward: only a LoRA slot can recompute its output");
    l->recompute_forward(*c, y);
  }

  ParameterList parameters() {
    return std::visit(
        [](auto& l) -> ParameterList {
          if constexpr (std::is_same_v<std::decay_t<decltype(l)>, std::monostate>) return {};
          else return l.parameters();
        },
        layer_);
  }

  /// Bytes of the stored weight (frozen base; adapters are counted by parameters()).
  std::int64_t frozen_weight_bytes() const noexcept {
    return visit_layer([](const auto& l) -> std::int64_t {
      if constexpr (std::is_same_v<std::decay_t<decltype(l)>, Linear>)
        return l.is_trainable() ? 0 : l.frozen_weight().bytes();
      else
        return l.frozen_weight().bytes();
    });
  }

 private:
  [[noreturn]] static void throw_empty() {
    detail::throw_error(ErrorCode::kInvalidArgument, "Projection: the slot holds no layer");
  }
  template <class F>
  std::int64_t visit_layer(F&& f) const noexcept {
    return std::visit(
        [&](const auto& l) -> std::int64_t {
          if constexpr (std::is_same_v<std::decay_t<decltype(l)>, std::monostate>) return 0;
          else return f(l);
        },
        layer_);
  }

  Layer layer_;
  Cache eval_cache_;  // reused by the cache-less forward
};

GSQ_NAMESPACE_END
