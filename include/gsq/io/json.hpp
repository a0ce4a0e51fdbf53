// gsq/io/json.hpp — JSON from untrusted files: parse errors become IoError with an offset.
//
// nlohmann-json parses; this file adds what a file format needs on top of it:
//  * a structural pre-scan that rejects nesting deeper than `kMaxJsonDepth` (hostile
//    input must not exhaust the stack in any later recursive walk) and duplicate object
//    keys (nlohmann silently keeps the last one; a safetensors header or a vocabulary
//    with two entries for one key is corrupt), both with the exact byte offset;
//  * parse errors reported as IoError(kCorrupt) at the byte nlohmann stopped at;
//  * typed member access that names the file and the field when a value has the wrong
//    type or range, instead of nlohmann's type_error.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN
namespace io::detail {

using Json = nlohmann::json;

inline constexpr int kMaxJsonDepth = 64;

/// Rejects nesting deeper than kMaxJsonDepth and duplicate keys in any object. Syntax
/// errors are left to the parser (the scan just stops being precise after one).
inline void scan_json_structure(std::span<const std::uint8_t> text, const std::string& file,
                                std::int64_t base_offset) {
  struct Frame {
    bool object;
    bool expect_key;
    std::unordered_set<std::string> keys;
  };
  std::vector<Frame> stack;
  const std::size_t n = text.size();
  for (std::size_t i = 0; i < n; ++i) {
    const char c = static_cast<char>(text[i]);
    if (c == '"') {
      const std::size_t start = i + 1;
      std::size_t j = start;
      bool escaped = false;
      while (j < n && text[j] != '"') {
        if (text[j] == '\\') {
          escaped = true;
          ++j;
        }
        ++j;
      }
      if (j >= n) return;  // unterminated: the parser reports it
      if (!stack.empty() && stack.back().object && stack.back().expect_key) {
        std::string key(reinterpret_cast<const char*>(text.data() + start), j - start);
        if (escaped) {  // compare keys by their value, not their spelling
          try {
            key = Json::parse("\"" + key + "\"").get<std::string>();
          } catch (const Json::exception&) {
            return;  // a bad escape: the parser reports it
          }
        }
        if (!stack.back().keys.insert(std::move(key)).second)
          gsq::detail::throw_io_error(ErrorCode::kCorrupt, "duplicate JSON object key", file,
                                      base_offset + static_cast<std::int64_t>(i));
        stack.back().expect_key = false;
      }
      i = j;
    } else if (c == '{' || c == '[') {
      if (static_cast<int>(stack.size()) >= kMaxJsonDepth)
        gsq::detail::throw_io_error(ErrorCode::kCorrupt,
                                    "JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                                        " levels",
                                    file, base_offset + static_cast<std::int64_t>(i));
      stack.push_back({c == '{', c == '{', {}});
    } else if (c == '}' || c == ']') {
      if (stack.empty()) return;
      stack.pop_back();
    } else if (c == ',') {
      if (!stack.empty() && stack.back().object) stack.back().expect_key = true;
    }
  }
}

/// Parses `text` (found at `base_offset` in `file`); any error is IoError(kCorrupt).
inline Json parse_json(std::span<const std::uint8_t> text, const std::string& file,
                       std::int64_t base_offset) {
  scan_json_structure(text, file, base_offset);
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    const std::int64_t at = e.byte > 0 ? static_cast<std::int64_t>(e.byte) - 1 : 0;
    gsq::detail::throw_io_error(ErrorCode::kCorrupt, std::string("invalid JSON: ") + e.what(),
                                file, base_offset + at);
  } catch (const Json::exception& e) {
    gsq::detail::throw_io_error(ErrorCode::kCorrupt, std::string("invalid JSON: ") + e.what(),
                                file, base_offset);
  }
}

/// Where a JSON value came from, for error messages: the file, the offset of the JSON
/// text in it, and a path such as `config.json:hidden_size`.
struct JsonWhere {
  std::string file;
  std::int64_t offset;
};

[[noreturn]] inline void json_fail(const JsonWhere& where, std::string_view field,
                                   const std::string& problem) {
  gsq::detail::throw_io_error(ErrorCode::kCorrupt, "\"" + std::string(field) + "\": " + problem,
                              where.file, where.offset);
}

inline const Json* find_member(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

inline const Json& require_member(const Json& object, std::string_view key,
                                  const JsonWhere& where) {
  if (!object.is_object()) json_fail(where, key, "expected inside a JSON object");
  const Json* v = find_member(object, key);
  if (v == nullptr) json_fail(where, key, "missing");
  return *v;
}

/// An integer in [lo, hi]; floats such as 2.0 are rejected (ids and sizes are integers).
inline std::int64_t json_int(const Json& v, std::string_view field, const JsonWhere& where,
                             std::int64_t lo = std::numeric_limits<std::int64_t>::min(),
                             std::int64_t hi = std::numeric_limits<std::int64_t>::max()) {
  std::int64_t x = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      json_fail(where, field, "integer " + std::to_string(u) + " out of range");
    x = static_cast<std::int64_t>(u);
  } else if (v.is_number_integer()) {
    x = v.get<std::int64_t>();
  } else {
    json_fail(where, field, "expected an integer, got " + std::string(v.type_name()));
  }
  if (x < lo || x > hi)
    json_fail(where, field,
              std::to_string(x) + " outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

inline double json_number(const Json& v, std::string_view field, const JsonWhere& where) {
  if (!v.is_number())
    json_fail(where, field, "expected a number, got " + std::string(v.type_name()));
  return v.get<double>();
}

inline const std::string& json_string(const Json& v, std::string_view field,
                                      const JsonWhere& where) {
  if (!v.is_string())
    json_fail(where, field, "expected a string, got " + std::string(v.type_name()));
  return v.get_ref<const std::string&>();
}

inline bool json_bool(const Json& v, std::string_view field, const JsonWhere& where) {
  if (!v.is_boolean())
    json_fail(where, field, "expected true or false, got " + std::string(v.type_name()));
  return v.get<bool>();
}

}  // namespace io::detail
GSQ_NAMESPACE_END
