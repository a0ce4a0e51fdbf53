// gsq/io/export.hpp — deployable models from a fine-tuned Llama: merged FP32 and L4Q-quantized.
//
// After LoRA fine-tuning the adapter can be folded into the weights, W = W0 + (alpha/r)·B·A,
// so the result runs in any LLaMA runtime with no adapter code. `merged_llama_weights`
// builds those weights (every other tensor as the model holds it: norms and embedding
// included, trained or not; frozen projections dequantized from their stored format) and
// the writers put them in the two formats gsq reads:
//     write_hf_llama(dir, w)   DIR/config.json + DIR/model.safetensors (Hugging Face)
//     write_llama2c(path, w)   llama2.c legacy .bin (io/llama2c.hpp)
// and, for models too large to hold merged in FP32, `write_merged_hf_llama(dir, model)`
// streams the merged model out tensor by tensor as (sharded) HF safetensors, F32 or BF16.
// Hugging Face files rotate q/k with `rotate_half`; weights of an interleaved-RoPE model
// (llama2.c) get their q/k rows permuted on the way out, as HF's conversion script does.
//
// L4Q's deployed artifact is one quantized matrix per projection (nn/l4q_linear.hpp
// merge()). Its file, "gsq-l4q" safetensors:
//     <module>.qweight   I8  [out, in]       codes q in [−2^(n−1), 2^(n−1) − 1], one per byte
//     <module>.scales    F32 [out, groups]   step s per group of G along in
//     <module>.offsets   F32 [out, groups]   offset b per group
//     every other tensor F32 under its Hugging Face name (embedding, norms, frozen
//     projections, lm_head when untied)
//     __metadata__: format "gsq-l4q", format_version "1", bits "n", group_size "G",
//                   config (the LlamaConfig as JSON)
// with <module> = model.layers.{i}.self_attn.q_proj etc. The weight is ŵ = fma(q, s, b)
// (format/uniform.hpp) — the very W_q the forward used — and `dequantized()` gives its
// FP32 twin (write it with write_hf_llama). Reading validates codes, shapes and metadata.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/float_matrix.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/uniform.hpp"
#include "gsq/gemm/f32.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/dtype.hpp"
#include "gsq/io/hf_config.hpp"
#include "gsq/io/json_file.hpp"
#include "gsq/io/llama2c.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/safetensors_sharded.hpp"
#include "gsq/io/tensor_util.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/quant/uniform.hpp"

GSQ_NAMESPACE_BEGIN

namespace io::detail {

/// Meta interleaved rows → HF rotate_half rows of one q/k projection (the inverse of
/// unpermute_rope_rows): W_hf = W_meta.view(heads, hs/2, 2, in).transpose(1, 2).
inline Tensor<float> permute_rope_rows(const Tensor<float>& w, std::int64_t heads) {
  const std::int64_t rows = w.dim(0), in = w.dim(1), hs = rows / heads, half = hs / 2;
  Tensor<float> out({rows, in}, MemoryCategory::kWeights);
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < half; ++i)
      for (std::int64_t s = 0; s < 2; ++s)
        std::memcpy(out.data() + (h * hs + s * half + i) * in, w.data() + (h * hs + 2 * i + s) * in,
                    static_cast<std::size_t>(in) * sizeof(float));
  return out;
}

/// One tensor of any dtype for write_safetensors_raw: bytes already in file order (LE).
struct RawTensorRef {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::span<const std::uint8_t> bytes;
};

/// safetensors with tensors of mixed dtypes (the float writer of io/safetensors.hpp takes
/// floats only); same layout rules: sorted names, header padded to 8, atomic write.
inline void write_safetensors_raw(const std::filesystem::path& path, std::vector<RawTensorRef> tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(),
            [](const RawTensorRef& a, const RawTensorRef& b) { return a.name < b.name; });
  Json header = Json::object();
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const RawTensorRef& t = tensors[i];
    GSQ_CHECK(t.name != "__metadata__" && (i == 0 || t.name != tensors[i - 1].name),
              ErrorCode::kInvalidArgument,
              "write_safetensors_raw: tensor name \"" + t.name + "\" is reserved or repeated");
    std::int64_t numel = 1;
    for (std::int64_t d : t.shape) numel *= d;
    GSQ_CHECK(numel * dtype_bytes(t.dtype) == static_cast<std::int64_t>(t.bytes.size()),
              ErrorCode::kShapeMismatch,
              "write_safetensors_raw: \"" + t.name + "\" has shape " + shape_to_string(t.shape) +
                  " but " + std::to_string(t.bytes.size()) + " bytes");
    const auto nbytes = static_cast<std::int64_t>(t.bytes.size());
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  AtomicFileWriter out(path);
  out.write_value(static_cast<std::uint64_t>(text.size()));
  out.write(text.data(), text.size());
  for (const RawTensorRef& t : tensors) out.write(t.bytes);
  out.commit();
}

