// gsq/nn/mlp.hpp — the SwiGLU feed-forward block of LLaMA: down(silu(gate(x)) ⊙ up(x)).
//
// The three projections are whatever linear layer the caller plugs in (frozen FP32, a
// LoRA layer with a frozen NF4 base, an L4Q layer...), as long as it has the explicit
// forward/backward shape of `LinearLayer` below; the MLP only adds the gate nonlinearity
// and its gradient. Backward needs the two pre-activations g = gate(x) and u = up(x).
// When gate and up can rebuild their output from their own caches (LoRA layers keep the
// quantized input Xq and hidden Hq; `can_recompute_forward`), the MLP keeps neither: backward
// recomputes g and u into the thread's shared scratch with the forward's own products
// (two base GEMMs per block, the same bits, so gradients are unchanged) and the cache
// holds no [tokens, hidden] FP32 tensor — at W8A8G8 these two were the largest cached
// activations (8 bytes per hidden unit per token). Otherwise (frozen or L4Q gate/up, or
// set_recompute_hidden(false) to trade memory for the two GEMMs) g and u stay cached in
// FP32. Gate and up read the same x: layers that keep it (LoRA, a trainable Linear)
// keep one copy between them in the cache's SharedInput (nn/qcd.hpp). With
// a = silu(g)⊙u and da = down.backward(dy):
//     dg = da ⊙ u ⊙ σ(g)·(1 + g·(1 − σ(g))),   du = da ⊙ silu(g),
//     dx = gate.backward(dg) + up.backward(du)   (up accumulates into gate's dx).
// llama2.c names: w1 = gate, w3 = up, w2 = down (golden/README.md).
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>
#include <utility>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/qcd.hpp"
#include "gsq/nn/scratch.hpp"
#include "gsq/nn/workspace.hpp"

GSQ_NAMESPACE_BEGIN

/// The explicit-backward linear layer the MLP (and the model's projection slots) plug in,
/// as nn/linear.hpp and nn/lora_linear.hpp define it: forward(x, y, cache) computes
/// y [tokens, out] from x [tokens, in] and fills the cache; backward(dy, cache, dx,
/// accumulate_dx) writes (or adds to) dx and accumulates the layer's own gradients.
template <class L>
concept LinearLayer = requires(L& layer, const L& const_layer, MatrixView<const float> x,
                               MatrixView<float> y, typename L::Cache& cache) {
  { const_layer.in_features() } -> std::convertible_to<std::int64_t>;
  { const_layer.out_features() } -> std::convertible_to<std::int64_t>;
  layer.forward(x, y, cache);
  layer.backward(x, cache, y, true);
  { layer.parameters() } -> std::same_as<ParameterList>;
};

