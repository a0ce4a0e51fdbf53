// gsq/io/safetensors_sharded.hpp — a set of safetensors files read as one: a single
// `model.safetensors`, or a sharded checkpoint (`model.safetensors.index.json` whose
// `weight_map` names the shard of every tensor, `model-0000i-of-0000n.safetensors`).
//
// Every shard is memory-mapped and its header validated (SafetensorsFile); the index is
// held to the shards exactly: each weight_map entry must be in the shard it names, each
// shard tensor must be listed for that shard, shard names are plain file names in the
// directory. Nothing is read until asked: `read_rows` converts a block of rows (F32 /
// F16 / BF16 → float) so a loader can quantize a large tensor a block at a time, and
// `release` drops a tensor's pages from memory (madvise MADV_DONTNEED on the read-only
// private mapping: the pages come back from the file if touched again), so a model
// loads with a resident set of one block, not of the file.
//
// The writing side (`SafetensorsStreamWriter`) writes one file whose header is known up
// front (names, dtypes, shapes) and whose tensors are then appended one at a time, so a
// shard of a model never needs to be in memory at once; atomically (temp + rename).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/dtype.hpp"
#include "gsq/io/json.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/tensor_util.hpp"

GSQ_NAMESPACE_BEGIN

inline constexpr std::string_view kSafetensorsIndexName = "model.safetensors.index.json";

namespace io::detail {
/// Converts n stored values of `dtype` (F32 / F16 / BF16) at `src` to float.
inline void stored_to_float(DType dtype, const std::uint8_t* src, std::size_t n, float* out) {
  switch (dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(out, src, n * sizeof(float));
      return;
    case DType::kBF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = bf16_to_float(h);
      }
      return;
    case DType::kF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = f16_to_float(h);
      }
      return;
    default: break;
  }
  GSQ_ASSERT(false);
}
}  // namespace io::detail

/// One tensor of a sharded set: the shard that holds it and its entry there.
struct ShardedEntry {
  const SafetensorsFile* file = nullptr;
  const SafetensorsEntry* entry = nullptr;
  const std::string& name() const noexcept { return entry->name; }
};