inline std::span<const std::uint8_t> float_bytes(const Tensor<float>& t) {
  return {reinterpret_cast<const std::uint8_t*>(t.data()), static_cast<std::size_t>(t.bytes())};
}

/// W0 (dequantized) + c·B·A of an L4Q layer still in its warm-up (what its forward uses).
inline Tensor<float> l4q_unquantized_weight(L4qLinear& p) {
  Tensor<float> w = p.frozen_weight().dequantized(MemoryCategory::kWeights);
  gemm::gemm_f32(p.lora_b(), false, p.lora_a(), false, w.view(), {p.config().scale(), true});
  return w;
}

}  // namespace io::detail

/// Writes `w` as a Hugging Face directory: DIR/model.safetensors then DIR/config.json.
/// Interleaved-RoPE weights get their q/k rows permuted to rotate_half order.
inline void write_hf_llama(const std::filesystem::path& dir, const LlamaWeights& w,
                           DType dtype = DType::kF32) {
  check_llama_weights(w);
  std::filesystem::create_directories(dir);
  const LlamaConfig& c = w.config;
  std::map<std::string, Tensor<float>> permuted;
  std::vector<SafetensorsTensorRef> refs;
  for (const auto& [name, t] : w.tensors) {
    const Tensor<float>* src = &t;
    if (c.rope_style == RopeStyle::kInterleaved) {
      const bool q = name.ends_with("self_attn.q_proj.weight"), k = name.ends_with("self_attn.k_proj.weight");
      if (q || k)
        src = &permuted.emplace(name, io::detail::permute_rope_rows(t, q ? c.n_heads : c.n_kv_heads))
                   .first->second;
    }
    refs.push_back({name, tensor_shape(*src),
                    std::span<const float>(src->data(), static_cast<std::size_t>(src->numel()))});
  }
  write_safetensors(dir / "model.safetensors", std::move(refs), {{"format", "pt"}}, dtype);
  io::detail::write_json_file(dir / "config.json", hf_config_json(c));
}

/// One tensor of the merged model (canonical name `name`): LoRA W0 + (alpha/r)·B·A, L4Q
/// its quantized merge (dequantized; W0 + c·B·A during the warm-up), frozen projections
/// dequantized, norms and embeddings as the model holds them. Only that tensor is built.
inline Tensor<float> merged_llama_tensor(Llama& model, const std::string& name) {
  const LlamaConfig& c = model.config();
  if (name == "model.embed_tokens.weight") return model.embedding().weight().widened(MemoryCategory::kWeights);
  if (name == "model.norm.weight") return model.final_norm().weight().clone();
  if (name == "lm_head.weight" && !c.tied_embeddings)
    return model.classifier_weight().widened(MemoryCategory::kWeights);
  for (std::int64_t l = 0; l < model.n_layers(); ++l) {
    const std::string prefix = llama_layer_tensor_name(l, "");
    if (!name.starts_with(prefix)) continue;
    Llama::Block& b = model.block(l);
    const std::string rest = name.substr(prefix.size());
    if (rest == "input_layernorm.weight") return b.attn_norm.weight().clone();
    if (rest == "post_attention_layernorm.weight") return b.mlp_norm.weight().clone();
    for (std::string_view proj : kLlamaProjections) {
      const bool attn = proj == "q_proj" || proj == "k_proj" || proj == "v_proj" || proj == "o_proj";
      if (rest != (attn ? "self_attn." : "mlp.") + std::string(proj) + ".weight") continue;
      Projection& p = model.projection(l, proj);
      if (LoraLinear* lora = p.get_if<LoraLinear>()) return lora->merged_weight(MemoryCategory::kWeights);
      if (L4qLinear* l4q = p.get_if<L4qLinear>()) {
        if (l4q->quantizing()) l4q->snap_to_fp16_grid();  // the last optimizer step may have left the grid
        return l4q->quantizing() ? l4q->merge().weight : io::detail::l4q_unquantized_weight(*l4q);
      }
      if (Linear* lin = p.get_if<Linear>())
        return lin->is_trainable() ? lin->weight().clone()
                                   : lin->frozen_weight().dequantized(MemoryCategory::kWeights);
      detail::throw_error(ErrorCode::kInvalidArgument, "merged_llama_tensor: projection " + name + " holds no layer");
    }
  }
  detail::throw_error(ErrorCode::kInvalidArgument,
                      "merged_llama_tensor: \"" + name + "\" is not a tensor of this model");
}

