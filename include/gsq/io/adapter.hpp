// gsq/io/adapter.hpp — LoRA / L4Q adapters as a Hugging Face PEFT adapter directory.
//
// A fine-tuned adapter is useful outside gsq only in the layout PEFT reads:
//     DIR/adapter_model.safetensors   F32 tensors under PEFT's names
//         base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight   [r, in]
//         base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight   [out, r]
//         ... k_proj, v_proj, o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj
//     DIR/adapter_config.json         peft_type "LORA", r, lora_alpha, target_modules,
//                                     base_model_name_or_path, task_type "CAUSAL_LM",
//                                     bias "none", fan_in_fan_out false, lora_dropout 0
// Any other trainable tensor of the model keeps its Hugging Face name under the same
// "base_model.model." prefix (norm weights when trained, the embedding). L4Q adapters add
// their quantizer parameters as gsq extensions, `<module>.quant_step` and
// `<module>.quant_offset` [out, groups]; PEFT ignores them (it loads the LoRA part) and the
// config's "gsq" object records the method, code bits and group size so gsq can rebuild
// the layer. Values are stored as F32, so loading restores every tensor bit for bit.
//
// Loading needs a Llama built with the same targets, rank and method (use
// `read_adapter_config` to build it): every trainable parameter must be in the file with
// its shape and nothing else may be, so an adapter for another model is an error rather
// than a partial load.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/json_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/tensor_util.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/nn/parameter.hpp"

GSQ_NAMESPACE_BEGIN

inline constexpr std::string_view kAdapterWeightsFile = "adapter_model.safetensors";
inline constexpr std::string_view kAdapterConfigFile = "adapter_config.json";

/// What adapter_config.json says (the fields gsq uses to rebuild the model's slots).
struct AdapterConfig {
  std::string method = "lora";  // "lora" or "l4q" (gsq extension; PEFT sees LORA)
  std::int64_t rank = 8;
  float alpha = 16.0f;
  std::vector<std::string> target_modules;
  std::string base_model_name_or_path;
  int quant_bits = 4;       // L4Q only
  int quant_group = 128;    // L4Q only
  bool quantized = false;   // L4Q: saved after the warm-up (step and offset are live)
};

namespace io::detail {

/// gsq parameter name → PEFT key: "model.layers.0.self_attn.q_proj.lora_a" →
/// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".
inline std::string peft_key(std::string_view name) {
  std::string key = "base_model.model.";
  auto ends_with = [&](std::string_view s) {
    return name.size() >= s.size() && name.substr(name.size() - s.size()) == s;
  };
  if (ends_with(".lora_a")) {
    key += name.substr(0, name.size() - 6);
    key += "lora_A.weight";
  } else if (ends_with(".lora_b")) {
    key += name.substr(0, name.size() - 6);
    key += "lora_B.weight";
  } else {
    key += name;
  }
  return key;
}

/// The adapter settings of `model` (its options), for adapter_config.json.
inline AdapterConfig adapter_config_of(const Llama& model) {
  const LlamaOptions& o = model.options();
  AdapterConfig c;
  c.target_modules = o.target_modules;
  if (o.adapter == ProjectionKind::kL4q) {
    c.method = "l4q";
    c.rank = o.l4q.rank;
    c.alpha = o.l4q.alpha;
    c.quant_bits = o.l4q.quant_bits;
    c.quant_group = o.l4q.quant_group;
  } else {
    c.method = "lora";
    c.rank = o.lora.rank;
    c.alpha = o.lora.alpha;
  }
  return c;
}

/// Calls f(L4qLinear&) for every L4Q projection of `model`.
template <class F>
void for_each_l4q(Llama& model, F&& f) {
  for (std::int64_t l = 0; l < model.n_layers(); ++l)
    for (std::string_view name : kLlamaProjections)
      if (L4qLinear* p = model.projection(l, name).get_if<L4qLinear>()) f(*p);
}

}  // namespace io::detail

