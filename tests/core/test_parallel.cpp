#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"

TEST_SUITE("core") {
  TEST_CASE("parallel: every index runs exactly once for any thread count") {
    for (int threads : {1, 2, 3}) {
      gsq::set_num_threads(threads);
      for (std::int64_t n : {0, 1, 7, 64, 1001}) {
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
        gsq::parallel_for(n, [&](std::int64_t i) { hits[static_cast<std::size_t>(i)]++; }, 5);
        for (auto& h : hits) CHECK(h.load() == 1);
      }
    }
    gsq::set_num_threads(0);
  }

  TEST_CASE("parallel: chunks respect the grain") {
    gsq::set_num_threads(2);
    std::atomic<int> bad{0};
    gsq::parallel_for_chunks(100, 16, [&](std::int64_t b, std::int64_t e) {
      if (b % 16 != 0 || (e - b != 16 && e != 100)) bad++;
    });
    CHECK(bad.load() == 0);
    gsq::set_num_threads(0);
  }

  TEST_CASE("parallel: an exception inside a chunk reaches the caller") {
    gsq::set_num_threads(2);
    CHECK_THROWS_AS(gsq::parallel_for(100, [](std::int64_t i) {
                      if (i == 77) throw std::runtime_error("index 77");
                    }),
                    std::runtime_error);
    CHECK_THROWS_AS(gsq::set_num_threads(-1), gsq::ConfigError);
    gsq::set_num_threads(0);
  }
}