/// The model's weights with every adapter merged (merged_llama_tensor for every tensor),
/// all in memory at once: for small models; write_merged_hf_llama streams instead.
inline LlamaWeights merged_llama_weights(Llama& model) {
  LlamaWeights w;
  w.config = model.config();
  w.source = "merged model";
  for (const LlamaTensorSpec& spec : llama_tensor_specs(w.config))
    w.tensors.emplace(spec.name, merged_llama_tensor(model, spec.name));
  check_llama_weights(w);
  return w;
}

namespace detail {
/// The embedding or the untied classifier when `name` is one and it is frozen (so the
/// merged model holds it unchanged), else nullptr.
inline const FloatMatrix* frozen_table(Llama& model, const std::string& name) {
  if (model.options().train_embedding) return nullptr;
  if (name == "model.embed_tokens.weight") return &model.embedding().weight();
  if (name == "lm_head.weight" && !model.config().tied_embeddings) return &model.classifier_weight();
  return nullptr;
}
/// Appends `t` to the writer's current tensor a block of rows at a time: BF16 into a
/// BF16 file as stored, anything else widened then converted by append_float.
inline void append_table(SafetensorsStreamWriter& out, const FloatMatrix& t, DType dtype) {
  constexpr std::int64_t kValues = std::int64_t{1} << 20;
  const std::int64_t block = std::max<std::int64_t>(1, kValues / t.cols());
  std::vector<float> rows(static_cast<std::size_t>(std::min(block, t.rows()) * t.cols()));
  for (std::int64_t r0 = 0; r0 < t.rows(); r0 += block) {
    const std::int64_t r1 = std::min(t.rows(), r0 + block);
    const bool raw = t.visit([&](auto v) {
      using T = typename decltype(v)::value_type;
      if constexpr (std::is_same_v<T, bf16>) {
        if (dtype != DType::kBF16) return false;
        out.append(v.row(r0), static_cast<std::size_t>((r1 - r0) * t.cols()) * sizeof(bf16));
        return true;
      }
      return false;
    });
    if (!raw) {
      for (std::int64_t r = r0; r < r1; ++r) t.copy_row(r, rows.data() + (r - r0) * t.cols());
      out.append_float(std::span<const float>(rows.data(), static_cast<std::size_t>((r1 - r0) * t.cols())));
    }
    t.drop_rows(r0, r1);  // a borrowed table does not stay resident after the pass
  }
}
}  // namespace detail

/// How write_merged_hf_llama lays the merged model out.
struct MergedHfOptions {
  DType dtype = DType::kF32;                         // F32 or BF16
  std::int64_t shard_bytes = std::int64_t{5} << 30;  // one model.safetensors when it all fits
};

