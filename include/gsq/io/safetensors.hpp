// gsq/io/safetensors.hpp — read and write the safetensors format (Hugging Face).
//
// Layout: u64 LE header length N, N bytes of JSON
// `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
// then the data; offsets count from the end of the header.
//
// Reading maps the file (MappedFile) and validates the whole header before anything is
// touched: a header limit (kMaxHeaderBytes), known dtypes, non-negative shapes whose byte
// size matches the offsets (with overflow checks), no duplicate names, and data regions
// that tile the data section exactly — no overlap, no gap, nothing after the last tensor
// (the rules of the reference implementation). A tensor's bytes are only read when it is
// converted (F32 / F16 / BF16 → float), so listing a large file costs its header.
//
// Writing goes through AtomicFileWriter (temporary file, fsync, rename), tensors in name
// order, header padded with spaces to a multiple of 8 so data stays aligned. F32 and BF16.
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
#include "gsq/core/float_matrix.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/bytes.hpp"
#include "gsq/io/dtype.hpp"
#include "gsq/io/json.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/tensor_util.hpp"

GSQ_NAMESPACE_BEGIN

/// One tensor as the header declares it. Offsets are absolute positions in the file.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::int64_t begin = 0;
  std::int64_t end = 0;

  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;  // validated not to overflow on parse
    return n;
  }
  std::int64_t bytes() const noexcept { return end - begin; }
};

class SafetensorsFile {
 public:
  static constexpr std::int64_t kMaxHeaderBytes = std::int64_t{100} << 20;
  static constexpr std::size_t kMaxRankInFile = 16;

  /// Maps and validates `path`. Throws IoError naming the file and offset.
  static SafetensorsFile open(const std::filesystem::path& path) {
    return parse(MappedFile::open(path));
  }
  /// Validates bytes already in hand (fuzzers, tests).
  static SafetensorsFile parse(MappedFile file) {
    SafetensorsFile st;
    st.file_ = std::move(file);
    st.parse_header();
    return st;
  }

