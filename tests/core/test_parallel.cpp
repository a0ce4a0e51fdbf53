#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gsq/core/context.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"

namespace {
/// Restores the default thread count of the current context on scope exit.
struct ThreadsGuard {
  explicit ThreadsGuard(int n) { gsq::set_num_threads(n); }
  ~ThreadsGuard() { gsq::set_num_threads(0); }
};
}  // namespace

TEST_SUITE("core") {
  TEST_CASE("parallel: every index runs exactly once for any thread count") {
    for (int threads : {1, 2, 3, 8}) {
      ThreadsGuard guard(threads);
      for (std::int64_t n : {0, 1, 7, 64, 1001}) {
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
        gsq::parallel_for(n, [&](std::int64_t i) { hits[static_cast<std::size_t>(i)]++; }, 5);
        for (auto& h : hits) CHECK(h.load() == 1);
      }
    }
  }

  TEST_CASE("parallel: ranges start at multiples of the grain and cover the range once") {
    for (int threads : {1, 2, 3}) {
      ThreadsGuard guard(threads);
      for (std::int64_t n : {1, 15, 16, 17, 100, 1009}) {
        std::mutex m;
        std::vector<std::pair<std::int64_t, std::int64_t>> ranges;
        gsq::parallel_for_chunks(n, 16, [&](std::int64_t b, std::int64_t e) {
          std::lock_guard<std::mutex> lock(m);
          ranges.emplace_back(b, e);
        });
        std::sort(ranges.begin(), ranges.end());
        std::int64_t next = 0;
        for (auto [b, e] : ranges) {
          CHECK(b == next);
          CHECK(b % 16 == 0);
          CHECK((e - b >= 16 || e == n));
          next = e;
        }
        CHECK(next == n);
      }
    }
  }

  TEST_CASE("parallel: work really spreads over the pool's threads") {
    ThreadsGuard guard(2);
    std::mutex m;
    std::set<std::thread::id> ids;
    // Each index waits until a second thread has shown up (or a generous timeout), so
    // the caller cannot finish every task before a worker wakes.
    std::atomic<int> seen{0};
    gsq::parallel_for(8, [&](std::int64_t) {
      {
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
        seen = static_cast<int>(ids.size());
      }
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (seen.load() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    });
    CHECK(ids.size() == 2);
    CHECK(gsq::detail::ContextAccess::pool(gsq::current_context()).workers() >= 1);
  }

  TEST_CASE("parallel: an exception inside a chunk reaches the caller") {
    for (int threads : {1, 2, 3}) {
      ThreadsGuard guard(threads);
      CHECK_THROWS_AS(gsq::parallel_for(100, [](std::int64_t i) {
                        if (i == 77) throw std::runtime_error("index 77");
                      }),
                      std::runtime_error);
      // The pool is usable again afterwards.
      std::atomic<std::int64_t> sum{0};
      gsq::parallel_for(100, [&](std::int64_t i) { sum += i; });
      CHECK(sum.load() == 4950);
    }
    CHECK_THROWS_AS(gsq::set_num_threads(-1), gsq::ConfigError);
  }

  TEST_CASE("parallel: nested loops run inline and see one thread") {
    ThreadsGuard guard(2);
    std::atomic<int> inner_threads_max{0};
    std::atomic<int> total{0};
    gsq::parallel_for(6, [&](std::int64_t) {
      int n = gsq::num_threads();
      int seen = inner_threads_max.load();
      while (n > seen && !inner_threads_max.compare_exchange_weak(seen, n)) {
      }
      const std::thread::id me = std::this_thread::get_id();
      gsq::parallel_for(10, [&](std::int64_t) {
        CHECK(std::this_thread::get_id() == me);
        total++;
      });
    });
    CHECK(inner_threads_max.load() == 1);
    CHECK(total.load() == 60);
    CHECK(gsq::num_threads() == 2);
  }

  TEST_CASE("parallel: a loop declared small runs on the calling thread") {
    ThreadsGuard guard(2);
    const std::thread::id me = std::this_thread::get_id();
    int calls = 0;  // plain int: a second thread here would be a data race (TSan)
    gsq::parallel_for_chunks(
        64, 1,
        [&](std::int64_t b, std::int64_t e) {
          CHECK(std::this_thread::get_id() == me);
          CHECK(b == 0);
          CHECK(e == 64);
          ++calls;
        },
        gsq::WorkSize{.ops_per_index = 100});
    CHECK(calls == 1);
    // The same loop with enough work per index is split.
    std::atomic<int> split_calls{0};
    gsq::parallel_for_chunks(64, 1, [&](std::int64_t, std::int64_t) { split_calls++; },
                             gsq::WorkSize{.ops_per_index = gsq::kMinParallelOps});
    CHECK(split_calls.load() > 1);
  }

  TEST_CASE("parallel: run_on_each_thread reaches every worker and the caller") {
    ThreadsGuard guard(3);
    gsq::parallel_for(64, [](std::int64_t) {});  // starts the workers
    const int workers = gsq::detail::ContextAccess::pool(gsq::current_context()).workers();
    CHECK(workers >= 2);
    std::mutex m;
    std::set<std::thread::id> ids;
    std::atomic<int> calls{0};
    gsq::run_on_each_thread([&] {
      std::lock_guard<std::mutex> lock(m);
      ids.insert(std::this_thread::get_id());
      calls++;
    });
    CHECK(calls.load() == workers + 1);
    CHECK(static_cast<int>(ids.size()) == workers + 1);
    CHECK(ids.count(std::this_thread::get_id()) == 1);
    CHECK_THROWS_AS(gsq::run_on_each_thread([] { throw std::runtime_error("each"); }),
                    std::runtime_error);
  }

  TEST_CASE("parallel: two user threads share one context's pool safely") {
    // Whoever finds the pool busy runs its loop itself; both get every index once.
    ThreadsGuard guard(2);
    auto run = [](std::vector<int>& out) {
      for (int rep = 0; rep < 50; ++rep)
        gsq::parallel_for(static_cast<std::int64_t>(out.size()),
                          [&](std::int64_t i) { out[static_cast<std::size_t>(i)] += 1; });
    };
    std::vector<int> a(257, 0), b(131, 0);
    std::thread t([&] { run(b); });
    run(a);
    t.join();
    for (int v : a) CHECK(v == 50);
    for (int v : b) CHECK(v == 50);
  }

  TEST_CASE("parallel: idle workers sleep instead of spinning") {
    // CPU time of the process over a quiet 200 ms after a burst of loops: spinning
    // workers would burn ~200 ms per worker; sleeping ones almost nothing.
    ThreadsGuard guard(3);
    for (int rep = 0; rep < 200; ++rep) gsq::parallel_for(64, [](std::int64_t) {});
    auto cpu = [] {
      timespec ts{};
      clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
      return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    };
    const double before = cpu();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const double used = cpu() - before;
    MESSAGE("CPU seconds used by the process while idle for 0.2 s: " << used);
    CHECK(used < 0.05);
  }
}
