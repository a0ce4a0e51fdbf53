// gsq/io/gguf_llama.hpp — a llama.cpp GGUF model as gsq's LlamaWeights and Tokenizer.
//
// Reads `general.architecture = llama` files with F32/F16/BF16/Q8_0/Q4_0/Q4_1 tensors:
// hyper-parameters from the llama.* keys, tensors mapped back from llama.cpp's names to
// gsq's canonical ones and decoded to float one at a time (the frozen base is then
// quantized to its stored form by the model, as for every other loader). GGUF llama
// rotates interleaved pairs, so the config says RopeStyle::kInterleaved and q/k rows are
// kept as stored. No output.weight means tied embeddings. Other architectures, K-quant
// tensors and GPT-2-style vocabularies are refused by name (ErrorCode::kUnsupported).
//
// The tokenizer: a `tokenizer.ggml.model = llama` vocabulary (SentencePiece pieces and
// scores) is what llama2.c's tokenizer.bin holds too, so it becomes a Llama2cTokenizer
// ("▁" → " ", control tokens <s>/</s> → "\n<s>\n"/"\n</s>\n" as llama2.c stores them);
// that tokenizer fixes BOS = 1 and EOS = 2, so other ids are refused.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/gguf.hpp"
#include "gsq/io/gguf_export.hpp"
#include "gsq/io/llama2c_tokenizer.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/mapped_file.hpp"

GSQ_NAMESPACE_BEGIN

/// Whether `f` starts with the GGUF magic.
inline bool is_gguf(const MappedFile& f) noexcept {
  return f.size() >= 4 && f.data()[0] == 'G' && f.data()[1] == 'G' && f.data()[2] == 'U' && f.data()[3] == 'F';
}

/// The LlamaConfig of a llama GGUF (kUnsupported for other architectures).
inline LlamaConfig gguf_llama_config(const GgufFile& g) {
  const std::string& arch = g.get_string("general.architecture");
  if (arch != "llama")
    detail::throw_io_error(ErrorCode::kUnsupported,
                           "architecture \"" + arch + "\"; gsq reads llama GGUF models only", g.name(), -1);
  if (const GgufValue* type = g.find("general.type"); type != nullptr && type->type == GgufValueType::kString &&
                                                      type->s != "model")
    detail::throw_io_error(ErrorCode::kUnsupported,
                           "general.type is \"" + type->s + "\" (an adapter?), not a model", g.name(), -1);
  auto extent = [&](const char* key) {
    const std::int64_t v = g.get_int(key);
    if (v <= 0 || v > (std::int64_t{1} << 31))
      detail::throw_io_error(ErrorCode::kCorrupt, std::string(key) + " = " + std::to_string(v) + " is out of range",
                             g.name(), -1);
    return v;
  };
  LlamaConfig c;
  c.dim = extent("llama.embedding_length");
  c.hidden_dim = extent("llama.feed_forward_length");
  c.n_layers = extent("llama.block_count");
  // Every block has 9 tensors: a count the file cannot hold is corrupt, and refusing it
  // here keeps a hostile block_count from sizing the per-layer tables below.
  if (c.n_layers > static_cast<std::int64_t>(g.tensors().size()) / 9)
    detail::throw_io_error(ErrorCode::kCorrupt,
                           "llama.block_count = " + std::to_string(c.n_layers) + " but the file holds only " +
                               std::to_string(g.tensors().size()) + " tensors (9 per block)",
                           g.name(), -1);
  c.n_heads = extent("llama.attention.head_count");
  c.n_kv_heads = g.find("llama.attention.head_count_kv") != nullptr ? extent("llama.attention.head_count_kv") : c.n_heads;
  c.max_seq_len = extent("llama.context_length");
  c.norm_eps = static_cast<float>(g.get_number("llama.attention.layer_norm_rms_epsilon"));
  c.rope_theta = g.find("llama.rope.freq_base") != nullptr ? static_cast<float>(g.get_number("llama.rope.freq_base"))
                                                           : 10000.0f;
  c.rope_style = RopeStyle::kInterleaved;
  const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  if (embd == nullptr || embd->ne.size() != 2)
    detail::throw_io_error(ErrorCode::kCorrupt, "no 2-D token_embd.weight tensor", g.name(), -1);
  c.vocab_size = embd->ne[1];
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  if (const GgufValue* v = g.find("tokenizer.ggml.bos_token_id"); v != nullptr && v->is_integer())
    c.bos_id = static_cast<std::int32_t>(v->i);
  if (const GgufValue* v = g.find("tokenizer.ggml.eos_token_id"); v != nullptr && v->is_integer())
    c.eos_id = static_cast<std::int32_t>(v->i);
  if (g.find("llama.rope.dimension_count") != nullptr && g.get_int("llama.rope.dimension_count") != c.dim / c.n_heads)
    detail::throw_io_error(ErrorCode::kUnsupported,
                           "llama.rope.dimension_count differs from the head size (partial RoPE)", g.name(), -1);
  try {
    c.validate(g.name());
  } catch (const Error& e) {
    detail::throw_io_error(ErrorCode::kCorrupt, e.what(), g.name(), -1);
  }
  return c;
}

