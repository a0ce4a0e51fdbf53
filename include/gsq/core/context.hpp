// gsq/core/context.hpp — gsq::Context: everything gsq would otherwise keep per process.
//
// DESIGN.md "An explicit context": a context owns the thread pool (and with it the
// thread count and the workers' per-thread scratch), the ISA choice, the GEMM tuning
// and a memory account. Nothing else in gsq is mutable and process-wide, so two models
// in two contexts can train at once on two threads without seeing each other.
//
// Layers do not take a context argument: each thread has a *current* context, the
// default one unless a ContextScope installs another, and gsq's functions read it.
//
//     gsq::Context ctx(2);                 // two threads, its own accounting
//     gsq::ContextScope scope(ctx);        // this thread now works in ctx
//     gsq::Llama model = ...;              // weights charged to ctx
//     gsq::Trainer trainer(model, ...);    // steps run in the model's context
//
// A pool worker runs in its pool's context, so a parallel region inherits the caller's.
// llama.hpp's Llama remembers the context it was built in and installs it on entry to
// forward/backward/generate (so does the Trainer, through its model). The process-wide
// default_context() serves everyone who never names one (set_num_threads(),
// set_isa_mask(), memory_usage() act on the current context).
//
// A context must outlive every ContextScope of it and every call running in it. Buffers
// may outlive it: they are credited to its account, which lives as long as they do.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

#include "gsq/core/accounting.hpp"
#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/thread_pool.hpp"

GSQ_NAMESPACE_BEGIN

/// Blocking knobs of the integer GEMM (gemm/driver.hpp). Tests shrink them to drive
/// every loop order with small shapes; results never depend on them.
struct GemmTuning {
  /// Bytes of k per B block: the block (NR × this) stays in L1 while A tiles stream by.
  std::atomic<std::int64_t> block_depth_bytes{512};
  /// Bytes of packed B a thread may hold at once when its whole share of B is packed up
  /// front (thin K, thin N): then tiles run outermost, C is written row by row and no
  /// k-blocking is needed.
  std::atomic<std::int64_t> resident_bytes{256 << 10};
  /// Float engine (gemm/float_driver.hpp): k steps per packed B block,
  std::atomic<std::int64_t> float_block_steps{256};
  /// packed A bytes per row block,
  std::atomic<std::int64_t> float_a_block_bytes{4 << 20};
  /// and the M·N·K below which a product runs on one thread.
  std::atomic<std::int64_t> float_serial_macs{1 << 21};
};

namespace detail {

/// Threads a context uses unless told otherwise: GSQ_NUM_THREADS if set (read once),
/// else the CPUs this process may run on.
inline int default_thread_count() {
  static const int n = [] {
    if (const char* value = std::getenv("GSQ_NUM_THREADS"); value != nullptr && *value != '\0') {
      char* end = nullptr;
      const long v = std::strtol(value, &end, 10);
      GSQ_CHECK(end != value && *end == '\0' && v >= 1 && v <= 4096, ErrorCode::kBadEnvironment,
                "environment variable GSQ_NUM_THREADS = '" + std::string(value) +
                    "' is not a thread count in 1..4096");
      return static_cast<int>(v);
    }
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return n;
}

struct ContextAccess;

}  // namespace detail

class Context;
namespace detail {
inline Context*& current_context_slot() noexcept {
  thread_local Context* current = nullptr;
  return current;
}
}  // namespace detail

class Context {
 public:
  /// A context running `threads` threads (the caller and threads − 1 workers, started
  /// on first use); 0 = the default (GSQ_NUM_THREADS, else every CPU we may use).
  explicit Context(int threads = 0)
      : account_(detail::MemoryAccount::create()),
        pool_([this] { detail::current_context_slot() = this; }) {
    set_num_threads(threads);
  }
  ~Context() = default;  // pool_ joins its workers (their scratch is credited) before account_ goes
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  /// Threads this context's parallel loops use; 0 restores the default.
  void set_num_threads(int n) {
    GSQ_CHECK(n >= 0, ErrorCode::kInvalidArgument,
              "set_num_threads: thread count must be >= 0, got " + std::to_string(n));
    threads_.store(n, std::memory_order_relaxed);
  }
  int num_threads() const {
    const int n = threads_.load(std::memory_order_relaxed);
    return n > 0 ? n : detail::default_thread_count();
  }

  /// Current and peak bytes of the buffers allocated in this context.
  MemoryUsage memory_usage() const noexcept { return account_.get()->counters().usage(); }
  /// Starts a new measurement window of this context: peaks become the current values.
  void reset_memory_peaks() noexcept { account_.get()->counters().reset_peaks(); }

  GemmTuning& gemm_tuning() noexcept { return tuning_; }

 private:
  friend struct detail::ContextAccess;

  /// Holds one reference to the account for the context's lifetime.
  class AccountRef {
   public:
    explicit AccountRef(detail::MemoryAccount* a) noexcept : account_(a) {}
    ~AccountRef() { account_->release(); }
    AccountRef(const AccountRef&) = delete;
    AccountRef& operator=(const AccountRef&) = delete;
    detail::MemoryAccount* get() const noexcept { return account_; }

   private:
    detail::MemoryAccount* account_;
  };

  AccountRef account_;  // declared before pool_: destroyed after the workers exit
  std::atomic<int> threads_{0};
  std::atomic<unsigned> isa_mask_{0};  // the program's ISA choice, 0 = automatic (isa.hpp)
  GemmTuning tuning_;
  detail::ThreadPool pool_;
};

namespace detail {
/// gsq's internal view of a context.
struct ContextAccess {
  static MemoryAccount& account(Context& c) noexcept { return *c.account_.get(); }
  static ThreadPool& pool(Context& c) noexcept { return c.pool_; }
  static std::atomic<unsigned>& isa_mask(Context& c) noexcept { return c.isa_mask_; }
};
}  // namespace detail

/// The process-wide context of everyone who never names one. Never destroyed (its
/// workers sleep until the process exits).
inline Context& default_context() {
  static Context* const context = new Context();
  return *context;
}

/// This thread's current context: the innermost ContextScope's, else the default.
inline Context& current_context() {
  Context* c = detail::current_context_slot();
  return c != nullptr ? *c : default_context();
}

/// Makes `context` this thread's current context until the scope ends (then the
/// previous one is current again).
class ContextScope {
 public:
  explicit ContextScope(Context& context) noexcept : previous_(detail::current_context_slot()) {
    detail::current_context_slot() = &context;
  }
  ~ContextScope() { detail::current_context_slot() = previous_; }
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  Context* previous_;
};

GSQ_NAMESPACE_END
