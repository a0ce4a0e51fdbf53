// gsq/io/gguf.hpp — the GGUF container of llama.cpp: parse, tensor codecs, streaming writer.
//
// Layout (GGUF v3, little-endian; v2 has the same layout):
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count
//   kv_count × (string key, u32 value type, value)       string = u64 length + bytes
//   tensor_count × (string name, u32 n_dims, n_dims × u64 ne, u32 ggml type, u64 offset)
//   padding to `general.alignment` (default 32), then the data section; each tensor's
//   offset counts from the data section's start and is a multiple of the alignment.
// Dimensions are innermost first: ne[0] is the row length (a [out, in] matrix has
// ne = {in, out}); `GgufTensorInfo::shape()` gives gsq's row-major order.
//
// The parser treats a file as hostile: every count, length, dimension and offset is held
// against the bytes that are actually there before anything is allocated or read, and
// the tensors' data regions must lie inside the data section without overlapping. Errors
// are IoError naming the file and the byte offset of the offending field.
//
// Tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_1 are encoded and decoded here (block
// layouts of ggml: Q8_0 = fp16 d + 32 int8, x = q·d; Q4_0 = fp16 d + 16 bytes, x = (q−8)·d;
// Q4_1 = fp16 d + fp16 m + 16 bytes, x = q·d + m; in a 4-bit block byte j holds element j
// in its low nibble and element j + 16 in its high one). Every other ggml type (K-quants,
// IQ types, ...) is known by name and size, so such files list and are refused by name
// (ErrorCode::kUnsupported) when their tensors are decoded.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/bytes.hpp"
#include "gsq/io/dtype.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/tensor_util.hpp"

GSQ_NAMESPACE_BEGIN

// ---- value and tensor types ------------------------------------------------------------

enum class GgufValueType : std::uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

inline std::string_view gguf_value_type_name(GgufValueType t) noexcept {
  switch (t) {
    case GgufValueType::kU8: return "u8";
    case GgufValueType::kI8: return "i8";
    case GgufValueType::kU16: return "u16";
    case GgufValueType::kI16: return "i16";
    case GgufValueType::kU32: return "u32";
    case GgufValueType::kI32: return "i32";
    case GgufValueType::kF32: return "f32";
    case GgufValueType::kBool: return "bool";
    case GgufValueType::kString: return "string";
    case GgufValueType::kArray: return "array";
    case GgufValueType::kU64: return "u64";
    case GgufValueType::kI64: return "i64";
    case GgufValueType::kF64: return "f64";
  }
  return "?";
}

/// ggml tensor types gsq encodes and decodes (the numbers are ggml's).
enum class GgmlType : std::uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8, kBF16 = 30,
};

struct GgmlTypeInfo {
  std::uint32_t id;
  std::string_view name;
  std::int64_t block;       // elements per block
  std::int64_t block_bytes; // bytes per block
  bool supported;           // decoded/encoded by gsq
};

// Every ggml type a GGUF may hold, so files with types gsq does not decode still list
// (sizes as ggml's type traits; removed ids 4, 5, 31..33 and 36..38 are absent).
inline constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4, true},       {1, "F16", 1, 2, true},        {2, "Q4_0", 32, 18, true},
    {3, "Q4_1", 32, 20, true},    {6, "Q5_0", 32, 22, false},    {7, "Q5_1", 32, 24, false},
    {8, "Q8_0", 32, 34, true},    {9, "Q8_1", 32, 36, false},    {10, "Q2_K", 256, 84, false},
    {11, "Q3_K", 256, 110, false}, {12, "Q4_K", 256, 144, false}, {13, "Q5_K", 256, 176, false},
    {14, "Q6_K", 256, 210, false}, {15, "Q8_K", 256, 292, false}, {16, "IQ2_XXS", 256, 66, false},
    {17, "IQ2_XS", 256, 74, false}, {18, "IQ3_XXS", 256, 98, false}, {19, "IQ1_S", 256, 50, false},
    {20, "IQ4_NL", 32, 18, false}, {21, "IQ3_S", 256, 110, false}, {22, "IQ2_S", 256, 82, false},
    {23, "IQ4_XS", 256, 136, false}, {24, "I8", 1, 1, false},     {25, "I16", 1, 2, false},
    {26, "I32", 1, 4, false},     {27, "I64", 1, 8, false},      {28, "F64", 1, 8, false},
    {29, "IQ1_M", 256, 56, false}, {30, "BF16", 1, 2, true},     {34, "TQ1_0", 256, 54, false},
    {35, "TQ2_0", 256, 66, false}, {39, "MXFP4", 32, 17, false},
};

