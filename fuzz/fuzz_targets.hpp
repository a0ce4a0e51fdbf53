// fuzz/fuzz_targets.hpp — what each fuzz target feeds its bytes to, in one place.
//
// The libFuzzer binaries (fuzz_lib.cpp) and the deterministic replay test
// (tests/io/test_fuzz_replay.cpp) both call these functions, so "the parser survives
// this input" means the same thing in both. Each parses the bytes as one file format and,
// if that succeeds, exercises the result (converts tensors, encodes and decodes text).
// The contract under test: any input either works or throws gsq::Error — anything else
// (another exception, a crash, a sanitizer report, a huge allocation) is a bug. Broken
// invariants on accepted input throw std::logic_error, which the fuzzer reports.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "gsq/io/adapter.hpp"
#include "gsq/io/checkpoint.hpp"
#include "gsq/io/gguf_llama.hpp"
#include "gsq/io/io.hpp"
#include "gsq/io/json.hpp"

namespace gsq::fuzz {

enum class Outcome { kAccepted, kRejected };

namespace detail {

inline MappedFile bytes_file(std::span<const std::uint8_t> bytes, const char* name) {
  return MappedFile::from_bytes(bytes, name);
}

inline void require(bool cond, const char* what) {
  if (!cond) throw std::logic_error(std::string("fuzz invariant broken: ") + what);
}

/// Encodes a few fixed strings plus some of the input's own bytes, checks the ids, and
/// decodes them (and every special id) again.
inline void exercise_tokenizer(const Tokenizer& tok, std::span<const std::uint8_t> input) {
  const std::string own(reinterpret_cast<const char*>(input.data()), std::min<std::size_t>(input.size(), 48));
  for (const std::string_view text : {std::string_view("Once upon a time, Lily"), std::string_view(" a  b\n"),
                                      std::string_view("\xE2\x96\x81\xC3\xA9\xF0\x9F\x98\x80\xFF"),
                                      std::string_view(own)}) {
    for (const bool bos : {false, true}) {
      std::vector<std::int32_t> ids;
      try {
        ids = tok.encode(text, bos, false);
      } catch (const ConfigError&) {
        continue;  // a tokenizer without BOS refuses bos = true: allowed
      }
      for (const std::int32_t id : ids) require(id >= 0 && id < tok.vocab_size(), "encode produced an id outside the vocabulary");
      (void)tok.decode(ids);
    }
  }
  std::vector<std::int32_t> some = {0, tok.vocab_size() - 1};
  if (tok.bos_id() >= 0) some.push_back(tok.bos_id());
  if (tok.eos_id() >= 0) some.push_back(tok.eos_id());
  (void)tok.decode(some);
  for (const std::int32_t id : some) (void)tok.piece(id);
}

}  // namespace detail

/// safetensors: parse, then convert every float tensor of at most 1M elements.
inline Outcome fuzz_safetensors(std::span<const std::uint8_t> bytes) {
  try {
    const SafetensorsFile st = SafetensorsFile::parse(detail::bytes_file(bytes, "fuzz.safetensors"));
    std::int64_t end = st.data_offset();
    std::vector<const SafetensorsEntry*> by_offset;
    for (const SafetensorsEntry& e : st.entries()) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
    for (const SafetensorsEntry* e : by_offset) {
      detail::require(e->begin == end && e->end >= e->begin, "accepted tensors do not tile the data");
      end = e->end;
      detail::require(static_cast<std::int64_t>(st.raw(*e).size()) == e->bytes(), "raw size");
      if (dtype_info(e->dtype).to_float && e->numel() <= (1 << 20) && e->shape.size() <= 4) (void)st.to_float(*e);
    }
    detail::require(end == st.file_bytes(), "accepted data does not end at the end of the file");
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

/// llama2.c checkpoint: read every tensor (bounded by the file size, which was checked).
inline Outcome fuzz_llama2c(std::span<const std::uint8_t> bytes) {
  try {
    const LlamaWeights w = read_llama2c(detail::bytes_file(bytes, "fuzz.bin"));
    std::int64_t floats = 0;
    for (const auto& [name, t] : w.tensors) floats += t.numel();
    detail::require(28 + 4 * floats <= static_cast<std::int64_t>(bytes.size()), "tensors larger than the file");
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

/// Hugging Face config.json.
inline Outcome fuzz_hf_config(std::span<const std::uint8_t> bytes) {
  try {
    const LlamaConfig c = parse_hf_config(detail::bytes_file(bytes, "config.json"));
    detail::require(c.dim > 0 && c.n_heads > 0 && c.dim % c.n_heads == 0, "accepted an invalid config");
    (void)llama_tensor_specs(c).size();
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

/// llama2.c tokenizer file, then encode/decode.
inline Outcome fuzz_llama2c_tokenizer(std::span<const std::uint8_t> bytes) {
  try {
    const auto tok = Llama2cTokenizer::parse(detail::bytes_file(bytes, "tok.bin"));
    detail::exercise_tokenizer(*tok, bytes);
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

/// Hugging Face tokenizer.json, then encode/decode.
inline Outcome fuzz_hf_tokenizer(std::span<const std::uint8_t> bytes) {
  try {
    const auto tok = HfBpeTokenizer::parse(detail::bytes_file(bytes, "tokenizer.json"));
    detail::exercise_tokenizer(*tok, bytes);
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

/// GGUF: parse, decode every tensor gsq decodes (<= 1M elements; others must be refused
/// with gsq::Error), then try it as a llama model and its tokenizer.
inline Outcome fuzz_gguf(std::span<const std::uint8_t> bytes) {
  try {
    const GgufFile g = GgufFile::parse(detail::bytes_file(bytes, "fuzz.gguf"));
    for (const GgufTensorInfo& t : g.tensors()) {
      detail::require(t.data_begin >= g.data_offset() && t.data_begin + t.bytes <= g.file_size(), "tensor outside the file");
      if (t.numel() > (1 << 20)) continue;
      try {
        (void)g.to_float(t);
      } catch (const IoError& e) {
        detail::require(e.code() == ErrorCode::kUnsupported, "a parsed tensor failed to decode");
      }
    }
    try {
      (void)read_gguf_llama(g);
    } catch (const Error&) {
    }
    try {
      const auto tok = gguf_tokenizer(g);
      detail::exercise_tokenizer(*tok, bytes);
    } catch (const Error&) {
    }
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

/// PEFT adapter_config.json: parsed by the JSON reader read_adapter_config uses, then
/// interpreted by the same function; what it accepts must be a config gsq can build.
inline Outcome fuzz_peft_adapter(std::span<const std::uint8_t> bytes) {
  try {
    const io::detail::Json j = io::detail::parse_json(bytes, "adapter_config.json", 0);
    const AdapterConfig c = adapter_config_from_json(j, {"adapter_config.json", 0});
    detail::require(c.rank >= 1 && c.alpha > 0.0f, "accepted a rank < 1 or alpha <= 0");
    detail::require(c.method == "lora" || c.method == "l4q", "accepted an unknown method");
    detail::require(c.method != "l4q" || (c.quant_bits >= 2 && c.quant_bits <= 8 && c.quant_group >= 1),
                    "accepted invalid L4Q quantizer settings");
    for (const std::string& t : c.target_modules)
      detail::require(std::find(kLlamaProjections.begin(), kLlamaProjections.end(), t) != kLlamaProjections.end(),
                      "accepted an unknown target module");
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

// ---- checkpoint: one input = one step directory ------------------------------------------------
//
// Layout: the four files of a step directory in this order, joined by kCheckpointSeparator
//     manifest.json SEP trainer_state.json SEP parameters.safetensors SEP optimizer.safetensors
// A separator is cheaper for a fuzzer than length prefixes: a mutation inside one file
// leaves the others where they are, and one that breaks a separator merely merges two
// files. Fewer than four parts leave the missing files absent; text after a fourth
// separator belongs to optimizer.safetensors.
//
// The manifest holds each file's size and FNV-1a 64, and its own checksum: used verbatim,
// almost every mutation of the other three files (and of the manifest's "files") ends at
// verify_checkpoint_dir, as a damaged real checkpoint does; the fuzzer then explores the
// manifest's JSON and the checks themselves. So that mutations also reach the trainer-state
// and safetensors parsers, an input starting with kCheckpointResign (a byte no JSON text
// starts with) is "re-signed": that byte is dropped and, when the manifest parses, every
// file it lists that the input holds gets its real size and checksum and the manifest its
// own checksum again, before loading.
inline constexpr std::string_view kCheckpointSeparator = "\n--gsq--\n";
inline constexpr char kCheckpointResign = '!';
inline constexpr std::array<const char*, 4> kCheckpointFiles = {"manifest.json", "trainer_state.json",
                                                                "parameters.safetensors", "optimizer.safetensors"};

namespace detail {

/// A per-process scratch directory (under /dev/shm when there is one: no disk traffic).
inline const std::filesystem::path& checkpoint_scratch_dir() {
  struct Dir {
    std::filesystem::path path;
    Dir() {
      std::error_code ec;
      const std::filesystem::path base =
          std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm")
                                                        : std::filesystem::temp_directory_path();
      path = base / ("gsq-fuzz-checkpoint-" + std::to_string(::getpid()));
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

inline void write_scratch(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("fuzz harness: cannot write " + path.string());
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) throw std::runtime_error("fuzz harness: cannot write " + path.string());
}

/// The manifest with the listed files' sizes and checksums (and its own) made right, or
/// the input unchanged when it is not a manifest-shaped JSON object.
inline std::string resign_manifest(std::span<const std::uint8_t> manifest,
                                   const std::array<std::span<const std::uint8_t>, 4>& parts, std::size_t n_parts) {
  namespace iod = io::detail;
  const std::string unchanged(reinterpret_cast<const char*>(manifest.data()), manifest.size());
  iod::Json m;
  try {
    m = iod::parse_json(manifest, "manifest.json", 0);
  } catch (const Error&) {
    return unchanged;
  }
  if (!m.is_object() || !m.contains("files") || !m["files"].is_object()) return unchanged;
  for (auto& [name, entry] : m["files"].items()) {
    if (!entry.is_object()) continue;
    for (std::size_t i = 1; i < n_parts; ++i)
      if (name == kCheckpointFiles[i]) {
        entry["bytes"] = parts[i].size();
        entry["fnv1a64"] = iod::hex64(iod::fnv1a64(parts[i]));
      }
  }
  m["files_fnv1a64"] = iod::manifest_checksum(m["files"]);
  return m.dump();
}

}  // namespace detail

/// Joins four files into one checkpoint fuzz input (the seeds' layout; see above).
inline std::vector<std::uint8_t> pack_checkpoint(const std::array<std::vector<std::uint8_t>, 4>& files, bool resign) {
  std::vector<std::uint8_t> out;
  if (resign) out.push_back(static_cast<std::uint8_t>(kCheckpointResign));
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (i > 0) out.insert(out.end(), kCheckpointSeparator.begin(), kCheckpointSeparator.end());
    out.insert(out.end(), files[i].begin(), files[i].end());
  }
  return out;
}

/// Checkpoint step directory: unpack, write to the scratch directory, load_checkpoint_dir.
inline Outcome fuzz_checkpoint(std::span<const std::uint8_t> bytes) {
  const bool resign = !bytes.empty() && bytes[0] == static_cast<std::uint8_t>(kCheckpointResign);
  if (resign) bytes = bytes.subspan(1);
  std::array<std::span<const std::uint8_t>, 4> parts;
  std::size_t n_parts = 0;
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  for (std::size_t at = 0;;) {
    const std::size_t sep = n_parts + 1 < parts.size() ? text.find(kCheckpointSeparator, at) : std::string_view::npos;
    const std::size_t end = sep == std::string_view::npos ? text.size() : sep;
    parts[n_parts++] = bytes.subspan(at, end - at);
    if (sep == std::string_view::npos) break;
    at = sep + kCheckpointSeparator.size();
  }
  const std::filesystem::path& dir = detail::checkpoint_scratch_dir();
  for (std::size_t i = n_parts; i < parts.size(); ++i) {  // absent from this input
    std::error_code ec;
    std::filesystem::remove(dir / kCheckpointFiles[i], ec);
  }
  for (std::size_t i = 1; i < n_parts; ++i) detail::write_scratch(dir / kCheckpointFiles[i], parts[i]);
  if (resign) {
    const std::string m = detail::resign_manifest(parts[0], parts, n_parts);
    detail::write_scratch(dir / kCheckpointFiles[0], {reinterpret_cast<const std::uint8_t*>(m.data()), m.size()});
  } else {
    detail::write_scratch(dir / kCheckpointFiles[0], parts[0]);
  }
  try {
    const Checkpoint ck = load_checkpoint_dir(dir);
    for (const optim::NamedTensor& t : ck.trainer.parameters)
      detail::require(t.value.numel() <= static_cast<std::int64_t>(bytes.size()), "a parameter larger than its file");
    detail::require(ck.trainer.step >= 0, "accepted a negative step");
    return Outcome::kAccepted;
  } catch (const Error&) {
    return Outcome::kRejected;
  }
}

struct Target {
  std::string_view name;
  Outcome (*run)(std::span<const std::uint8_t>);
};

inline constexpr Target kTargets[] = {
    {"safetensors", fuzz_safetensors},
    {"llama2c", fuzz_llama2c},
    {"hf_config", fuzz_hf_config},
    {"llama2c_tokenizer", fuzz_llama2c_tokenizer},
    {"hf_tokenizer", fuzz_hf_tokenizer},
    {"gguf", fuzz_gguf},
    {"peft_adapter", fuzz_peft_adapter},
    {"checkpoint", fuzz_checkpoint},
};

inline const Target* find_target(std::string_view name) {
  for (const Target& t : kTargets)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace gsq::fuzz
