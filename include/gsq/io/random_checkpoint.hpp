// gsq/io/random_checkpoint.hpp — Hugging Face LLaMA directories with random weights, for
// tests and benchmarks at real model shapes (no real large weights are available offline).
//
// `write_random_checkpoint(dir, config, options)` writes
//     config.json                                  (hf_config_json)
//     model.safetensors                            one file (options.shard_bytes <= 0), or
//     model.safetensors.index.json + model-0000i-of-0000n.safetensors
//     tokenizer.bin                                a synthetic llama2.c vocabulary of vocab_size
// streaming one tensor at a time (a row block in memory, never the model), each file
// atomically (temp + rename). The values depend only on (seed, tensor name, element
// index) — not on the sharding or the thread count — so the same seed written as one
// file and as shards holds the same tensors bit for bit. Projections ~ N(0, init_std)
// (approximated by a sum of four uniforms: cheap, bounded at 3.5σ), norm weights 1.
//
// `llama_shape(name)` gives the configs of the models people fine-tune on CPUs:
// tinyllama-1.1b, llama2-7b, llama2-13b, llama3-8b (GQA, vocab 128256, theta 500000),
// and "tiny" (a few hundred thousand parameters, for tests).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/dtype.hpp"
#include "gsq/io/hf_config.hpp"
#include "gsq/io/json_file.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/safetensors_sharded.hpp"
#include "gsq/model/config.hpp"

GSQ_NAMESPACE_BEGIN

struct RandomCheckpointOptions {
  std::uint64_t seed = 0;
  std::int64_t shard_bytes = std::int64_t{2} << 30;  // <= 0: one model.safetensors
  DType dtype = DType::kBF16;                        // BF16 or F32
  float init_std = 0.02f;
  bool tokenizer = true;  // also write tokenizer.bin
};

/// The named shapes; throws InvalidArgument listing them for another name.
inline LlamaConfig llama_shape(std::string_view name) {
  LlamaConfig c;
  c.rope_style = RopeStyle::kHalf;
  c.tied_embeddings = false;
  c.bos_id = 1;
  c.eos_id = 2;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  if (name == "tinyllama-1.1b") {
    c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 22, c.n_heads = 32, c.n_kv_heads = 4;
    c.vocab_size = 32000, c.max_seq_len = 2048;
  } else if (name == "llama2-7b") {
    c.dim = 4096, c.hidden_dim = 11008, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 32;
    c.vocab_size = 32000, c.max_seq_len = 4096;
  } else if (name == "llama2-13b") {
    c.dim = 5120, c.hidden_dim = 13824, c.n_layers = 40, c.n_heads = 40, c.n_kv_heads = 40;
    c.vocab_size = 32000, c.max_seq_len = 4096;
  } else if (name == "llama3-8b") {
    c.dim = 4096, c.hidden_dim = 14336, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 8;
    c.vocab_size = 128256, c.max_seq_len = 8192, c.rope_theta = 500000.0f;
    c.bos_id = 128000, c.eos_id = 128001;
  } else if (name == "tiny") {
    c.dim = 64, c.hidden_dim = 160, c.n_layers = 3, c.n_heads = 8, c.n_kv_heads = 2;
    c.vocab_size = 512, c.max_seq_len = 256;
  } else {
    detail::throw_error(ErrorCode::kInvalidArgument,
                        "unknown model shape '" + std::string(name) +
                            "' (expected tinyllama-1.1b, llama2-7b, llama2-13b, llama3-8b or tiny)");
  }
  return c;
}

namespace io::detail {

/// A 64-bit key of a tensor name (FNV-1a), the RNG stream of its values.
inline std::uint64_t name_stream(std::string_view name) noexcept {
  std::uint64_t h = 1469598103934665603ull;
  for (char ch : name) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return h;
}

/// Value `index` of a random tensor: ≈ N(0, std) (sum of four 16-bit uniforms).
inline float random_weight(std::uint64_t seed, std::uint64_t stream, std::uint64_t index,
                           float std) noexcept {
  const std::uint32_t a = random_u32(seed, stream, 2 * index);
  const std::uint32_t b = random_u32(seed, stream, 2 * index + 1);
  const float sum = static_cast<float>(a & 0xFFFF) + static_cast<float>(a >> 16) +
                    static_cast<float>(b & 0xFFFF) + static_cast<float>(b >> 16);
  // Four uniforms on [0, 65535]: mean 131070, standard deviation 65536/√3.
  return (sum - 131070.0f) * (std * 1.7320508f / 65536.0f);
}

/// A llama2.c tokenizer of exactly `vocab` pieces: <unk>, <s>, </s>, the 256 byte
/// tokens, " ", then letters and strings over them, scored -(rank) so they merge.
inline std::string synthetic_llama2c_tokenizer(std::int64_t vocab) {
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    pieces.emplace_back(buf);
  }
  const std::string alphabet = " etaoinshrdlucmfwypvbgkjqxz";
  std::vector<std::string> level;
  for (char ch : alphabet) level.emplace_back(1, ch);
  while (static_cast<std::int64_t>(pieces.size()) < vocab) {
    std::vector<std::string> next;
    for (const std::string& p : level) {
      if (static_cast<std::int64_t>(pieces.size()) >= vocab) break;
      pieces.push_back(p);
      for (char ch : alphabet) next.push_back(p + ch);
    }
    level = std::move(next);
  }
  pieces.resize(static_cast<std::size_t>(std::min<std::int64_t>(vocab, static_cast<std::int64_t>(pieces.size()))));
  std::string out;
  auto put = [&](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); };
  std::int32_t max_len = 0;
  for (const std::string& p : pieces) max_len = std::max<std::int32_t>(max_len, static_cast<std::int32_t>(p.size()));
  put(&max_len, 4);
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const float score = i < 259 ? 0.0f : -static_cast<float>(i - 259);
    const auto len = static_cast<std::int32_t>(pieces[i].size());
    put(&score, 4);
    put(&len, 4);
    put(pieces[i].data(), pieces[i].size());
  }
  return out;
}

}  // namespace io::detail

