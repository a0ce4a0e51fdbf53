// examples/support/model.hpp — the base model and tokenizer a driver works on.
//
// --model is a llama2.c .bin or a Hugging Face directory (io/load_llama.hpp decides), or
// a gsq-l4q quantized model file (decoded to the FP32 weights its forward used).
// --tokenizer may be left out when the model comes with one: a Hugging Face directory's
// tokenizer.json, or a llama2.c tokenizer next to the .bin (tokenizer.bin, or a single
// tok*.bin as llama2.c ships them). The weights are loaded once as FP32 tensors; each
// Llama built from them (a sweep builds many) gets a copy, quantized as its options say.
// Streamed (gsq-finetune): a Hugging Face directory or a gsq-base file is not read into
// FP32 at all; each Llama is built straight from the mapped files (io/load_llama.hpp
// open_llama), so a 7B model never exists in memory in FP32.
#pragma once

#include <gsq/core/error.hpp>
#include <gsq/io/export.hpp>
#include <gsq/io/load_llama.hpp>
#include <gsq/io/quantized_base.hpp>
#include <gsq/io/safetensors.hpp>
#include <gsq/io/tokenizer.hpp>
#include <gsq/io/tokenizer_factory.hpp>
#include <gsq/model/llama.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/cli.hpp"

namespace driver {

/// The tokenizer that belongs to `model` when --tokenizer is not given.
inline std::filesystem::path find_tokenizer(const std::filesystem::path& model) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(model, ec)) return model;  // load_tokenizer looks inside
  if (model.extension() == ".gguf") return model;  // GGUF models carry their vocabulary
  const fs::path dir = model.has_parent_path() ? model.parent_path() : fs::path(".");
  for (const char* name : {"tokenizer.bin", "tokenizer.json"})
    if (fs::is_regular_file(dir / name, ec)) return dir / name;
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.starts_with("tok") && entry.path().extension() == ".bin")
      found.push_back(entry.path());
  }
  if (found.size() == 1) return found.front();
  config_error("--tokenizer is required: no tokenizer.bin, tokenizer.json or single tok*.bin next to '" +
               model.string() + "'");
}

/// Whether `path` is a gsq-l4q quantized model file.
inline bool is_l4q_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec) || path.extension() != ".safetensors") return false;
  const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(path);
  const auto it = st.metadata().find("format");
  return it != st.metadata().end() && it->second == gsq::kL4qFormatName;
}

/// Any model file a driver accepts: llama2.c .bin, Hugging Face directory, or a gsq-l4q
/// quantized model (decoded to its FP32 twin, the exact weights its forward used).
inline gsq::LlamaWeights load_model_files(const std::filesystem::path& path) {
  if (is_l4q_file(path)) return gsq::read_l4q_quantized(path).dequantized();
  return gsq::load_llama(path);
}

struct BaseModel {
  gsq::LlamaWeights weights;  // streamed: the config only, no tensors
  bool streamed = false;
  std::unique_ptr<gsq::Tokenizer> tokenizer;
  std::string model_path;
  std::string tokenizer_path;
};

/// `stream`: leave Hugging Face directories and gsq-base files on disk (see the file
/// comment); other models are small and read as FP32 whatever `stream` says.
inline BaseModel load_base_model(const std::string& model, const std::string& tokenizer, bool stream = false) {
  require_path(model, "--model");
  BaseModel b;
  b.model_path = model;
  if (stream && gsq::is_quantized_base_file(model)) {
    const gsq::QuantizedBaseSource q(model);
    b.streamed = true;
    b.weights.config = q.config();
    b.weights.source = model;
    b.tokenizer_path = !tokenizer.empty() ? tokenizer : q.tokenizer();
    if (b.tokenizer_path.empty()) config_error("--tokenizer is required: the base file " + model + " names none");
  } else {
    b.tokenizer_path = tokenizer.empty() ? find_tokenizer(model).string() : tokenizer;
  }
  if (!tokenizer.empty()) require_path(tokenizer, "--tokenizer");
  if (!b.streamed && stream && !gsq::io::detail::hf_directory_of(model).empty()) {
    b.streamed = true;
    b.weights.config = gsq::open_llama(model).config;
    b.weights.source = model;
  }
  if (!b.streamed) b.weights = load_model_files(model);
  b.tokenizer = gsq::load_tokenizer(b.tokenizer_path);
  if (b.tokenizer->vocab_size() != b.weights.config.vocab_size)
    config_error("the tokenizer " + b.tokenizer_path + " has " +
                 std::to_string(b.tokenizer->vocab_size()) + " tokens but the model " + model +
                 " has a vocabulary of " + std::to_string(b.weights.config.vocab_size));
  return b;
}

/// A deep copy of the named tensors (a Llama consumes the map it is built from).
inline gsq::LlamaTensors copy_tensors(const gsq::LlamaWeights& w) {
  gsq::LlamaTensors t;
  for (const auto& [name, tensor] : w.tensors) t.emplace(name, tensor.clone());
  return t;
}

