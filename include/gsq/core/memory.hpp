// gsq/core/memory.hpp — aligned allocation and memory accounting by category.
//
// Every buffer gsq owns is an AlignedBuffer tagged with what it holds. It is charged to
// the account of the context current when it is allocated (core/context.hpp) and
// credited to that same account when freed, on whatever thread. The accounting keeps
// current and peak bytes per category and in total, so drivers and benchmarks can
// report "peak memory by category" without guessing: per context (memory_usage()) and
// for the whole process (process_memory_usage(), core/accounting.hpp).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <type_traits>
#include <utility>

#include "gsq/core/accounting.hpp"
#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN

/// Current and peak bytes held by gsq buffers of the current context.
inline MemoryUsage memory_usage() { return current_context().memory_usage(); }

/// Starts a new measurement window of the current context: peaks become the current
/// values.
inline void reset_memory_peaks() { current_context().reset_memory_peaks(); }

inline constexpr std::size_t kAlignment = 64;  // one cache line, one zmm register

struct Uninitialized {};
inline constexpr Uninitialized kUninitialized{};

/// An owning, 64-byte-aligned array of trivially copyable T, counted in the accounting.
/// Move-only; zero-filled unless constructed with kUninitialized.
template <class T>
class AlignedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "AlignedBuffer holds plain data only");

 public:
  AlignedBuffer() = default;
  AlignedBuffer(std::int64_t count, MemoryCategory category, Uninitialized)
      : category_(category) {
    allocate(count);
  }
  AlignedBuffer(std::int64_t count, MemoryCategory category) : category_(category) {
    allocate(count);
    if (size_ > 0) std::memset(static_cast<void*>(data_), 0, bytes());
  }
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        category_(other.category_),
        account_(std::exchange(other.account_, nullptr)) {}
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      category_ = other.category_;
      account_ = std::exchange(other.account_, nullptr);
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { release(); }

  /// A deep copy, counted under the same category.
  AlignedBuffer clone() const {
    AlignedBuffer copy(size_, category_, kUninitialized);
    if (size_ > 0) std::memcpy(static_cast<void*>(copy.data_), data_, bytes());
    return copy;
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::int64_t size() const noexcept { return size_; }
  std::int64_t bytes() const noexcept { return size_ * static_cast<std::int64_t>(sizeof(T)); }
  bool empty() const noexcept { return size_ == 0; }
  MemoryCategory category() const noexcept { return category_; }
  T& operator[](std::int64_t i) noexcept {
    GSQ_ASSERT(i >= 0 && i < size_);
    return data_[i];
  }
  const T& operator[](std::int64_t i) const noexcept {
    GSQ_ASSERT(i >= 0 && i < size_);
    return data_[i];
  }
  T* begin() noexcept { return data_; }
  T* end() noexcept { return data_ + size_; }
  const T* begin() const noexcept { return data_; }
  const T* end() const noexcept { return data_ + size_; }

 private:
  void allocate(std::int64_t count) {
    GSQ_CHECK(count >= 0, ErrorCode::kInvalidExtent,
              "AlignedBuffer: negative element count " + std::to_string(count));
    if (count == 0) return;
    const std::size_t raw = static_cast<std::size_t>(count) * sizeof(T);
    const std::size_t rounded = (raw + kAlignment - 1) / kAlignment * kAlignment;
    detail::MemoryAccount& account = detail::ContextAccess::account(current_context());
    data_ = static_cast<T*>(::operator new(rounded, std::align_val_t{kAlignment}));
    size_ = count;
    account_ = &account;
    account_->charge(category_, bytes());
  }
  void release() noexcept {
    if (data_ == nullptr) return;
    std::exchange(account_, nullptr)->credit(category_, bytes());
    ::operator delete(static_cast<void*>(data_), std::align_val_t{kAlignment});
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  std::int64_t size_ = 0;
  MemoryCategory category_ = MemoryCategory::kScratch;
  detail::MemoryAccount* account_ = nullptr;  // charged with this buffer's bytes
};

GSQ_NAMESPACE_END
