// gsq-make-model: write a Hugging Face LLaMA directory with random BF16 weights, of a real
// model's shape, for tests and benchmarks (no real large weights are available offline).
//
//   gsq-make-model --shape tinyllama-1.1b|llama2-7b|llama2-13b|llama3-8b|tiny --out DIR
//                  [--shard-size 2GB] [--seed N] [--dtype bf16|f32] [--config KEY=VALUE,...]
//
// Writes config.json, model.safetensors.index.json + model-0000i-of-0000n.safetensors
// (or one model.safetensors with --shard-size 0) and a synthetic tokenizer.bin, tensor
// by tensor (io/random_checkpoint.hpp): memory stays at a row block whatever the size.
// --config overrides fields of the shape: hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size,
// max_position_embeddings, rope_theta, rms_norm_eps, tie_word_embeddings.
#include <CLI/CLI.hpp>
#include <gsq/io/random_checkpoint.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace {

/// "2GB", "500MB", "64KiB", "123" → bytes.
std::int64_t parse_size(const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw CLI::ValidationError("--shard-size", "expected a size like 2GB, got '" + text + "'");
  }
  std::string unit = text.substr(used);
  double scale = 1;
  if (unit == "" || unit == "B") scale = 1;
  else if (unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else if (unit == "KiB") scale = 1024.0;
  else if (unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "GiB") scale = 1024.0 * 1024 * 1024;
  else throw CLI::ValidationError("--shard-size", "unknown unit '" + unit + "' (B, KB, MB, GB, KiB, MiB, GiB)");
  if (value < 0) throw CLI::ValidationError("--shard-size", "must not be negative");
  return static_cast<std::int64_t>(value * scale);
}

/// Applies "key=value,key=value" to `c`.
void apply_overrides(gsq::LlamaConfig& c, const std::string& text) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, end - pos);
    pos = end + 1;
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos) throw CLI::ValidationError("--config", "expected KEY=VALUE, got '" + item + "'");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    try {
      if (key == "hidden_size") c.dim = std::stoll(value);
      else if (key == "intermediate_size") c.hidden_dim = std::stoll(value);
      else if (key == "num_hidden_layers") c.n_layers = std::stoll(value);
      else if (key == "num_attention_heads") c.n_heads = std::stoll(value);
      else if (key == "num_key_value_heads") c.n_kv_heads = std::stoll(value);
      else if (key == "vocab_size") c.vocab_size = std::stoll(value);
      else if (key == "max_position_embeddings") c.max_seq_len = std::stoll(value);
      else if (key == "rope_theta") c.rope_theta = std::stof(value);
      else if (key == "rms_norm_eps") c.norm_eps = std::stof(value);
      else if (key == "tie_word_embeddings") c.tied_embeddings = value == "true" || value == "1";
      else throw CLI::ValidationError("--config", "unknown key '" + key + "'");
    } catch (const std::logic_error&) {
      throw CLI::ValidationError("--config", "bad value '" + value + "' for " + key);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape, out, shard_size = "2GB", dtype = "bf16", overrides;
  gsq::RandomCheckpointOptions o;
  CLI::App app{"gsq-make-model: write a random-weight Hugging Face LLaMA directory of a real model's shape"};
  app.add_option("--shape", shape, "tinyllama-1.1b, llama2-7b, llama2-13b, llama3-8b or tiny")->required();
  app.add_option("--out", out, "the directory to write")->required();
  app.add_option("--shard-size", shard_size, "bytes per shard, e.g. 2GB (0: one model.safetensors)");
  app.add_option("--seed", o.seed, "random seed (default 0)");
  app.add_option("--dtype", dtype, "bf16 (default) or f32")->check(CLI::IsMember({"bf16", "f32"}));
  app.add_option("--config", overrides, "overrides, e.g. num_hidden_layers=2,vocab_size=1000");
  gsq::LlamaConfig config;
  try {
    app.parse(argc, argv);
    o.shard_bytes = parse_size(shard_size);
    o.dtype = dtype == "f32" ? gsq::DType::kF32 : gsq::DType::kBF16;
    config = gsq::llama_shape(shape);
    apply_overrides(config, overrides);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const gsq::Error& e) {
    std::fprintf(stderr, "gsq-make-model: %s\n", e.what());
    return 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    const auto files = gsq::write_random_checkpoint(out, config, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::int64_t bytes = 0;
    for (const auto& f : files) bytes += static_cast<std::int64_t>(std::filesystem::file_size(f));
    std::printf("wrote %s: %zu files, %.2f GB in %.1f s\n", out.c_str(), files.size(),
                static_cast<double>(bytes) / 1e9, s);
  } catch (const gsq::Error& e) {
    std::fprintf(stderr, "gsq-make-model: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gsq-make-model: unexpected error: %s\n", e.what());
    return 1;
  }
  return 0;
}
