// Helpers for the io tests: scratch directories, raw bytes, expected IoErrors, the tiny
// LLaMA config of the adapter/checkpoint/export tests, config-vs-golden checks.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/core/error.hpp"
#include "gsq/model/config.hpp"

namespace gsq::test {

/// The two-block LLaMA the adapter, checkpoint and export tests build (GQA, small vocab).
inline LlamaConfig tiny_llama_config(std::int64_t max_seq_len = 16) {
  LlamaConfig c;
  c.dim = 32;
  c.hidden_dim = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 40;
  c.max_seq_len = max_seq_len;
  return c;
}

/// A loaded model's config against the "config" object of its PyTorch golden file.
inline void check_config_matches_golden(const LlamaConfig& c, const nlohmann::json& g) {
  CHECK(c.dim == g["dim"].get<std::int64_t>());
  CHECK(c.hidden_dim == g["hidden_dim"].get<std::int64_t>());
  CHECK(c.n_layers == g["n_layers"].get<std::int64_t>());
  CHECK(c.n_heads == g["n_heads"].get<std::int64_t>());
  CHECK(c.n_kv_heads == g["n_kv_heads"].get<std::int64_t>());
  CHECK(c.vocab_size == g["vocab_size"].get<std::int64_t>());
  CHECK(c.max_seq_len == g["seq_len"].get<std::int64_t>());
  CHECK(c.head_size() == g["head_size"].get<std::int64_t>());
  CHECK(c.tied_embeddings == g["shared_classifier"].get<bool>());
  CHECK(c.norm_eps == g["norm_eps"].get<float>());
  CHECK(c.rope_theta == g["rope_theta"].get<float>());
}

/// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = std::filesystem::temp_directory_path() /
            ("gsq_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  /// Number of entries in the directory (to spot leftover temporary files).
  std::size_t entries() const {
    return static_cast<std::size_t>(std::distance(std::filesystem::directory_iterator(path_),
                                                  std::filesystem::directory_iterator()));
  }

 private:
  std::filesystem::path path_;
};

inline std::vector<std::uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
}

template <class T>
void append(std::vector<std::uint8_t>& out, const T& v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}

/// Runs `f`, which must throw IoError; returns it (a failed check otherwise).
template <class F>
std::optional<IoError> expect_io_error(F&& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL_CHECK("expected IoError, got: " << e.what());
    return std::nullopt;
  }
  FAIL_CHECK("expected IoError, nothing thrown");
  return std::nullopt;
}

}  // namespace gsq::test
