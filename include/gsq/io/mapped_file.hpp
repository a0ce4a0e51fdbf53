// gsq/io/mapped_file.hpp — the read-only bytes of a file, memory-mapped, or of a buffer.
//
// Every reader in gsq/io parses from a `MappedFile`: a file is mapped with mmap (so a
// multi-GB checkpoint is paged in on demand and never copied whole), while fuzzers and
// tests hand in bytes from memory under a name of their choice. Either way parsers see
// one `std::span<const std::uint8_t>` plus the name they put into IoError messages.
// POSIX (mmap, open, fstat): gsq's file layer targets Linux and other Unix systems.
//
// A mapped file must not be truncated by another process while it is mapped: the kernel
// would deliver SIGBUS on access, which no bounds check can prevent.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN

class MappedFile {
 public:
  MappedFile() = default;

  /// Maps `path` read-only. Throws IoError(kOpenFailed) if it cannot be opened or is not
  /// a regular file.
  static MappedFile open(const std::filesystem::path& path) {
    const std::string name = path.string();
    MappedFile f;
    f.name_ = name;
    const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) detail::throw_io_error(ErrorCode::kOpenFailed, std::strerror(errno), name, -1);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      detail::throw_io_error(ErrorCode::kOpenFailed, std::strerror(err), name, -1);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      detail::throw_io_error(ErrorCode::kOpenFailed, "not a regular file", name, -1);
    }
    f.size_ = static_cast<std::size_t>(st.st_size);
    if (f.size_ > 0) {
      void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        detail::throw_io_error(ErrorCode::kOpenFailed, std::string("mmap: ") + std::strerror(err),
                               name, -1);
      }
      f.map_ = p;
      f.data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);  // the mapping keeps the file alive
    return f;
  }

  /// Bytes held in memory, reported as `name` in errors (fuzzers, tests, embedded data).
  static MappedFile from_bytes(std::vector<std::uint8_t> bytes, std::string name) {
    MappedFile f;
    f.name_ = std::move(name);
    f.owned_ = std::move(bytes);
    f.data_ = f.owned_.data();
    f.size_ = f.owned_.size();
    return f;
  }
  static MappedFile from_bytes(std::span<const std::uint8_t> bytes, std::string name) {
    return from_bytes(std::vector<std::uint8_t>(bytes.begin(), bytes.end()), std::move(name));
  }

  MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      name_ = std::move(other.name_);
      owned_ = std::move(other.owned_);
      map_ = std::exchange(other.map_, nullptr);
      size_ = std::exchange(other.size_, 0);
      data_ = map_ != nullptr ? static_cast<const std::uint8_t*>(map_) : owned_.data();
      other.data_ = nullptr;
    }
    return *this;
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() { release(); }

  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<const std::uint8_t> bytes() const noexcept { return {data_, size_}; }
  /// The path (or chosen name) that error messages report.
  const std::string& name() const noexcept { return name_; }

  /// Drops the resident pages of `range` (whole pages inside it only): they come back
  /// from the file when touched again. A no-op for bytes held in memory.
  void drop_pages(std::span<const std::uint8_t> range) const noexcept {
    if (map_ == nullptr || range.empty()) return;
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<std::uintptr_t>(range.data());
    const std::uintptr_t first = (begin + page - 1) / page * page;
    const std::uintptr_t last = (begin + range.size()) / page * page;
    if (last > first) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  }

 private:
  void release() noexcept {
    if (map_ != nullptr) ::munmap(map_, size_);
    map_ = nullptr;
    data_ = nullptr;
    size_ = 0;
    owned_.clear();
  }

  std::string name_;
  std::vector<std::uint8_t> owned_;
  void* map_ = nullptr;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

GSQ_NAMESPACE_END