class SafetensorsShards {
 public:
  /// `path`: a directory (its index file if present, else model.safetensors), an index
  /// file, or one safetensors file.
  static SafetensorsShards open(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      if (fs::exists(path / kSafetensorsIndexName)) return open_index(path / kSafetensorsIndexName);
      return open_single(path / "model.safetensors");
    }
    if (path.filename() == kSafetensorsIndexName || path.extension() == ".json") return open_index(path);
    return open_single(path);
  }

  static SafetensorsShards open_single(const std::filesystem::path& file) {
    SafetensorsShards s;
    s.source_ = file.string();
    s.shards_.push_back(std::make_shared<const SafetensorsFile>(SafetensorsFile::open(file)));
    s.metadata_ = s.shards_.front()->metadata();
    for (const SafetensorsEntry& e : s.shards_.front()->entries())
      s.index_.emplace(e.name, ShardedEntry{s.shards_.front().get(), &e});
    return s;
  }

  /// Reads `model.safetensors.index.json` and maps every shard it names.
  static SafetensorsShards open_index(const std::filesystem::path& index) {
    namespace iod = io::detail;
    SafetensorsShards s;
    s.source_ = index.string();
    const MappedFile file = MappedFile::open(index);
    const iod::Json j = iod::parse_json(file.bytes(), s.source_, 0);
    const iod::JsonWhere where{s.source_, 0};
    auto corrupt = [&](const std::string& what) {
      detail::throw_io_error(ErrorCode::kCorrupt, what, s.source_, -1);
    };
    if (!j.is_object()) corrupt("the index is not a JSON object");
    const iod::Json& map = iod::require_member(j, "weight_map", where);
    if (!map.is_object() || map.empty()) corrupt("weight_map is not a non-empty JSON object");
    if (const iod::Json* meta = iod::find_member(j, "metadata"); meta != nullptr && meta->is_object())
      for (const auto& [k, v] : meta->items())
        s.metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
    std::map<std::string, std::size_t> shard_of_file;
    std::vector<std::vector<std::string>> names_of_shard;
    const std::filesystem::path dir = index.parent_path();
    for (const auto& item : map.items()) {
      const std::string& tensor = item.key();
      const std::string& shard = iod::json_string(item.value(), "weight_map." + tensor, where);
      if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
          shard == "." || shard == "..")
        corrupt("weight_map: tensor \"" + tensor + "\" names shard \"" + shard +
                "\", which is not a plain file name in the index's directory");
      auto [it, fresh] = shard_of_file.emplace(shard, s.shards_.size());
      if (fresh) {
        s.shards_.push_back(std::make_shared<const SafetensorsFile>(SafetensorsFile::open(dir / shard)));
        names_of_shard.emplace_back();
      }
      names_of_shard[it->second].push_back(tensor);
    }
    for (std::size_t i = 0; i < s.shards_.size(); ++i) {
      const SafetensorsFile& st = *s.shards_[i];
      for (const std::string& tensor : names_of_shard[i]) {
        const SafetensorsEntry* e = st.find(tensor);
        if (e == nullptr)
          corrupt("weight_map puts tensor \"" + tensor + "\" in " + st.name() + ", which lacks it");
        s.index_.emplace(tensor, ShardedEntry{&st, e});
      }
      if (st.entries().size() != names_of_shard[i].size())
        for (const SafetensorsEntry& e : st.entries())
          if (s.index_.find(e.name) == s.index_.end() || s.index_.at(e.name).file != &st)
            detail::throw_io_error(ErrorCode::kCorrupt,
                                   "tensor \"" + e.name + "\" is not listed for this shard in " +
                                       s.source_ + "'s weight_map",
                                   st.name(), e.begin);
      for (const auto& [k, v] : st.metadata()) s.metadata_.emplace(k, v);
    }
    return s;
  }

  /// The index file, or the single file.
  const std::string& name() const noexcept { return source_; }
  bool sharded() const noexcept { return shards_.size() > 1 || source_.ends_with(".json"); }
  std::size_t shard_count() const noexcept { return shards_.size(); }
  const SafetensorsFile& shard(std::size_t i) const { return *shards_.at(i); }
  /// The shard holding `e`, shared: a borrower of its mapped bytes keeps it alive.
  std::shared_ptr<const SafetensorsFile> owner(const ShardedEntry& e) const {
    for (const auto& s : shards_)
      if (s.get() == e.file) return s;
    detail::throw_error(ErrorCode::kInvalidArgument, "SafetensorsShards::owner: \"" + e.name() + "\" is not in " + name());
  }
  /// Index metadata plus every shard's __metadata__ (the index wins on clashes).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// Every tensor by name.
  const std::map<std::string, ShardedEntry>& entries() const noexcept { return index_; }
  std::int64_t file_bytes() const noexcept {
    std::int64_t n = 0;
    for (const auto& s : shards_) n += s->file_bytes();
    return n;
  }

  const ShardedEntry* find(std::string_view tensor) const noexcept {
    auto it = index_.find(std::string(tensor));
    return it == index_.end() ? nullptr : &it->second;
  }

  /// Rows [r0, r1) of `e` (a matrix [rows, ...], or a vector or scalar as one row) as float into
  /// `out` ((r1 − r0)·cols values).
  static void read_rows(const ShardedEntry& e, std::int64_t r0, std::int64_t r1, std::span<float> out) {
    const SafetensorsEntry& t = *e.entry;
    const std::int64_t rows = t.shape.size() >= 2 ? t.shape[0] : 1;
    const std::int64_t cols = rows == 0 ? 0 : t.numel() / rows;
    GSQ_CHECK(0 <= r0 && r0 <= r1 && r1 <= rows &&
                  static_cast<std::int64_t>(out.size()) == (r1 - r0) * cols,
              ErrorCode::kShapeMismatch,
              "SafetensorsShards::read_rows: rows [" + std::to_string(r0) + ", " + std::to_string(r1) +
                  ") of \"" + t.name + "\" " + shape_to_string(t.shape) + " into " +
                  std::to_string(out.size()) + " values");
    if (!dtype_info(t.dtype).to_float)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "tensor \"" + t.name + "\" has dtype " + std::string(dtype_name(t.dtype)) +
                                 ", which gsq cannot read as float (F32, F16, BF16 only)",
                             e.file->name(), t.begin);
    const std::int64_t width = dtype_bytes(t.dtype);
    io::detail::stored_to_float(t.dtype, e.file->raw(t).data() + r0 * cols * width,
                                static_cast<std::size_t>((r1 - r0) * cols), out.data());
  }

  /// Drops the resident pages of `e`'s bytes (whole pages inside its range only).
  static void release(const ShardedEntry& e) noexcept { e.file->drop_pages(e.file->raw(*e.entry)); }

 private:
  std::string source_;
  std::vector<std::shared_ptr<const SafetensorsFile>> shards_;  // stable addresses for entries
  std::map<std::string, ShardedEntry> index_;
  std::map<std::string, std::string> metadata_;
};