/// adapter_config.json of `model`'s adapters as PEFT writes it (plus a "gsq" object).
inline io::detail::Json adapter_config_json(Llama& model,
                                            const std::string& base_model_name_or_path = "") {
  const AdapterConfig c = io::detail::adapter_config_of(model);
  bool quantized = false;
  io::detail::for_each_l4q(model, [&](L4qLinear& p) { quantized = quantized || p.quantizing(); });
  io::detail::Json gsq = {{"method", c.method}, {"format_version", 1}};
  if (c.method == "l4q") {
    gsq["quant_bits"] = c.quant_bits;
    gsq["quant_group"] = c.quant_group;
    gsq["quantized"] = quantized;
  }
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", c.rank},
          {"lora_alpha", c.alpha},
          {"lora_dropout", 0.0},
          {"target_modules", c.target_modules},
          {"base_model_name_or_path", base_model_name_or_path},
          {"bias", "none"},
          {"fan_in_fan_out", false},
          {"inference_mode", true},
          {"gsq", gsq}};
}

/// The model's trainable tensors under their PEFT keys (copies, F32).
inline std::map<std::string, Tensor<float>> adapter_tensors(Llama& model) {
  std::map<std::string, Tensor<float>> out;
  for (const Parameter& p : model.parameters())
    out.emplace(io::detail::peft_key(p.name), p.value->clone());
  return out;
}

/// Writes `model`'s adapters as a PEFT adapter directory `dir` (created if needed):
/// adapter_model.safetensors first, then adapter_config.json, each atomically.
inline void save_adapter(const std::filesystem::path& dir, Llama& model,
                         const std::string& base_model_name_or_path = "") {
  const ParameterList params = model.parameters();
  GSQ_CHECK(!params.empty(), ErrorCode::kInvalidArgument,
            "save_adapter: the model has no trainable parameters (no adapter on any projection?)");
  std::filesystem::create_directories(dir);
  std::vector<SafetensorsTensorRef> refs;
  refs.reserve(params.size());
  for (const Parameter& p : params)
    refs.push_back({io::detail::peft_key(p.name), tensor_shape(*p.value),
                    std::span<const float>(p.value->data(), static_cast<std::size_t>(p.value->numel()))});
  write_safetensors(dir / kAdapterWeightsFile, std::move(refs), {{"format", "pt"}});
  io::detail::write_json_file(dir / kAdapterConfigFile,
                              adapter_config_json(model, base_model_name_or_path));
}

/// Interprets an already parsed adapter_config.json `j` (errors name `where`): the part of
/// read_adapter_config that does not touch the file system, so fuzzers and callers holding
/// the JSON in memory check it the same way.
inline AdapterConfig adapter_config_from_json(const io::detail::Json& j, const io::detail::JsonWhere& where) {
  namespace iod = io::detail;
  if (!j.is_object()) iod::json_fail(where, "(root)", "expected a JSON object");
  AdapterConfig c;
  if (const iod::Json* t = iod::find_member(j, "peft_type"))
    if (iod::json_string(*t, "peft_type", where) != "LORA")
      iod::json_fail(where, "peft_type", "gsq reads LORA adapters only");
  c.rank = iod::json_int(iod::require_member(j, "r", where), "r", where, 1, 1 << 20);
  c.alpha = static_cast<float>(iod::json_number(iod::require_member(j, "lora_alpha", where),
                                                "lora_alpha", where));
  if (!(c.alpha > 0.0f)) iod::json_fail(where, "lora_alpha", "must be > 0");
  const iod::Json& targets = iod::require_member(j, "target_modules", where);
  if (targets.is_string()) {
    c.target_modules.push_back(iod::json_string(targets, "target_modules", where));
  } else if (targets.is_array()) {
    for (const iod::Json& t : targets) c.target_modules.push_back(iod::json_string(t, "target_modules", where));
  } else {
    iod::json_fail(where, "target_modules", "expected a list of module names");
  }
  for (const std::string& t : c.target_modules)
    if (std::find(kLlamaProjections.begin(), kLlamaProjections.end(), t) == kLlamaProjections.end())
      iod::json_fail(where, "target_modules", "unknown module \"" + t + "\" for a LLaMA model");
  if (const iod::Json* b = iod::find_member(j, "base_model_name_or_path"); b != nullptr && !b->is_null())
    c.base_model_name_or_path = iod::json_string(*b, "base_model_name_or_path", where);
  if (const iod::Json* g = iod::find_member(j, "gsq"); g != nullptr && g->is_object()) {
    c.method = iod::json_string(iod::require_member(*g, "method", where), "gsq.method", where);
    if (c.method != "lora" && c.method != "l4q")
      iod::json_fail(where, "gsq.method", "expected \"lora\" or \"l4q\", got \"" + c.method + "\"");
    if (c.method == "l4q") {
      c.quant_bits = static_cast<int>(
          iod::json_int(iod::require_member(*g, "quant_bits", where), "gsq.quant_bits", where, 2, 8));
      c.quant_group = static_cast<int>(iod::json_int(iod::require_member(*g, "quant_group", where),
                                                     "gsq.quant_group", where, 1, 1 << 24));
      if (const iod::Json* q = iod::find_member(*g, "quantized"))
        c.quantized = iod::json_bool(*q, "gsq.quantized", where);
    }
  }
  return c;
}

