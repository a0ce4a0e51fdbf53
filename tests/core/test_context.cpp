// gsq::Context: the current context and its scopes, per-context threads, ISA choice,
// GEMM tuning and memory accounting; pool workers run in their caller's context; two
// user threads in two contexts do not see each other.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gsq/core/context.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"

namespace {
using gsq::MemoryCategory;

std::int64_t bytes_of(const gsq::MemoryUsage& u, MemoryCategory c) { return u.current_of(c); }
}  // namespace

TEST_SUITE("core") {
  TEST_CASE("context: the default is current until a scope installs another") {
    gsq::Context& d = gsq::default_context();
    CHECK(&gsq::current_context() == &d);
    gsq::Context a(1), b(2);
    {
      gsq::ContextScope sa(a);
      CHECK(&gsq::current_context() == &a);
      {
        gsq::ContextScope sb(b);
        CHECK(&gsq::current_context() == &b);
        CHECK(gsq::num_threads() == 2);
      }
      CHECK(&gsq::current_context() == &a);
      CHECK(gsq::num_threads() == 1);
    }
    CHECK(&gsq::current_context() == &d);
    // Another thread starts in the default context whatever this one installed.
    gsq::ContextScope sa(a);
    gsq::Context* seen = nullptr;
    std::thread([&] { seen = &gsq::current_context(); }).join();
    CHECK(seen == &d);
  }

  TEST_CASE("context: thread counts are per context") {
    gsq::Context a(3);
    CHECK(a.num_threads() == 3);
    a.set_num_threads(0);
    CHECK(a.num_threads() == gsq::detail::default_thread_count());
    CHECK(a.num_threads() >= 1);
    CHECK_THROWS_AS(a.set_num_threads(-2), gsq::ConfigError);
    {
      gsq::ContextScope s(a);
      gsq::set_num_threads(2);
    }
    CHECK(a.num_threads() == 2);
    CHECK(gsq::default_context().num_threads() == gsq::detail::default_thread_count());
  }

  TEST_CASE("context: pool workers run in the caller's context") {
    gsq::Context a(3);
    gsq::ContextScope s(a);
    std::mutex m;
    std::set<gsq::Context*> contexts;
    std::set<std::thread::id> threads;
    for (int rep = 0; rep < 20; ++rep)
      gsq::parallel_for(64, [&](std::int64_t) {
        std::lock_guard<std::mutex> lock(m);
        contexts.insert(&gsq::current_context());
        threads.insert(std::this_thread::get_id());
      });
    CHECK(contexts.size() == 1);
    CHECK(contexts.count(&a) == 1);
    MESSAGE("threads that ran tasks: " << threads.size());
  }

  TEST_CASE("context: memory is charged to the context current at allocation") {
    const gsq::MemoryUsage process0 = gsq::process_memory_usage();
    const gsq::MemoryUsage default0 = gsq::default_context().memory_usage();
    gsq::Tensor<float> kept;
    {
      gsq::Context a(1), b(1);
      {
        gsq::ContextScope s(a);
        gsq::Tensor<float> x({1000}, MemoryCategory::kWeights);
        CHECK(bytes_of(a.memory_usage(), MemoryCategory::kWeights) == 4000);
        CHECK(bytes_of(gsq::memory_usage(), MemoryCategory::kWeights) == 4000);
        kept = gsq::Tensor<float>({250}, MemoryCategory::kGradients);
      }
      {
        gsq::ContextScope s(b);
        gsq::Tensor<float> y({10}, MemoryCategory::kWeights);
        CHECK(bytes_of(b.memory_usage(), MemoryCategory::kWeights) == 40);
        CHECK(b.memory_usage().total_peak == 40);
        // Freed in b's scope, a buffer of a is still credited to a.
        gsq::Tensor<float> moved = std::move(kept);
        CHECK(bytes_of(a.memory_usage(), MemoryCategory::kGradients) == 1000);
        CHECK(bytes_of(b.memory_usage(), MemoryCategory::kGradients) == 0);
        kept = std::move(moved);
      }
      CHECK(a.memory_usage().total_current == 1000);
      CHECK(a.memory_usage().total_peak == 5000);
      a.reset_memory_peaks();
      CHECK(a.memory_usage().total_peak == 1000);
      CHECK(b.memory_usage().total_current == 0);
      // The default context saw none of it; the process saw all of it.
      CHECK(gsq::default_context().memory_usage().total_current == default0.total_current);
      CHECK(gsq::process_memory_usage().total_current == process0.total_current + 1000);
    }
    // `kept` outlived its context: its account lives on until it is freed.
    CHECK(kept.numel() == 250);
    kept = gsq::Tensor<float>();
    CHECK(gsq::process_memory_usage().total_current == process0.total_current);
  }

  TEST_CASE("context: scratch of pool workers is charged to the pool's context") {
    gsq::Context a(2);
    {
      gsq::ContextScope s(a);
      // Each task allocates a little on whatever thread runs it, then frees it.
      std::atomic<int> ran{0};
      gsq::parallel_for(8, [&](std::int64_t) {
        gsq::Tensor<float> t({256}, MemoryCategory::kScratch);
        ran++;
      });
      CHECK(ran.load() == 8);
    }
    CHECK(a.memory_usage().peak_of(MemoryCategory::kScratch) >= 1024);
    CHECK(a.memory_usage().current_of(MemoryCategory::kScratch) == 0);
  }

  TEST_CASE("context: the ISA choice is per context") {
    const gsq::Isa before = gsq::selected_isa();
    gsq::Context a(2);
    {
      gsq::ScopedIsa scalar(a, gsq::Isa::kReference);
      CHECK(gsq::selected_isa() == before);  // the current (default) context is untouched
      gsq::ContextScope s(a);
      CHECK(gsq::selected_isa() == gsq::Isa::kReference);
      // ... and so do the pool's workers inside a region of a.
      std::atomic<int> other{0};
      gsq::parallel_for(16, [&](std::int64_t) {
        if (gsq::selected_isa() != gsq::Isa::kReference) other++;
      });
      CHECK(other.load() == 0);
    }
    gsq::ContextScope s(a);
    CHECK(gsq::selected_isa() == before);
  }

  TEST_CASE("context: GEMM tuning is per context") {
    gsq::Context a(1);
    a.gemm_tuning().block_depth_bytes.store(64);
    CHECK(gsq::current_context().gemm_tuning().block_depth_bytes.load() == 512);
    gsq::ContextScope s(a);
    CHECK(gsq::current_context().gemm_tuning().block_depth_bytes.load() == 64);
  }

  TEST_CASE("context: two user threads in two contexts run loops at once") {
    // Each thread fills its own vector through its own context's pool, many times; the
    // sums are exact and each context saw only its own allocations.
    gsq::Context a(2), b(2);
    auto work = [](gsq::Context& c, std::vector<std::int64_t>& out, std::int64_t bytes_each) {
      gsq::ContextScope s(c);
      for (int rep = 0; rep < 100; ++rep) {
        gsq::Tensor<std::int64_t> t({bytes_each / 8}, MemoryCategory::kActivations);
        gsq::parallel_for(static_cast<std::int64_t>(out.size()), [&](std::int64_t i) {
          out[static_cast<std::size_t>(i)] += i;
        });
      }
    };
    std::vector<std::int64_t> va(1000, 0), vb(777, 0);
    std::thread ta([&] { work(a, va, 800); });
    std::thread tb([&] { work(b, vb, 8000); });
    ta.join();
    tb.join();
    for (std::size_t i = 0; i < va.size(); ++i) CHECK(va[i] == 100 * static_cast<std::int64_t>(i));
    for (std::size_t i = 0; i < vb.size(); ++i) CHECK(vb[i] == 100 * static_cast<std::int64_t>(i));
    CHECK(a.memory_usage().peak_of(MemoryCategory::kActivations) == 800);
    CHECK(b.memory_usage().peak_of(MemoryCategory::kActivations) == 8000);
  }

  TEST_CASE("context: destroying a context stops its workers and credits their scratch") {
    const std::int64_t process0 = gsq::process_memory_usage().total_current;
    {
      gsq::Context a(3);
      gsq::ContextScope s(a);
      // Thread-local buffers on the workers, like the GEMM's workspaces.
      gsq::parallel_for(64, [](std::int64_t) {
        thread_local gsq::Tensor<float> cache;
        if (cache.numel() == 0) cache = gsq::Tensor<float>({64}, MemoryCategory::kScratch);
      });
      CHECK(gsq::detail::ContextAccess::pool(a).workers() == 2);
    }
    // Only this (main) thread's thread_local copy may remain, if it ran a task.
    CHECK(gsq::process_memory_usage().total_current - process0 <= 256);
  }
}
