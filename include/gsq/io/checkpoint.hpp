// gsq/io/checkpoint.hpp — resumable training checkpoints that survive a crash at any moment.
//
// Layout under a checkpoint root (e.g. OUT/checkpoints):
//     step-000123/parameters.safetensors   trainable FP32 masters by gsq name
//     step-000123/optimizer.safetensors    optimizer tensors ("<param>.exp_avg", ...);
//                                          __metadata__: optimizer, step
//     step-000123/trainer_state.json       step, sampler cursor, seed, caller's settings
//     step-000123/manifest.json            bytes + FNV-1a 64 of each file above; written
//                                          last, so a directory without it is unfinished
//     LATEST                               "step-000123\n", replaced last (temp + rename)
// Every file goes through AtomicFileWriter (temporary name, fsync, rename). A crash before
// the manifest leaves a directory that loading ignores; a crash before LATEST leaves the
// previous checkpoint current. Loading takes LATEST's directory if it has a manifest,
// else the newest step directory that has one, and verifies every checksum before
// parsing anything: a changed, truncated or missing file is an IoError naming it.
//
// The state is Trainer::state() (model/trainer.hpp: parameters + optimizer) plus the data
// sampler's cursor, so a resumed run continues bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/dataset.hpp"
#include "gsq/io/json_file.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/tensor_util.hpp"
#include "gsq/model/trainer.hpp"
#include "gsq/optim/state.hpp"

GSQ_NAMESPACE_BEGIN

/// Everything a checkpoint holds.
struct Checkpoint {
  TrainerState trainer;                    // step, parameters, optimizer state
  data::BatchSampler::Cursor cursor;       // where the data sampler stands
  std::uint64_t seed = 0;                  // the run's seed (data order, initialisation)
  io::detail::Json settings = io::detail::Json::object();  // the caller's run settings
  std::filesystem::path path;              // the step directory (set by load)
};

struct CheckpointOptions {
  int keep_last = 2;  // step directories kept after a save (older ones removed); <= 0 keeps all
};

inline constexpr std::string_view kCheckpointLatestFile = "LATEST";
inline constexpr std::string_view kCheckpointManifestFile = "manifest.json";

namespace io::detail {

/// FNV-1a 64 of `bytes`.
inline std::uint64_t fnv1a64(std::span<const std::uint8_t> bytes) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}
inline std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
inline std::string step_dir_name(std::int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%06lld", static_cast<long long>(step));
  return buf;
}
/// The step of a "step-NNNNNN" name, or nullopt.
inline std::optional<std::int64_t> parse_step_dir(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step-") != 0 || name.size() > 5 + 18) return std::nullopt;
  std::int64_t v = 0;
  for (std::size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

inline std::vector<SafetensorsTensorRef> named_refs(const std::vector<optim::NamedTensor>& ts) {
  std::vector<SafetensorsTensorRef> refs;
  refs.reserve(ts.size());
  for (const optim::NamedTensor& t : ts)
    refs.push_back({t.name, tensor_shape(t.value),
                    std::span<const float>(t.value.data(), static_cast<std::size_t>(t.value.numel()))});
  return refs;
}
inline std::vector<optim::NamedTensor> read_named(const SafetensorsFile& st, MemoryCategory category) {
  std::vector<optim::NamedTensor> out;
  out.reserve(st.entries().size());
  for (const SafetensorsEntry& e : st.entries()) out.push_back({e.name, st.to_float(e, category)});
  return out;
}

/// The checksum of the manifest's own "files" object (its canonical JSON text), so a
/// damaged manifest is reported as such rather than as a damaged data file.
inline std::string manifest_checksum(const Json& files) {
  const std::string text = files.dump();
  return hex64(fnv1a64({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}));
}

/// Checks `dir`'s files against its manifest; returns the manifest. IoError naming the
/// file whose size or checksum differs, or that is missing.
inline Json verify_checkpoint_dir(const std::filesystem::path& dir) {
  const std::filesystem::path mpath = dir / kCheckpointManifestFile;
  const Json m = read_json_file(mpath);
  const JsonWhere where{mpath.string(), 0};
  const Json& files = require_member(m, "files", where);
  if (!files.is_object() || files.empty()) json_fail(where, "files", "expected an object of files");
  const std::string& self = json_string(require_member(m, "files_fnv1a64", where), "files_fnv1a64", where);
  if (self != manifest_checksum(files))
    json_fail(where, "files_fnv1a64", "checksum mismatch: the manifest changed after it was saved");
  for (const auto& item : files.items()) {
    const std::string& name = item.key();
    if (name.find('/') != std::string::npos || name == ".." || name == ".")
      json_fail(where, "files", "file name \"" + name + "\" is not a plain name");
    const std::int64_t bytes = json_int(require_member(item.value(), "bytes", where), "bytes", where, 0);
    const std::string& sum = json_string(require_member(item.value(), "fnv1a64", where), "fnv1a64", where);
    const MappedFile f = MappedFile::open(dir / name);
    if (static_cast<std::int64_t>(f.size()) != bytes)
      gsq::detail::throw_io_error(ErrorCode::kTruncated,
                                  "checkpoint file has " + std::to_string(f.size()) +
                                      " bytes, the manifest says " + std::to_string(bytes),
                                  f.name(), static_cast<std::int64_t>(f.size()));
    if (hex64(fnv1a64(f.bytes())) != sum)
      gsq::detail::throw_io_error(ErrorCode::kCorrupt,
                                  "checksum mismatch (FNV-1a 64 " + hex64(fnv1a64(f.bytes())) +
                                      ", the manifest says " + sum + "): the file changed after it was saved",
                                  f.name(), -1);
  }
  return m;
}

inline std::uint64_t json_u64(const Json& v, std::string_view field, const JsonWhere& where) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
    json_fail(where, field, "expected a non-negative integer");
  return v.get<std::uint64_t>();
}

}  // namespace io::detail

