// gsq/io/gguf_writer.hpp — writes a GGUF file as a stream: metadata, tensor table, tensors.
//
// GGUF puts every tensor's offset in the header, so the writer is told all tensors (name,
// row-major shape, ggml type) before data is written; their sizes follow from shape and
// type, so the header can be emitted at the first `write_tensor` and each tensor's bytes
// follow one at a time, in declaration order, padded to the alignment. A model is never
// held whole in memory: the caller converts and hands over one tensor at a time. The
// file appears only at `finish()` (AtomicFileWriter: temporary file, fsync, rename).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/gguf.hpp"
#include "gsq/io/tensor_util.hpp"

GSQ_NAMESPACE_BEGIN

class GgufWriter {
 public:
  explicit GgufWriter(const std::filesystem::path& path, std::uint32_t alignment = GgufFile::kDefaultAlignment)
      : out_(path), alignment_(alignment) {
    GSQ_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0, ErrorCode::kInvalidArgument,
              "GgufWriter: alignment must be a power of two");
    if (alignment != GgufFile::kDefaultAlignment) set("general.alignment", GgufValue::u32(alignment));
  }

  /// Sets metadata `key` (before the first tensor is written; later values replace earlier).
  void set(const std::string& key, GgufValue v) {
    GSQ_CHECK(!header_written_, ErrorCode::kInvalidArgument, "GgufWriter: metadata \"" + key + "\" after tensor data");
    auto it = kv_index_.find(key);
    if (it != kv_index_.end()) {
      kv_[it->second].second = std::move(v);
    } else {
      kv_index_.emplace(key, kv_.size());
      kv_.emplace_back(key, std::move(v));
    }
  }

  /// Declares a tensor of row-major `shape` stored as `type` (its innermost extent a
  /// multiple of the type's block).
  void add_tensor(const std::string& name, const std::vector<std::int64_t>& shape, GgmlType type) {
    GSQ_CHECK(!header_written_, ErrorCode::kInvalidArgument, "GgufWriter: tensor \"" + name + "\" after tensor data");
    GSQ_CHECK(!shape.empty() && shape.size() <= GgufFile::kMaxDims, ErrorCode::kInvalidExtent,
              "GgufWriter: tensor \"" + name + "\" must have 1..4 dimensions");
    const GgmlTypeInfo& info = ggml_type_info(type);
    GSQ_CHECK(shape.back() % info.block == 0, ErrorCode::kShapeMismatch,
              "GgufWriter: tensor \"" + name + "\" " + shape_to_string(shape) + ": row length is not a multiple of the " +
                  std::string(info.name) + " block " + std::to_string(info.block));
    GSQ_CHECK(tensor_index_.emplace(name, tensors_.size()).second, ErrorCode::kInvalidArgument,
              "GgufWriter: tensor \"" + name + "\" declared twice");
    Pending t;
    t.name = name;
    t.ne.assign(shape.rbegin(), shape.rend());
    t.type = type;
    std::int64_t n = 1;
    for (std::int64_t d : shape) {
      GSQ_CHECK(d > 0, ErrorCode::kInvalidExtent, "GgufWriter: tensor \"" + name + "\" has an extent <= 0");
      n *= d;
    }
    t.row = shape.back();
    t.bytes = ggml_row_bytes(type, t.row) * (n / t.row);
    t.offset = data_bytes_;
    data_bytes_ += padded(t.bytes);
    tensors_.push_back(std::move(t));
  }

  /// Writes the next declared tensor's bytes (already in its type's encoding).
  void write_tensor_bytes(const std::string& name, std::span<const std::uint8_t> bytes) {
    Pending& t = next(name);
    GSQ_CHECK(static_cast<std::int64_t>(bytes.size()) == t.bytes, ErrorCode::kShapeMismatch,
              "GgufWriter: tensor \"" + name + "\" needs " + std::to_string(t.bytes) + " bytes, got " +
                  std::to_string(bytes.size()));
    out_.write(bytes);
    pad();
  }

  /// Encodes float values (row-major, `numel` of the declared shape) as the declared type
  /// and writes them, one row at a time.
  void write_tensor(const std::string& name, std::span<const float> values) {
    Pending& t = next(name);
    GSQ_CHECK(static_cast<std::int64_t>(values.size()) * ggml_row_bytes(t.type, t.row) == t.bytes * t.row,
              ErrorCode::kShapeMismatch, "GgufWriter: tensor \"" + name + "\" got the wrong number of values");
    std::vector<std::uint8_t> buf(static_cast<std::size_t>(ggml_row_bytes(t.type, t.row)));
    for (std::size_t r = 0; r < values.size(); r += static_cast<std::size_t>(t.row)) {
      ggml_encode(t.type, values.subspan(r, static_cast<std::size_t>(t.row)), buf.data());
      out_.write(buf.data(), buf.size());
    }
    pad();
  }

  /// Writes the header if no tensor did, checks every tensor was written, commits.
  void finish() {
    write_header();
    GSQ_CHECK(written_ == tensors_.size(), ErrorCode::kInvalidArgument,
              "GgufWriter: " + std::to_string(tensors_.size() - written_) + " declared tensors were not written (next: \"" +
                  (written_ < tensors_.size() ? tensors_[written_].name : std::string()) + "\")");
    out_.commit();
  }

  /// Bytes the file will have (known once all tensors are declared).
  std::int64_t bytes_written() const noexcept { return out_.offset(); }

 private:
  struct Pending {
    std::string name;
    std::vector<std::int64_t> ne;
    GgmlType type = GgmlType::kF32;
    std::int64_t row = 0;
    std::int64_t bytes = 0;
    std::int64_t offset = 0;
  };

  std::int64_t padded(std::int64_t n) const noexcept { return (n + alignment_ - 1) / alignment_ * alignment_; }
  void pad() {
    static const std::uint8_t zeros[64] = {};
    std::int64_t n = padded(out_.offset()) - out_.offset();
    while (n > 0) {
      const std::int64_t k = std::min<std::int64_t>(n, 64);
      out_.write(zeros, static_cast<std::size_t>(k));
      n -= k;
    }
  }

  Pending& next(const std::string& name) {
    write_header();
    GSQ_CHECK(written_ < tensors_.size() && tensors_[written_].name == name, ErrorCode::kInvalidArgument,
              "GgufWriter: tensor \"" + name + "\" written out of declaration order (expected \"" +
                  (written_ < tensors_.size() ? tensors_[written_].name : std::string("none")) + "\")");
    return tensors_[written_++];
  }

  void put_string(const std::string& s) {
    out_.write_value(static_cast<std::uint64_t>(s.size()));
    out_.write(s.data(), s.size());
  }
  void put_value(const GgufValue& v) {
    switch (v.type) {
      case GgufValueType::kU8: out_.write_value(static_cast<std::uint8_t>(v.i)); break;
      case GgufValueType::kI8: out_.write_value(static_cast<std::int8_t>(v.i)); break;
      case GgufValueType::kU16: out_.write_value(static_cast<std::uint16_t>(v.i)); break;
      case GgufValueType::kI16: out_.write_value(static_cast<std::int16_t>(v.i)); break;
      case GgufValueType::kU32: out_.write_value(static_cast<std::uint32_t>(v.i)); break;
      case GgufValueType::kI32: out_.write_value(static_cast<std::int32_t>(v.i)); break;
      case GgufValueType::kU64: out_.write_value(v.u); break;
      case GgufValueType::kI64: out_.write_value(v.i); break;
      case GgufValueType::kF32: out_.write_value(static_cast<float>(v.f)); break;
      case GgufValueType::kF64: out_.write_value(v.f); break;
      case GgufValueType::kBool: out_.write_value(static_cast<std::uint8_t>(v.i != 0)); break;
      case GgufValueType::kString: put_string(v.s); break;
      case GgufValueType::kArray:
        out_.write_value(static_cast<std::uint32_t>(v.item_type));
        out_.write_value(static_cast<std::uint64_t>(v.items.size()));
        for (const GgufValue& item : v.items) {
          GSQ_CHECK(item.type == v.item_type, ErrorCode::kInvalidArgument, "GgufWriter: array item of the wrong type");
          put_value(item);
        }
        break;
    }
  }

  void write_header() {
    if (header_written_) return;
    header_written_ = true;
    out_.write_value(GgufFile::kMagic);
    out_.write_value(std::uint32_t{3});
    out_.write_value(static_cast<std::uint64_t>(tensors_.size()));
    out_.write_value(static_cast<std::uint64_t>(kv_.size()));
    for (const auto& [key, v] : kv_) {
      put_string(key);
      out_.write_value(static_cast<std::uint32_t>(v.type));
      put_value(v);
    }
    for (const Pending& t : tensors_) {
      put_string(t.name);
      out_.write_value(static_cast<std::uint32_t>(t.ne.size()));
      for (std::int64_t d : t.ne) out_.write_value(static_cast<std::uint64_t>(d));
      out_.write_value(static_cast<std::uint32_t>(t.type));
      out_.write_value(static_cast<std::uint64_t>(t.offset));
    }
    pad();
  }

  AtomicFileWriter out_;
  std::uint32_t alignment_;
  bool header_written_ = false;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, std::size_t> kv_index_;
  std::vector<Pending> tensors_;
  std::map<std::string, std::size_t> tensor_index_;
  std::size_t written_ = 0;
  std::int64_t data_bytes_ = 0;
};

GSQ_NAMESPACE_END
