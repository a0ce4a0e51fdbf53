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
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/io/gguf_llama.hpp"
#include "gsq/io/io.hpp"

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
};

inline const Target* find_target(std::string_view name) {
  for (const Target& t : kTargets)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace gsq::fuzz
