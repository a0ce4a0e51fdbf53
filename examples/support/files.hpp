// examples/support/files.hpp — how the drivers write their result files.
//
// summary.json, sweep.csv, pareto.svg, quickstart.json and gsq-eval's --json replace a
// previous run's copy: written through gsq::AtomicFileWriter (temporary file, fsync,
// rename), so an interrupted or failing write leaves the old file whole.
#pragma once

#include <gsq/io/atomic_file.hpp>

#include <filesystem>
#include <string>

namespace driver {

/// Writes `text` to `path` atomically; throws gsq::IoError naming the file on failure.
inline void write_file_atomically(const std::filesystem::path& path, const std::string& text) {
  gsq::AtomicFileWriter out(path);
  out.write(text.data(), text.size());
  out.commit();
}

}  // namespace driver
