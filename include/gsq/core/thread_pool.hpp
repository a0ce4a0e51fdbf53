// gsq/core/thread_pool.hpp — a persistent fork-join pool whose idle workers sleep.
//
// Why not OpenMP: its workers spin at the end of every parallel region, and a training
// step opens hundreds of small ones; with one busy process on a 2-core machine that cost
// 38× (issue 12). Here an idle worker spins only a few microseconds (with `pause`), then
// sleeps on a futex (std::atomic::wait), so a neighbour gets the core back.
//
// One job at a time: `run(tasks, ...)` calls fn(closure, t) for every t in [0, tasks).
// Tasks are claimed one by one from a shared counter by the caller and by whichever
// workers are awake, so a worker that is descheduled or slow to wake never holds up the
// rest: the caller waits only for tasks some thread has actually started. Which thread
// runs a task never matters to gsq's results (see parallel.hpp).
//
// The claim counter packs [job number : 24 | task count : 20 | next task : 20] into one
// 64-bit word. A worker claims with a compare-exchange on the whole word, so a claim is
// always a claim on the job that is current at that instant, and the job's function and
// closure, written before the word was published, stay valid until every claimed task
// has finished (the caller waits for that before it publishes the next job).
//
// Workers are started on demand (the first job that wants them) and live until the
// pool is destroyed, so their thread_local state (GEMM workspaces, layer scratch)
// persists between jobs; `broadcast` runs a function once on each of them to reach it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN
namespace detail {

/// A hint to the CPU that this is a spin-wait loop (saves power, yields the core's
/// resources to its hyper-thread sibling).
inline void spin_pause() noexcept {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_ia32_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Spins until done() or `limit` has passed; returns done()'s last value.
template <class Done>
bool spin_until(Done&& done, std::chrono::nanoseconds limit) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 1;; ++i) {
    if (done()) return true;
    spin_pause();
    if (i % 32 == 0 && std::chrono::steady_clock::now() - start > limit) return done();
  }
}

/// Whether this thread is inside a task of some pool (or is a caller running a job):
/// nested parallel loops then run inline.
inline bool& in_parallel_region() noexcept {
  thread_local bool inside = false;
  return inside;
}

/// Sets in_parallel_region() for a scope.
class RegionFlag {
 public:
  RegionFlag() noexcept : previous_(in_parallel_region()) { in_parallel_region() = true; }
  ~RegionFlag() { in_parallel_region() = previous_; }
  RegionFlag(const RegionFlag&) = delete;
  RegionFlag& operator=(const RegionFlag&) = delete;

 private:
  bool previous_;
};

class ThreadPool {
 public:
  using TaskFn = void (*)(void* closure, std::int64_t task);
  using BroadcastFn = void (*)(void* closure);

  /// Largest task count of one job (the width of the counter's fields).
  static constexpr std::int64_t kMaxTasks = (std::int64_t{1} << 20) - 1;
  /// How long an idle thread spins before it sleeps. Long enough to bridge the serial
  /// gap between two regions of one layer, short enough not to matter to a neighbour.
  static constexpr std::chrono::microseconds kSpin{20};