/// The type with ggml id `id`, or nullptr.
inline const GgmlTypeInfo* ggml_type_info(std::uint32_t id) noexcept {
  for (const GgmlTypeInfo& t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}
inline const GgmlTypeInfo& ggml_type_info(GgmlType t) noexcept {
  return *ggml_type_info(static_cast<std::uint32_t>(t));
}
inline std::string ggml_type_name(std::uint32_t id) {
  const GgmlTypeInfo* t = ggml_type_info(id);
  return t != nullptr ? std::string(t->name) : "type " + std::to_string(id);
}

/// IEEE binary16 from float, round to nearest even (overflow → ±Inf, NaN stays NaN).
inline std::uint16_t float_to_f16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t abs = u & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u);
  if (abs >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds past 65504
  if (abs < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
    // value / 2^-24, rounded to nearest even, via the float adder's rounding.
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;  // exact (power of two)
    const float r = std::nearbyint(scaled);
    return static_cast<std::uint16_t>(sign | static_cast<std::uint32_t>(r));
  }
  const std::uint32_t rounded = abs + 0xFFFu + ((abs >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

/// Whether `f` is exactly an FP16 value (finite).
inline bool representable_in_f16(float f) noexcept {
  return std::isfinite(f) && f16_to_float(float_to_f16(f)) == f;
}

// ---- block codecs ------------------------------------------------------------------------

namespace io::detail {

inline void put_u16(std::uint8_t* p, std::uint16_t v) noexcept { std::memcpy(p, &v, 2); }
inline std::uint16_t get_u16(const std::uint8_t* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace io::detail

/// Bytes of `n` elements of `type` (`n` a multiple of its block).
inline std::int64_t ggml_row_bytes(GgmlType type, std::int64_t n) noexcept {
  const GgmlTypeInfo& t = ggml_type_info(type);
  return n / t.block * t.block_bytes;
}

/// Encodes `x` (length a multiple of the block size) as `type` into `out`
/// (ggml_row_bytes(type, x.size()) bytes), following ggml's reference quantizers.
inline void ggml_encode(GgmlType type, std::span<const float> x, std::uint8_t* out) {
  namespace iod = io::detail;
  const auto n = static_cast<std::int64_t>(x.size());
  GSQ_CHECK(n % ggml_type_info(type).block == 0, ErrorCode::kShapeMismatch,
            "ggml_encode: " + std::to_string(n) + " elements is not a multiple of the " +
                std::string(ggml_type_info(type).name) + " block");
  switch (type) {
    case GgmlType::kF32: std::memcpy(out, x.data(), x.size() * 4); return;
    case GgmlType::kF16:
      for (std::int64_t i = 0; i < n; ++i) iod::put_u16(out + 2 * i, float_to_f16(x[i]));
      return;
    case GgmlType::kBF16:
      for (std::int64_t i = 0; i < n; ++i) iod::put_u16(out + 2 * i, float_to_bf16(x[i]));
      return;
    case GgmlType::kQ8_0:
      for (std::int64_t b = 0; b < n / 32; ++b, out += 34) {
        const float* v = x.data() + b * 32;
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        iod::put_u16(out, float_to_f16(d));
        for (int j = 0; j < 32; ++j) out[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::lround(v[j] * id)));
      }
      return;
    case GgmlType::kQ4_0:
      for (std::int64_t b = 0; b < n / 32; ++b, out += 18) {
        const float* v = x.data() + b * 32;
        float amax = 0.0f, max = 0.0f;  // the value of largest magnitude, with its sign
        for (int j = 0; j < 32; ++j)
          if (std::fabs(v[j]) > amax) {
            amax = std::fabs(v[j]);
            max = v[j];
          }
        const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        iod::put_u16(out, float_to_f16(d));
        for (int j = 0; j < 16; ++j) {
          const int lo = std::min(15, static_cast<int>(v[j] * id + 8.5f));
          const int hi = std::min(15, static_cast<int>(v[j + 16] * id + 8.5f));
          out[2 + j] = static_cast<std::uint8_t>(lo | (hi << 4));
        }
      }
      return;
    case GgmlType::kQ4_1:
      for (std::int64_t b = 0; b < n / 32; ++b, out += 20) {
        const float* v = x.data() + b * 32;
        float lo = v[0], hi = v[0];
        for (int j = 1; j < 32; ++j) {
          lo = std::min(lo, v[j]);
          hi = std::max(hi, v[j]);
        }
        const float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        iod::put_u16(out, float_to_f16(d));
        iod::put_u16(out + 2, float_to_f16(lo));
        for (int j = 0; j < 16; ++j) {
          const int a = std::min(15, static_cast<int>((v[j] - lo) * id + 0.5f));
          const int c = std::min(15, static_cast<int>((v[j + 16] - lo) * id + 0.5f));
          out[4 + j] = static_cast<std::uint8_t>(a | (c << 4));
        }
      }
      return;
  }
  detail::throw_error(ErrorCode::kInvalidArgument, "ggml_encode: unsupported type");
}

/// Decodes `n` elements of `type` from `in` into `out` (as ggml's dequantizers do).
inline void ggml_decode(GgmlType type, const std::uint8_t* in, std::int64_t n, float* out) {
  namespace iod = io::detail;
  switch (type) {
    case GgmlType::kF32: std::memcpy(out, in, static_cast<std::size_t>(n) * 4); return;
    case GgmlType::kF16:
      for (std::int64_t i = 0; i < n; ++i) out[i] = f16_to_float(iod::get_u16(in + 2 * i));
      return;
    case GgmlType::kBF16:
      for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_to_float(iod::get_u16(in + 2 * i));
      return;
    case GgmlType::kQ8_0:
      for (std::int64_t b = 0; b < n / 32; ++b, in += 34, out += 32) {
        const float d = f16_to_float(iod::get_u16(in));
        for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(static_cast<std::int8_t>(in[2 + j])) * d;
      }
      return;
    case GgmlType::kQ4_0:
      for (std::int64_t b = 0; b < n / 32; ++b, in += 18, out += 32) {
        const float d = f16_to_float(iod::get_u16(in));
        for (int j = 0; j < 16; ++j) {
          out[j] = static_cast<float>((in[2 + j] & 0x0F) - 8) * d;
          out[j + 16] = static_cast<float>((in[2 + j] >> 4) - 8) * d;
        }
      }
      return;
    case GgmlType::kQ4_1:
      for (std::int64_t b = 0; b < n / 32; ++b, in += 20, out += 32) {
        const float d = f16_to_float(iod::get_u16(in)), m = f16_to_float(iod::get_u16(in + 2));
        for (int j = 0; j < 16; ++j) {
          out[j] = static_cast<float>(in[4 + j] & 0x0F) * d + m;
          out[j + 16] = static_cast<float>(in[4 + j] >> 4) * d + m;
        }
      }
      return;
  }
  detail::throw_error(ErrorCode::kInvalidArgument, "ggml_decode: unsupported type");
}

// ---- metadata values -----------------------------------------------------------------------

/// One metadata value. Scalars keep their declared type; integers are held in `i` (signed
/// types and u8..u32) or `u` (u64), floats in `f`; arrays hold their items.
struct GgufValue {
  GgufValueType type = GgufValueType::kU32;
  GgufValueType item_type = GgufValueType::kU8;  // arrays only
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double f = 0.0;
  std::string s;
  std::vector<GgufValue> items;

  static GgufValue integer(GgufValueType t, std::int64_t v) {
    GgufValue x;
    x.type = t;
    x.i = v;
    x.u = static_cast<std::uint64_t>(v);
    return x;
  }
  static GgufValue u32(std::uint32_t v) { return integer(GgufValueType::kU32, v); }
  static GgufValue i32(std::int32_t v) { return integer(GgufValueType::kI32, v); }
  static GgufValue u64(std::uint64_t v) {
    GgufValue x = integer(GgufValueType::kU64, static_cast<std::int64_t>(v));
    x.u = v;
    return x;
  }
  static GgufValue f32(float v) {
    GgufValue x;
    x.type = GgufValueType::kF32;
    x.f = v;
    return x;
  }
  static GgufValue boolean(bool v) { return integer(GgufValueType::kBool, v ? 1 : 0); }
  static GgufValue string(std::string v) {
    GgufValue x;
    x.type = GgufValueType::kString;
    x.s = std::move(v);
    return x;
  }
  static GgufValue array(GgufValueType item_type, std::vector<GgufValue> items) {
    GgufValue x;
    x.type = GgufValueType::kArray;
    x.item_type = item_type;
    x.items = std::move(items);
    return x;
  }
  static GgufValue strings(const std::vector<std::string>& v) {
    std::vector<GgufValue> items;
    items.reserve(v.size());
    for (const std::string& s : v) items.push_back(string(s));
    return array(GgufValueType::kString, std::move(items));
  }
  static GgufValue f32s(const std::vector<float>& v) {
    std::vector<GgufValue> items;
    items.reserve(v.size());
    for (float x : v) items.push_back(f32(x));
    return array(GgufValueType::kF32, std::move(items));
  }
  static GgufValue i32s(const std::vector<std::int32_t>& v) {
    std::vector<GgufValue> items;
    items.reserve(v.size());
    for (std::int32_t x : v) items.push_back(i32(x));
    return array(GgufValueType::kI32, std::move(items));
  }

  bool is_integer() const noexcept {
    switch (type) {
      case GgufValueType::kU8: case GgufValueType::kI8: case GgufValueType::kU16:
      case GgufValueType::kI16: case GgufValueType::kU32: case GgufValueType::kI32:
      case GgufValueType::kU64: case GgufValueType::kI64: case GgufValueType::kBool:
        return true;
      default: return false;
    }
  }
  bool is_number() const noexcept {
    return is_integer() || type == GgufValueType::kF32 || type == GgufValueType::kF64;
  }
  double as_double() const noexcept {
    if (type == GgufValueType::kF32 || type == GgufValueType::kF64) return f;
    if (type == GgufValueType::kU64) return static_cast<double>(u);
    return static_cast<double>(i);
  }

  /// Short text for listings: scalars in full, strings quoted (cut at 60 bytes), arrays
  /// as their type, length and first items.
  std::string to_string() const {
    switch (type) {
      case GgufValueType::kString: {
        std::string t = s.size() > 60 ? s.substr(0, 60) + "..." : s;
        return "\"" + t + "\"";
      }
      case GgufValueType::kBool: return i != 0 ? "true" : "false";
      case GgufValueType::kF32: case GgufValueType::kF64: {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.9g", f);
        return buf;
      }
      case GgufValueType::kU64: return std::to_string(u);
      case GgufValueType::kArray: {
        std::string t = "[" + std::string(gguf_value_type_name(item_type)) + " x " +
                        std::to_string(items.size()) + "]";
        for (std::size_t k = 0; k < items.size() && k < 4; ++k) t += (k == 0 ? " " : ", ") + items[k].to_string();
        if (items.size() > 4) t += ", ...";
        return t;
      }
      default: return std::to_string(i);
    }
  }
};

/// One tensor as the file declares it.
struct GgufTensorInfo {
  std::string name;
  std::vector<std::int64_t> ne;   // innermost first, as stored
  std::uint32_t type = 0;         // ggml type id
  std::int64_t offset = 0;        // relative to the data section
  std::int64_t data_begin = 0;    // absolute byte offset of the data
  std::int64_t bytes = 0;
  std::int64_t info_offset = 0;   // where the tensor's description starts (for messages)

  /// gsq's row-major shape (ne reversed: [out, in] for a matrix).
  std::vector<std::int64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (std::int64_t d : ne) n *= d;  // checked not to overflow when parsed
    return n;
  }
};

// ---- reader --------------------------------------------------------------------------------

class GgufFile {
 public:
  static constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
  static constexpr std::uint32_t kDefaultAlignment = 32;
  static constexpr std::size_t kMaxDims = 4;        // GGML_MAX_DIMS
  static constexpr int kMaxArrayDepth = 4;          // nested arrays accepted

  static GgufFile open(const std::filesystem::path& path) { return parse(MappedFile::open(path)); }

  /// Parses and validates everything but the tensor data (which stays mapped).
  static GgufFile parse(MappedFile file) {
    GgufFile g;
    g.file_ = std::move(file);
    g.parse_all();
    return g;
  }

  const std::string& name() const noexcept { return file_.name(); }
  std::uint32_t version() const noexcept { return version_; }
  std::uint32_t alignment() const noexcept { return alignment_; }
  std::int64_t data_offset() const noexcept { return data_offset_; }
  std::int64_t file_size() const noexcept { return static_cast<std::int64_t>(file_.size()); }
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const noexcept { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const noexcept { return tensors_; }

  /// The value of `key`, or nullptr.
  const GgufValue* find(std::string_view key) const {
    auto it = kv_index_.find(std::string(key));
    return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
  }
  const GgufTensorInfo* find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(std::string(name));
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

  /// Metadata accessors that throw IoError(kCorrupt) naming the key when it is absent or
  /// of the wrong kind.
  std::int64_t get_int(std::string_view key) const {
    const GgufValue& v = require(key);
    if (!v.is_integer() || (v.type == GgufValueType::kU64 && v.u > (std::uint64_t{1} << 62)))
      fail_key(key, "is " + std::string(gguf_value_type_name(v.type)) + ", expected an integer");
    return v.i;
  }
  double get_number(std::string_view key) const {
    const GgufValue& v = require(key);
    if (!v.is_number()) fail_key(key, "is " + std::string(gguf_value_type_name(v.type)) + ", expected a number");
    return v.as_double();
  }
  const std::string& get_string(std::string_view key) const {
    const GgufValue& v = require(key);
    if (v.type != GgufValueType::kString)
      fail_key(key, "is " + std::string(gguf_value_type_name(v.type)) + ", expected a string");
    return v.s;
  }
  const std::vector<GgufValue>& get_array(std::string_view key, GgufValueType item) const {
    const GgufValue& v = require(key);
    if (v.type != GgufValueType::kArray || v.item_type != item)
      fail_key(key, "is not an array of " + std::string(gguf_value_type_name(item)));
    return v.items;
  }
  const GgufValue& require(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr)
      detail::throw_io_error(ErrorCode::kCorrupt, "metadata key \"" + std::string(key) + "\" is missing", name(), -1);
    return *v;
  }

  /// The stored bytes of `t`.
  std::span<const std::uint8_t> raw(const GgufTensorInfo& t) const {
    return file_.bytes().subspan(static_cast<std::size_t>(t.data_begin), static_cast<std::size_t>(t.bytes));
  }

  /// `t` decoded to float in gsq's row-major shape. Types gsq does not decode are refused
  /// by name (kUnsupported).
  Tensor<float> to_float(const GgufTensorInfo& t, MemoryCategory category = MemoryCategory::kWeights) const {
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    if (info == nullptr || !info->supported)
      detail::throw_io_error(ErrorCode::kUnsupported,
                             "tensor \"" + t.name + "\" has ggml type " + ggml_type_name(t.type) +
                                 "; gsq decodes F32, F16, BF16, Q8_0, Q4_0 and Q4_1 (re-quantize the "
                                 "model to one of those)",
                             name(), t.info_offset);
    const std::vector<std::int64_t> shape = t.shape();
    Tensor<float> out = make_tensor(shape, category);
    const std::int64_t row = t.ne[0];
    const std::int64_t rows = t.numel() / row;
    const std::int64_t row_bytes = row / info->block * info->block_bytes;
    const std::uint8_t* base = file_.data() + t.data_begin;
    for (std::int64_t r = 0; r < rows; ++r)
      ggml_decode(static_cast<GgmlType>(t.type), base + r * row_bytes, row, out.data() + r * row);
    return out;
  }

 private:
  static Tensor<float> make_tensor(const std::vector<std::int64_t>& shape, MemoryCategory category) {
    switch (shape.size()) {
      case 1: return Tensor<float>({shape[0]}, category);
      case 2: return Tensor<float>({shape[0], shape[1]}, category);
      case 3: return Tensor<float>({shape[0], shape[1], shape[2]}, category);
      default: return Tensor<float>({shape[0], shape[1], shape[2], shape[3]}, category);
    }
  }

  [[noreturn]] void fail_key(std::string_view key, const std::string& what) const {
    detail::throw_io_error(ErrorCode::kCorrupt, "metadata \"" + std::string(key) + "\" " + what, name(), -1);
  }
  [[noreturn]] void fail(ErrorCode code, const std::string& what, std::int64_t at) const {
    detail::throw_io_error(code, what, name(), at);
  }

  std::string read_string(io::detail::ByteReader& r, std::string_view what) {
    const auto at = static_cast<std::int64_t>(r.offset());
    const std::uint64_t len = r.read_u64(what);
    if (len > r.remaining())
      fail(ErrorCode::kTruncated,
           std::string(what) + " declares " + std::to_string(len) + " bytes, " + std::to_string(r.remaining()) +
               " left",
           at);
    std::span<const std::uint8_t> b = r.take(static_cast<std::size_t>(len), what);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }

  static std::size_t min_value_bytes(GgufValueType t) noexcept {
    switch (t) {
      case GgufValueType::kU8: case GgufValueType::kI8: case GgufValueType::kBool: return 1;
      case GgufValueType::kU16: case GgufValueType::kI16: return 2;
      case GgufValueType::kU32: case GgufValueType::kI32: case GgufValueType::kF32: return 4;
      case GgufValueType::kString: case GgufValueType::kU64: case GgufValueType::kI64:
      case GgufValueType::kF64: return 8;
      case GgufValueType::kArray: return 12;
    }
    return 1;
  }

  GgufValue read_value(io::detail::ByteReader& r, GgufValueType type, int depth, const std::string& key) {
    const auto at = static_cast<std::int64_t>(r.offset());
    GgufValue v;
    v.type = type;
    auto integer = [&](std::int64_t x) {
      v.i = x;
      v.u = static_cast<std::uint64_t>(x);
    };
    switch (type) {
      case GgufValueType::kU8: integer(r.read<std::uint8_t>(key)); break;
      case GgufValueType::kI8: integer(r.read<std::int8_t>(key)); break;
      case GgufValueType::kU16: integer(r.read<std::uint16_t>(key)); break;
      case GgufValueType::kI16: integer(r.read<std::int16_t>(key)); break;
      case GgufValueType::kU32: integer(r.read<std::uint32_t>(key)); break;
      case GgufValueType::kI32: integer(r.read<std::int32_t>(key)); break;
      case GgufValueType::kI64: integer(r.read<std::int64_t>(key)); break;
      case GgufValueType::kU64:
        v.u = r.read<std::uint64_t>(key);
        v.i = static_cast<std::int64_t>(v.u);
        break;
      case GgufValueType::kF32: v.f = r.read<float>(key); break;
      case GgufValueType::kF64: v.f = r.read<double>(key); break;
      case GgufValueType::kBool: {
        const std::uint8_t b = r.read<std::uint8_t>(key);
        if (b > 1) fail(ErrorCode::kCorrupt, "\"" + key + "\": bool value " + std::to_string(b), at);
        integer(b);
        break;
      }
      case GgufValueType::kString: v.s = read_string(r, "string value of \"" + key + "\""); break;
      case GgufValueType::kArray: {
        if (depth >= kMaxArrayDepth)
          fail(ErrorCode::kCorrupt, "\"" + key + "\": arrays nested deeper than " + std::to_string(kMaxArrayDepth), at);
        const std::uint32_t item = r.read<std::uint32_t>(key);
        if (item > static_cast<std::uint32_t>(GgufValueType::kF64))
          fail(ErrorCode::kCorrupt, "\"" + key + "\": unknown array item type " + std::to_string(item), at);
        v.item_type = static_cast<GgufValueType>(item);
        const auto count_at = static_cast<std::int64_t>(r.offset());
        const std::uint64_t n = r.read_u64(key);
        if (n > r.remaining() / min_value_bytes(v.item_type))
          fail(ErrorCode::kTruncated,
               "\"" + key + "\": array of " + std::to_string(n) + " " +
                   std::string(gguf_value_type_name(v.item_type)) + " values cannot fit in the " +
                   std::to_string(r.remaining()) + " bytes left",
               count_at);
        v.items.reserve(static_cast<std::size_t>(n));
        for (std::uint64_t k = 0; k < n; ++k) v.items.push_back(read_value(r, v.item_type, depth + 1, key));
        break;
      }
      default: fail(ErrorCode::kCorrupt, "\"" + key + "\": unknown value type " + std::to_string(static_cast<std::uint32_t>(type)), at);
    }
    return v;
  }

  void parse_all() {
    io::detail::ByteReader r(file_.bytes(), file_.name());
    const std::uint32_t magic = r.read<std::uint32_t>("the GGUF magic");
    if (magic != kMagic) fail(ErrorCode::kCorrupt, "not a GGUF file (magic is not \"GGUF\")", 0);
    version_ = r.read<std::uint32_t>("the version");
    if (version_ != 2 && version_ != 3)
      fail(version_ == 1 ? ErrorCode::kUnsupported : ErrorCode::kCorrupt,
           "GGUF version " + std::to_string(version_) + " (gsq reads versions 2 and 3)", 4);
    const std::uint64_t n_tensors = r.read_u64("the tensor count");
    const std::uint64_t n_kv = r.read_u64("the metadata count");
    // Minimal encoded sizes: a key-value pair 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8.
    if (n_kv > r.remaining() / 13)
      fail(ErrorCode::kTruncated, std::to_string(n_kv) + " metadata entries cannot fit in the file", 16);
    if (n_tensors > r.remaining() / 32)
      fail(ErrorCode::kTruncated, std::to_string(n_tensors) + " tensors cannot fit in the file", 8);
    for (std::uint64_t k = 0; k < n_kv; ++k) {
      const auto at = static_cast<std::int64_t>(r.offset());
      std::string key = read_string(r, "a metadata key");
      const std::uint32_t type = r.read<std::uint32_t>("a metadata value type");
      if (type > static_cast<std::uint32_t>(GgufValueType::kF64))
        fail(ErrorCode::kCorrupt, "metadata \"" + key + "\" has unknown value type " + std::to_string(type), at);
      GgufValue v = read_value(r, static_cast<GgufValueType>(type), 0, key);
      if (!kv_index_.emplace(key, kv_.size()).second)
        fail(ErrorCode::kCorrupt, "metadata key \"" + key + "\" appears twice", at);
      kv_.emplace_back(std::move(key), std::move(v));
    }
    if (const GgufValue* a = find("general.alignment")) {
      if (a->type != GgufValueType::kU32 || a->i == 0 || (a->i & (a->i - 1)) != 0 || a->i > 65536)
        fail(ErrorCode::kCorrupt, "general.alignment must be a u32 power of two up to 65536, got " + a->to_string(), -1);
      alignment_ = static_cast<std::uint32_t>(a->i);
    }
    const auto size = static_cast<std::int64_t>(file_.size());
    for (std::uint64_t k = 0; k < n_tensors; ++k) {
      GgufTensorInfo t;
      t.info_offset = static_cast<std::int64_t>(r.offset());
      t.name = read_string(r, "a tensor name");
      const std::uint32_t n_dims = r.read<std::uint32_t>("a tensor's dimension count");
      if (n_dims == 0 || n_dims > kMaxDims)
        fail(ErrorCode::kCorrupt, "tensor \"" + t.name + "\" has " + std::to_string(n_dims) + " dimensions (1..4 allowed)", t.info_offset);
      std::int64_t numel = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const auto at = static_cast<std::int64_t>(r.offset());
        const std::uint64_t ne = r.read_u64("a tensor dimension");
        if (ne == 0 || ne > (std::uint64_t{1} << 40))
          fail(ErrorCode::kCorrupt, "tensor \"" + t.name + "\" has dimension " + std::to_string(ne), at);
        t.ne.push_back(static_cast<std::int64_t>(ne));
        numel = io::detail::checked_mul(numel, static_cast<std::int64_t>(ne), name(), at, "tensor size");
      }
      const auto type_at = static_cast<std::int64_t>(r.offset());
      t.type = r.read<std::uint32_t>("a tensor type");
      const GgmlTypeInfo* info = ggml_type_info(t.type);
      if (info == nullptr)
        fail(ErrorCode::kUnsupported, "tensor \"" + t.name + "\" has unknown ggml type " + std::to_string(t.type), type_at);
      if (t.ne[0] % info->block != 0)
        fail(ErrorCode::kCorrupt,
             "tensor \"" + t.name + "\": row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                 std::string(info->name) + " block (" + std::to_string(info->block) + ")",
             t.info_offset);
      t.bytes = io::detail::checked_mul(numel / info->block, info->block_bytes, name(), t.info_offset, "tensor bytes");
      const auto off_at = static_cast<std::int64_t>(r.offset());
      const std::uint64_t off = r.read_u64("a tensor offset");
      if (off % alignment_ != 0 || off > static_cast<std::uint64_t>(size))
        fail(ErrorCode::kCorrupt,
             "tensor \"" + t.name + "\" has offset " + std::to_string(off) + " (not a multiple of the alignment " +
                 std::to_string(alignment_) + " or past the end)",
             off_at);
      t.offset = static_cast<std::int64_t>(off);
      if (!tensor_index_.emplace(t.name, tensors_.size()).second)
        fail(ErrorCode::kCorrupt, "tensor \"" + t.name + "\" appears twice", t.info_offset);
      tensors_.push_back(std::move(t));
    }
    const auto end_of_infos = static_cast<std::int64_t>(r.offset());
    data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
    if (tensors_.empty()) {
      data_offset_ = std::min(data_offset_, size);
      return;
    }
    std::vector<std::pair<std::int64_t, std::size_t>> order;
    for (std::size_t k = 0; k < tensors_.size(); ++k) {
      GgufTensorInfo& t = tensors_[k];
      t.data_begin = io::detail::checked_add(data_offset_, t.offset, name(), t.info_offset, "tensor data");
      const std::int64_t end = io::detail::checked_add(t.data_begin, t.bytes, name(), t.info_offset, "tensor data");
      if (end > size)
        fail(ErrorCode::kTruncated,
             "tensor \"" + t.name + "\" (" + std::to_string(t.bytes) + " bytes at " + std::to_string(t.data_begin) +
                 ") runs past the end of the file (" + std::to_string(size) + " bytes)",
             t.info_offset);
      order.emplace_back(t.data_begin, k);
    }
    std::sort(order.begin(), order.end());
    for (std::size_t k = 1; k < order.size(); ++k) {
      const GgufTensorInfo& prev = tensors_[order[k - 1].second];
      const GgufTensorInfo& t = tensors_[order[k].second];
      if (prev.data_begin + prev.bytes > t.data_begin)
        fail(ErrorCode::kCorrupt, "tensors \"" + prev.name + "\" and \"" + t.name + "\" overlap", t.info_offset);
    }
  }

  MappedFile file_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = kDefaultAlignment;
  std::int64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, std::size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> tensor_index_;
};

GSQ_NAMESPACE_END