  const std::string& name() const noexcept { return file_.name(); }
  /// All tensors, sorted by name.
  const std::vector<SafetensorsEntry>& entries() const noexcept { return entries_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  std::int64_t header_bytes() const noexcept { return header_bytes_; }
  std::int64_t data_offset() const noexcept { return 8 + header_bytes_; }
  std::int64_t file_bytes() const noexcept { return static_cast<std::int64_t>(file_.size()); }

  const SafetensorsEntry* find(std::string_view tensor) const noexcept {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), tensor,
                               [](const SafetensorsEntry& e, std::string_view n) { return e.name < n; });
    return it != entries_.end() && it->name == tensor ? &*it : nullptr;
  }
  /// The entry named `tensor`; IoError(kCorrupt) if the file has none.
  const SafetensorsEntry& at(std::string_view tensor) const {
    const SafetensorsEntry* e = find(tensor);
    if (e == nullptr)
      detail::throw_io_error(ErrorCode::kCorrupt, "no tensor named \"" + std::string(tensor) + "\"",
                             name(), -1);
    return *e;
  }

  /// See MappedFile::drop_pages.
  void drop_pages(std::span<const std::uint8_t> range) const noexcept { file_.drop_pages(range); }

  std::span<const std::uint8_t> raw(const SafetensorsEntry& e) const noexcept {
    return file_.bytes().subspan(static_cast<std::size_t>(e.begin),
                                 static_cast<std::size_t>(e.bytes()));
  }

  /// Converts `e` to float into `out` (exactly e.numel() elements).
  void read_float(const SafetensorsEntry& e, std::span<float> out) const {
    GSQ_CHECK(static_cast<std::int64_t>(out.size()) == e.numel(), ErrorCode::kShapeMismatch,
              "SafetensorsFile::read_float: \"" + e.name + "\" has " + std::to_string(e.numel()) +
                  " elements, output holds " + std::to_string(out.size()));
    if (!dtype_info(e.dtype).to_float)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "tensor \"" + e.name + "\" has dtype " +
                                 std::string(dtype_name(e.dtype)) +
                                 ", which gsq cannot read as float (F32, F16, BF16 only)",
                             name(), e.begin);
    const std::uint8_t* src = raw(e).data();
    const std::size_t n = out.size();
    switch (e.dtype) {
      case DType::kF32:
        if (n > 0) std::memcpy(out.data(), src, n * sizeof(float));
        break;
      case DType::kBF16:
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          out[i] = bf16_to_float(h);
        }
        break;
      case DType::kF16:
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          out[i] = f16_to_float(h);
        }
        break;
      default: break;
    }
  }

  /// The tensor as a float Tensor of its shape (a scalar becomes shape [1]).
  Tensor<float> to_float(const SafetensorsEntry& e,
                         MemoryCategory category = MemoryCategory::kWeights) const {
    Tensor<float> t = make_tensor<float>(e.shape, category, name() + ": " + e.name);
    read_float(e, std::span<float>(t.data(), static_cast<std::size_t>(t.numel())));
    return t;
  }
  Tensor<float> to_float(std::string_view tensor,
                         MemoryCategory category = MemoryCategory::kWeights) const {
    return to_float(at(tensor), category);
  }

 private:
  // The offset of `"key"` inside the header, so errors about one tensor point at it.
  std::int64_t key_offset(std::span<const std::uint8_t> header, const std::string& key) const {
    const std::string_view text(reinterpret_cast<const char*>(header.data()), header.size());
    const std::size_t at = text.find("\"" + key + "\"");
    return 8 + (at == std::string_view::npos ? 0 : static_cast<std::int64_t>(at));
  }

  void parse_header() {
    const std::string& file = file_.name();
    io::detail::ByteReader r(file_.bytes(), file);
    const std::uint64_t n = r.read_u64("the safetensors header length");
    if (n > static_cast<std::uint64_t>(kMaxHeaderBytes))
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "header length " + std::to_string(n) + " exceeds the limit of " +
                                 std::to_string(kMaxHeaderBytes) + " bytes",
                             file, 0);
    const std::span<const std::uint8_t> header = r.take(static_cast<std::size_t>(n), "the JSON header");
    header_bytes_ = static_cast<std::int64_t>(n);
    const io::detail::Json json = io::detail::parse_json(header, file, 8);
    if (!json.is_object())
      detail::throw_io_error(ErrorCode::kCorrupt, "the header is not a JSON object", file, 8);

    const std::int64_t data_start = 8 + header_bytes_;
    const std::int64_t data_size = static_cast<std::int64_t>(file_.size()) - data_start;
    for (const auto& item : json.items()) {
      const std::string& key = item.key();  // not a structured binding: lambdas below use it
      const io::detail::Json& value = item.value();
      const std::int64_t at = key_offset(header, key);
      const io::detail::JsonWhere where{file, at};
      if (key == "__metadata__") {
        if (!value.is_object())
          detail::throw_io_error(ErrorCode::kCorrupt, "__metadata__ is not a JSON object", file, at);
        for (const auto& [mk, mv] : value.items())
          metadata_[mk] = io::detail::json_string(mv, "__metadata__." + mk, where);
        continue;
      }
      auto bad = [&](const std::string& what) {
        detail::throw_io_error(ErrorCode::kCorrupt, "tensor \"" + key + "\": " + what, file, at);
      };
      if (!value.is_object()) bad("entry is not a JSON object");
      SafetensorsEntry e;
      e.name = key;
      const std::string& dtype = io::detail::json_string(
          io::detail::require_member(value, "dtype", where), key + ".dtype", where);
      const std::optional<DType> dt = parse_dtype(dtype);
      if (!dt) bad("unknown dtype \"" + dtype + "\"");
      e.dtype = *dt;
      const io::detail::Json& shape = io::detail::require_member(value, "shape", where);
      if (!shape.is_array()) bad("shape is not an array");
      if (shape.size() > kMaxRankInFile) bad("rank " + std::to_string(shape.size()) + " is absurd");
      std::int64_t numel = 1;
      for (const io::detail::Json& d : shape) {
        const std::int64_t extent = io::detail::json_int(d, key + ".shape", where, 0);
        e.shape.push_back(extent);
        numel = io::detail::checked_mul(numel, extent, file, at, key + ".shape");
      }
      const std::int64_t nbytes =
          io::detail::checked_mul(numel, dtype_bytes(e.dtype), file, at, key + ".shape");
      const io::detail::Json& offsets = io::detail::require_member(value, "data_offsets", where);
      if (!offsets.is_array() || offsets.size() != 2) bad("data_offsets is not [begin, end]");
      const std::int64_t begin = io::detail::json_int(offsets[0], key + ".data_offsets", where, 0);
      const std::int64_t end = io::detail::json_int(offsets[1], key + ".data_offsets", where, 0);
      if (begin > end) bad("data_offsets begin " + std::to_string(begin) + " > end " + std::to_string(end));
      if (end > data_size)
        detail::throw_io_error(ErrorCode::kTruncated,
                               "tensor \"" + key + "\" ends at data offset " + std::to_string(end) +
                                   " but the data section holds " + std::to_string(data_size) +
                                   " bytes",
                               file, static_cast<std::int64_t>(file_.size()));
      if (end - begin != nbytes)
        bad("data_offsets span " + std::to_string(end - begin) + " bytes but " + std::string(dtype) +
            " " + shape_to_string(e.shape) + " needs " + std::to_string(nbytes));
      e.begin = data_start + begin;
      e.end = data_start + end;
      entries_.push_back(std::move(e));  // json.items() is sorted by key, so entries_ is too
    }

    // The data regions must tile [0, data_size) exactly.
    std::vector<const SafetensorsEntry*> by_offset;
    by_offset.reserve(entries_.size());
    for (const SafetensorsEntry& e : entries_) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::int64_t expected = data_start;
    for (const SafetensorsEntry* e : by_offset) {
      if (e->begin != expected)
        detail::throw_io_error(ErrorCode::kCorrupt,
                               "tensor \"" + e->name + "\" starts at data offset " +
                                   std::to_string(e->begin - data_start) + ", expected " +
                                   std::to_string(expected - data_start) +
                                   (e->begin < expected ? " (overlaps the previous tensor)"
                                                        : " (gap after the previous tensor)"),
                               file, expected);
      expected = e->end;
    }
    if (expected != static_cast<std::int64_t>(file_.size()))
      detail::throw_io_error(ErrorCode::kCorrupt,
                             std::to_string(static_cast<std::int64_t>(file_.size()) - expected) +
                                 " bytes after the last tensor's data",
                             file, expected);
  }

  MappedFile file_;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
  std::int64_t header_bytes_ = 0;
};

