// examples/support/artifacts.hpp — the files a run leaves: checkpoint, adapter, merged model.
//
// The formats belong to gsq's io layer (gsq/io/checkpoint.hpp, adapter.hpp, export.hpp);
// this file only decides where they go and what the drivers pass, so no driver names a
// file format itself:
//   OUT/checkpoint/   step-N/ directories + LATEST (io/checkpoint.hpp); the run's settings
//                     ride along and --resume refuses a checkpoint of different settings
//   OUT/adapter/      the PEFT adapter (adapter_model.safetensors + adapter_config.json)
//   OUT/merged/       LoRA: W0 + (alpha/r)·B·A as a Hugging Face directory plus a llama2.c
//                     model.bin; L4Q: model.l4q.safetensors (codes, step and offset per
//                     group) with its FP32 twin as the Hugging Face directory. The run's
//                     tokenizer is copied in, so the directory is a complete model.
// gsq-eval reads every one of them back (support/model.hpp load_model_files).
// adapter/ and merged/ are written into a temporary directory that replaces the old one
// only when complete (write_directory_atomically): a failed export never leaves one
// half-written.
#pragma once

#include <gsq/core/error.hpp>
#include <gsq/io/adapter.hpp>
#include <gsq/io/checkpoint.hpp>
#include <gsq/io/dataset.hpp>
#include <gsq/io/export.hpp>
#include <gsq/io/load_llama.hpp>
#include <gsq/io/safetensors.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/model/trainer.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <filesystem>
#include <string>

#include "support/cli.hpp"
#include "support/model.hpp"