/// The value of random checkpoint tensor `spec` (what write_random_checkpoint stores,
/// before rounding to its dtype), rows [r0, r1) into `out`.
inline void random_checkpoint_rows(const LlamaTensorSpec& spec, const RandomCheckpointOptions& o,
                                   std::int64_t r0, std::int64_t r1, float* out) {
  const std::int64_t cols = spec.shape.size() == 2 ? spec.shape[1] : 1;
  const bool norm = spec.shape.size() == 1;
  const std::uint64_t stream = io::detail::name_stream(spec.name);
  parallel_for_chunks((r1 - r0) * cols, 1 << 16, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i)
      out[i] = norm ? 1.0f
                    : io::detail::random_weight(o.seed, stream,
                                                static_cast<std::uint64_t>(r0 * cols + i), o.init_std);
  });
}

/// Writes a random-weight HF LLaMA directory for `config` (see the file comment).
/// Returns the files written.
inline std::vector<std::filesystem::path> write_random_checkpoint(const std::filesystem::path& dir,
                                                                  const LlamaConfig& config,
                                                                  const RandomCheckpointOptions& o = {}) {
  namespace fs = std::filesystem;
  config.validate("write_random_checkpoint");
  GSQ_CHECK(o.dtype == DType::kBF16 || o.dtype == DType::kF32, ErrorCode::kInvalidArgument,
            "write_random_checkpoint: dtype must be BF16 or F32");
  fs::create_directories(dir);
  const std::vector<LlamaTensorSpec> specs = llama_tensor_specs(config);
  const std::int64_t width = dtype_bytes(o.dtype);
  auto bytes_of = [&](const LlamaTensorSpec& s) {
    std::int64_t n = width;
    for (std::int64_t d : s.shape) n *= d;
    return n;
  };
  // Shards: consecutive tensors in spec order, a new shard when the next would overflow.
  std::vector<std::vector<const LlamaTensorSpec*>> shards(1);
  std::int64_t in_shard = 0, total = 0;
  for (const LlamaTensorSpec& s : specs) {
    const std::int64_t b = bytes_of(s);
    if (o.shard_bytes > 0 && in_shard > 0 && in_shard + b > o.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&s);
    in_shard += b;
    total += b;
  }
  const bool single = o.shard_bytes <= 0;
  std::vector<fs::path> files;
  std::map<std::string, std::string> weight_map;
  std::vector<float> rows;
  std::vector<std::uint16_t> half;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const std::string file = single ? "model.safetensors" : shard_file_name(i, shards.size());
    std::vector<SafetensorsStreamWriter::Spec> ws;
    std::map<std::string, const LlamaTensorSpec*> by_name;
    for (const LlamaTensorSpec* s : shards[i]) {
      ws.push_back({s->name, o.dtype, s->shape});
      by_name.emplace(s->name, s);
      weight_map.emplace(s->name, file);
    }
    SafetensorsStreamWriter out(dir / file, std::move(ws), {{"format", "pt"}});
    for (const SafetensorsStreamWriter::Spec& w : out.order()) {
      const LlamaTensorSpec& s = *by_name.at(w.name);
      const std::int64_t nrows = s.shape.size() == 2 ? s.shape[0] : 1;
      const std::int64_t cols = s.shape.size() == 2 ? s.shape[1] : s.shape[0];
      const std::int64_t block = std::max<std::int64_t>(1, (std::int64_t{1} << 22) / cols);
      for (std::int64_t r0 = 0; r0 < nrows; r0 += block) {
        const std::int64_t r1 = std::min(nrows, r0 + block);
        const auto n = static_cast<std::size_t>((r1 - r0) * cols);
        rows.resize(n);
        if (s.shape.size() == 2) random_checkpoint_rows(s, o, r0, r1, rows.data());
        else std::fill(rows.begin(), rows.end(), 1.0f);
        if (o.dtype == DType::kF32) {
          out.append(rows.data(), n * sizeof(float));
          continue;
        }
        half.resize(n);
        for (std::size_t j = 0; j < n; ++j) half[j] = float_to_bf16(rows[j]);
        out.append(half.data(), n * sizeof(std::uint16_t));
      }
    }
    out.commit();
    files.push_back(dir / file);
  }
  if (!single) {
    write_safetensors_index(dir / kSafetensorsIndexName, total, weight_map);
    files.push_back(dir / kSafetensorsIndexName);
  }
  io::detail::write_json_file(dir / "config.json", hf_config_json(config, o.dtype == DType::kBF16 ? "bfloat16" : "float32"));
  files.push_back(dir / "config.json");
  if (o.tokenizer) {
    write_file_atomically(dir / "tokenizer.bin", io::detail::synthetic_llama2c_tokenizer(config.vocab_size));
    files.push_back(dir / "tokenizer.bin");
  }
  return files;
}

GSQ_NAMESPACE_END