/// Writes the merged model as a Hugging Face directory without ever holding it whole:
/// tensors are merged one at a time (merged_llama_tensor) and appended to their shard;
/// config.json, and model.safetensors.index.json when there are several shards. For a
/// model that fits one shard the file is byte-identical to write_hf_llama(dir,
/// merged_llama_weights(model)). Returns the files written.
inline std::vector<std::filesystem::path> write_merged_hf_llama(const std::filesystem::path& dir, Llama& model,
                                                                const MergedHfOptions& o = {}) {
  GSQ_CHECK(o.dtype == DType::kF32 || o.dtype == DType::kBF16, ErrorCode::kInvalidArgument,
            "write_merged_hf_llama: dtype must be F32 or BF16");
  std::filesystem::create_directories(dir);
  const LlamaConfig& c = model.config();
  const std::vector<LlamaTensorSpec> specs = llama_tensor_specs(c);
  std::vector<std::vector<const LlamaTensorSpec*>> shards(1);
  std::int64_t in_shard = 0, total = 0;
  for (const LlamaTensorSpec& s : specs) {
    std::int64_t bytes = dtype_bytes(o.dtype);
    for (std::int64_t d : s.shape) bytes *= d;
    if (o.shard_bytes > 0 && in_shard > 0 && in_shard + bytes > o.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&s);
    in_shard += bytes;
    total += bytes;
  }
  std::vector<std::filesystem::path> files;
  std::map<std::string, std::string> weight_map;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const std::string file = shards.size() == 1 ? "model.safetensors" : shard_file_name(i, shards.size());
    std::vector<SafetensorsStreamWriter::Spec> ws;
    for (const LlamaTensorSpec* s : shards[i]) {
      ws.push_back({s->name, o.dtype, s->shape});
      weight_map.emplace(s->name, file);
    }
    SafetensorsStreamWriter out(dir / file, std::move(ws), {{"format", "pt"}});
    for (const SafetensorsStreamWriter::Spec& s : out.order()) {
      if (const FloatMatrix* table = detail::frozen_table(model, s.name)) {  // never widened whole
        detail::append_table(out, *table, s.dtype);
        continue;
      }
      Tensor<float> t = merged_llama_tensor(model, s.name);
      if (c.rope_style == RopeStyle::kInterleaved) {
        const bool q = s.name.ends_with("self_attn.q_proj.weight"), k = s.name.ends_with("self_attn.k_proj.weight");
        if (q || k) t = io::detail::permute_rope_rows(t, q ? c.n_heads : c.n_kv_heads);
      }
      out.append_float(std::span<const float>(t.data(), static_cast<std::size_t>(t.numel())));
    }
    out.commit();
    files.push_back(dir / file);
  }
  if (shards.size() > 1) {
    write_safetensors_index(dir / kSafetensorsIndexName, total, weight_map);
    files.push_back(dir / kSafetensorsIndexName);
  }
  io::detail::write_json_file(dir / "config.json", hf_config_json(c, o.dtype == DType::kBF16 ? "bfloat16" : "float32"));
  files.push_back(dir / "config.json");
  return files;
}

// ---- L4Q quantized model ------------------------------------------------------------------

inline constexpr std::string_view kL4qFormatName = "gsq-l4q";

/// LlamaConfig ↔ JSON (every field, so a file restores the config exactly).
inline io::detail::Json llama_config_json(const LlamaConfig& c) {
  io::detail::Json j = {{"dim", c.dim},
          {"hidden_dim", c.hidden_dim},
          {"n_layers", c.n_layers},
          {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads},
          {"vocab_size", c.vocab_size},
          {"max_seq_len", c.max_seq_len},
          {"norm_eps", static_cast<double>(c.norm_eps)},
          {"rope_theta", static_cast<double>(c.rope_theta)},
          {"rope_style", c.rope_style == RopeStyle::kHalf ? "half" : "interleaved"},
          {"tied_embeddings", c.tied_embeddings},
          {"bos_id", c.bos_id},
          {"eos_id", c.eos_id}};
  if (c.rope_scaling.enabled())  // absent in files from before rope scaling existed
    j["rope_scaling"] = {{"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_positions", c.rope_scaling.original_max_positions}};
  return j;
}
inline LlamaConfig llama_config_from_json(const io::detail::Json& j, const io::detail::JsonWhere& where) {
  namespace iod = io::detail;
  auto extent = [&](const char* key) {
    return iod::json_int(iod::require_member(j, key, where), key, where, 1, std::int64_t{1} << 40);
  };
  LlamaConfig c;
  c.dim = extent("dim");
  c.hidden_dim = extent("hidden_dim");
  c.n_layers = extent("n_layers");
  c.n_heads = extent("n_heads");
  c.n_kv_heads = extent("n_kv_heads");
  c.vocab_size = extent("vocab_size");
  c.max_seq_len = extent("max_seq_len");
  c.norm_eps = static_cast<float>(iod::json_number(iod::require_member(j, "norm_eps", where), "norm_eps", where));
  c.rope_theta =
      static_cast<float>(iod::json_number(iod::require_member(j, "rope_theta", where), "rope_theta", where));
  const std::string& style = iod::json_string(iod::require_member(j, "rope_style", where), "rope_style", where);
  if (style != "half" && style != "interleaved") iod::json_fail(where, "rope_style", "expected half or interleaved");
  c.rope_style = style == "half" ? RopeStyle::kHalf : RopeStyle::kInterleaved;
  c.tied_embeddings = iod::json_bool(iod::require_member(j, "tied_embeddings", where), "tied_embeddings", where);
  c.bos_id = static_cast<std::int32_t>(iod::json_int(iod::require_member(j, "bos_id", where), "bos_id", where,
                                                     -1, std::int64_t{1} << 30));
  c.eos_id = static_cast<std::int32_t>(iod::json_int(iod::require_member(j, "eos_id", where), "eos_id", where,
                                                     -1, std::int64_t{1} << 30));
  if (const iod::Json* r = iod::find_member(j, "rope_scaling"); r != nullptr && !r->is_null()) {
    auto number = [&](const char* key) { return iod::json_number(iod::require_member(*r, key, where), key, where); };
    c.rope_scaling.factor = number("factor");
    c.rope_scaling.low_freq_factor = number("low_freq_factor");
    c.rope_scaling.high_freq_factor = number("high_freq_factor");
    c.rope_scaling.original_max_positions = iod::json_int(iod::require_member(*r, "original_max_positions", where),
                                                          "original_max_positions", where, 1, std::int64_t{1} << 40);
  }
  try {
    c.validate(where.file);
  } catch (const Error& e) {
    gsq::detail::throw_io_error(ErrorCode::kCorrupt, e.what(), where.file, where.offset);
  }
  return c;
}

