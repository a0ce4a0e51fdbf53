// gsq/core/error.hpp — the one exception hierarchy of gsq.
//
// Every error gsq raises is a `gsq::Error` (a std::runtime_error) carrying an
// `ErrorCode`. `what()` starts with `[gsq.<category>.<code>]` so logs can be grepped,
// followed by a message that names what was wrong and where. The codes are listed in
// docs/errors.md; keep the two in sync.
//
//   category  type            codes
//   shape     ShapeError      100..199  wrong extents, mismatched operands
//   format    FormatError     200..299  invalid format spec, non-finite input, bad encoded data
//   io        IoError         300..399  files: open, truncated, corrupt (file and offset)
//   config    ConfigError     400..499  bad options, flags, environment variables
//   isa       UnsupportedIsa  500..599  a forced SIMD path this CPU or build lacks
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN

enum class ErrorCode : int {
  kShapeMismatch = 101,   // operands whose extents do not fit together
  kInvalidExtent = 102,   // a negative, zero-where-forbidden or too large extent
  kIndexOutOfRange = 103, // an index outside a tensor or view

  kInvalidFormat = 201,   // a format spec outside its allowed range (bits, group, exponent)
  kNonFinite = 202,       // NaN or Inf where a finite value is required (names the tensor)
  kBadEncoding = 203,     // encoded data that no valid encoder produces (e.g. MX -128, NaN scale)

  kOpenFailed = 301,      // a file could not be opened, read or written
  kTruncated = 302,       // a file ends before the data it declares
  kCorrupt = 303,         // a file whose content contradicts itself or its format
  kUnsupported = 304,     // a valid file using what gsq does not read (architecture, K-quants)

  kInvalidArgument = 401, // an option or argument value out of range
  kBadEnvironment = 402,  // an environment variable gsq reads holds a bad value
  kOutOfMemory = 403,     // sizes (flags, a model's config) that need more memory than there is

  kUnsupportedIsa = 501,  // a forced SIMD path that this CPU or build cannot run
};

/// The category word of a code, as it appears in `what()`.
constexpr std::string_view error_category(ErrorCode code) noexcept {
  switch (static_cast<int>(code) / 100) {
    case 1: return "shape";
    case 2: return "format";
    case 3: return "io";
    case 4: return "config";
    case 5: return "isa";
    default: return "unknown";
  }
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error("[gsq." + std::string(error_category(code)) + "." +
                           std::to_string(static_cast<int>(code)) + "] " + message),
        code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

class ShapeError : public Error { using Error::Error; };
class FormatError : public Error { using Error::Error; };
class ConfigError : public Error { using Error::Error; };
class UnsupportedIsa : public Error { using Error::Error; };

/// A file error: names the file and the byte offset where the problem was found.
class IoError : public Error {
 public:
  IoError(ErrorCode code, const std::string& message, std::string file, std::int64_t offset)
      : Error(code, message), file_(std::move(file)), offset_(offset) {}
  const std::string& file() const noexcept { return file_; }
  /// Byte offset of the problem, or -1 when it concerns the whole file.
  std::int64_t offset() const noexcept { return offset_; }

 private:
  std::string file_;
  std::int64_t offset_;
};

namespace detail {

// Throwing goes through these cold, out-of-line functions so the checks at call sites
// stay a compare and a rarely-taken branch.
[[noreturn]] GSQ_NOINLINE GSQ_COLD inline void throw_error(ErrorCode code,
                                                           const std::string& message) {
  switch (static_cast<int>(code) / 100) {
    case 1: throw ShapeError(code, message);
    case 2: throw FormatError(code, message);
    case 4: throw ConfigError(code, message);
    case 5: throw UnsupportedIsa(code, message);
    default: throw Error(code, message);
  }
}

[[noreturn]] GSQ_NOINLINE GSQ_COLD inline void throw_io_error(ErrorCode code,
                                                              const std::string& message,
                                                              const std::string& file,
                                                              std::int64_t offset) {
  std::string where = file;
  if (offset >= 0) where += " at byte " + std::to_string(offset);
  throw IoError(code, where + ": " + message, file, offset);
}

}  // namespace detail

/// Throws `ErrorCode` with `message` unless `cond` holds. For argument checks at API
/// boundaries; the message is only built when the check fails.
#define GSQ_CHECK(cond, code, message)                          \
  do {                                                          \
    if (GSQ_UNLIKELY(!(cond))) ::gsq::detail::throw_error((code), (message)); \
  } while (0)

GSQ_NAMESPACE_END
