// gsq/io/tokenizer_factory.hpp — open whichever tokenizer file a model comes with.
//
// `load_tokenizer(path)` decides by content, not by name: a JSON object is a Hugging Face
// tokenizer.json, anything else a llama2.c tokenizer file. A directory means its
// tokenizer.json (HF model directories) or tokenizer.bin. SentencePiece `.model` files
// are recognised and refused with a pointer to the llama2.c export of the same vocabulary.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/gguf_llama.hpp"
#include "gsq/io/hf_tokenizer.hpp"
#include "gsq/io/llama2c_tokenizer.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/tokenizer.hpp"

GSQ_NAMESPACE_BEGIN

namespace io::detail {

/// Whether the bytes start (after whitespace) with '{'.
inline bool looks_like_json_object(const MappedFile& f) noexcept {
  for (std::size_t i = 0; i < f.size(); ++i) {
    const std::uint8_t c = f.data()[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    return c == '{';
  }
  return false;
}

}  // namespace io::detail

/// Parses a tokenizer held in memory (fuzzers, tests): JSON → HF, else llama2.c.
inline std::unique_ptr<Tokenizer> parse_tokenizer(const MappedFile& file) {
  if (io::detail::looks_like_json_object(file)) return HfBpeTokenizer::parse(file);
  return Llama2cTokenizer::parse(file);
}

/// Opens the tokenizer at `path` (a file, or a directory holding tokenizer.json or
/// tokenizer.bin).
inline std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const char* name : {"tokenizer.json", "tokenizer.bin"})
      if (fs::is_regular_file(path / name, ec)) return load_tokenizer(path / name);
    detail::throw_io_error(ErrorCode::kOpenFailed, "no tokenizer.json or tokenizer.bin in the directory",
                           path.string(), -1);
  }
  if (path.extension() == ".model")
    detail::throw_io_error(ErrorCode::kCorrupt,
                           "SentencePiece .model files are not read by gsq; use the llama2.c "
                           "tokenizer.bin export of the same vocabulary",
                           path.string(), -1);
  MappedFile file = MappedFile::open(path);
  if (is_gguf(file)) return gguf_tokenizer(GgufFile::parse(std::move(file)));  // a GGUF model's vocabulary
  if (io::detail::looks_like_json_object(file)) return HfBpeTokenizer::open(path);
  return Llama2cTokenizer::parse(file);
}

GSQ_NAMESPACE_END
