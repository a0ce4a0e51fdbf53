// gsq/model/config.hpp — the shape of a LLaMA-style model, whatever file it came from.
//
// Both supported checkpoint formats (llama2.c `.bin`, Hugging Face config.json +
// safetensors) are read into this one description plus a set of named tensors (see
// `kLlamaTensorNames` below), so the model code never cares where weights came from.
#pragma once

#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/nn/rope.hpp"  // RopeStyle (nn is below model, so the enum lives there)

GSQ_NAMESPACE_BEGIN

struct LlamaConfig {
  std::int64_t dim = 0;          // hidden size
  std::int64_t hidden_dim = 0;   // SwiGLU intermediate size
  std::int64_t n_layers = 0;
  std::int64_t n_heads = 0;
  std::int64_t n_kv_heads = 0;   // GQA: each kv head serves n_heads / n_kv_heads query heads
  std::int64_t vocab_size = 0;
  std::int64_t max_seq_len = 0;
  float norm_eps = 1e-5f;        // RMSNorm epsilon
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::kInterleaved;
  RopeScaling rope_scaling;      // Llama 3.x frequency remapping (none by default)
  bool tied_embeddings = true;   // classifier shares the token embedding
  std::int32_t bos_id = 1;
  std::int32_t eos_id = 2;

  std::int64_t head_size() const noexcept { return n_heads > 0 ? dim / n_heads : 0; }
  std::int64_t kv_dim() const noexcept { return head_size() * n_kv_heads; }

  /// Throws ConfigError unless the shape is consistent; `source` names the file.
  void validate(const std::string& source) const {
    auto bad = [&](const std::string& what) {
      detail::throw_error(ErrorCode::kInvalidArgument, source + ": invalid model config: " + what);
    };
    if (dim <= 0 || hidden_dim <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv_heads <= 0 ||
        vocab_size <= 0 || max_seq_len <= 0)
      bad("every extent must be positive (dim " + std::to_string(dim) + ", hidden " +
          std::to_string(hidden_dim) + ", layers " + std::to_string(n_layers) + ", heads " +
          std::to_string(n_heads) + ", kv heads " + std::to_string(n_kv_heads) + ", vocab " +
          std::to_string(vocab_size) + ", seq " + std::to_string(max_seq_len) + ")");
    if (dim % n_heads != 0) bad("dim " + std::to_string(dim) + " is not a multiple of n_heads");
    if (n_heads % n_kv_heads != 0) bad("n_heads is not a multiple of n_kv_heads");
    if (head_size() % 2 != 0) bad("head size must be even for RoPE");
    if (!(norm_eps > 0.0f) || !(rope_theta > 0.0f)) bad("norm_eps and rope_theta must be > 0");
    try {
      rope_scaling.validate();
    } catch (const Error& e) {
      bad(e.what());
    }
  }
};

// Canonical tensor names (Hugging Face LlamaForCausalLM names; `{}` is the layer index).
// Every weight matrix is [out, in]. With tied embeddings `lm_head.weight` is absent.
//   model.embed_tokens.weight                      [vocab, dim]
//   model.layers.{}.input_layernorm.weight         [dim]
//   model.layers.{}.self_attn.q_proj.weight        [dim, dim]
//   model.layers.{}.self_attn.k_proj.weight        [kv_dim, dim]
//   model.layers.{}.self_attn.v_proj.weight        [kv_dim, dim]
//   model.layers.{}.self_attn.o_proj.weight        [dim, dim]
//   model.layers.{}.post_attention_layernorm.weight [dim]
//   model.layers.{}.mlp.gate_proj.weight           [hidden, dim]   (llama2.c w1)
//   model.layers.{}.mlp.up_proj.weight             [hidden, dim]   (llama2.c w3)
//   model.layers.{}.mlp.down_proj.weight           [dim, hidden]   (llama2.c w2)
//   model.norm.weight                              [dim]
//   lm_head.weight                                 [vocab, dim]    (untied only)
// q/k rows are stored as the file has them; `rope_style` says how to rotate them.

GSQ_NAMESPACE_END
