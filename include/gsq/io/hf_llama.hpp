// gsq/io/hf_llama.hpp — a Hugging Face LLaMA directory: config.json + model.safetensors.
//
// Tensors keep their HF names (gsq's canonical ones) and their rows as stored: HF q/k
// rows are permuted for `rotate_half`, and the config says RopeStyle::kHalf. F32, F16
// and BF16 are converted to float.
//
// Tied embeddings: HF's save_pretrained drops one of two shared tensors and may record
// the alias in `__metadata__` (tinystories-656K stores only `lm_head.weight` with
// `model.embed_tokens.weight -> lm_head.weight`). gsq exposes the table as
// `model.embed_tokens.weight` and, when tied, no `lm_head.weight`. Tensors that are not
// LLaMA weights are rejected, except old checkpoints' `rotary_emb.inv_freq` buffers.
#pragma once

#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/hf_config.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/tensor_util.hpp"

GSQ_NAMESPACE_BEGIN

/// Where each canonical tensor of `config` is in `st`, without reading any data: the
/// first of each pair is the canonical name, the second the stored entry (aliases and the
/// tied lm_head resolved). Throws IoError for a missing or unexpected tensor, ShapeError
/// for a wrong shape; `source` (the config's path) appears in shape messages.
inline std::vector<std::pair<std::string, const SafetensorsEntry*>> hf_llama_tensor_plan(
    const LlamaConfig& config, const SafetensorsFile& st, const std::string& source) {
  std::vector<std::pair<std::string, const SafetensorsEntry*>> plan;
  std::set<std::string> used;
  auto resolve = [&](const std::string& name) -> const SafetensorsEntry* {
    if (const SafetensorsEntry* e = st.find(name)) return e;
    auto alias = st.metadata().find(name);  // {"model.embed_tokens.weight": "lm_head.weight"}
    if (alias != st.metadata().end())
      if (const SafetensorsEntry* e = st.find(alias->second)) return e;
    if (config.tied_embeddings && name == "model.embed_tokens.weight")
      return st.find("lm_head.weight");
    return nullptr;
  };
  for (const LlamaTensorSpec& spec : llama_tensor_specs(config)) {
    const SafetensorsEntry* e = resolve(spec.name);
    if (e == nullptr)
      detail::throw_io_error(ErrorCode::kCorrupt, "missing tensor \"" + spec.name + "\"",
                             st.name(), -1);
    if (e->shape != spec.shape)
      detail::throw_error(ErrorCode::kShapeMismatch,
                          st.name() + ": tensor \"" + e->name + "\" has shape " +
                              shape_to_string(e->shape) + ", the config (" + source +
                              ") needs " + shape_to_string(spec.shape) + " for " + spec.name);
    used.insert(e->name);
    plan.emplace_back(spec.name, e);
  }
  for (const SafetensorsEntry& e : st.entries()) {
    if (used.count(e.name) != 0) continue;
    const bool tied_head = config.tied_embeddings && e.name == "lm_head.weight";
    const bool inv_freq = e.name.ends_with(".rotary_emb.inv_freq");
    if (!tied_head && !inv_freq)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "unexpected tensor \"" + e.name + "\" (not a LLaMA weight of this config)",
                             st.name(), e.begin);
  }
  return plan;
}

/// Builds LlamaWeights from a config and an opened safetensors file (`source` names the
/// config's file).
inline LlamaWeights llama_weights_from_safetensors(const LlamaConfig& config,
                                                   const SafetensorsFile& st,
                                                   const std::string& source) {
  LlamaWeights w;
  w.config = config;
  w.source = source;
  for (const auto& [name, entry] : hf_llama_tensor_plan(config, st, source))
    w.tensors.emplace(name, st.to_float(*entry, MemoryCategory::kWeights));
  check_llama_weights(w);
  return w;
}

/// Reads a Hugging Face LLaMA directory (config.json + model.safetensors).
inline LlamaWeights read_hf_llama(const std::filesystem::path& dir) {
  const std::filesystem::path model = dir / "model.safetensors";
  if (!std::filesystem::exists(model) &&
      std::filesystem::exists(dir / "model.safetensors.index.json"))
    detail::throw_io_error(ErrorCode::kOpenFailed,
                           "sharded checkpoints (model.safetensors.index.json) are not supported",
                           dir.string(), -1);
  const LlamaConfig config = read_hf_config(dir / "config.json");
  const SafetensorsFile st = SafetensorsFile::open(model);
  return llama_weights_from_safetensors(config, st, (dir / "config.json").string());
}

GSQ_NAMESPACE_END