  /// `thread_start` runs first on every worker (it installs the owner's context).
  explicit ThreadPool(std::function<void()> thread_start) : thread_start_(std::move(thread_start)) {}
  ~ThreadPool() {
    stop_.store(true, std::memory_order_release);
    publish();
    for (std::thread& t : threads_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /// Worker threads started so far (the caller of a job is not one of them).
  int workers() const noexcept { return worker_count_.load(std::memory_order_acquire); }

  /// Runs fn(closure, t) for t in [0, tasks) on the calling thread and up to
  /// `threads - 1` workers, and returns when every task has run. Returns false without
  /// running anything when another thread's job holds the pool (the caller then runs
  /// the tasks itself). Tasks must not throw (parallel.hpp catches inside them).
  bool run(std::int64_t tasks, int threads, TaskFn fn, void* closure) {
    std::unique_lock<std::mutex> lock(submit_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    start_workers(threads - 1);
    fn_ = fn;
    closure_ = closure;
    total_ = static_cast<std::uint32_t>(tasks);
    participants_.store(threads - 1, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    job_ = (job_ + 1) & kJobMask;
    claim_.store(job_ << kJobShift | static_cast<std::uint64_t>(tasks) << kTotalShift,
                 std::memory_order_release);
    publish();
    {
      RegionFlag region;
      work();
    }
    wait_for(done_, total_);
    return true;
  }

  /// Runs fn(closure) once on every worker thread started so far (not on the caller),
  /// and returns when all have. Exceptions are carried to the caller (the first one).
  void broadcast(BroadcastFn fn, void* closure) {
    std::lock_guard<std::mutex> lock(submit_);
    const auto n = static_cast<std::uint32_t>(threads_.size());
    if (n == 0) return;
    broadcast_fn_ = fn;
    broadcast_closure_ = closure;
    broadcast_error_ = nullptr;
    broadcast_done_.store(0, std::memory_order_relaxed);
    // An empty job: workers woken for it find nothing to claim.
    job_ = (job_ + 1) & kJobMask;
    claim_.store(job_ << kJobShift, std::memory_order_release);
    broadcast_generation_.fetch_add(1, std::memory_order_release);
    publish();
    wait_for(broadcast_done_, n);
    if (broadcast_error_) std::rethrow_exception(broadcast_error_);
  }

 private:
  static constexpr int kTotalShift = 20;
  static constexpr int kJobShift = 40;
  static constexpr std::uint64_t kFieldMask = (std::uint64_t{1} << 20) - 1;
  static constexpr std::uint64_t kJobMask = (std::uint64_t{1} << 24) - 1;

  /// Wakes the workers for a new job (or to stop).
  void publish() {
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) epoch_.notify_all();
  }

  /// Waits (spin, then sleep) until counter == target. The thread that brings the
  /// counter to its target calls finish() below.
  void wait_for(std::atomic<std::uint32_t>& counter, std::uint32_t target) {
    if (spin_until([&] { return counter.load(std::memory_order_acquire) == target; }, kSpin)) return;
    caller_sleeping_.store(true, std::memory_order_seq_cst);
    for (std::uint32_t seen = counter.load(std::memory_order_seq_cst); seen != target;
         seen = counter.load(std::memory_order_seq_cst))
      counter.wait(seen, std::memory_order_seq_cst);
    caller_sleeping_.store(false, std::memory_order_relaxed);
  }

  void finish(std::atomic<std::uint32_t>& counter, std::uint32_t target) {
    if (counter.fetch_add(1, std::memory_order_seq_cst) + 1 == target &&
        caller_sleeping_.load(std::memory_order_seq_cst))
      counter.notify_all();
  }

  /// Claims and runs tasks of the current job until none are left.
  void work() {
    std::uint64_t word = claim_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t next = word & kFieldMask;
      if (next >= (word >> kTotalShift & kFieldMask)) return;
      if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      // The claimed task keeps this job (fn_, closure_, total_) alive until finish().
      fn_(closure_, static_cast<std::int64_t>(next));
      finish(done_, total_);
      word = claim_.load(std::memory_order_acquire);
    }
  }

  void start_workers(int wanted) {
    while (static_cast<int>(threads_.size()) < wanted) {
      const int index = static_cast<int>(threads_.size());
      const std::uint32_t epoch = epoch_.load(std::memory_order_acquire);
      const std::uint32_t generation = broadcast_generation_.load(std::memory_order_acquire);
      threads_.emplace_back([this, index, epoch, generation] { worker(index, epoch, generation); });
      worker_count_.store(static_cast<int>(threads_.size()), std::memory_order_release);
    }
  }

  void worker(int index, std::uint32_t seen, std::uint32_t generation) {
    if (thread_start_) thread_start_();
    for (;;) {
      if (!spin_until([&] { return epoch_.load(std::memory_order_acquire) != seen; }, kSpin)) {
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        while (epoch_.load(std::memory_order_seq_cst) == seen)
          epoch_.wait(seen, std::memory_order_seq_cst);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      seen = epoch_.load(std::memory_order_acquire);
      if (stop_.load(std::memory_order_acquire)) return;
      const std::uint32_t g = broadcast_generation_.load(std::memory_order_acquire);
      if (g != generation) {
        generation = g;
        try {
          broadcast_fn_(broadcast_closure_);
        } catch (...) {
          std::lock_guard<std::mutex> lock(broadcast_error_mutex_);
          if (!broadcast_error_) broadcast_error_ = std::current_exception();
        }
        finish(broadcast_done_, static_cast<std::uint32_t>(worker_count_.load(std::memory_order_acquire)));
        continue;
      }
      if (index < participants_.load(std::memory_order_relaxed)) {
        RegionFlag region;
        work();
      }
    }
  }

  std::function<void()> thread_start_;
  std::mutex submit_;  // one job at a time; held by the caller for the whole job
  std::vector<std::thread> threads_;
  std::atomic<int> worker_count_{0};
  std::atomic<bool> stop_{false};

  // Waking.
  std::atomic<std::uint32_t> epoch_{0};     // bumped for every job, broadcast and stop
  std::atomic<std::uint32_t> sleepers_{0};  // workers blocked in epoch_.wait
  std::atomic<bool> caller_sleeping_{false};

  // The current job. fn_/closure_/total_ are written only while no task is claimed.
  std::uint64_t job_ = 0;  // under submit_
  std::atomic<std::uint64_t> claim_{0};
  TaskFn fn_ = nullptr;
  void* closure_ = nullptr;
  std::uint32_t total_ = 0;
  std::atomic<int> participants_{0};  // workers [0, this) take part (a hint)
  std::atomic<std::uint32_t> done_{0};

  // The current broadcast.
  std::atomic<std::uint32_t> broadcast_generation_{0};
  BroadcastFn broadcast_fn_ = nullptr;
  void* broadcast_closure_ = nullptr;
  std::atomic<std::uint32_t> broadcast_done_{0};
  std::mutex broadcast_error_mutex_;
  std::exception_ptr broadcast_error_;
};

}  // namespace detail
GSQ_NAMESPACE_END
