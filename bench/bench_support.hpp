// bench/bench_support.hpp — what every gsq benchmark binary needs: random inputs and one
// place that sets the thread count (gsq's parallel_for and OpenMP's default together).
#pragma once

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"

namespace gsq_bench {

/// rows × cols of N(0, scale²), reproducible from `seed`.
inline gsq::Tensor<float> random_tensor(std::int64_t rows, std::int64_t cols, std::uint64_t seed, float scale) {
  gsq::Tensor<float> t({rows, cols}, gsq::MemoryCategory::kScratch);
  gsq::CounterRng rng(seed, 0);
  for (auto& v : t) v = rng.next_normal() * scale;
  return t;
}

/// Runs gsq's parallel regions (and any other OpenMP code, e.g. Eigen's) on `threads`.
inline void set_threads(int threads) {
  gsq::set_num_threads(threads);
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
}

}  // namespace gsq_bench