namespace nn::detail {
inline float sigmoid(float x) noexcept { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace nn::detail

template <LinearLayer Linear>
class SwiGluMlp {
 public:
  struct Cache {
    typename Linear::Cache gate;
    typename Linear::Cache up;
    typename Linear::Cache down;
    SharedInput in;   // x, stored once for gate and up (when they keep it)
    Tensor<float> g;  // gate(x) [tokens, hidden], unless recomputed
    Tensor<float> u;  // up(x)   [tokens, hidden], unless recomputed
    std::int64_t tokens = 0;
    bool recompute = false;  // g and u are rebuilt in backward
  };

  SwiGluMlp() = default;
  SwiGluMlp(Linear gate, Linear up, Linear down)
      : gate_(std::move(gate)), up_(std::move(up)), down_(std::move(down)) {
    GSQ_CHECK(gate_.in_features() == up_.in_features() &&
                  gate_.out_features() == up_.out_features() &&
                  down_.in_features() == gate_.out_features() &&
                  down_.out_features() == gate_.in_features(),
              ErrorCode::kShapeMismatch,
              "SwiGluMlp: projections do not fit: gate " + shape(gate_) + ", up " + shape(up_) +
                  ", down " + shape(down_) + " (expected [hidden, dim], [hidden, dim], [dim, hidden])");
  }

  std::int64_t dim() const noexcept { return gate_.in_features(); }
  std::int64_t hidden_dim() const noexcept { return gate_.out_features(); }
  Linear& gate() noexcept { return gate_; }
  Linear& up() noexcept { return up_; }
  Linear& down() noexcept { return down_; }
  const Linear& gate() const noexcept { return gate_; }
  const Linear& up() const noexcept { return up_; }
  const Linear& down() const noexcept { return down_; }

  /// Recompute g and u in backward instead of caching them when the projections can
  /// (default on; off keeps them cached in FP32).
  void set_recompute_hidden(bool on) noexcept { recompute_hidden_ = on; }
  bool recompute_hidden() const noexcept { return recompute_hidden_; }

  /// y [tokens, dim] from x [tokens, dim]; with a cache, keeps what backward needs.
  void forward(MatrixView<const float> x, MatrixView<float> y, Cache* cache) {
    const std::int64_t n = x.rows();
    check_shape(x, n, dim(), "SwiGluMlp::forward input");
    check_shape(y, n, dim(), "SwiGluMlp::forward output");
    // Without a cache (evaluation), g and u are the thread's shared scratch and the
    // projections' caches the layer's own (they hold nothing a cache-free call keeps).
    using detail::ScratchSlot;
    Cache& caches = cache != nullptr ? *cache : eval_;
    const std::int64_t h = hidden_dim();
    // Whether g and u are recomputed is known once gate and up have filled their caches;
    // until then they go to scratch, and are copied into the cache only if needed.
    MatrixView<float> g = detail::shared_scratch(ScratchSlot::kHiddenGate, n, h);
    MatrixView<float> u = detail::shared_scratch(ScratchSlot::kHiddenUp, n, h);
    MatrixView<float> a = detail::shared_scratch(ScratchSlot::kHidden, n, h);
    if (cache != nullptr) {
      cache->in.begin();
      project(gate_, x, g, cache->gate, &cache->in);
      project(up_, x, u, cache->up, &cache->in);
    } else {
      gate_.forward(x, g, caches.gate);
      up_.forward(x, u, caches.up);
    }
    if (cache != nullptr) {
      cache->tokens = n;
      cache->recompute = recompute_hidden_ && can_recompute(*cache);
      if (cache->recompute) {
        cache->g = Tensor<float>();  // release a copy kept by an earlier mode
        cache->u = Tensor<float>();
      } else {
        copy_into(g, ensure_matrix(cache->g, n, h, MemoryCategory::kActivations));
        copy_into(u, ensure_matrix(cache->u, n, h, MemoryCategory::kActivations));
      }
    }
    parallel_for(n, [&](std::int64_t t) {
      const float* gr = g.row(t);
      const float* ur = u.row(t);
      float* ar = a.row(t);
      for (std::int64_t c = 0; c < h; ++c) ar[c] = gr[c] * nn::detail::sigmoid(gr[c]) * ur[c];
    }, 8);
    down_.forward(a, y, caches.down);
  }

  /// dx [tokens, dim] from dy; the projections accumulate their parameter gradients.
  void backward(MatrixView<const float> dy, MatrixView<float> dx, Cache& cache) {
    GSQ_CHECK(cache.tokens > 0 && (cache.recompute || cache.g.rank() == 2),
              ErrorCode::kInvalidArgument,
              "SwiGluMlp::backward: the cache is empty (forward ran without one)");
    const std::int64_t n = cache.tokens;
    const std::int64_t h = hidden_dim();
    check_shape(dy, n, dim(), "SwiGluMlp::backward dy");
    check_shape(dx, n, dim(), "SwiGluMlp::backward dx");
    using detail::ScratchSlot;
    MatrixView<float> dg = detail::shared_scratch(ScratchSlot::kHidden, n, h);
    MatrixView<float> du = detail::shared_scratch(ScratchSlot::kHiddenUp, n, h);
    down_.backward(dy, cache.down, du, /*accumulate_dx=*/false);  // da, turned into du in place below
    // g and u: cached, or rebuilt (u into dg's buffer: each element is read before dg
    // overwrites it).
    const float* g = cache.g.data();
    const float* u = cache.u.data();
    std::int64_t g_stride = h, u_stride = h;
    if (cache.recompute) {
      MatrixView<float> gs = detail::shared_scratch(ScratchSlot::kHiddenGate, n, h);
      recompute(gate_, cache.gate, gs);
      recompute(up_, cache.up, dg);
      g = gs.data();
      g_stride = gs.stride();
      u = dg.data();
      u_stride = dg.stride();
    }
    parallel_for(n, [&](std::int64_t t) {
      float* dgr = dg.row(t);
      float* dur = du.row(t);
      const float* gr = g + t * g_stride;
      const float* ur = u + t * u_stride;
      for (std::int64_t c = 0; c < h; ++c) {
        const float gv = gr[c];
        const float sg = nn::detail::sigmoid(gv);
        const float da = dur[c];
        dgr[c] = da * ur[c] * sg * (1.0f + gv * (1.0f - sg));
        dur[c] = da * gv * sg;
      }
    }, 8);
    gate_.backward(dg, cache.gate, dx, /*accumulate_dx=*/false);
    up_.backward(du, cache.up, dx, /*accumulate_dx=*/true);
  }

  /// The projections' trainable parameters, prefixed "gate_proj.", "up_proj.", "down_proj."
  /// (the Hugging Face / PEFT module names).
  ParameterList parameters() {
    ParameterList out;
    append_parameters(out, "gate_proj.", gate_.parameters());
    append_parameters(out, "up_proj.", up_.parameters());
    append_parameters(out, "down_proj.", down_.parameters());
    return out;
  }

 private:
  static std::string shape(const Linear& l) {
    return "[" + std::to_string(l.out_features()) + ", " + std::to_string(l.in_features()) + "]";
  }

  static void copy_into(MatrixView<const float> src, MatrixView<float> dst) {
    for (std::int64_t r = 0; r < src.rows(); ++r)
      std::copy(src.row(r), src.row(r) + src.cols(), dst.row(r));
  }
  bool can_recompute(const Cache& c) const {
    if constexpr (requires { gate_.can_recompute_forward(c.gate); }) {
      return gate_.can_recompute_forward(c.gate) && up_.can_recompute_forward(c.up);
    } else {
      return false;
    }
  }
  static void project(Linear& layer, MatrixView<const float> x, MatrixView<float> y,
                      typename Linear::Cache& c, SharedInput* shared) {
    if constexpr (requires { layer.forward(x, y, c, shared); }) layer.forward(x, y, c, shared);
    else layer.forward(x, y, c);
  }
  static void recompute(Linear& layer, const typename Linear::Cache& c, MatrixView<float> y) {
    if constexpr (requires { layer.recompute_forward(c, y); }) layer.recompute_forward(c, y);
  }

  Linear gate_;
  Linear up_;
  Linear down_;
  bool recompute_hidden_ = true;
  // The projections' caches for a forward without one (evaluation). The [tokens, hidden]
  // temporaries (g and u without a cache, the down input a or dg, du) are the thread's
  // shared scratch (nn/scratch.hpp): one set for all blocks of a model.
  Cache eval_;
};

GSQ_NAMESPACE_END