/// Writes one safetensors file tensor by tensor: the header (names, dtypes, shapes) is
/// given up front, then `append` is called once per tensor in name order with its raw
/// stored bytes (possibly in pieces). Atomic: nothing appears at `path` before commit().
class SafetensorsStreamWriter {
 public:
  struct Spec {
    std::string name;
    DType dtype = DType::kBF16;
    std::vector<std::int64_t> shape;
  };

  SafetensorsStreamWriter(const std::filesystem::path& path, std::vector<Spec> specs,
                          const std::map<std::string, std::string>& metadata = {})
      : specs_(std::move(specs)), out_(path) {
    std::sort(specs_.begin(), specs_.end(), [](const Spec& a, const Spec& b) { return a.name < b.name; });
    io::detail::Json header = io::detail::Json::object();
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < specs_.size(); ++i) {
      const Spec& t = specs_[i];
      GSQ_CHECK(t.name != "__metadata__" && (i == 0 || t.name != specs_[i - 1].name),
                ErrorCode::kInvalidArgument,
                "SafetensorsStreamWriter: tensor name \"" + t.name + "\" is reserved or repeated");
      std::int64_t numel = 1;
      for (std::int64_t d : t.shape) {
        GSQ_CHECK(d >= 0, ErrorCode::kInvalidExtent,
                  "SafetensorsStreamWriter: \"" + t.name + "\" has a negative extent");
        numel *= d;
      }
      const std::int64_t nbytes = numel * dtype_bytes(t.dtype);
      header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                        {"shape", t.shape},
                        {"data_offsets", {offset, offset + nbytes}}};
      sizes_.push_back(nbytes);
      offset += nbytes;
    }
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    out_.write_value(static_cast<std::uint64_t>(text.size()));
    out_.write(text.data(), text.size());
  }

  /// The specs in the order their data must be appended (sorted by name).
  const std::vector<Spec>& order() const noexcept { return specs_; }

  /// Appends raw stored bytes of the current tensor; moves on when it is complete.
  void append(const void* data, std::size_t n) {
    GSQ_CHECK(current_ < specs_.size() &&
                  written_ + static_cast<std::int64_t>(n) <= sizes_[current_],
              ErrorCode::kInvalidArgument,
              "SafetensorsStreamWriter: more bytes than the declared tensors hold");
    out_.write(data, n);
    written_ += static_cast<std::int64_t>(n);
    while (current_ < specs_.size() && written_ == sizes_[current_]) {
      ++current_;
      written_ = 0;
    }
  }
  /// Appends float values converted to the current tensor's dtype (F32 or BF16).
  void append_float(std::span<const float> values) {
    GSQ_CHECK(current_ < specs_.size(), ErrorCode::kInvalidArgument,
              "SafetensorsStreamWriter: more values than the declared tensors hold");
    const DType dtype = specs_[current_].dtype;
    if (dtype == DType::kF32) {
      append(values.data(), values.size() * sizeof(float));
      return;
    }
    GSQ_CHECK(dtype == DType::kBF16, ErrorCode::kInvalidArgument,
              "SafetensorsStreamWriter::append_float: F32 or BF16 only");
    buffer_.resize(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) buffer_[i] = float_to_bf16(values[i]);
    append(buffer_.data(), buffer_.size() * sizeof(std::uint16_t));
  }

  void commit() {
    while (current_ < specs_.size() && sizes_[current_] == 0) ++current_;
    GSQ_CHECK(current_ == specs_.size(), ErrorCode::kInvalidArgument,
              "SafetensorsStreamWriter::commit: tensor \"" +
                  (current_ < specs_.size() ? specs_[current_].name : std::string()) +
                  "\" is incomplete");
    out_.commit();
  }

 private:
  std::vector<Spec> specs_;
  std::vector<std::int64_t> sizes_;
  std::size_t current_ = 0;
  std::int64_t written_ = 0;
  std::vector<std::uint16_t> buffer_;
  AtomicFileWriter out_;
};

/// The index file of a sharded checkpoint: total data size and tensor → shard file.
inline void write_safetensors_index(const std::filesystem::path& path, std::int64_t total_size,
                                    const std::map<std::string, std::string>& weight_map) {
  io::detail::Json j = io::detail::Json::object();
  j["metadata"] = {{"total_size", total_size}};
  j["weight_map"] = weight_map;
  write_file_atomically(path, j.dump(2) + "\n");
}

/// "model-00002-of-00005.safetensors".
inline std::string shard_file_name(std::size_t index, std::size_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return buf;
}

GSQ_NAMESPACE_END
