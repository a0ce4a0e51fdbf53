// gsq/model/weights.hpp — the named tensors a Llama is built from, and random ones for tests.
//
// Loaders (io/) return a LlamaConfig plus FP32 tensors under the canonical Hugging Face
// names of model/config.hpp; the model takes that map, whatever file it came from. Tests
// and benchmarks that need no checkpoint — or shapes no checkpoint has — use
// `random_llama_weights`, which fills the same map deterministically from a seed with
// realistic scales (1/√in projections, norm weights near 1, embedding rows of unit
// norm so tied-classifier logits are O(1)), so activations, losses and gradients stay
// in the ranges of a trained model.
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "gsq/core/config.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/model/config.hpp"

GSQ_NAMESPACE_BEGIN

/// Canonical name → FP32 tensor ([out, in] matrices, [dim] norm weights).
using LlamaTensors = std::map<std::string, Tensor<float>>;

namespace model::detail {
/// "model.layers.<layer>.<suffix>".
inline std::string layer_tensor(std::int64_t layer, std::string_view suffix) {
  return "model.layers." + std::to_string(layer) + "." + std::string(suffix);
}
}  // namespace model::detail

/// Random weights for `config` under the canonical names (lm_head.weight only when the
/// classifier is untied). The same (config, seed) gives the same tensors everywhere.
inline LlamaTensors random_llama_weights(const LlamaConfig& config, std::uint64_t seed) {
  config.validate("random_llama_weights");
  LlamaTensors t;
  std::uint64_t stream = 0;
  auto matrix = [&](const std::string& name, std::int64_t rows, std::int64_t cols, float scale) {
    Tensor<float> m({rows, cols}, MemoryCategory::kWeights);
    CounterRng rng(seed, stream++);
    for (float& v : m) v = rng.next_normal() * scale;
    t.emplace(name, std::move(m));
  };
  auto norm = [&](const std::string& name) {
    Tensor<float> w({config.dim}, MemoryCategory::kWeights);
    CounterRng rng(seed, stream++);
    for (float& v : w) v = 1.0f + 0.1f * rng.next_normal();
    t.emplace(name, std::move(w));
  };
  const std::int64_t d = config.dim, kv = config.kv_dim(), h = config.hidden_dim;
  const float in_d = 1.0f / std::sqrt(static_cast<float>(d));
  const float in_h = 1.0f / std::sqrt(static_cast<float>(h));
  matrix("model.embed_tokens.weight", config.vocab_size, d, in_d);
  for (std::int64_t l = 0; l < config.n_layers; ++l) {
    using model::detail::layer_tensor;
    norm(layer_tensor(l, "input_layernorm.weight"));
    matrix(layer_tensor(l, "self_attn.q_proj.weight"), d, d, in_d);
    matrix(layer_tensor(l, "self_attn.k_proj.weight"), kv, d, in_d);
    matrix(layer_tensor(l, "self_attn.v_proj.weight"), kv, d, in_d);
    matrix(layer_tensor(l, "self_attn.o_proj.weight"), d, d, in_d);
    norm(layer_tensor(l, "post_attention_layernorm.weight"));
    matrix(layer_tensor(l, "mlp.gate_proj.weight"), h, d, in_d);
    matrix(layer_tensor(l, "mlp.up_proj.weight"), h, d, in_d);
    matrix(layer_tensor(l, "mlp.down_proj.weight"), d, h, in_h);
  }
  norm("model.norm.weight");
  if (!config.tied_embeddings) matrix("lm_head.weight", config.vocab_size, d, in_d);
  return t;
}

GSQ_NAMESPACE_END
