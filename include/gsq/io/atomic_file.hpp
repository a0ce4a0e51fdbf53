// gsq/io/atomic_file.hpp — write a file so that readers see the old one or the new one.
//
// Model, adapter and checkpoint writers must never leave a half-written file where a good
// one was: a crash, a full disk or an exception half-way would otherwise destroy the only
// copy of a training run. `AtomicFileWriter` writes to a fresh temporary file in the same
// directory (so the final rename stays within one filesystem), `commit()` fsyncs it,
// renames it over the target and fsyncs the directory. Destroying the writer without
// `commit()` removes the temporary file and leaves the target untouched.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN

class AtomicFileWriter {
 public:
  /// Creates the temporary file next to `path`; throws IoError(kOpenFailed) if it cannot.
  explicit AtomicFileWriter(const std::filesystem::path& path) : path_(path) {
    static std::atomic<unsigned> counter{0};
    std::filesystem::path dir = path_.parent_path();
    if (dir.empty()) dir = ".";
    for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
      std::string name = ".";  // appended piecewise: GCC 12 warns (-Wrestrict) on a + chain
      name += path_.filename().string();
      name += ".tmp.";
      name += std::to_string(::getpid());
      name += '.';
      name += std::to_string(counter.fetch_add(1));
      temp_ = dir / name;
      fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd_ < 0 && errno != EEXIST) break;
    }
    if (fd_ < 0)
      fail("cannot create a temporary file " + temp_.string() + ": " + std::strerror(errno));
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() { abandon(); }

  /// Appends bytes, buffered. Throws IoError naming the target and the failing offset.
  void write(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    if (buffer_.size() + n > kBufferBytes) flush();
    if (n >= kBufferBytes) {
      write_all(p, n);
    } else {
      buffer_.insert(buffer_.end(), p, p + n);
    }
  }
  void write(std::span<const std::uint8_t> bytes) { write(bytes.data(), bytes.size()); }
  template <class T>
  void write_value(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    write(&v, sizeof(T));
  }

  /// Bytes written so far (buffered ones included).
  std::int64_t offset() const noexcept {
    return written_ + static_cast<std::int64_t>(buffer_.size());
  }

  /// Flushes, fsyncs and renames the temporary file over the target.
  void commit() {
    if (fd_ < 0) fail("commit after the writer was closed");
    flush();
    if (::fsync(fd_) != 0) fail(std::string("fsync: ") + std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      fail(std::string("close: ") + std::strerror(err));
    }
    if (::rename(temp_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      fail(std::string("rename from ") + temp_.string() + ": " + std::strerror(err));
    }
    committed_ = true;
    std::filesystem::path dir = path_.parent_path();
    if (dir.empty()) dir = ".";
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {  // best effort: makes the rename itself durable
      ::fsync(dfd);
      ::close(dfd);
    }
  }

  bool committed() const noexcept { return committed_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  const std::filesystem::path& temp_path() const noexcept { return temp_; }

 private:
  static constexpr std::size_t kBufferBytes = std::size_t{1} << 20;

  [[noreturn]] void fail(const std::string& message) {
    const std::int64_t at = offset();
    abandon();
    gsq::detail::throw_io_error(ErrorCode::kOpenFailed, "write failed: " + message, path_.string(),
                                at);
  }
  void abandon() noexcept {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
      ::unlink(temp_.c_str());
    }
    buffer_.clear();
  }
  void flush() {
    if (buffer_.empty()) return;
    std::vector<std::uint8_t> pending;
    pending.swap(buffer_);
    write_all(pending.data(), pending.size());
  }
  void write_all(const std::uint8_t* p, std::size_t n) {
    if (fd_ < 0) fail("write after the writer was closed");
    while (n > 0) {
      const ::ssize_t k = ::write(fd_, p, n);
      if (k < 0) {
        if (errno == EINTR) continue;
        fail(std::strerror(errno));
      }
      if (k == 0) fail("no progress");
      p += k;
      n -= static_cast<std::size_t>(k);
      written_ += k;
    }
  }

  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  bool committed_ = false;
  std::int64_t written_ = 0;
  std::vector<std::uint8_t> buffer_;
};

/// Writes `text` to `path` atomically: one AtomicFileWriter, written and committed.
inline void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
  AtomicFileWriter out(path);
  out.write(text.data(), text.size());
  out.commit();
}

GSQ_NAMESPACE_END