/// Reads DIR/adapter_config.json (or the file itself when given one).
inline AdapterConfig read_adapter_config(const std::filesystem::path& path) {
  const std::filesystem::path file =
      std::filesystem::is_directory(path) ? path / kAdapterConfigFile : path;
  return adapter_config_from_json(io::detail::read_json_file(file), {file.string(), 0});
}

/// Loads the adapter directory `dir` into `model`, which must have been built with the
/// same method, rank, alpha and target modules. Every trainable tensor is restored bit
/// for bit; a missing, extra or misshapen tensor is an error naming the file.
inline void load_adapter(const std::filesystem::path& dir, Llama& model) {
  const AdapterConfig saved = read_adapter_config(dir);
  const AdapterConfig mine = io::detail::adapter_config_of(model);
  const std::string cfg = (dir / kAdapterConfigFile).string();
  GSQ_CHECK(saved.method == mine.method && saved.rank == mine.rank && saved.alpha == mine.alpha &&
                saved.target_modules == mine.target_modules &&
                (saved.method != "l4q" ||
                 (saved.quant_bits == mine.quant_bits && saved.quant_group == mine.quant_group)),
            ErrorCode::kInvalidArgument,
            "load_adapter: " + cfg + " holds a " + saved.method + " adapter of rank " +
                std::to_string(saved.rank) + ", alpha " + std::to_string(saved.alpha) + " on " +
                std::to_string(saved.target_modules.size()) +
                " modules; the model was built for a " + mine.method + " adapter of rank " +
                std::to_string(mine.rank) + ", alpha " + std::to_string(mine.alpha) + " on " +
                std::to_string(mine.target_modules.size()) + " modules");
  const SafetensorsFile st = SafetensorsFile::open(dir / kAdapterWeightsFile);
  // Leave the warm-up first: start_quantization() sets step and offset, which the file's
  // values then replace.
  if (saved.quantized)
    io::detail::for_each_l4q(model, [](L4qLinear& p) {
      if (!p.quantizing()) p.start_quantization();
    });
  const ParameterList params = model.parameters();
  std::set<std::string> used;
  // Validate everything before writing anything, so a bad file leaves the model as it was.
  std::vector<const SafetensorsEntry*> entries;
  for (const Parameter& p : params) {
    const std::string key = io::detail::peft_key(p.name);
    const SafetensorsEntry& e = st.at(key);
    if (e.dtype != DType::kF32)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "tensor \"" + key + "\" is " + std::string(dtype_name(e.dtype)) +
                                 ", gsq adapters are F32",
                             st.name(), e.begin);
    if (e.shape != tensor_shape(*p.value))
      detail::throw_error(ErrorCode::kShapeMismatch,
                          st.name() + ": tensor \"" + key + "\" has shape " + shape_to_string(e.shape) +
                              ", the model needs " + shape_to_string(tensor_shape(*p.value)));
    used.insert(key);
    entries.push_back(&e);
  }
  for (const SafetensorsEntry& e : st.entries())
    if (used.count(e.name) == 0)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "unexpected tensor \"" + e.name + "\" (not a trainable tensor of this model)",
                             st.name(), e.begin);
  for (std::size_t i = 0; i < params.size(); ++i)
    st.read_float(*entries[i],
                  std::span<float>(params[i].value->data(), static_cast<std::size_t>(params[i].value->numel())));
}

GSQ_NAMESPACE_END
