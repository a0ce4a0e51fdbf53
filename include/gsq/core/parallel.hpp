// gsq/core/parallel.hpp — deterministic parallel loops over OpenMP (serial without it).
//
// Determinism contract: the work of index i never depends on which thread runs it or on
// how the range is cut. Loops hand out fixed chunks with a static schedule; callers
// never reduce across chunks (the GEMM splits over M and N only, never over k), so every
// result is bit-identical for any thread count. Exceptions thrown inside a chunk are
// carried out of the parallel region and rethrown on the calling thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

GSQ_NAMESPACE_BEGIN

namespace detail {
inline std::atomic<int>& requested_threads() noexcept {
  static std::atomic<int> n{0};  // 0 = OpenMP's default
  return n;
}
}  // namespace detail

/// Threads gsq uses for its loops; 0 restores the default (OMP_NUM_THREADS or all cores).
inline void set_num_threads(int n) {
  GSQ_CHECK(n >= 0, ErrorCode::kInvalidArgument,
            "set_num_threads: thread count must be >= 0, got " + std::to_string(n));
  detail::requested_threads().store(n, std::memory_order_relaxed);
}

/// Threads a gsq loop started now would use (1 without OpenMP or inside a parallel region).
inline int num_threads() noexcept {
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
  const int n = detail::requested_threads().load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
#else
  return 1;
#endif
}

/// Calls body(begin, end) on consecutive chunks of [0, count), each at least `grain`
/// long (the last may be shorter), spread over threads with a static schedule.
template <class Body>
void parallel_for_chunks(std::int64_t count, std::int64_t grain, Body&& body) {
  if (count <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = (count + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<std::int64_t>(num_threads(), chunks));
  if (threads <= 1) {
    body(std::int64_t{0}, count);
    return;
  }
#if defined(_OPENMP)
  std::exception_ptr error;
  std::once_flag error_once;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t c = 0; c < chunks; ++c) {
    try {
      const std::int64_t begin = c * grain;
      body(begin, std::min(begin + grain, count));
    } catch (...) {
      std::call_once(error_once, [&] { error = std::current_exception(); });
    }
  }
  if (error) std::rethrow_exception(error);
#else
  body(std::int64_t{0}, count);
#endif
}

/// Calls body() once on every thread of gsq's pool (at least all cores, so a thread that
/// an earlier, wider loop used is reached too) and on the calling thread: for per-thread
/// state such as workspaces. Not for work that must be split.
template <class Body>
void run_on_each_thread(Body&& body) {
#if defined(_OPENMP)
  const int threads = std::max(num_threads(), omp_get_num_procs());
  std::exception_ptr error;
  std::once_flag error_once;
#pragma omp parallel num_threads(threads)
  {
    try {
      body();
    } catch (...) {
      std::call_once(error_once, [&] { error = std::current_exception(); });
    }
  }
  if (error) std::rethrow_exception(error);
#else
  body();
#endif
}

/// Calls body(i) for every i in [0, count), in parallel chunks of `grain` indices.
template <class Body>
void parallel_for(std::int64_t count, Body&& body, std::int64_t grain = 1) {
  parallel_for_chunks(count, grain, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) body(i);
  });
}

GSQ_NAMESPACE_END