/// Reads a parsed llama GGUF into canonical FP32 weights.
inline LlamaWeights read_gguf_llama(const GgufFile& g) {
  LlamaWeights w;
  w.config = gguf_llama_config(g);
  w.source = g.name();
  std::map<std::string, std::string> canonical;  // gguf name → canonical
  for (const LlamaTensorSpec& spec : llama_tensor_specs(w.config))
    canonical.emplace(gguf_llama_tensor_name(spec.name), spec.name);
  for (const GgufTensorInfo& t : g.tensors()) {
    auto it = canonical.find(t.name);
    if (it == canonical.end()) {
      if (t.name == "rope_freqs.weight") continue;  // llama 3 frequency factors: refused below
      detail::throw_io_error(ErrorCode::kCorrupt, "unexpected tensor \"" + t.name + "\" (not a llama weight of this config)",
                             g.name(), t.info_offset);
    }
    w.tensors.emplace(it->second, g.to_float(t));
  }
  if (g.find_tensor("rope_freqs.weight") != nullptr)
    detail::throw_io_error(ErrorCode::kUnsupported, "rope_freqs.weight (scaled RoPE) is not supported", g.name(), -1);
  check_llama_weights(w);
  return w;
}

inline LlamaWeights read_gguf_llama(const std::filesystem::path& path) { return read_gguf_llama(GgufFile::open(path)); }

/// The tokenizer stored in a llama GGUF (see the file comment).
inline std::unique_ptr<Llama2cTokenizer> gguf_tokenizer(const GgufFile& g) {
  const std::string& model = g.get_string("tokenizer.ggml.model");
  if (model != "llama")
    detail::throw_io_error(ErrorCode::kUnsupported,
                           "tokenizer.ggml.model is \"" + model + "\"; gsq reads the SentencePiece-style \"llama\" vocabulary",
                           g.name(), -1);
  const std::vector<GgufValue>& tokens = g.get_array("tokenizer.ggml.tokens", GgufValueType::kString);
  const std::vector<GgufValue>* scores = nullptr;
  if (g.find("tokenizer.ggml.scores") != nullptr) scores = &g.get_array("tokenizer.ggml.scores", GgufValueType::kF32);
  const std::vector<GgufValue>* types = nullptr;
  if (g.find("tokenizer.ggml.token_type") != nullptr) types = &g.get_array("tokenizer.ggml.token_type", GgufValueType::kI32);
  if ((scores != nullptr && scores->size() != tokens.size()) || (types != nullptr && types->size() != tokens.size()))
    detail::throw_io_error(ErrorCode::kCorrupt, "tokenizer.ggml.scores/token_type and tokens differ in length", g.name(), -1);
  auto id_of = [&](const char* key, std::int64_t fallback) {
    const GgufValue* v = g.find(key);
    return v != nullptr && v->is_integer() ? v->i : fallback;
  };
  if (id_of("tokenizer.ggml.bos_token_id", 1) != 1 || id_of("tokenizer.ggml.eos_token_id", 2) != 2 || tokens.size() < 3)
    detail::throw_io_error(ErrorCode::kUnsupported,
                           "gsq's SentencePiece-style tokenizer needs BOS = 1 and EOS = 2 (and at least 3 tokens)",
                           g.name(), -1);
  // Build the llama2.c tokenizer.bin image: max length, then (score, length, bytes) per token.
  std::vector<std::uint8_t> bytes(4);
  std::int32_t max_len = 1;
  auto put = [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    bytes.insert(bytes.end(), b, b + n);
  };
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    std::string text = tokens[id].s;
    const std::int64_t type = types != nullptr ? (*types)[id].i : 1;
    if (type == static_cast<std::int64_t>(GgufTokenType::kControl) && (id == 1 || id == 2)) {
      text = "\n" + text + "\n";
    } else if (type != static_cast<std::int64_t>(GgufTokenType::kByte)) {
      std::string spaced;
      for (std::size_t k = 0; k < text.size(); ++k) {
        if (text.compare(k, 3, "\xE2\x96\x81") == 0) {
          spaced += ' ';
          k += 2;
        } else {
          spaced += text[k];
        }
      }
      text = std::move(spaced);
    }
    const float score = scores != nullptr ? static_cast<float>((*scores)[id].f) : 0.0f;
    const auto len = static_cast<std::int32_t>(std::min<std::size_t>(text.size(), Llama2cTokenizer::kMaxTokenLength));
    max_len = std::max(max_len, len);
    put(&score, 4);
    put(&len, 4);
    put(text.data(), static_cast<std::size_t>(len));
  }
  std::memcpy(bytes.data(), &max_len, 4);
  return Llama2cTokenizer::parse(MappedFile::from_bytes(std::move(bytes), g.name() + " (tokenizer)"));
}

GSQ_NAMESPACE_END