/// A 2-D BF16 tensor of `file` lent as a FloatMatrix that keeps the file mapped (see
/// FloatMatrix::borrowed); an empty matrix when the tensor is not a BF16 matrix whose
/// bytes are aligned for BF16 reads, so the caller copies it instead.
inline FloatMatrix borrow_bf16_matrix(const std::shared_ptr<const SafetensorsFile>& file,
                                      const SafetensorsEntry& e) {
  const std::span<const std::uint8_t> bytes = file->raw(e);
  if (e.dtype != DType::kBF16 || e.shape.size() != 2 || e.shape[0] <= 0 || e.shape[1] <= 0 ||
      reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(bf16) != 0)
    return FloatMatrix();
  return FloatMatrix::borrowed(reinterpret_cast<const bf16*>(bytes.data()), e.shape[0], e.shape[1], file,
                              [f = file.get()](std::span<const std::uint8_t> r) { f->drop_pages(r); });
}

/// A tensor to write: a name, a shape and row-major float data of matching size.
struct SafetensorsTensorRef {
  std::string name;
  std::vector<std::int64_t> shape;
  std::span<const float> data;
};

/// Writes `tensors` (stored as `dtype`: F32 or BF16) and `metadata` to `path` atomically.
inline void write_safetensors(const std::filesystem::path& path,
                              std::vector<SafetensorsTensorRef> tensors,
                              const std::map<std::string, std::string>& metadata = {},
                              DType dtype = DType::kF32) {
  GSQ_CHECK(dtype == DType::kF32 || dtype == DType::kBF16, ErrorCode::kInvalidArgument,
            "write_safetensors: dtype must be F32 or BF16, got " + std::string(dtype_name(dtype)));
  std::sort(tensors.begin(), tensors.end(),
            [](const SafetensorsTensorRef& a, const SafetensorsTensorRef& b) { return a.name < b.name; });
  io::detail::Json header = io::detail::Json::object();
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsTensorRef& t = tensors[i];
    GSQ_CHECK(t.name != "__metadata__" && (i == 0 || t.name != tensors[i - 1].name),
              ErrorCode::kInvalidArgument,
              "write_safetensors: tensor name \"" + t.name + "\" is reserved or repeated");
    std::int64_t numel = 1;
    for (std::int64_t d : t.shape) {
      GSQ_CHECK(d >= 0, ErrorCode::kInvalidExtent,
                "write_safetensors: \"" + t.name + "\" has a negative extent");
      numel *= d;
    }
    GSQ_CHECK(numel == static_cast<std::int64_t>(t.data.size()), ErrorCode::kShapeMismatch,
              "write_safetensors: \"" + t.name + "\" has shape " + shape_to_string(t.shape) +
                  " but " + std::to_string(t.data.size()) + " values");
    const std::int64_t nbytes = numel * dtype_bytes(dtype);
    header[t.name] = {{"dtype", std::string(dtype_name(dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text;
  try {
    text = header.dump();
  } catch (const io::detail::Json::exception& e) {  // e.g. a name that is not UTF-8
    detail::throw_error(ErrorCode::kInvalidArgument,
                        std::string("write_safetensors: cannot encode the header: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  AtomicFileWriter out(path);
  out.write_value(static_cast<std::uint64_t>(text.size()));
  out.write(text.data(), text.size());
  for (const SafetensorsTensorRef& t : tensors) {
    if (dtype == DType::kF32) {
      out.write(t.data.data(), t.data.size() * sizeof(float));
      continue;
    }
    std::vector<std::uint16_t> chunk;
    constexpr std::size_t kChunk = 1 << 16;
    for (std::size_t i = 0; i < t.data.size(); i += kChunk) {
      const std::size_t n = std::min(kChunk, t.data.size() - i);
      chunk.resize(n);
      for (std::size_t j = 0; j < n; ++j) chunk[j] = float_to_bf16(t.data[i + j]);
      out.write(chunk.data(), n * sizeof(std::uint16_t));
    }
  }
  out.commit();
}

/// Writes named float tensors (e.g. a model's or an adapter's) to `path` atomically.
inline void write_safetensors(const std::filesystem::path& path,
                              const std::map<std::string, Tensor<float>>& tensors,
                              const std::map<std::string, std::string>& metadata = {},
                              DType dtype = DType::kF32) {
  std::vector<SafetensorsTensorRef> refs;
  refs.reserve(tensors.size());
  for (const auto& [name, t] : tensors)
    refs.push_back({name, tensor_shape(t),
                    std::span<const float>(t.data(), static_cast<std::size_t>(t.numel()))});
  write_safetensors(path, std::move(refs), metadata, dtype);
}

GSQ_NAMESPACE_END
