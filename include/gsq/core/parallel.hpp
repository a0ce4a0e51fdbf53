// gsq/core/parallel.hpp — deterministic parallel loops on the current context's pool.
//
// Determinism contract: the work of index i never depends on which thread runs it or on
// how the range is cut. Loops hand out fixed chunks (multiples of the grain); callers
// never reduce across chunks (the GEMM splits over M and N only, never over k), so every
// result is bit-identical for any thread count. Exceptions thrown inside a chunk are
// carried out of the parallel region and rethrown on the calling thread.
//
// The threads are those of the current gsq::Context (core/context.hpp), a persistent
// pool whose idle workers spin a few microseconds and then sleep (core/thread_pool.hpp),
// so a busy neighbour process keeps its core. A loop inside a parallel region, or one
// whose caller says it is small (WorkSize below), runs inline on the calling thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <type_traits>

#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/thread_pool.hpp"

GSQ_NAMESPACE_BEGIN

/// Threads gsq uses for its loops in the current context; 0 restores the default
/// (GSQ_NUM_THREADS, else every CPU this process may run on).
inline void set_num_threads(int n) { current_context().set_num_threads(n); }

/// Threads a gsq loop started now would use (1 inside a parallel region).
inline int num_threads() {
  if (detail::in_parallel_region()) return 1;
  return current_context().num_threads();
}

/// Roughly how much work one index of a loop is, in simple arithmetic operations. A loop
/// whose total is below kMinParallelOps runs on the calling thread: handing it to a
/// sleeping worker would cost more than it saves. 0 = unknown (always split).
struct WorkSize {
  std::int64_t ops_per_index = 0;
};
inline constexpr std::int64_t kMinParallelOps = std::int64_t{1} << 15;

namespace detail {

/// Tasks per thread a loop is cut into: more than one, so that when a thread is
/// descheduled (a busy neighbour) the others take over its share.
inline constexpr std::int64_t kTasksPerThread = 4;

template <class Body>
struct ChunkJob {
  ChunkJob(Body* b, std::int64_t n, std::int64_t g, std::int64_t c, std::int64_t t) noexcept
      : body(b), count(n), grain(g), chunks(c), tasks(t) {}

  Body* body;
  std::int64_t count, grain, chunks, tasks;
  std::atomic<bool> failed{false};
  std::exception_ptr error;

  // Task t covers chunks [t·chunks/tasks, (t+1)·chunks/tasks): whole chunks, so the
  // boundaries are multiples of the grain whatever the thread count.
  static void run(void* closure, std::int64_t t) {
    auto* job = static_cast<ChunkJob*>(closure);
    if (job->failed.load(std::memory_order_relaxed)) return;
    const std::int64_t c0 = t * job->chunks / job->tasks, c1 = (t + 1) * job->chunks / job->tasks;
    try {
      (*job->body)(c0 * job->grain, std::min(c1 * job->grain, job->count));
    } catch (...) {
      if (!job->failed.exchange(true, std::memory_order_acq_rel)) job->error = std::current_exception();
    }
  }
};

inline bool is_small(std::int64_t count, WorkSize work) noexcept {
  return work.ops_per_index > 0 && work.ops_per_index < kMinParallelOps &&
         count < kMinParallelOps && count * work.ops_per_index < kMinParallelOps;
}

}  // namespace detail

/// Calls body(begin, end) on consecutive ranges covering [0, count), each starting at a
/// multiple of `grain` and at least `grain` long (the last may be shorter), spread over
/// the current context's threads. `work` may say the loop is too small to split.
template <class Body>
void parallel_for_chunks(std::int64_t count, std::int64_t grain, Body&& body, WorkSize work = {}) {
  if (count <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = (count + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<std::int64_t>(num_threads(), chunks));
  if (threads <= 1 || detail::is_small(count, work)) {
    body(std::int64_t{0}, count);
    return;
  }
  using BodyT = std::remove_reference_t<Body>;
  detail::ChunkJob<BodyT> job(std::addressof(body), count, grain, chunks,
                              std::min<std::int64_t>(chunks, threads * detail::kTasksPerThread));
  detail::ThreadPool& pool = detail::ContextAccess::pool(current_context());
  if (!pool.run(job.tasks, threads, &detail::ChunkJob<BodyT>::run, &job)) {
    // Another thread's loop holds this context's pool: run ours here.
    body(std::int64_t{0}, count);
    return;
  }
  if (job.error) std::rethrow_exception(job.error);
}

/// Calls body() once on every thread of the current context's pool that exists and on
/// the calling thread: for per-thread state such as workspaces. Not for work that must
/// be split.
template <class Body>
void run_on_each_thread(Body&& body) {
  if (!detail::in_parallel_region()) {
    using BodyT = std::remove_reference_t<Body>;
    detail::ContextAccess::pool(current_context())
        .broadcast([](void* b) { (*static_cast<BodyT*>(b))(); },
                   const_cast<void*>(static_cast<const void*>(std::addressof(body))));
  }
  body();
}

/// Calls body(i) for every i in [0, count), in parallel chunks of `grain` indices.
template <class Body>
void parallel_for(std::int64_t count, Body&& body, std::int64_t grain = 1, WorkSize work = {}) {
  parallel_for_chunks(
      count, grain,
      [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) body(i);
      },
      work);
}

GSQ_NAMESPACE_END
