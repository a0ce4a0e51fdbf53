// gsq/core/accounting.hpp — memory accounts: current and peak bytes by category.
//
// Every gsq buffer is charged to one account when it is allocated and credited to the
// same account when it is freed, wherever that happens. Each gsq::Context owns an
// account (so two models in two contexts are measured apart); every charge also goes to
// one process-wide account. An account lives while its context or any buffer charged to
// it does (reference counted), so a buffer may outlive the context that allocated it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

#include "gsq/core/config.hpp"

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

/// A snapshot of an account.
struct MemoryUsage {
  std::array<std::int64_t, kMemoryCategoryCount> current{};
  std::array<std::int64_t, kMemoryCategoryCount> peak{};
  std::int64_t total_current = 0;
  std::int64_t total_peak = 0;  // peak of the sum, not the sum of per-category peaks
  std::int64_t current_of(MemoryCategory c) const { return current[static_cast<int>(c)]; }
  std::int64_t peak_of(MemoryCategory c) const { return peak[static_cast<int>(c)]; }
};

namespace detail {

inline void raise_peak(std::atomic<std::int64_t>& peak, std::int64_t value) noexcept {
  std::int64_t seen = peak.load(std::memory_order_relaxed);
  while (value > seen && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
  }
}

/// Counters of one account.
class MemoryCounters {
 public:
  void add(MemoryCategory c, std::int64_t bytes) noexcept {
    const int i = static_cast<int>(c);
    raise_peak(peak_[i], current_[i].fetch_add(bytes, std::memory_order_relaxed) + bytes);
    raise_peak(total_peak_, total_current_.fetch_add(bytes, std::memory_order_relaxed) + bytes);
  }
  void sub(MemoryCategory c, std::int64_t bytes) noexcept {
    current_[static_cast<int>(c)].fetch_sub(bytes, std::memory_order_relaxed);
    total_current_.fetch_sub(bytes, std::memory_order_relaxed);
  }
  MemoryUsage usage() const noexcept {
    MemoryUsage u;
    for (int i = 0; i < kMemoryCategoryCount; ++i) {
      u.current[i] = current_[i].load(std::memory_order_relaxed);
      u.peak[i] = peak_[i].load(std::memory_order_relaxed);
    }
    u.total_current = total_current_.load(std::memory_order_relaxed);
    u.total_peak = total_peak_.load(std::memory_order_relaxed);
    return u;
  }
  /// Starts a new measurement window: peaks become the current values.
  void reset_peaks() noexcept {
    for (int i = 0; i < kMemoryCategoryCount; ++i)
      peak_[i].store(current_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
    total_peak_.store(total_current_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<std::int64_t>, kMemoryCategoryCount> current_{};
  std::array<std::atomic<std::int64_t>, kMemoryCategoryCount> peak_{};
  std::atomic<std::int64_t> total_current_{0};
  std::atomic<std::int64_t> total_peak_{0};
};

/// The process-wide account: every charge of every context.
inline MemoryCounters& process_counters() noexcept {
  static MemoryCounters counters;
  return counters;
}

/// A context's account. Reference counted: one reference for the owner, one per live
/// buffer charged to it; freed with the last.
class MemoryAccount {
 public:
  /// A new account held once (by its creator).
  static MemoryAccount* create() { return new MemoryAccount(); }

  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  /// Charges `bytes` of category c (and retains the account for the buffer).
  void charge(MemoryCategory c, std::int64_t bytes) noexcept {
    retain();
    counters_.add(c, bytes);
    process_counters().add(c, bytes);
  }
  /// Credits what charge() took (and releases the buffer's reference).
  void credit(MemoryCategory c, std::int64_t bytes) noexcept {
    counters_.sub(c, bytes);
    process_counters().sub(c, bytes);
    release();
  }

  MemoryCounters& counters() noexcept { return counters_; }
  const MemoryCounters& counters() const noexcept { return counters_; }

 private:
  MemoryAccount() = default;
  std::atomic<std::int64_t> refs_{1};
  MemoryCounters counters_;
};

}  // namespace detail

/// Current and peak bytes held by gsq buffers of every context in the process.
inline MemoryUsage process_memory_usage() noexcept { return detail::process_counters().usage(); }

/// Starts a new measurement window of the process-wide account.
inline void reset_process_memory_peaks() noexcept { detail::process_counters().reset_peaks(); }

GSQ_NAMESPACE_END
