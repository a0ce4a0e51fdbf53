// examples/support/artifacts.hpp — the files a run leaves: checkpoint, adapter, merged model.
//
// The formats belong to gsq's io layer (gsq/io/checkpoint.hpp, adapter.hpp, export.hpp);
// this file only decides where they go and what the drivers pass, so the drivers never
// name a file format themselves:
//   OUT/checkpoint/   trainable parameters, optimizer state, step, data cursor, settings
//   OUT/adapter/      PEFT adapter (adapter_model.safetensors + adapter_config.json)
//   OUT/merged/       LoRA: base + adapter merged into one FP32 model; L4Q: the quantized model
// Until a piece of the io layer is present in the build, the matching function reports
// that it was skipped (and why) instead of writing a private format.
#pragma once

#include <gsq/io/dataset.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/model/trainer.hpp>

#include <nlohmann/json.hpp>

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

inline ArtifactResult io_missing(const std::filesystem::path& where, const char* header) {
  return {false, where.string(),
          std::string("skipped: this build of gsq has no ") + header + " (the io layer's export)"};
}

/// Writes the resumable state of a run to `dir`.
inline ArtifactResult save_checkpoint(const std::filesystem::path& dir, const gsq::Trainer& trainer,
                                      const gsq::data::BatchSampler& sampler,
                                      const nlohmann::json& settings) {
  (void)trainer;
  (void)sampler;
  (void)settings;
  return io_missing(dir, "gsq/io/checkpoint.hpp");
}

/// Restores a checkpoint written by save_checkpoint into `trainer` and `sampler`; the
/// saved settings must match `settings` on every key that changes the run's meaning.
inline void load_checkpoint(const std::filesystem::path& dir, gsq::Trainer& trainer,
                            gsq::data::BatchSampler& sampler, const nlohmann::json& settings) {
  (void)trainer;
  (void)sampler;
  (void)settings;
  config_error("--resume: cannot read " + dir.string() +
               ": this build of gsq has no gsq/io/checkpoint.hpp (the io layer's checkpoints)");
}

/// The adapters of `model` as a PEFT adapter directory.
inline ArtifactResult export_adapter(const std::filesystem::path& dir, gsq::Llama& model,
                                     const AdapterSpec& spec) {
  (void)model;
  (void)spec;
  return io_missing(dir, "gsq/io/adapter.hpp");
}

/// LoRA: base + adapters merged into one model; L4Q: the quantized merged model.
inline ArtifactResult export_merged(const std::filesystem::path& dir, gsq::Llama& model,
                                    const AdapterSpec& spec, const BaseModel& base) {
  (void)model;
  (void)spec;
  (void)base;
  return io_missing(dir, "gsq/io/export.hpp");
}

/// Loads a PEFT adapter directory into a model built with matching adapter slots.
inline void load_adapter(const std::filesystem::path& dir, gsq::Llama& model) {
  (void)model;
  config_error("--adapter: cannot read " + dir.string() +
               ": this build of gsq has no gsq/io/adapter.hpp (the io layer's adapters)");
}

/// The adapter settings stored with a PEFT adapter directory (rank, alpha, targets).
inline AdapterSpec read_adapter_spec(const std::filesystem::path& dir) {
  config_error("--adapter: cannot read " + dir.string() +
               ": this build of gsq has no gsq/io/adapter.hpp (the io layer's adapters)");
}

}  // namespace driver