/// Writes `ck` as root/step-NNNNNN (NNNNNN = ck.trainer.step) and points LATEST at it;
/// returns the step directory. Older step directories beyond options.keep_last are removed.
inline std::filesystem::path save_checkpoint(const std::filesystem::path& root, const Checkpoint& ck,
                                             const CheckpointOptions& options = {}) {
  namespace iod = io::detail;
  const std::int64_t step = ck.trainer.step;
  GSQ_CHECK(step >= 0, ErrorCode::kInvalidArgument, "save_checkpoint: negative step");
  const std::string name = iod::step_dir_name(step);
  const std::filesystem::path dir = root / name;
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / kCheckpointManifestFile);  // re-saving a step: unfinished until the end

  write_safetensors(dir / "parameters.safetensors", iod::named_refs(ck.trainer.parameters),
                    {{"format", "gsq-checkpoint"}, {"step", std::to_string(step)}});
  write_safetensors(dir / "optimizer.safetensors", iod::named_refs(ck.trainer.optimizer.tensors),
                    {{"optimizer", ck.trainer.optimizer.optimizer},
                     {"step", std::to_string(ck.trainer.optimizer.step)}});
  const iod::Json state = {{"format", "gsq-checkpoint"},
                           {"format_version", 1},
                           {"step", step},
                           {"cursor", {{"epoch", ck.cursor.epoch}, {"position", ck.cursor.position}}},
                           {"seed", ck.seed},
                           {"settings", ck.settings}};
  iod::write_json_file(dir / "trainer_state.json", state);

  iod::Json files = iod::Json::object();
  for (const char* f : {"parameters.safetensors", "optimizer.safetensors", "trainer_state.json"}) {
    const MappedFile m = MappedFile::open(dir / f);
    files[f] = {{"bytes", m.size()}, {"fnv1a64", iod::hex64(iod::fnv1a64(m.bytes()))}};
  }
  iod::write_json_file(dir / kCheckpointManifestFile,
                       {{"format", "gsq-checkpoint"},
                        {"format_version", 1},
                        {"step", step},
                        {"files", files},
                        {"files_fnv1a64", iod::manifest_checksum(files)}});
  write_file_atomically(root / kCheckpointLatestFile, name + "\n");

  if (options.keep_last > 0) {
    std::vector<std::pair<std::int64_t, std::filesystem::path>> dirs;
    for (const auto& e : std::filesystem::directory_iterator(root))
      if (auto s = iod::parse_step_dir(e.path().filename().string()); s && e.is_directory() && *s != step)
        dirs.emplace_back(*s, e.path());
    std::sort(dirs.begin(), dirs.end());
    const std::size_t keep_others = static_cast<std::size_t>(options.keep_last - 1);
    for (std::size_t i = 0; i + keep_others < dirs.size(); ++i) {
      std::error_code ec;  // best effort: a stale directory does no harm
      std::filesystem::remove_all(dirs[i].second, ec);
    }
  }
  return dir;
}

