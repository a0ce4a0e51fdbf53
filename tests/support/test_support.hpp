// Shared helpers for gsq's tests: edge sizes, realistic random data, ISA loops, data paths.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "gsq/core/isa.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"

namespace gsq::test {

/// Sizes around block edges (STYLE.md): 1..10, 15..17, 31..33, 63..65, primes.
inline const std::vector<std::int64_t> kEdgeSizes = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 15,
                                                     16, 17, 31, 32, 33, 63, 64, 65, 97, 127, 131};

/// A [rows, cols] matrix with heavy tails and outliers, like real activations: mostly
/// N(0, scale), every 17th value times 30, every 101st value 0.
inline Tensor<float> random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                                   float scale = 1.0f) {
  Tensor<float> t({rows, cols});
  CounterRng rng(seed, 0);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    float v = rng.next_normal() * scale;
    if (i % 17 == 5) v *= 30.0f;
    if (i % 101 == 7) v = 0.0f;
    t[i] = v;
  }
  return t;
}

/// Runs `body` once per ISA this CPU supports, forcing it; reports the ones it skips.
/// GSQ_TEST_ISA=<name> runs only that one (main.cpp exits 77 first if it is unsupported).
template <class Body>
void for_each_isa(Body&& body) {
  const char* only = std::getenv("GSQ_TEST_ISA");
  for (Isa isa : kAllIsas) {
    if (only != nullptr && *only != '\0' && isa_name(isa) != only) continue;
    if (!is_isa_supported(isa)) {
      MESSAGE("skipping ISA " << isa_name(isa) << ": not supported by this CPU or build");
      continue;
    }
    ScopedIsa scope(isa);
    CAPTURE(isa_name(isa));
    body(isa);
  }
}

/// The path of a shared asset, or nullopt (with a visible MESSAGE) if GSQ_DATA_DIR lacks it.
inline std::optional<std::filesystem::path> data_file(const std::string& relative) {
  std::filesystem::path p = std::filesystem::path(GSQ_DATA_DIR) / relative;
  if (std::filesystem::exists(p)) return p;
  MESSAGE("SKIPPED: shared asset " << p.string() << " is absent (set -DGSQ_DATA_DIR)");
  return std::nullopt;
}

/// Bitwise equality of two float arrays (distinguishes -0 from +0, NaN payloads).
inline bool bitwise_equal(const float* a, const float* b, std::int64_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(float)) == 0;
}

}  // namespace gsq::test