/// A fully quantized L4Q model: the quantized projections by weight name
/// ("model.layers.0.self_attn.q_proj.weight"), every other tensor in FP32.
struct L4qQuantizedModel {
  LlamaConfig config;
  UniformSpec spec;
  std::map<std::string, UniformMatrix> quantized;
  LlamaTensors dense;
  std::string source;

  /// The FP32 twin: every quantized weight decoded as fma(q, s, b).
  LlamaWeights dequantized() const {
    LlamaWeights w;
    w.config = config;
    w.source = source;
    for (const auto& [name, t] : dense) w.tensors.emplace(name, t.clone());
    for (const auto& [name, q] : quantized) {
      Tensor<float> t({q.rows(), q.cols()}, MemoryCategory::kWeights);
      dequantize_uniform(q, t.view());
      w.tensors.emplace(name, std::move(t));
    }
    check_llama_weights(w);
    return w;
  }
};

/// The deployed form of an L4Q-trained model (every L4Q layer must be past its warm-up).
inline L4qQuantizedModel l4q_quantized_model(Llama& model) {
  GSQ_CHECK(model.options().adapter == ProjectionKind::kL4q, ErrorCode::kInvalidArgument,
            "l4q_quantized_model: the model has no L4Q projections");
  L4qQuantizedModel q;
  q.config = model.config();
  q.spec = model.options().l4q.quant_spec();
  q.source = "L4Q model";
  LlamaWeights all = merged_llama_weights(model);  // non-L4Q tensors; L4Q ones replaced below
  for (std::int64_t l = 0; l < model.n_layers(); ++l)
    for (std::string_view proj : kLlamaProjections) {
      L4qLinear* p = model.projection(l, proj).get_if<L4qLinear>();
      if (p == nullptr) continue;
      const bool attn = proj == "q_proj" || proj == "k_proj" || proj == "v_proj" || proj == "o_proj";
      const std::string name =
          llama_layer_tensor_name(l, (attn ? "self_attn." : "mlp.") + std::string(proj) + ".weight");
      p->snap_to_fp16_grid();  // fp16_grid: the last optimizer step may have left the grid
      q.quantized.emplace(name, p->merge().quantized);
      all.tensors.erase(name);
    }
  q.dense = std::move(all.tensors);
  return q;
}