/// The step directory loading would use: LATEST's if it has a manifest, else the newest
/// "step-*" directory with one; nullopt when there is none.
inline std::optional<std::filesystem::path> find_checkpoint(const std::filesystem::path& root) {
  namespace iod = io::detail;
  if (!std::filesystem::is_directory(root)) return std::nullopt;
  const std::filesystem::path latest = root / kCheckpointLatestFile;
  if (std::filesystem::exists(latest)) {
    const MappedFile f = MappedFile::open(latest);
    std::string name(reinterpret_cast<const char*>(f.bytes().data()), f.size());
    while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) name.pop_back();
    if (iod::parse_step_dir(name) && std::filesystem::exists(root / name / kCheckpointManifestFile))
      return root / name;
  }
  std::optional<std::pair<std::int64_t, std::filesystem::path>> best;
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    const auto s = iod::parse_step_dir(e.path().filename().string());
    if (!s || !e.is_directory() || !std::filesystem::exists(e.path() / kCheckpointManifestFile)) continue;
    if (!best || *s > best->first) best.emplace(*s, e.path());
  }
  if (!best) return std::nullopt;
  return best->second;
}

/// Reads one step directory, verifying every checksum first.
inline Checkpoint load_checkpoint_dir(const std::filesystem::path& dir) {
  namespace iod = io::detail;
  iod::verify_checkpoint_dir(dir);
  Checkpoint ck;
  ck.path = dir;
  const std::filesystem::path spath = dir / "trainer_state.json";
  const iod::Json s = iod::read_json_file(spath);
  const iod::JsonWhere where{spath.string(), 0};
  const std::int64_t step = iod::json_int(iod::require_member(s, "step", where), "step", where, 0);
  const iod::Json& cursor = iod::require_member(s, "cursor", where);
  ck.cursor.epoch = iod::json_u64(iod::require_member(cursor, "epoch", where), "cursor.epoch", where);
  ck.cursor.position = iod::json_u64(iod::require_member(cursor, "position", where), "cursor.position", where);
  ck.seed = iod::json_u64(iod::require_member(s, "seed", where), "seed", where);
  if (const iod::Json* st = iod::find_member(s, "settings")) ck.settings = *st;

  const SafetensorsFile params = SafetensorsFile::open(dir / "parameters.safetensors");
  const SafetensorsFile opt = SafetensorsFile::open(dir / "optimizer.safetensors");
  ck.trainer.step = step;
  ck.trainer.parameters = iod::read_named(params, MemoryCategory::kScratch);
  ck.trainer.optimizer.tensors = iod::read_named(opt, MemoryCategory::kScratch);
  auto meta = [&](const std::string& key) -> const std::string& {
    auto it = opt.metadata().find(key);
    if (it == opt.metadata().end())
      detail::throw_io_error(ErrorCode::kCorrupt, "__metadata__ lacks \"" + key + "\"", opt.name(), 8);
    return it->second;
  };
  ck.trainer.optimizer.optimizer = meta("optimizer");
  const std::string& opt_step = meta("step");
  if (opt_step.empty() || opt_step.size() > 18 ||
      !std::all_of(opt_step.begin(), opt_step.end(), [](char c) { return c >= '0' && c <= '9'; }))
    detail::throw_io_error(ErrorCode::kCorrupt, "__metadata__.step is not a step count: \"" + opt_step + "\"",
                           opt.name(), 8);
  ck.trainer.optimizer.step = std::stoll(opt_step);
  return ck;
}

/// Loads the current checkpoint under `root` (see find_checkpoint); IoError(kOpenFailed)
/// when there is none.
inline Checkpoint load_checkpoint(const std::filesystem::path& root) {
  const std::optional<std::filesystem::path> dir = find_checkpoint(root);
  if (!dir)
    detail::throw_io_error(ErrorCode::kOpenFailed, "no complete checkpoint (step-* directory with a manifest)",
                           root.string(), -1);
  return load_checkpoint_dir(*dir);
}

// ---- with a Trainer and a BatchSampler --------------------------------------------------------

/// Saves `trainer`'s state and `sampler`'s cursor (plus seed and settings) under `root`.
inline std::filesystem::path save_checkpoint(const std::filesystem::path& root, const Trainer& trainer,
                                             const data::BatchSampler& sampler, std::uint64_t seed = 0,
                                             const io::detail::Json& settings = io::detail::Json::object(),
                                             const CheckpointOptions& options = {}) {
  Checkpoint ck;
  ck.trainer = trainer.state();
  ck.cursor = sampler.cursor();
  ck.seed = seed;
  ck.settings = settings;
  return save_checkpoint(root, ck, options);
}

/// Restores the current checkpoint under `root` into `trainer` and `sampler`; returns it
/// (without its tensors' use: settings, seed and path are for the caller to check).
inline Checkpoint load_checkpoint(const std::filesystem::path& root, Trainer& trainer,
                                  data::BatchSampler& sampler) {
  Checkpoint ck = load_checkpoint(root);
  trainer.load_state(ck.trainer);
  sampler.seek(ck.cursor);
  return ck;
}

GSQ_NAMESPACE_END
