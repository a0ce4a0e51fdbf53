// gsq/io/llama_weights.hpp — what every LLaMA loader returns: a config and named tensors.
//
// Loaders differ in their files (llama2.c `.bin`, Hugging Face directory) but all produce
// `LlamaWeights`: a validated LlamaConfig plus float tensors under the canonical Hugging
// Face names listed in model/config.hpp. `llama_tensor_specs` spells that list out for a
// config and `check_llama_weights` holds a set of tensors to it — every loader calls it
// before returning, so the model never sees a missing, extra or misshapen tensor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/io/tensor_util.hpp"
#include "gsq/model/config.hpp"

GSQ_NAMESPACE_BEGIN

/// One canonical tensor: its name and [out, in] (or [dim]) shape.
struct LlamaTensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
};

/// `model.layers.<layer>.<suffix>`.
inline std::string llama_layer_tensor_name(std::int64_t layer, std::string_view suffix) {
  return "model.layers." + std::to_string(layer) + "." + std::string(suffix);
}

/// Every tensor a model of `c` has, in a fixed order: the embedding, each layer's norms,
/// attention and MLP weights, the final norm, and `lm_head.weight` when not tied.
inline std::vector<LlamaTensorSpec> llama_tensor_specs(const LlamaConfig& c) {
  const std::int64_t d = c.dim, kv = c.kv_dim(), h = c.hidden_dim;
  std::vector<LlamaTensorSpec> s;
  s.push_back({"model.embed_tokens.weight", {c.vocab_size, d}});
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    s.push_back({llama_layer_tensor_name(l, "input_layernorm.weight"), {d}});
    s.push_back({llama_layer_tensor_name(l, "self_attn.q_proj.weight"), {d, d}});
    s.push_back({llama_layer_tensor_name(l, "self_attn.k_proj.weight"), {kv, d}});
    s.push_back({llama_layer_tensor_name(l, "self_attn.v_proj.weight"), {kv, d}});
    s.push_back({llama_layer_tensor_name(l, "self_attn.o_proj.weight"), {d, d}});
    s.push_back({llama_layer_tensor_name(l, "post_attention_layernorm.weight"), {d}});
    s.push_back({llama_layer_tensor_name(l, "mlp.gate_proj.weight"), {h, d}});
    s.push_back({llama_layer_tensor_name(l, "mlp.up_proj.weight"), {h, d}});
    s.push_back({llama_layer_tensor_name(l, "mlp.down_proj.weight"), {d, h}});
  }
  s.push_back({"model.norm.weight", {d}});
  if (!c.tied_embeddings) s.push_back({"lm_head.weight", {c.vocab_size, d}});
  return s;
}

struct LlamaWeights {
  LlamaConfig config;
  std::map<std::string, Tensor<float>> tensors;
  std::string source;  // the file or directory they came from, for messages

  /// The tensor `name`; IoError(kCorrupt) naming the source if absent.
  const Tensor<float>& at(std::string_view name) const {
    auto it = tensors.find(std::string(name));
    if (it == tensors.end())
      detail::throw_io_error(ErrorCode::kCorrupt, "no tensor \"" + std::string(name) + "\"",
                             source, -1);
    return it->second;
  }
  Tensor<float>& at(std::string_view name) {
    return const_cast<Tensor<float>&>(static_cast<const LlamaWeights&>(*this).at(name));
  }
  std::int64_t parameter_count() const noexcept {
    std::int64_t n = 0;
    for (const auto& [name, t] : tensors) n += t.numel();
    return n;
  }
};

/// Throws unless `w.tensors` is exactly the canonical set for `w.config`: a missing or
/// unexpected tensor is IoError(kCorrupt), a wrong shape is ShapeError; both name the
/// tensor and `w.source`.
inline void check_llama_weights(const LlamaWeights& w) {
  const std::vector<LlamaTensorSpec> specs = llama_tensor_specs(w.config);
  for (const LlamaTensorSpec& spec : specs) {
    auto it = w.tensors.find(spec.name);
    if (it == w.tensors.end())
      detail::throw_io_error(ErrorCode::kCorrupt, "missing tensor \"" + spec.name + "\"",
                             w.source, -1);
    const std::vector<std::int64_t> shape = tensor_shape(it->second);
    if (shape != spec.shape)
      detail::throw_error(ErrorCode::kShapeMismatch,
                          w.source + ": tensor \"" + spec.name + "\" has shape " +
                              shape_to_string(shape) + ", the config needs " +
                              shape_to_string(spec.shape));
  }
  if (w.tensors.size() != specs.size()) {
    for (const auto& [name, t] : w.tensors) {
      bool known = false;
      for (const LlamaTensorSpec& spec : specs) known = known || spec.name == name;
      if (!known)
        detail::throw_io_error(ErrorCode::kCorrupt,
                               "unexpected tensor \"" + name + "\" (not part of this config)",
                               w.source, -1);
    }
  }
}

GSQ_NAMESPACE_END
