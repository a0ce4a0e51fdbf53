// gsq/io/bytes.hpp — bounds-checked little-endian reads and overflow-checked sizes.
//
// Parsers never index a file's bytes directly: they go through `ByteReader`, whose every
// read checks the remaining length and throws IoError(kTruncated) naming the file and
// the byte offset, and through `checked_mul` / `checked_add`, which turn sizes declared
// by a hostile header into an IoError instead of a wrapped-around allocation.
// Files are little-endian; so is every host gsq supports (checked at compile time).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN
namespace io::detail {

static_assert(std::endian::native == std::endian::little,
              "gsq's file formats are little-endian and are read without byte swaps");

/// a * b for non-negative sizes; throws IoError(kCorrupt) at `offset` if it overflows int64.
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b, const std::string& file,
                                std::int64_t offset, std::string_view what) {
  std::int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    gsq::detail::throw_io_error(ErrorCode::kCorrupt,
                                std::string(what) + ": size overflows (" + std::to_string(a) +
                                    " x " + std::to_string(b) + ")",
                                file, offset);
  return r;
}

inline std::int64_t checked_add(std::int64_t a, std::int64_t b, const std::string& file,
                                std::int64_t offset, std::string_view what) {
  std::int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r))
    gsq::detail::throw_io_error(ErrorCode::kCorrupt,
                                std::string(what) + ": size overflows (" + std::to_string(a) +
                                    " + " + std::to_string(b) + ")",
                                file, offset);
  return r;
}

/// A cursor over a byte span that refuses to read past its end.
class ByteReader {
 public:
  ByteReader(std::span<const std::uint8_t> bytes, const std::string& file) noexcept
      : bytes_(bytes), file_(file) {}

  std::size_t offset() const noexcept { return pos_; }
  std::size_t size() const noexcept { return bytes_.size(); }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  bool at_end() const noexcept { return pos_ == bytes_.size(); }
  const std::string& file() const noexcept { return file_; }

  /// Throws kTruncated unless `n` more bytes exist; `what` names the field.
  void need(std::size_t n, std::string_view what) const {
    if (n > remaining())
      gsq::detail::throw_io_error(ErrorCode::kTruncated,
                                  "file ends inside " + std::string(what) + " (needs " +
                                      std::to_string(n) + " bytes, " +
                                      std::to_string(remaining()) + " left)",
                                  file_, static_cast<std::int64_t>(pos_));
  }
  /// The next `n` bytes, consumed.
  std::span<const std::uint8_t> take(std::size_t n, std::string_view what) {
    need(n, what);
    std::span<const std::uint8_t> s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  template <class T>
  T read(std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::int32_t read_i32(std::string_view what) { return read<std::int32_t>(what); }
  std::uint64_t read_u64(std::string_view what) { return read<std::uint64_t>(what); }
  float read_f32(std::string_view what) { return read<float>(what); }

 private:
  std::span<const std::uint8_t> bytes_;
  const std::string& file_;
  std::size_t pos_ = 0;
};

}  // namespace io::detail
GSQ_NAMESPACE_END
