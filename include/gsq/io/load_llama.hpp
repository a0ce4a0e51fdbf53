// gsq/io/load_llama.hpp — one entry point for every LLaMA checkpoint gsq reads.
//
// `load_llama(path)` picks the reader from what `path` is, so drivers take one --model
// flag: a directory (or its config.json / model.safetensors) is a Hugging Face model,
// a GGUF file (magic "GGUF") a llama.cpp model, any other file a llama2.c legacy checkpoint. Files that are recognisably something
// else (a PyTorch zip, a safetensors file without config.json) get a message saying so.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/gguf_llama.hpp"
#include "gsq/io/hf_llama.hpp"
#include "gsq/io/llama2c.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/model/weights.hpp"

GSQ_NAMESPACE_BEGIN

namespace io::detail {
/// The Hugging Face directory `path` stands for (itself, or the directory of its
/// config.json / index / safetensors file), or empty for anything else.
inline std::filesystem::path hf_directory_of(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return path;
  const std::string file = path.filename().string();
  if (file == "config.json" || file == kSafetensorsIndexName || path.extension() == ".safetensors") {
    const fs::path dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
    if (!fs::exists(dir / "config.json"))
      gsq::detail::throw_io_error(ErrorCode::kOpenFailed,
                                  "a safetensors model needs its config.json alongside", path.string(), -1);
    return dir;
  }
  return {};
}
}  // namespace io::detail

/// Loads a llama2.c `.bin`, a llama GGUF or a Hugging Face directory; config and tensor shapes checked.
inline LlamaWeights load_llama(const std::filesystem::path& path) {
  if (const std::filesystem::path dir = io::detail::hf_directory_of(path); !dir.empty())
    return read_hf_llama(dir);
  MappedFile f = MappedFile::open(path);
  if (is_gguf(f)) return read_gguf_llama(GgufFile::parse(std::move(f)));
  if (f.size() >= 4 && f.data()[0] == 'P' && f.data()[1] == 'K' && f.data()[2] == 3 &&
      f.data()[3] == 4)
    detail::throw_io_error(ErrorCode::kCorrupt,
                           "a PyTorch (zip/pickle) checkpoint; gsq reads llama2.c .bin and "
                           "safetensors",
                           path.string(), 0);
  return read_llama2c(f);
}

/// A model's config and where its tensors come from, for `Llama(config, *source, options)`.
struct LlamaSource {
  LlamaConfig config;
  std::unique_ptr<LlamaWeightSource> source;
  std::string name;  // the file or directory
};

/// Opens `path` for building a Llama: Hugging Face directories stream (see the file
/// comment), llama2.c files are read into memory.
inline LlamaSource open_llama(const std::filesystem::path& path) {
  LlamaSource s;
  s.name = path.string();
  if (const std::filesystem::path dir = io::detail::hf_directory_of(path); !dir.empty()) {
    std::unique_ptr<HfLlamaSource> hf = open_hf_llama(dir);
    s.config = hf->config();
    s.source = std::move(hf);
    return s;
  }
  LlamaWeights w = load_llama(path);
  s.config = w.config;
  s.source = std::make_unique<TensorMapSource>(std::move(w.tensors));
  return s;
}

GSQ_NAMESPACE_END