/// Writes `q` as a gsq-l4q safetensors file (layout in the file comment), atomically.
inline void write_l4q_quantized(const std::filesystem::path& path, const L4qQuantizedModel& q) {
  std::vector<io::detail::RawTensorRef> refs;
  std::vector<std::vector<std::uint8_t>> codes;  // unpacked, one byte per code
  codes.reserve(q.quantized.size());
  for (const auto& [name, t] : q.dense)
    refs.push_back({name, DType::kF32, tensor_shape(t), io::detail::float_bytes(t)});
  for (const auto& [name, m] : q.quantized) {
    GSQ_CHECK(name.ends_with(".weight") && m.spec() == q.spec, ErrorCode::kInvalidArgument,
              "write_l4q_quantized: \"" + name + "\" is not a weight in " + q.spec.name());
    const std::string module = name.substr(0, name.size() - 7);
    std::vector<std::uint8_t>& c = codes.emplace_back(static_cast<std::size_t>(m.rows() * m.cols()));
    for (std::int64_t r = 0; r < m.rows(); ++r)
      for (std::int64_t k = 0; k < m.cols(); ++k)
        c[static_cast<std::size_t>(r * m.cols() + k)] = static_cast<std::uint8_t>(static_cast<std::int8_t>(m.code(r, k)));
    const std::vector<std::int64_t> grid = {m.rows(), m.groups_per_row()};
    const auto grid_bytes = static_cast<std::size_t>(m.rows() * m.groups_per_row()) * sizeof(float);
    refs.push_back({module + ".qweight", DType::kI8, {m.rows(), m.cols()}, c});
    refs.push_back({module + ".scales", DType::kF32, grid,
                    {reinterpret_cast<const std::uint8_t*>(m.step_row(0)), grid_bytes}});
    refs.push_back({module + ".offsets", DType::kF32, grid,
                    {reinterpret_cast<const std::uint8_t*>(m.offset_row(0)), grid_bytes}});
  }
  io::detail::write_safetensors_raw(path, std::move(refs),
                                    {{"format", std::string(kL4qFormatName)},
                                     {"format_version", "1"},
                                     {"bits", std::to_string(q.spec.bits)},
                                     {"group_size", std::to_string(q.spec.group)},
                                     {"config", llama_config_json(q.config).dump()}});
}

/// Reads a gsq-l4q file; IoError naming it for anything inconsistent.
inline L4qQuantizedModel read_l4q_quantized(const std::filesystem::path& path) {
  const SafetensorsFile st = SafetensorsFile::open(path);
  const std::string& file = st.name();
  auto bad = [&](const std::string& what, std::int64_t at = -1) {
    detail::throw_io_error(ErrorCode::kCorrupt, what, file, at);
  };
  auto meta = [&](const std::string& key) -> const std::string& {
    auto it = st.metadata().find(key);
    if (it == st.metadata().end()) bad("__metadata__ lacks \"" + key + "\" (not a gsq-l4q file?)");
    return it->second;
  };
  if (meta("format") != kL4qFormatName) bad("__metadata__.format is \"" + meta("format") + "\", not gsq-l4q");
  if (meta("format_version") != "1") bad("unsupported gsq-l4q format_version " + meta("format_version"));
  auto small_int = [&](const std::string& key, int lo, int hi) {
    const std::string& s = meta(key);
    int v = 0;
    if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      bad("__metadata__." + key + " is not an integer: \"" + s + "\"");
    v = std::stoi(s);
    if (v < lo || v > hi) bad("__metadata__." + key + " = " + s + " is out of range");
    return v;
  };
  L4qQuantizedModel q;
  q.source = file;
  q.spec = {small_int("bits", 2, 8), small_int("group_size", 1, 1 << 24)};
  const std::string& config_text = meta("config");
  const io::detail::Json cj = io::detail::parse_json(
      std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(config_text.data()), config_text.size()),
      file, 8);
  q.config = llama_config_from_json(cj, {file, 8});

  std::map<std::string, LlamaTensorSpec> specs;
  for (LlamaTensorSpec& s : llama_tensor_specs(q.config)) specs.emplace(s.name, std::move(s));
  std::map<std::string, int> parts;  // module → qweight/scales/offsets seen
  for (const SafetensorsEntry& e : st.entries()) {
    auto suffix = [&](std::string_view s) { return e.name.ends_with(s); };
    if (suffix(".qweight") || suffix(".scales") || suffix(".offsets")) {
      const std::string module = e.name.substr(0, e.name.rfind('.'));
      auto spec = specs.find(module + ".weight");
      if (spec == specs.end() || spec->second.shape.size() != 2)
        bad("tensor \"" + e.name + "\" quantizes no projection of this config", e.begin);
      ++parts[module];
      continue;
    }
    if (specs.count(e.name) == 0) bad("unexpected tensor \"" + e.name + "\"", e.begin);
    if (e.dtype != DType::kF32 || e.shape != specs[e.name].shape)
      bad("tensor \"" + e.name + "\" is " + std::string(dtype_name(e.dtype)) + " " + shape_to_string(e.shape) +
              ", expected F32 " + shape_to_string(specs[e.name].shape),
          e.begin);
    q.dense.emplace(e.name, st.to_float(e));
  }
  for (const auto& [module, n] : parts) {
    const std::string name = module + ".weight";
    if (n != 3) bad("module \"" + module + "\" lacks one of qweight, scales, offsets");
    if (q.dense.count(name) != 0) bad("\"" + name + "\" is stored both dense and quantized");
    const std::int64_t rows = specs[name].shape[0], cols = specs[name].shape[1];
    UniformMatrix m(rows, cols, q.spec, MemoryCategory::kWeights);
    const std::vector<std::int64_t> grid = {rows, m.groups_per_row()};
    const SafetensorsEntry& qw = st.at(module + ".qweight");
    const SafetensorsEntry& sc = st.at(module + ".scales");
    const SafetensorsEntry& of = st.at(module + ".offsets");
    if (qw.dtype != DType::kI8 || qw.shape != specs[name].shape)
      bad("\"" + qw.name + "\" must be I8 " + shape_to_string(specs[name].shape), qw.begin);
    if (sc.dtype != DType::kF32 || sc.shape != grid || of.dtype != DType::kF32 || of.shape != grid)
      bad("\"" + module + "\" scales and offsets must be F32 " + shape_to_string(grid), sc.begin);
    const std::uint8_t* codes = st.raw(qw).data();
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t k = 0; k < cols; ++k) {
        const int v = static_cast<std::int8_t>(codes[r * cols + k]);
        if (v < q.spec.qmin() || v > q.spec.qmax())
          bad("\"" + qw.name + "\" holds code " + std::to_string(v) + " outside the " +
                  std::to_string(q.spec.bits) + "-bit range",
              qw.begin + r * cols + k);
        m.set_code(r, k, v);
      }
      for (std::int64_t k = cols; k < m.padded_cols(); ++k) m.set_code(r, k, 0);
    }
    std::memcpy(m.step_row(0), st.raw(sc).data(), static_cast<std::size_t>(sc.bytes()));
    std::memcpy(m.offset_row(0), st.raw(of).data(), static_cast<std::size_t>(of.bytes()));
    for (std::int64_t i = 0; i < rows * m.groups_per_row(); ++i)
      if (!std::isfinite(m.step_row(0)[i]) || !(m.step_row(0)[i] > 0.0f) || !std::isfinite(m.offset_row(0)[i]))
        bad("\"" + module + "\" has a step that is not finite and > 0, or a non-finite offset", sc.begin);
    q.quantized.emplace(name, std::move(m));
  }
  for (const auto& [name, spec] : specs)
    if (q.dense.count(name) == 0 && q.quantized.count(name) == 0) bad("missing tensor \"" + name + "\"");
  return q;
}

