// examples/support/jsonl.hpp — the machine-readable record of a run: one JSON object per line.
//
// Every step, evaluation, checkpoint and the run's start and end go to OUT/log.jsonl as
// one line each, flushed immediately, so a run killed at any point leaves a log that
// parses up to its last complete line, and plotting or comparing runs needs no parsing
// of human-oriented output. A resumed run appends to the same file.
#pragma once

#include <gsq/core/error.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

namespace driver {

class JsonlLog {
 public:
  JsonlLog() = default;
  /// Opens `path` for appending (or truncates it when `append` is false).
  JsonlLog(const std::filesystem::path& path, bool append) : path_(path) {
    out_.open(path, append ? std::ios::app : std::ios::trunc);
    if (!out_)
      gsq::detail::throw_io_error(gsq::ErrorCode::kOpenFailed, "cannot open the run log for writing",
                                  path.string(), -1);
  }

  bool is_open() const { return out_.is_open(); }
  const std::filesystem::path& path() const { return path_; }

  void write(const nlohmann::json& record) {
    if (!out_.is_open()) return;
    out_ << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    out_.flush();
    if (!out_)
      gsq::detail::throw_io_error(gsq::ErrorCode::kOpenFailed, "writing the run log failed",
                                  path_.string(), -1);
  }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace driver