namespace driver {

/// What an export did: written, or skipped with a reason.
struct ArtifactResult {
  bool written = false;
  std::string path;
  std::string note;
};

/// Writes the resumable state of a run under `root` (a new step-N directory).
inline ArtifactResult save_checkpoint(const std::filesystem::path& root, const gsq::Trainer& trainer,
                                      const gsq::data::BatchSampler& sampler, const nlohmann::json& settings) {
  const std::uint64_t seed = settings.value("seed", std::uint64_t{0});
  const std::filesystem::path dir = gsq::save_checkpoint(root, trainer, sampler, seed, settings);
  return {true, dir.string(), ""};
}

namespace detail {
/// Settings that do not change what a resumed run computes.
inline bool resume_may_differ(const std::string& key) { return key == "eval_data" || key == "tokenizer"; }
}  // namespace detail

/// Restores the newest complete checkpoint under `root` into `trainer` and `sampler`. The
/// saved settings must equal `settings` (except evaluation-only ones). Returns the step
/// resumed at.
inline std::int64_t load_checkpoint(const std::filesystem::path& root, gsq::Trainer& trainer,
                                    gsq::data::BatchSampler& sampler, const nlohmann::json& settings) {
  gsq::Checkpoint ck = gsq::load_checkpoint(root);
  for (const auto& [key, value] : settings.items()) {
    if (detail::resume_may_differ(key)) continue;
    const auto it = ck.settings.find(key);
    if (it == ck.settings.end() || *it != value)
      config_error("--resume: the checkpoint " + ck.path.string() + " was written with " + key + " = " +
                   (it == ck.settings.end() ? std::string("(absent)") : it->dump()) + ", this run has " +
                   value.dump() + "; resume with the original flags");
  }
  trainer.load_state(ck.trainer);
  sampler.seek(ck.cursor);
  return ck.trainer.step;
}

/// Runs `write(temp)` into a fresh temporary directory beside `dir`, then replaces `dir`
/// with it: a failure (a full disk) removes the temporary and rethrows, so `dir` is never
/// half-written — it is either the previous complete directory or the new one.
template <class Write>
void write_directory_atomically(const std::filesystem::path& dir, Write&& write) {
  namespace fs = std::filesystem;
  const fs::path temp = dir.parent_path() / (dir.filename().string() + ".tmp." + std::to_string(::getpid()));
  const fs::path old = dir.parent_path() / (dir.filename().string() + ".old.tmp." + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(temp, ec);
  try {
    fs::create_directories(temp);
    write(temp);
    if (fs::exists(dir)) fs::rename(dir, old);
    fs::rename(temp, dir);
  } catch (...) {
    fs::remove_all(temp, ec);
    if (!fs::exists(dir, ec) && fs::exists(old, ec)) fs::rename(old, dir, ec);  // put the previous one back
    throw;
  }
  fs::remove_all(old, ec);
}

/// The adapters of `model` as a PEFT adapter directory.
inline ArtifactResult export_adapter(const std::filesystem::path& dir, gsq::Llama& model,
                                     const std::string& base_model) {
  write_directory_atomically(dir, [&](const std::filesystem::path& temp) { gsq::save_adapter(temp, model, base_model); });
  return {true, dir.string(), ""};
}

/// Bytes of the merged model as FP32 tensors.
inline std::int64_t merged_fp32_bytes(const gsq::LlamaConfig& c) {
  std::int64_t n = 0;
  for (const gsq::LlamaTensorSpec& s : gsq::llama_tensor_specs(c)) {
    std::int64_t e = 4;
    for (std::int64_t d : s.shape) e *= d;
    n += e;
  }
  return n;
}

/// LoRA: base + adapters merged into one model; L4Q: the quantized merged model and its
/// FP32 twin. The tokenizer file is copied in beside the weights.
inline ArtifactResult export_merged(const std::filesystem::path& final_dir, gsq::Llama& model, const AdapterSpec& spec,
                                    const BaseModel& base) {
  namespace fs = std::filesystem;
  std::string note;
  write_directory_atomically(final_dir, [&](const fs::path& dir) {
  if (spec.method == "l4q") {
    const gsq::L4qQuantizedModel q = gsq::l4q_quantized_model(model);
    gsq::write_l4q_quantized(dir / "model.l4q.safetensors", q);
    gsq::write_hf_llama(dir, q.dequantized());
    note = "model.l4q.safetensors (int" + std::to_string(spec.quant_bits) + " codes) + FP32 twin";
  } else if (merged_fp32_bytes(model.config()) > (std::int64_t{1} << 30)) {
    // Large models (over 1 GiB as FP32): merged tensor by tensor into BF16 shards, never
    // whole — the FP32 model would cost more memory than training did.
    gsq::MergedHfOptions mo;
    mo.dtype = gsq::DType::kBF16;
    const auto files = gsq::write_merged_hf_llama(dir, model, mo);
    note = "Hugging Face directory, BF16, " + std::to_string(files.size() - 1) + " files, streamed";
  } else {
    const gsq::LlamaWeights w = gsq::merged_llama_weights(model);
    gsq::write_hf_llama(dir, w);
    try {
      gsq::write_llama2c(dir / "model.bin", w);
      note = "Hugging Face directory + llama2.c model.bin";
    } catch (const gsq::ConfigError& e) {  // a config llama2.c cannot store: HF only
      note = std::string("Hugging Face directory (no model.bin: ") + e.what() + ")";
    }
  }
  const fs::path tok = base.tokenizer_path;
  std::error_code ec;
  if (fs::is_regular_file(tok, ec)) {
    const std::string name = tok.extension() == ".json" ? "tokenizer.json" : "tokenizer.bin";
    fs::copy_file(tok, dir / name, fs::copy_options::overwrite_existing, ec);
    if (ec)
      gsq::detail::throw_io_error(gsq::ErrorCode::kOpenFailed, "cannot copy the tokenizer: " + ec.message(),
                                  (dir / name).string(), -1);
  }
  });
  return {true, final_dir.string(), note};
}

/// The adapter settings stored with a PEFT adapter directory (rank, alpha, targets, method).
inline AdapterSpec read_adapter_spec(const std::filesystem::path& dir) {
  const gsq::AdapterConfig c = gsq::read_adapter_config(dir);
  AdapterSpec s;
  s.method = c.method;
  s.rank = c.rank;
  s.alpha = c.alpha;
  s.targets = c.target_modules;
  s.quant_bits = c.quant_bits;
  s.quant_group = c.quant_group;
  return s;
}

/// Loads a PEFT adapter directory into a model built with matching adapter slots.
inline void load_adapter(const std::filesystem::path& dir, gsq::Llama& model) { gsq::load_adapter(dir, model); }

}  // namespace driver