// ---- one call for the drivers --------------------------------------------------------------

/// What export_merged wrote.
struct MergedExport {
  std::vector<std::filesystem::path> files;
  std::string note;  // e.g. why the llama2.c file was skipped
};

/// Writes the deployable model of `model` to `dir`:
///   LoRA / frozen: config.json + model.safetensors (HF) and model.bin (llama2.c, when the
///                  format can hold the config: rms eps 1e-5, rope theta 10000)
///   L4Q:           model.l4q.safetensors (codes + steps + offsets) and its FP32 twin as
///                  config.json + model.safetensors (+ model.bin as above)
inline MergedExport export_merged(const std::filesystem::path& dir, Llama& model) {
  std::filesystem::create_directories(dir);
  MergedExport r;
  LlamaWeights w;
  if (model.options().adapter == ProjectionKind::kL4q) {
    const L4qQuantizedModel q = l4q_quantized_model(model);
    write_l4q_quantized(dir / "model.l4q.safetensors", q);
    r.files.push_back(dir / "model.l4q.safetensors");
    w = q.dequantized();
  } else {
    w = merged_llama_weights(model);
  }
  write_hf_llama(dir, w);
  r.files.push_back(dir / "model.safetensors");
  r.files.push_back(dir / "config.json");
  if (w.config.norm_eps == 1e-5f && w.config.rope_theta == 10000.0f) {
    write_llama2c(dir / "model.bin", w);
    r.files.push_back(dir / "model.bin");
  } else {
    r.note = "model.bin skipped: llama2.c files fix rms eps 1e-5 and rope theta 10000";
  }
  return r;
}

GSQ_NAMESPACE_END
