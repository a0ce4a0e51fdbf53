// bench/bench_support.hpp — what every gsq benchmark binary needs: random inputs and one
// place that sets the thread count.
#pragma once

#include <cstdint>

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

/// Runs gsq's parallel regions on `threads` (0: the default).
inline void set_threads(int threads) { gsq::set_num_threads(threads); }

}  // namespace gsq_bench
