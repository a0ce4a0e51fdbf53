// fuzz/fuzz_seeds.hpp — the seed corpus of each fuzz target, generated, never checked in.
//
// Seeds are small valid files (< 4 KB) that reach deep into each parser: hand-made ones
// built here byte by byte, and, when the shared data directory is given, cut-down
// versions of the real assets (the real config.json, a prefix of tok512.bin ending on an
// entry boundary, tokenizer.json reduced to its first tokens and the merges among them,
// the real safetensors header with its data cut off), and files gsq itself writes for a
// tiny random model (adapter_config.json, a checkpoint step directory packed as in
// fuzz_targets.hpp). `gsq-fuzz-seeds` writes them for libFuzzer; the replay test mutates
// them in memory.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <unistd.h>

#include "fuzz_targets.hpp"
#include "gsq/io/adapter.hpp"
#include "gsq/io/checkpoint.hpp"
#include "gsq/io/dataset.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/trainer.hpp"
#include "gsq/model/weights.hpp"

namespace gsq::fuzz {

struct Seed {
  std::string name;
  std::vector<std::uint8_t> bytes;
  bool valid = true;  // false: a deliberately truncated real file (the parser must reject it)
};

namespace seeds_detail {

template <class T>
void put(std::vector<std::uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

inline std::vector<std::uint8_t> text(std::string_view s) { return {s.begin(), s.end()}; }

inline std::optional<std::vector<std::uint8_t>> read_file(const std::optional<std::filesystem::path>& dir,
                                                          const char* relative) {
  if (!dir) return std::nullopt;
  std::ifstream f(*dir / relative, std::ios::binary);
  if (!f) return std::nullopt;
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline std::vector<std::uint8_t> safetensors_file(const std::string& header, std::size_t data_bytes) {
  std::vector<std::uint8_t> out;
  put(out, static_cast<std::uint64_t>(header.size()));
  out.insert(out.end(), header.begin(), header.end());
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::uint8_t>(i * 37 + 11));
  return out;
}

inline std::vector<std::uint8_t> llama2c_model(bool tied) {
  const std::int32_t dim = 8, hidden = 12, layers = 1, heads = 2, kv = 1, vocab = 6, seq = 2;
  std::vector<std::uint8_t> out;
  for (std::int32_t v : {dim, hidden, layers, heads, kv, tied ? vocab : -vocab, seq}) put(out, v);
  const std::int32_t hs = dim / heads, kv_dim = hs * kv;
  const std::int32_t floats = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim) +
                              dim + seq * hs + (tied ? 0 : vocab * dim);
  for (std::int32_t i = 0; i < floats; ++i) put(out, static_cast<float>((i * 7919) % 201 - 100) / 64.0f);
  return out;
}

inline std::vector<std::uint8_t> llama2c_tokenizer() {
  std::vector<std::uint8_t> out;
  put(out, std::int32_t{8});
  auto token = [&](float score, std::string_view s) {
    put(out, score);
    put(out, static_cast<std::int32_t>(s.size()));
    out.insert(out.end(), s.begin(), s.end());
  };
  token(0, "<unk>");
  token(0, "\n<s>\n");
  token(0, "\n</s>\n");
  static const char* kHex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) token(0, std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">");
  float score = 0;
  for (const char* s : {" ", "a", "b", "c", "\xC3\xA9", " a", "ab", " ab", "abc", "  "}) token(score -= 1, s);
  return out;
}

inline const char* kTokenizerJson = R"({
  "version": "1.0",
  "added_tokens": [
    {"id": 0, "content": "<unk>", "special": true, "normalized": true},
    {"id": 1, "content": "<s>", "special": true, "normalized": false},
    {"id": 2, "content": "</s>", "special": true, "normalized": true}],
  "normalizer": {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "\u2581"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
    {"type": "ByteFallback"}, {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5, "ab": 6, "\u2581ab": 7,
              "<0x41>": 8, "<0xC3>": 9, "<0xA9>": 10, "c": 11, "abc": 12},
    "merges": ["a b", "\u2581 ab", ["ab", "c"]]}
})";

