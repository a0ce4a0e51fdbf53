// gsq/io/json_file.hpp — small JSON files (adapter configs, trainer state, manifests).
//
// The adapter, export and checkpoint writers all leave a few small JSON files next to
// their tensors. They are written like every other gsq file — temporary name, fsync,
// rename (AtomicFileWriter) — and read through the hardened parser of io/json.hpp, so a
// truncated or hostile file is an IoError naming it, never a crash.
#pragma once

#include <filesystem>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/json.hpp"
#include "gsq/io/mapped_file.hpp"

GSQ_NAMESPACE_BEGIN
namespace io::detail {

/// Writes `j` pretty-printed (2 spaces, trailing newline) to `path` atomically.
inline void write_json_file(const std::filesystem::path& path, const Json& j) {
  std::string text;
  try {
    text = j.dump(2);
  } catch (const Json::exception& e) {
    gsq::detail::throw_error(ErrorCode::kInvalidArgument,
                             "cannot encode " + path.string() + " as JSON: " + e.what());
  }
  write_file_atomically(path, text + "\n");
}

/// Parses the JSON file at `path`; IoError naming it when absent or malformed.
inline Json read_json_file(const std::filesystem::path& path) {
  const MappedFile file = MappedFile::open(path);
  return parse_json(file.bytes(), file.name(), 0);
}

}  // namespace io::detail
GSQ_NAMESPACE_END
