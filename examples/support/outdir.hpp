// examples/support/outdir.hpp — the run directory (--out): never lose a run by accident.
//
// A fresh run into a directory that already holds a run (log, summary, checkpoint,
// adapter or merged model) is refused unless --overwrite says to replace it or --resume
// to continue it: a mistyped command must not truncate yesterday's log. --resume needs a
// complete checkpoint and says what to do when there is none. Temporary files a killed
// process left behind (".NAME.tmp.PID.N" from gsq::AtomicFileWriter, "merged.tmp.PID"
// export directories) are removed on every start: nothing else ever completes them.
// Filesystem failures become gsq IoErrors naming the path, never a bare
// std::filesystem_error.
#pragma once

#include <gsq/core/error.hpp>
#include <gsq/io/checkpoint.hpp>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "support/cli.hpp"

namespace driver {

/// The files and directories of OUT that make it "a run".
inline const std::vector<std::string>& run_artifact_names() {
  static const std::vector<std::string> names = {"log.jsonl", "summary.json", "checkpoint", "adapter", "merged"};
  return names;
}

namespace detail {
/// A temporary a killed writer left: ".<name>.tmp.<pid>.<n>" files and "<name>.tmp.<pid>" directories.
inline bool is_stale_temporary(const std::filesystem::path& p) {
  const std::string name = p.filename().string();
  return name.find(".tmp.") != std::string::npos;
}
}  // namespace detail

/// Removes the temporaries under `dir` (not recursive: OUT and OUT/checkpoint); returns
/// how many were removed.
inline int remove_stale_temporaries(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (detail::is_stale_temporary(e.path())) stale.push_back(e.path());
  int removed = 0;
  for (const fs::path& p : stale) {
    fs::remove_all(p, ec);
    if (!ec) ++removed;
  }
  return removed;
}

/// Creates `dir` (and its parents) or throws IoError(kOpenFailed) naming it.
inline void create_directory_or_throw(const std::filesystem::path& dir, const char* what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir))
    gsq::detail::throw_io_error(gsq::ErrorCode::kOpenFailed,
                                std::string("cannot create ") + what + ": " +
                                    (ec ? ec.message() : std::string("a file of that name exists")),
                                dir.string(), -1);
}

/// Makes OUT ready for a run: refuses to replace a previous run without --overwrite,
/// checks --resume has a complete checkpoint, removes stale temporaries. Returns the
/// number of temporaries removed (for the start message).
inline int prepare_out_dir(const std::filesystem::path& out, bool overwrite, bool resume) {
  namespace fs = std::filesystem;
  if (overwrite && resume) config_error("--overwrite and --resume contradict each other: choose one");
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_directory(out, ec))
    config_error("--out '" + out.string() + "' exists and is not a directory");
  const fs::path checkpoint = out / "checkpoint";
  int removed = remove_stale_temporaries(out) + remove_stale_temporaries(checkpoint);
  if (resume) {
    std::optional<fs::path> found;
    try {
      found = gsq::find_checkpoint(checkpoint);
    } catch (const gsq::Error&) {
      // an unreadable LATEST: load_checkpoint reports it with its path
      found = checkpoint;
    }
    if (!found)
      config_error("--resume: no complete checkpoint in " + checkpoint.string() +
                   " (the run stopped before its first checkpoint was finished, or never wrote one); "
                   "start afresh: the same command with --overwrite instead of --resume");
    return removed;
  }
  std::vector<std::string> present;
  for (const std::string& name : run_artifact_names())
    if (fs::exists(out / name, ec)) present.push_back(name);
  if (!present.empty() && !overwrite)
    config_error("--out '" + out.string() + "' already holds a run (" + join(present, ", ") +
                 "); add --overwrite to replace it, or --resume to continue it");
  if (overwrite)
    for (const std::string& name : present) {
      fs::remove_all(out / name, ec);
      if (ec)
        gsq::detail::throw_io_error(gsq::ErrorCode::kOpenFailed,
                                    "--overwrite: cannot remove the previous run's " + name + ": " + ec.message(),
                                    (out / name).string(), -1);
    }
  create_directory_or_throw(out, "the output directory (--out)");
  return removed;
}

}  // namespace driver