/// tokenizer.json cut down to its ids < `keep` and the merges among them.
inline std::optional<std::vector<std::uint8_t>> reduced_tokenizer_json(const std::vector<std::uint8_t>& full,
                                                                        std::int64_t keep) {
  nlohmann::json j = nlohmann::json::parse(full.begin(), full.end(), nullptr, false);
  if (j.is_discarded() || !j.contains("model")) return std::nullopt;
  nlohmann::json vocab = nlohmann::json::object();
  for (const auto& [k, v] : j["model"]["vocab"].items())
    if (v.is_number_integer() && v.get<std::int64_t>() < keep) vocab[k] = v;
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& m : j["model"]["merges"]) {
    if (!m.is_string()) continue;
    const std::string s = m.get<std::string>();
    const std::size_t sp = s.find(' ');
    if (sp == std::string::npos) continue;
    const std::string a = s.substr(0, sp), b = s.substr(sp + 1);
    if (vocab.contains(a) && vocab.contains(b) && vocab.contains(a + b)) merges.push_back(s);
  }
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = merges;
  nlohmann::json added = nlohmann::json::array();
  for (const auto& a : j["added_tokens"])
    if (a["id"].get<std::int64_t>() < keep) added.push_back(a);
  j["added_tokens"] = added;
  const std::string out = j.dump();
  return std::vector<std::uint8_t>(out.begin(), out.end());
}

/// A GGUF v3 file built byte by byte: metadata (key, value type, encoded value), then
/// tensors (name, ne innermost first, ggml type, data bytes) laid out at alignment 32.
struct GgufSeedTensor {
  std::string name;
  std::vector<std::uint64_t> ne;
  std::uint32_t type;
  std::size_t bytes;
};
inline std::vector<std::uint8_t> gguf_string(std::string_view s) {
  std::vector<std::uint8_t> out;
  put(out, static_cast<std::uint64_t>(s.size()));
  out.insert(out.end(), s.begin(), s.end());
  return out;
}
inline std::vector<std::uint8_t> gguf_file(const std::vector<std::tuple<std::string, std::uint32_t, std::vector<std::uint8_t>>>& kvs,
                                           const std::vector<GgufSeedTensor>& tensors) {
  std::vector<std::uint8_t> out = text("GGUF");
  put(out, std::uint32_t{3});
  put(out, static_cast<std::uint64_t>(tensors.size()));
  put(out, static_cast<std::uint64_t>(kvs.size()));
  for (const auto& [key, type, value] : kvs) {
    const auto k = gguf_string(key);
    out.insert(out.end(), k.begin(), k.end());
    put(out, type);
    out.insert(out.end(), value.begin(), value.end());
  }
  std::uint64_t offset = 0;
  for (const GgufSeedTensor& t : tensors) {
    const auto n = gguf_string(t.name);
    out.insert(out.end(), n.begin(), n.end());
    put(out, static_cast<std::uint32_t>(t.ne.size()));
    for (std::uint64_t d : t.ne) put(out, d);
    put(out, t.type);
    put(out, offset);
    offset += (t.bytes + 31) / 32 * 32;
  }
  while (out.size() % 32 != 0) out.push_back(0);
  for (const GgufSeedTensor& t : tensors)
    for (std::size_t i = 0; i < (t.bytes + 31) / 32 * 32; ++i)
      out.push_back(i < t.bytes ? static_cast<std::uint8_t>(i % 2 == 1 ? 0x3C : i * 7) : 0);  // F16 ≈ 1
  return out;
}
template <class T>
std::vector<std::uint8_t> gguf_scalar(T v) {
  std::vector<std::uint8_t> out;
  put(out, v);
  return out;
}