/// A Llama for `base` built with `options` into `out`: from a copy of the FP32 tensors,
/// or, streamed, straight from the model files.
inline void emplace_model(std::optional<gsq::Llama>& out, const BaseModel& base, const gsq::LlamaOptions& options) {
  if (!base.streamed) {
    out.emplace(base.weights.config, copy_tensors(base.weights), options);
    return;
  }
  if (gsq::is_quantized_base_file(base.model_path)) {
    gsq::QuantizedBaseSource source(base.model_path);
    out.emplace(source.config(), source, options);
    return;
  }
  gsq::LlamaSource s = gsq::open_llama(base.model_path);
  out.emplace(s.config, *s.source, options);
}

/// What the adapters are and how every product is computed.
struct AdapterSpec {
  std::string method = "lora";  // lora | l4q
  gsq::Bits bits = gsq::Bits::fp32();
  gsq::WeightFormat base = gsq::WeightFormat::kFp32;
  std::int64_t rank = 8;
  float alpha = 16.0f;
  std::vector<std::string> targets{gsq::kLlamaProjections.begin(), gsq::kLlamaProjections.end()};
  int quant_bits = 4;            // L4Q code width
  int quant_group = 128;         // L4Q group along in
  std::int64_t l4q_warmup = 0;   // L4Q: LoRA-only steps before quantization starts
  bool l4q_fp16_grid = false;    // L4Q: step and minimum on the FP16 grid (exact GGUF Q4_1)
  std::uint64_t seed = 0;
  // The scope of an integer run (no effect in an FP32 one). GSQ-Tuning's is the linear
  // layers: the projections and their adapters run in `bits`, attention's score and value
  // products and the frozen classifier stay FP32 — at 6 bits, quantizing those too cost
  // 21% held-out perplexity on stories260K (README, "Fidelity"). `attention_bits` empty
  // means the same as `bits`; `integer_classifier` runs logits and their input gradient
  // through the GSE-INT GEMM. Gradients round to nearest unless told to round stochastically.
  std::optional<gsq::Bits> attention_bits = gsq::Bits::fp32();
  bool attention_bf16 = false;   // FP32 attention_bits with BF16 operands
  bool integer_classifier = false;
  bool classifier_bf16 = false;  // a float classifier with BF16 operands
  gsq::Rounding gradient_rounding = gsq::Rounding::kNearestEven;
  bool recompute_blocks = false;  // activation checkpointing (LlamaOptions::recompute_blocks)
  bool double_quant = false;      // NF4 base: QLoRA's 8-bit quantized absmax (LlamaOptions::double_quant)

  gsq::LlamaOptions options() const {
    gsq::LlamaOptions o = gsq::LlamaOptions::uniform(bits, base);
    if (!bits.is_fp32()) {
      if (attention_bits) o.attention_bits = *attention_bits;
      o.attention_bf16 = attention_bf16 && o.attention_bits.is_fp32();
      o.integer_classifier = integer_classifier;
      o.classifier_bf16 = classifier_bf16 && !integer_classifier;
      o.lora.gradient_rounding = gradient_rounding;
      o.l4q.gradient_rounding = gradient_rounding;
    }
    o.target_modules = targets;
    o.recompute_blocks = recompute_blocks;
    o.double_quant = double_quant;
    if (method == "lora") {
      o.adapter = gsq::ProjectionKind::kLora;
    } else if (method == "l4q") {
      o.adapter = gsq::ProjectionKind::kL4q;
    } else {
      config_error("--method: expected lora or l4q, got '" + method + "'");
    }
    o.lora.rank = rank;
    o.lora.alpha = alpha;
    o.lora.seed = seed;
    o.l4q.rank = rank;
    o.l4q.alpha = alpha;
    o.l4q.seed = seed;
    o.l4q.quant_bits = quant_bits;
    o.l4q.quant_group = quant_group;
    o.l4q.warmup_steps = l4q_warmup;
    o.l4q.fp16_grid = l4q_fp16_grid;
    try {
      o.lora.validate();
      o.l4q.validate();
    } catch (const gsq::Error& e) {
      config_error(std::string("adapter settings: ") + e.what());
    }
    return o;
  }

  /// "lora r8 w8a8g8 (nf4 base)".
  std::string describe() const {
    std::string s = method + " r" + std::to_string(rank) + " " + bits.name();
    if (method == "l4q") s += " int" + std::to_string(quant_bits) + "/G" + std::to_string(quant_group);
    if (!bits.is_fp32()) {
      const gsq::Bits attention = attention_bits.value_or(bits);
      if (!attention.is_fp32()) s += ", attention " + attention.name();
      else if (attention_bf16) s += ", attention bf16";
      if (integer_classifier) s += ", integer classifier";
      else if (classifier_bf16) s += ", bf16 classifier";
      if (gradient_rounding == gsq::Rounding::kStochastic) s += ", stochastic gradients";
    }
    return s + " (" + std::string(gsq::weight_format_name(base)) + (double_quant ? ", double-quantized" : "") + " base)";
  }
};

}  // namespace driver
