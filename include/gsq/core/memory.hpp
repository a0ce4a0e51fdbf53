// gsq/core/memory.hpp — aligned allocation and memory accounting by category.
//
// Every buffer gsq owns is an AlignedBuffer tagged with what it holds. The accounting
// keeps current and peak bytes per category and in total, so drivers and benchmarks can
// report "peak memory by category" without guessing. Counters are process-wide atomics.
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

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN

enum class MemoryCategory : int {
  kWeights = 0,      // frozen and trainable parameters (FP32 masters, NF4, GSE)
  kActivations,      // forward caches kept for backward
  kGradients,        // parameter gradients
  kOptimizerState,   // AdamW moments, momentum
  kScratch,          // workspaces, packed panels, temporaries
};
inline constexpr int kMemoryCategoryCount = 5;

constexpr std::string_view memory_category_name(MemoryCategory c) noexcept {
  constexpr std::string_view names[] = {"weights", "activations", "gradients", "optimizer_state",
                                        "scratch"};
  return names[static_cast<int>(c)];
}

/// A snapshot of the accounting.
struct MemoryUsage {
  std::array<std::int64_t, kMemoryCategoryCount> current{};
  std::array<std::int64_t, kMemoryCategoryCount> peak{};
  std::int64_t total_current = 0;
  std::int64_t total_peak = 0;  // peak of the sum, not the sum of per-category peaks
  std::int64_t current_of(MemoryCategory c) const { return current[static_cast<int>(c)]; }
  std::int64_t peak_of(MemoryCategory c) const { return peak[static_cast<int>(c)]; }
};

namespace detail {

struct MemoryCounters {
  std::array<std::atomic<std::int64_t>, kMemoryCategoryCount> current{};
  std::array<std::atomic<std::int64_t>, kMemoryCategoryCount> peak{};
  std::atomic<std::int64_t> total_current{0};
  std::atomic<std::int64_t> total_peak{0};
};

inline MemoryCounters& memory_counters() noexcept {
  static MemoryCounters counters;
  return counters;
}

inline void raise_peak(std::atomic<std::int64_t>& peak, std::int64_t value) noexcept {
  std::int64_t seen = peak.load(std::memory_order_relaxed);
  while (value > seen && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

inline void memory_add(MemoryCategory c, std::int64_t bytes) noexcept {
  MemoryCounters& m = memory_counters();
  const int i = static_cast<int>(c);
  raise_peak(m.peak[i], m.current[i].fetch_add(bytes, std::memory_order_relaxed) + bytes);
  raise_peak(m.total_peak, m.total_current.fetch_add(bytes, std::memory_order_relaxed) + bytes);
}

inline void memory_sub(MemoryCategory c, std::int64_t bytes) noexcept {
  MemoryCounters& m = memory_counters();
  m.current[static_cast<int>(c)].fetch_sub(bytes, std::memory_order_relaxed);
  m.total_current.fetch_sub(bytes, std::memory_order_relaxed);
}

}  // namespace detail

/// Current and peak bytes held by gsq buffers.
inline MemoryUsage memory_usage() noexcept {
  detail::MemoryCounters& m = detail::memory_counters();
  MemoryUsage u;
  for (int i = 0; i < kMemoryCategoryCount; ++i) {
    u.current[i] = m.current[i].load(std::memory_order_relaxed);
    u.peak[i] = m.peak[i].load(std::memory_order_relaxed);
  }
  u.total_current = m.total_current.load(std::memory_order_relaxed);
  u.total_peak = m.total_peak.load(std::memory_order_relaxed);
  return u;
}

/// Starts a new measurement window: peaks become the current values.
inline void reset_memory_peaks() noexcept {
  detail::MemoryCounters& m = detail::memory_counters();
  for (int i = 0; i < kMemoryCategoryCount; ++i)
    m.peak[i].store(m.current[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  m.total_peak.store(m.total_current.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

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
        category_(other.category_) {}
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      category_ = other.category_;
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
    data_ = static_cast<T*>(::operator new(rounded, std::align_val_t{kAlignment}));
    size_ = count;
    detail::memory_add(category_, bytes());
  }
  void release() noexcept {
    if (data_ == nullptr) return;
    detail::memory_sub(category_, bytes());
    ::operator delete(static_cast<void*>(data_), std::align_val_t{kAlignment});
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  std::int64_t size_ = 0;
  MemoryCategory category_ = MemoryCategory::kScratch;
};

GSQ_NAMESPACE_END