/// A complete tiny llama GGUF (dim 8, hidden 12, 1 layer, 2 heads, 1 kv head, vocab 6).
inline std::vector<std::uint8_t> gguf_llama() {
  std::vector<std::uint8_t> tokens;
  put(tokens, std::uint32_t{8});
  put(tokens, std::uint64_t{6});
  for (const char* t : {"<unk>", "<s>", "</s>", "\xE2\x96\x81" "a", "b", "\xE2\x96\x81" "ab"}) {
    const auto s = gguf_string(t);
    tokens.insert(tokens.end(), s.begin(), s.end());
  }
  std::vector<std::uint8_t> scores, types;
  put(scores, std::uint32_t{6});
  put(scores, std::uint64_t{6});
  put(types, std::uint32_t{5});
  put(types, std::uint64_t{6});
  for (int i = 0; i < 6; ++i) {
    put(scores, -static_cast<float>(i));
    put(types, static_cast<std::int32_t>(i == 0 ? 2 : i < 3 ? 3 : 1));
  }
  const std::vector<std::tuple<std::string, std::uint32_t, std::vector<std::uint8_t>>> kvs = {
      {"general.architecture", 8, gguf_string("llama")},
      {"llama.context_length", 4, gguf_scalar(std::uint32_t{4})},
      {"llama.embedding_length", 4, gguf_scalar(std::uint32_t{8})},
      {"llama.block_count", 4, gguf_scalar(std::uint32_t{1})},
      {"llama.feed_forward_length", 4, gguf_scalar(std::uint32_t{12})},
      {"llama.attention.head_count", 4, gguf_scalar(std::uint32_t{2})},
      {"llama.attention.head_count_kv", 4, gguf_scalar(std::uint32_t{1})},
      {"llama.attention.layer_norm_rms_epsilon", 6, gguf_scalar(1e-5f)},
      {"llama.rope.freq_base", 6, gguf_scalar(10000.0f)},
      {"tokenizer.ggml.model", 8, gguf_string("llama")},
      {"tokenizer.ggml.tokens", 9, tokens},
      {"tokenizer.ggml.scores", 9, scores},
      {"tokenizer.ggml.token_type", 9, types},
      {"tokenizer.ggml.bos_token_id", 4, gguf_scalar(std::uint32_t{1})},
      {"tokenizer.ggml.eos_token_id", 4, gguf_scalar(std::uint32_t{2})},
  };
  return gguf_file(kvs, {{"token_embd.weight", {8, 6}, 1, 96},   {"blk.0.attn_norm.weight", {8}, 0, 32},
                         {"blk.0.attn_q.weight", {8, 8}, 1, 128}, {"blk.0.attn_k.weight", {8, 4}, 1, 64},
                         {"blk.0.attn_v.weight", {8, 4}, 1, 64},  {"blk.0.attn_output.weight", {8, 8}, 1, 128},
                         {"blk.0.ffn_norm.weight", {8}, 0, 32},   {"blk.0.ffn_gate.weight", {8, 12}, 1, 192},
                         {"blk.0.ffn_up.weight", {8, 12}, 1, 192}, {"blk.0.ffn_down.weight", {12, 8}, 1, 192},
                         {"output_norm.weight", {8}, 0, 32}});
}

/// One tensor of each quantized type gsq decodes, plus a K-quant one and nested arrays.
inline std::vector<std::uint8_t> gguf_types() {
  std::vector<std::uint8_t> nested;
  put(nested, std::uint32_t{9});  // array of arrays
  put(nested, std::uint64_t{1});
  put(nested, std::uint32_t{0});  // of u8
  put(nested, std::uint64_t{2});
  nested.push_back(7);
  nested.push_back(9);
  return gguf_file({{"general.alignment", 4, gguf_scalar(std::uint32_t{32})}, {"n", 9, nested}, {"b", 7, {1}}},
                   {{"q8", {32}, 8, 34}, {"q40", {32, 1}, 2, 18}, {"q41", {32}, 3, 20}, {"bf", {3}, 30, 6},
                    {"q4k", {256}, 12, 144}});
}

/// The smallest LLaMA gsq builds (dim 8, 1 layer, vocab 8) with a rank-1 adapter on
/// `targets`, so the files gsq writes for it stay far below the 4 KB seed limit.
inline Llama tiny_adapted_model(ProjectionKind kind, std::vector<std::string> targets) {
  LlamaConfig c;
  c.dim = 8;
  c.hidden_dim = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.vocab_size = 8;
  c.max_seq_len = 4;
  LlamaOptions o;
  o.adapter = kind;
  o.target_modules = std::move(targets);
  o.lora.rank = 1;
  o.lora.alpha = 2.0f;
  o.l4q.rank = 1;
  o.l4q.alpha = 2.0f;
  o.l4q.quant_group = 8;
  return Llama(c, random_llama_weights(c, 5), o);
}

