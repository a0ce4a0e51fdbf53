// gsq/io/hf_config.hpp — a Hugging Face LLaMA `config.json` as a LlamaConfig.
//
// Reads the fields LlamaForCausalLM uses (hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
// max_position_embeddings, rms_norm_eps, rope_theta, tie_word_embeddings, bos/eos ids)
// with Hugging Face's defaults for absent optional ones, and refuses configs whose model
// gsq would compute wrongly rather than silently: other model types, rope_scaling other
// than Llama 3's "llama3" (read into LlamaConfig::rope_scaling) or "default", attention
// or MLP biases, attention dropout, sliding windows, activations other than SiLU,
// head_dim != hidden/heads. Keys that do not change the math (torch_dtype,
// initializer_range, use_cache, pretraining_tp, ...) are ignored.
// HF weights rotate q/k with `rotate_half`, hence RopeStyle::kHalf.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/json.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/model/config.hpp"

GSQ_NAMESPACE_BEGIN

/// Parses a config.json held in `file` (its name is used in errors).
inline LlamaConfig parse_hf_config(const MappedFile& file) {
  namespace iod = io::detail;
  const std::string& name = file.name();
  const iod::Json j = iod::parse_json(file.bytes(), name, 0);
  const iod::JsonWhere where{name, 0};
  if (!j.is_object()) iod::json_fail(where, "(top level)", "config.json is not a JSON object");
  auto unsupported = [&](const std::string& what) {
    detail::throw_io_error(ErrorCode::kCorrupt, "unsupported model: " + what, name, 0);
  };
  constexpr std::int64_t kMaxExtent = std::numeric_limits<std::int32_t>::max();
  auto extent = [&](const char* key) {
    return iod::json_int(iod::require_member(j, key, where), key, where, 1, kMaxExtent);
  };

  if (const iod::Json* t = iod::find_member(j, "model_type")) {
    const std::string& type = iod::json_string(*t, "model_type", where);
    if (type != "llama") unsupported("model_type \"" + type + "\" (gsq reads \"llama\")");
  }
  RopeScaling scaling;
  if (const iod::Json* v = iod::find_member(j, "rope_scaling"); v != nullptr && !v->is_null()) {
    if (!v->is_object()) iod::json_fail(where, "rope_scaling", "must be an object or null");
    const iod::Json* type = iod::find_member(*v, "rope_type");
    if (type == nullptr) type = iod::find_member(*v, "type");
    const std::string kind = type == nullptr ? "" : iod::json_string(*type, "rope_scaling.rope_type", where);
    if (kind == "llama3") {
      auto number = [&](const char* key) {
        const iod::Json& x = iod::require_member(*v, key, where);
        return iod::json_number(x, std::string("rope_scaling.") + key, where);
      };
      scaling.factor = number("factor");
      scaling.low_freq_factor = number("low_freq_factor");
      scaling.high_freq_factor = number("high_freq_factor");
      scaling.original_max_positions =
          iod::json_int(iod::require_member(*v, "original_max_position_embeddings", where),
                        "rope_scaling.original_max_position_embeddings", where, 1, kMaxExtent);
      try {
        scaling.validate();
      } catch (const Error& e) {
        iod::json_fail(where, "rope_scaling", e.what());
      }
    } else if (kind != "default") {
      unsupported("rope_scaling.rope_type \"" + kind +
                  "\" (gsq implements \"llama3\" and \"default\"; linear, dynamic, yarn, longrope "
                  "and others change the positions' math)");
    }
  }
  if (const iod::Json* v = iod::find_member(j, "attention_dropout"); v != nullptr && !v->is_null() &&
                                                                    iod::json_number(*v, "attention_dropout", where) != 0.0)
    unsupported("attention_dropout " + v->dump() + " (gsq's attention has no dropout)");
  if (const iod::Json* v = iod::find_member(j, "sliding_window"); v != nullptr && !v->is_null())
    unsupported("sliding_window is set (gsq's attention is full causal)");
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (const iod::Json* v = iod::find_member(j, key); v != nullptr && !v->is_null() &&
                                                       iod::json_bool(*v, key, where))
      unsupported(std::string(key) + " is true");
  if (const iod::Json* v = iod::find_member(j, "hidden_act")) {
    const std::string& act = iod::json_string(*v, "hidden_act", where);
    if (act != "silu") unsupported("hidden_act \"" + act + "\" (gsq's MLP is SwiGLU with SiLU)");
  }

  LlamaConfig c;
  c.dim = extent("hidden_size");
  c.hidden_dim = extent("intermediate_size");
  c.n_layers = extent("num_hidden_layers");
  c.n_heads = extent("num_attention_heads");
  c.n_kv_heads = c.n_heads;
  if (const iod::Json* v = iod::find_member(j, "num_key_value_heads"); v != nullptr && !v->is_null())
    c.n_kv_heads = iod::json_int(*v, "num_key_value_heads", where, 1, kMaxExtent);
  c.vocab_size = extent("vocab_size");
  c.max_seq_len = extent("max_position_embeddings");
  auto positive = [&](const char* key, double fallback) {
    const iod::Json* v = iod::find_member(j, key);
    if (v == nullptr || v->is_null()) return static_cast<float>(fallback);
    const double x = iod::json_number(*v, key, where);
    const float f = static_cast<float>(x);
    if (!(f > 0.0f) || !std::isfinite(f))
      iod::json_fail(where, key, "must be a positive finite number, got " + v->dump());
    return f;
  };
  c.norm_eps = positive("rms_norm_eps", 1e-6);
  c.rope_theta = positive("rope_theta", 10000.0);
  c.rope_style = RopeStyle::kHalf;
  c.rope_scaling = scaling;
  c.tied_embeddings = false;  // LlamaConfig's default
  if (const iod::Json* v = iod::find_member(j, "tie_word_embeddings"); v != nullptr && !v->is_null())
    c.tied_embeddings = iod::json_bool(*v, "tie_word_embeddings", where);
  auto token_id = [&](const char* key, std::int32_t fallback) {
    const iod::Json* v = iod::find_member(j, key);
    if (v == nullptr || v->is_null()) return fallback;
    const iod::Json& first = v->is_array() && !v->empty() ? (*v)[0] : *v;  // eos may be a list
    return static_cast<std::int32_t>(iod::json_int(first, key, where, 0, c.vocab_size - 1));
  };
  c.bos_id = token_id("bos_token_id", 1);
  c.eos_id = token_id("eos_token_id", 2);
  if (const iod::Json* v = iod::find_member(j, "head_dim"); v != nullptr && !v->is_null()) {
    const std::int64_t hd = iod::json_int(*v, "head_dim", where, 1, kMaxExtent);
    if (c.dim % c.n_heads != 0 || hd != c.dim / c.n_heads)
      unsupported("head_dim " + std::to_string(hd) + " != hidden_size / num_attention_heads");
  }
  try {
    c.validate("config");
  } catch (const Error& e) {
    const std::string what = e.what();
    const std::size_t cut = what.find("] ");
    detail::throw_io_error(ErrorCode::kCorrupt,
                           cut == std::string::npos ? what : what.substr(cut + 2), name, 0);
  }
  return c;
}

/// config.json of a Hugging Face LlamaForCausalLM with `c`'s shape (read back by
/// read_hf_config; the rotary style is always rotate_half there). `torch_dtype` states
/// the dtype of the tensors written beside it ("float32" or "bfloat16").
inline io::detail::Json hf_config_json(const LlamaConfig& c, std::string_view torch_dtype = "float32") {
  io::detail::Json j = {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", c.dim},
          {"intermediate_size", c.hidden_dim},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"vocab_size", c.vocab_size},
          {"max_position_embeddings", c.max_seq_len},
          {"rms_norm_eps", static_cast<double>(c.norm_eps)},
          {"rope_theta", static_cast<double>(c.rope_theta)},
          {"tie_word_embeddings", c.tied_embeddings},
          {"bos_token_id", c.bos_id},
          {"eos_token_id", c.eos_id},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"torch_dtype", std::string(torch_dtype)}};
  if (c.rope_scaling.enabled())
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_positions}};
  else
    j["rope_scaling"] = nullptr;
  return j;
}

/// Reads the config.json at `path`.
inline LlamaConfig read_hf_config(const std::filesystem::path& path) {
  return parse_hf_config(MappedFile::open(path));
}

GSQ_NAMESPACE_END
