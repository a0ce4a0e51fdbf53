#include <doctest/doctest.h>

#include <cstdint>

#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"

TEST_SUITE("core") {
  TEST_CASE("tensor: storage is 64-byte aligned and zero-filled and row-major") {
    gsq::Tensor<float> t({3, 5, 7});
    CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
    CHECK(t.numel() == 105);
    for (float v : t) CHECK(v == 0.0f);
    auto v = t.view();  // leading dimensions fold into rows
    CHECK(v.rows() == 15);
    CHECK(v.cols() == 7);
    v(2, 3) = 1.5f;
    CHECK(t[2 * 7 + 3] == 1.5f);
  }

  TEST_CASE("tensor: views and blocks keep the row stride") {
    gsq::Tensor<float> t({4, 6});
    for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i);
    gsq::MatrixView<const float> whole = t.view();
    auto b = whole.block(1, 2, 2, 3);
    CHECK(b.stride() == 6);
    CHECK(b(0, 0) == 8.0f);
    CHECK(b(1, 2) == 16.0f);
    CHECK_FALSE(b.is_contiguous());
    CHECK_THROWS_AS(whole.block(3, 0, 2, 1), gsq::ShapeError);
    CHECK_THROWS_AS(gsq::check_shape(whole, 6, 4, "weight"), gsq::ShapeError);
    CHECK_THROWS_AS(gsq::Tensor<float>({-1, 2}), gsq::ShapeError);
    CHECK_THROWS_AS(gsq::Tensor<float>({1, 2, 3, 4, 5}), gsq::ShapeError);
  }

  TEST_CASE("memory: accounting tracks current and peak bytes by category") {
    const auto before = gsq::memory_usage();
    gsq::reset_memory_peaks();
    {
      gsq::AlignedBuffer<float> w(1000, gsq::MemoryCategory::kWeights);
      gsq::AlignedBuffer<std::int8_t> g(64, gsq::MemoryCategory::kGradients);
      const auto during = gsq::memory_usage();
      CHECK(during.current_of(gsq::MemoryCategory::kWeights) -
                before.current_of(gsq::MemoryCategory::kWeights) == 4000);
      CHECK(during.current_of(gsq::MemoryCategory::kGradients) -
                before.current_of(gsq::MemoryCategory::kGradients) == 64);
      gsq::AlignedBuffer<float> moved = std::move(w);  // moving does not double count
      CHECK(gsq::memory_usage().total_current == during.total_current);
    }
    const auto after = gsq::memory_usage();
    CHECK(after.total_current == before.total_current);
    CHECK(after.total_peak - before.total_current == 4064);
    CHECK(after.peak_of(gsq::MemoryCategory::kWeights) -
              before.current_of(gsq::MemoryCategory::kWeights) == 4000);
  }
}
