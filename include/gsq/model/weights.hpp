// gsq/model/weights.hpp — the named tensors a Llama is built from, and random ones for tests.
//
// Loaders (io/) return a LlamaConfig plus FP32 tensors under the canonical Hugging Face
// names of model/config.hpp; the model takes that map, whatever file it came from. Tests
// and benchmarks that need no checkpoint — or shapes no checkpoint has — use
// `random_llama_weights`, which fills the same map deterministically from a seed with
// realistic scales (1/√in projections, norm weights near 1, embedding rows of unit
// norm so tied-classifier logits are O(1)), so activations, losses and gradients stay
// in the ranges of a trained model.
//
// A Llama is built from a `LlamaWeightSource`: it asks for each tensor once, by name and
// shape, in the order of llama_tensor_specs, and asks for every frozen projection already
// in its stored form (`take_frozen`). A source over a map of FP32 tensors
// (`TensorMapSource`) quantizes a whole tensor at a time; a streaming loader (io/) reads a
// memory-mapped file in row blocks and quantizes as it goes, so the FP32 model never
// exists. Either way the stored form is the same bits (NF4 and GSE quantize row by row).
#pragma once

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/float_matrix.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/model/config.hpp"
#include "gsq/nn/frozen_weight.hpp"

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

/// The stored form of a frozen projection weight.
struct FrozenFormat {
  WeightFormat format = WeightFormat::kFp32;
  bool double_quant = false;  // NF4: quantize the block scales too
  GseSpec gse;                // GSE-INT: the weight spec
};

/// `w` [out, in] in `f`'s stored form (an FP32 weight is adopted, not copied).
inline FrozenWeight make_frozen_weight(Tensor<float> w, const FrozenFormat& f) {
  switch (f.format) {
    case WeightFormat::kNf4: return FrozenWeight::nf4(w.view(), f.double_quant);
    case WeightFormat::kGse: return FrozenWeight::gse(w.view(), f.gse);
    case WeightFormat::kFp32: break;
  }
  return FrozenWeight::from_fp32(std::move(w));
}

/// Whether the frozen table `name` is only ever read a row per token: an untied
/// embedding (a tied one is the classifier too, read whole at every step). A source that
/// maps its file may lend such a table instead of copying it (FloatMatrix::borrowed).
inline bool is_lookup_table(const std::string& name, const LlamaConfig& config) {
  return name == "model.embed_tokens.weight" && !config.tied_embeddings;
}

/// Where a Llama's weights come from: each canonical tensor is taken exactly once.
class LlamaWeightSource {
 public:
  virtual ~LlamaWeightSource() = default;
  /// The tensor `name`, which must have `shape`, in FP32 (norms; the embedding and
  /// classifier). Throws naming the tensor if it is absent or misshapen.
  virtual Tensor<float> take(const std::string& name, const std::vector<std::int64_t>& shape) = 0;
  /// A frozen table (the embedding, the classifier) [rows, cols]: BF16 where the source
  /// stores it as BF16 (exact, half the memory), else FP32. The default is take().
  virtual FloatMatrix take_table(const std::string& name, const std::vector<std::int64_t>& shape) {
    return FloatMatrix(take(name, shape));
  }
  /// The frozen projection `name` [out, in] in its stored form `format`. The default
  /// quantizes what take() returns; streaming sources quantize row blocks as they read.
  virtual FrozenWeight take_frozen(const std::string& name, const std::vector<std::int64_t>& shape,
                                   const FrozenFormat& format) {
    return make_frozen_weight(take(name, shape), format);
  }
  /// Called once every tensor was taken: throws if the source holds others.
  virtual void finish() {}
};

/// A source over FP32 tensors in a map (loaders' LlamaWeights, random_llama_weights).
class TensorMapSource final : public LlamaWeightSource {
 public:
  explicit TensorMapSource(LlamaTensors tensors) : tensors_(std::move(tensors)) {}

  Tensor<float> take(const std::string& name, const std::vector<std::int64_t>& shape) override {
    auto it = tensors_.find(name);
    GSQ_CHECK(it != tensors_.end(), ErrorCode::kInvalidArgument,
              "Llama: the weights lack tensor '" + name + "'");
    Tensor<float> t = std::move(it->second);
    tensors_.erase(it);
    std::vector<std::int64_t> got;
    for (int i = 0; i < t.rank(); ++i) got.push_back(t.dim(i));
    GSQ_CHECK(got == shape, ErrorCode::kShapeMismatch,
              "Llama: tensor '" + name + "' has shape " + shape_text(got) + ", the config needs " +
                  shape_text(shape));
    return t;
  }
  void finish() override {
    GSQ_CHECK(tensors_.empty(), ErrorCode::kInvalidArgument,
              "Llama: unexpected tensor '" +
                  (tensors_.empty() ? std::string() : tensors_.begin()->first) + "' for this config");
  }

 private:
  static std::string shape_text(const std::vector<std::int64_t>& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
  }
  LlamaTensors tensors_;
};

GSQ_NAMESPACE_END