inline std::vector<std::uint8_t> json_text(const nlohmann::json& j) {  // as write_json_file writes it
  const std::string s = j.dump(2) + "\n";
  return {s.begin(), s.end()};
}

/// adapter_config.json as save_adapter writes it.
inline std::vector<std::uint8_t> adapter_config(ProjectionKind kind, std::vector<std::string> targets, bool quantized) {
  Llama m = tiny_adapted_model(kind, std::move(targets));
  if (quantized) io::detail::for_each_l4q(m, [](L4qLinear& p) { p.start_quantization(); });
  return json_text(adapter_config_json(m, "base"));
}

/// A checkpoint of one training step of the tiny model, saved by save_checkpoint and
/// packed as the checkpoint fuzz target reads it (re-signed or verbatim).
inline std::vector<std::uint8_t> checkpoint(ProjectionKind kind, bool resign) {
  std::error_code ec;
  const std::filesystem::path root = std::filesystem::temp_directory_path() /
                                     ("gsq-fuzz-seed-checkpoint-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root, ec);
  Llama m = tiny_adapted_model(kind, {"q_proj"});
  TrainerConfig tc;
  tc.total_steps = 2;
  tc.lr = 1e-2f;
  Trainer trainer(m, tc);
  std::vector<data::Example> examples(1);
  examples[0].ids = {1, 2, 3, 4};
  examples[0].loss_mask = {0, 1, 1, 1};
  data::BatchSampler sampler(examples, 1, 4, 3);
  trainer.step(sampler.next());
  const std::filesystem::path dir = save_checkpoint(root, trainer, sampler, 3, {{"lr", 1e-2}});
  std::array<std::vector<std::uint8_t>, 4> files;
  for (std::size_t i = 0; i < files.size(); ++i) files[i] = read_file(dir, kCheckpointFiles[i]).value();
  std::filesystem::remove_all(root, ec);
  return pack_checkpoint(files, resign);
}

}  // namespace seeds_detail

/// The seeds of target `name` (see fuzz_targets.hpp); `data_dir` adds cut-down real files.
inline std::vector<Seed> make_seeds(std::string_view name, const std::optional<std::filesystem::path>& data_dir) {
  namespace sd = seeds_detail;
  std::vector<Seed> seeds;
  if (name == "safetensors") {
    seeds.push_back({"two_f32", sd::safetensors_file(
        R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}})", 28)});
    seeds.push_back({"mixed_dtypes", sd::safetensors_file(
        R"({"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"g":{"dtype":"BF16","shape":[2,1],"data_offsets":[8,12]},"i":{"dtype":"I64","shape":[1],"data_offsets":[12,20]},"s":{"dtype":"F32","shape":[],"data_offsets":[20,24]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[24,24]}})", 24)});
    seeds.push_back({"empty", sd::safetensors_file("{}", 0)});
    if (const auto real = sd::read_file(data_dir, "models/tinystories-656K/model.safetensors"); real && real->size() > 8) {
      std::uint64_t n = 0;
      std::memcpy(&n, real->data(), 8);
      if (n + 8 <= real->size() && n < 3500)
        seeds.push_back({"tinystories_header", std::vector<std::uint8_t>(real->begin(), real->begin() + static_cast<std::ptrdiff_t>(8 + n)), false});
    }
  } else if (name == "llama2c") {
    seeds.push_back({"tiny_tied", sd::llama2c_model(true)});
    seeds.push_back({"tiny_untied", sd::llama2c_model(false)});
    if (const auto real = sd::read_file(data_dir, "models/stories260K/stories260K.bin"); real && real->size() > 64)
      seeds.push_back({"stories260K_prefix", std::vector<std::uint8_t>(real->begin(), real->begin() + 64), false});
  } else if (name == "hf_config") {
    seeds.push_back({"tiny", sd::text(R"({"model_type":"llama","hidden_size":8,"intermediate_size":12,"num_hidden_layers":1,
      "num_attention_heads":2,"num_key_value_heads":1,"vocab_size":10,"max_position_embeddings":16,
      "rms_norm_eps":1e-06,"rope_theta":10000.0,"tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":[2,3]})")});
    seeds.push_back({"minimal", sd::text(R"({"hidden_size":4,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":3,"max_position_embeddings":1})")});
    if (const auto real = sd::read_file(data_dir, "models/tinystories-656K/config.json"); real && real->size() < 4096)
      seeds.push_back({"tinystories_config", *real});
  } else if (name == "llama2c_tokenizer") {
    seeds.push_back({"bytes_and_merges", sd::llama2c_tokenizer()});
    if (const auto real = sd::read_file(data_dir, "models/stories260K/tok512.bin")) {
      std::size_t at = 4, end = 4;  // the longest prefix of whole entries under 4 KB
      while (at + 8 <= real->size()) {
        std::int32_t len = 0;
        std::memcpy(&len, real->data() + at + 4, 4);
        if (len < 0 || at + 8 + static_cast<std::size_t>(len) > std::min<std::size_t>(real->size(), 4000)) break;
        at += 8 + static_cast<std::size_t>(len);
        end = at;
      }
      seeds.push_back({"tok512_prefix", std::vector<std::uint8_t>(real->begin(), real->begin() + static_cast<std::ptrdiff_t>(end))});
    }
  } else if (name == "gguf") {
    seeds.push_back({"tiny_llama", sd::gguf_llama()});
    seeds.push_back({"tensor_types", sd::gguf_types()});
  } else if (name == "peft_adapter") {
    seeds.push_back({"gsq_lora", sd::adapter_config(ProjectionKind::kLora, {"q_proj", "v_proj"}, false)});
    seeds.push_back({"gsq_l4q", sd::adapter_config(ProjectionKind::kL4q, {"q_proj", "k_proj", "down_proj"}, true)});
    // As PEFT itself writes one (more fields, null base, a string target list is allowed too).
    seeds.push_back({"peft_written", sd::text(R"({"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": null,
  "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
  "layers_pattern": null, "layers_to_transform": null, "lora_alpha": 32, "lora_dropout": 0.05,
  "modules_to_save": null, "peft_type": "LORA", "r": 16, "rank_pattern": {}, "revision": null,
  "target_modules": ["o_proj", "up_proj", "gate_proj"], "task_type": "CAUSAL_LM", "use_rslora": false})")});
    seeds.push_back({"minimal", sd::text(R"({"r":1,"lora_alpha":0.5,"target_modules":"k_proj","gsq":{"method":"lora"}})")});
    seeds.push_back({"l4q_unquantized", sd::text(
        R"({"r":4,"lora_alpha":8,"target_modules":[],"base_model_name_or_path":"m\u00e9","gsq":{"method":"l4q","quant_bits":2,"quant_group":1}})")});
    seeds.push_back({"unknown_module", sd::text(R"({"r":2,"lora_alpha":4,"target_modules":["lm_head"]})"), false});
    seeds.push_back({"ia3", sd::text(R"({"peft_type":"IA3","r":2,"lora_alpha":4,"target_modules":["q_proj"]})"), false});
  } else if (name == "checkpoint") {
    seeds.push_back({"lora_step1", sd::checkpoint(ProjectionKind::kLora, false)});
    seeds.push_back({"lora_step1_resigned", sd::checkpoint(ProjectionKind::kLora, true)});
    seeds.push_back({"l4q_step1_resigned", sd::checkpoint(ProjectionKind::kL4q, true)});
    // Only a manifest (re-signing cannot help: the files it lists are absent).
    seeds.push_back({"manifest_only", sd::text(R"(!{"files":{"trainer_state.json":{"bytes":0,"fnv1a64":"0"}},"files_fnv1a64":""})"), false});
  } else if (name == "hf_tokenizer") {
    seeds.push_back({"tiny", sd::text(sd::kTokenizerJson)});
    if (const auto real = sd::read_file(data_dir, "models/tinystories-656K/tokenizer.json"))
      if (const auto reduced = sd::reduced_tokenizer_json(*real, 120); reduced && reduced->size() < 4096)
        seeds.push_back({"tinystories_reduced", *reduced});
  }
  return seeds;
}

}  // namespace gsq::fuzz
