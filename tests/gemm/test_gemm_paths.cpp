// Every ISA path against the definition, bit for bit: edge sizes in every dimension,
// bit-width pairs, group sizes, alpha and accumulate, thread counts.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "gemm_test_util.hpp"

using namespace gsq::test::gemm;
using gsq::GseSpec;
using gsq::Tensor;
using gsq::gemm::BOperand;
using gsq::gemm::GemmOptions;

namespace {

struct Shape {
  std::int64_t m, n, k;
};

/// Edge sizes in one dimension at a time, plus a small cube of tails.
std::vector<Shape> edge_shapes() {
  std::vector<Shape> shapes;
  for (std::int64_t s : gsq::test::kEdgeSizes) {
    shapes.push_back({s, 33, 70});
    shapes.push_back({13, s, 70});
    shapes.push_back({13, 50, s});
  }
  for (std::int64_t m : {1, 16, 17})
    for (std::int64_t n : {1, 16, 47, 48, 49})
      for (std::int64_t k : {1, 31, 32, 33, 95}) shapes.push_back({m, n, k});
  shapes.push_back({64, 2048, 16});  // LoRA-thin K
  shapes.push_back({130, 16, 300});  // LoRA-thin N
  shapes.push_back({5, 97, 600});    // several k-blocks
  return shapes;
}

/// Every path, in both loop orders (B-resident and streaming with several k-blocks).
void check_all_paths(const gsq::GseMatrix& a, const BOperand& b, const GemmOptions& o,
                     std::uint64_t seed) {
  const Tensor<float> c0 = random_c(a.rows(), b.rows(), seed);
  const Tensor<float> want = reference_product(a, b, c0, o);
  gsq::test::for_each_isa([&](gsq::Isa isa) {
    const Tensor<float> got = engine_product(a, b, c0, o);
    CHECK(gsq::gemm::active_isa() == isa);
    CHECK(same_bits(got, want));
    ScopedStreaming streaming;
    CHECK(same_bits(engine_product(a, b, c0, o), want));
  });
}

}  // namespace

TEST_SUITE("gemm") {
  TEST_CASE("gemm: every ISA is bit-identical to reference on edge shapes") {
    const GseSpec spec{8, 32, 8};
    std::uint64_t seed = 100;
    for (const Shape& s : edge_shapes()) {
      SUBCASE(shape_name(s.m, s.n, s.k).c_str()) {
        const gsq::GseMatrix a = random_gse(s.m, s.k, spec, seed++);
        const gsq::GseMatrix b = random_gse(s.n, s.k, spec, seed++);
        check_all_paths(a, BOperand::gse(b), {}, seed);
        check_all_paths(a, BOperand::gse(b), {-0.75f, true}, seed);
      }
    }
  }

  TEST_CASE("gemm: every bit-width pair and group size matches reference") {
    const std::vector<std::tuple<int, int>> pairs = {{8, 8}, {8, 4}, {6, 6}, {5, 5}, {4, 8},
                                                     {4, 4}, {3, 3}, {2, 8}, {7, 5}, {8, 2}};
    std::uint64_t seed = 500;
    for (int group : {32, 64, 128, 8, 10, 24, 256}) {
      for (const auto& pair : pairs) {
        const int ab = std::get<0>(pair), bb = std::get<1>(pair);
        std::string name = "A";
        name += std::to_string(ab);
        name += "B";
        name += std::to_string(bb);
        name += " G";
        name += std::to_string(group);
        SUBCASE(name.c_str()) {
          const gsq::GseMatrix a = random_gse(19, 301, {ab, group, 8}, seed++);
          const gsq::GseMatrix b = random_gse(53, 301, {bb, group, 8}, seed++);
          check_all_paths(a, BOperand::gse(b), {1.5f, false}, seed);
          check_all_paths(a, BOperand::gse(b), {0.25f, true}, seed);
        }
      }
    }
  }

  TEST_CASE("gemm: the AVX2 path without AVX-VNNI matches reference") {
    // vpmaddubsw / vpmaddwd with the sign trick instead of {vex} vpdpbusd.
    if (!gsq::is_isa_supported(gsq::Isa::kAvx2)) {
      MESSAGE("skipping: AVX2 not supported here");
      return;
    }
    auto& mode = gsq::gemm::kernels::avx2::vnni_override();
    for (int vnni : {0, 1}) {
      if (vnni == 1 && !gsq::cpu_features().avx_vnni) {
        MESSAGE("skipping the AVX-VNNI variant: CPU lacks avx_vnni");
        continue;
      }
      CAPTURE(vnni);
      mode.store(vnni);
      gsq::ScopedIsa scope(gsq::Isa::kAvx2);
      std::uint64_t seed = 70;
      for (const auto& pair : {std::pair{8, 8}, std::pair{8, 4}, std::pair{5, 6}}) {
        const int ab = pair.first, bb = pair.second;
        const gsq::GseMatrix a = random_gse(13, 300, {ab, 32, 8}, seed++);
        const gsq::GseMatrix b = random_gse(50, 300, {bb, 32, 8}, seed++);
        const Tensor<float> c0 = random_c(13, 50, seed);
        for (GemmOptions o : {GemmOptions{}, GemmOptions{2.0f, true}}) {
          const Tensor<float> want = reference_product(a, BOperand::gse(b), c0, o);
          CHECK(same_bits(engine_product(a, BOperand::gse(b), c0, o), want));
        }
      }
    }
    mode.store(-1);
  }

  TEST_CASE("gemm: five-bit exponents match reference") {
    const gsq::GseMatrix a = random_gse(21, 200, {8, 32, 5}, 7, 1e6f);
    const gsq::GseMatrix b = random_gse(50, 200, {6, 32, 5}, 8, 1e-7f);
    check_all_paths(a, BOperand::gse(b), {}, 9);
  }

  TEST_CASE("gemm: one and two threads give the same bits") {
    const GseSpec spec{8, 32, 8};
    for (Shape s : {Shape{64, 200, 300}, Shape{130, 16, 256}, Shape{7, 2048, 16}}) {
      const gsq::GseMatrix a = random_gse(s.m, s.k, spec, 1);
      const gsq::GseMatrix b = random_gse(s.n, s.k, spec, 2);
      const Tensor<float> c0 = random_c(s.m, s.n, 3);
      gsq::test::for_each_isa([&](gsq::Isa) {
        for (bool stream : {false, true}) {
          std::optional<ScopedStreaming> streaming;
          if (stream) streaming.emplace();
          gsq::set_num_threads(1);
          const Tensor<float> one = engine_product(a, BOperand::gse(b), c0, {0.5f, true});
          gsq::set_num_threads(2);
          const Tensor<float> two = engine_product(a, BOperand::gse(b), c0, {0.5f, true});
          gsq::set_num_threads(3);
          const Tensor<float> three = engine_product(a, BOperand::gse(b), c0, {0.5f, true});
          gsq::set_num_threads(0);
          CHECK(same_bits(one, two));
          CHECK(same_bits(one, three));
        }
      });
    }
  }

  TEST_CASE("gemm: zero groups and zero rows give exact zeros") {
    const GseSpec spec{8, 32, 8};
    gsq::GseMatrix a = random_gse(9, 96, spec, 1);
    gsq::GseMatrix b = random_gse(40, 96, spec, 2);
    // Zero out group 1 of every A row and all of B row 3 (exponent e_min, mantissas 0).
    for (std::int64_t r = 0; r < a.rows(); ++r) {
      for (int i = 32; i < 64; ++i) a.set_mantissa(r, i, 0);
      a.exponent_row(r)[1] = static_cast<std::int8_t>(spec.exp_min());
    }
    for (std::int64_t c = 0; c < b.padded_cols(); ++c) b.set_mantissa(3, c, 0);
    for (std::int64_t g = 0; g < b.groups_per_row(); ++g)
      b.exponent_row(3)[g] = static_cast<std::int8_t>(spec.exp_min());
    check_all_paths(a, BOperand::gse(b), {}, 4);
    gsq::test::for_each_isa([&](gsq::Isa) {
      const Tensor<float> c = engine_product(a, BOperand::gse(b), random_c(9, 40, 5), {});
      for (std::int64_t r = 0; r < 9; ++r) CHECK(c(r, 3) == 0.0f);
    });
  }

  TEST_CASE("gemm: extreme exponents round like ldexp") {
    // e_a + e_b spans [-256, 254]: sums that underflow to subnormals or zero, and that
    // overflow to Inf, must match the definition bit for bit.
    const GseSpec spec{8, 32, 8};
    gsq::GseMatrix a = random_gse(8, 128, spec, 11);
    gsq::GseMatrix b = random_gse(48, 128, spec, 12);
    const int exps[] = {-128, -127, -100, -75, -64, -30, 0, 30, 60, 64, 100, 121, 127};
    for (std::int64_t r = 0; r < a.rows(); ++r)
      for (std::int64_t g = 0; g < a.groups_per_row(); ++g)
        a.exponent_row(r)[g] = static_cast<std::int8_t>(exps[(r * 3 + g) % 13]);
    for (std::int64_t r = 0; r < b.rows(); ++r)
      for (std::int64_t g = 0; g < b.groups_per_row(); ++g)
        b.exponent_row(r)[g] = static_cast<std::int8_t>(exps[(r * 5 + g * 7) % 13]);
    check_all_paths(a, BOperand::gse(b), {}, 13);
    check_all_paths(a, BOperand::gse(b), {1e-30f, true}, 14);
    // All-tiny: every product is below the smallest subnormal or just above it.
    for (std::int64_t r = 0; r < a.rows(); ++r)
      for (std::int64_t g = 0; g < a.groups_per_row(); ++g)
        a.exponent_row(r)[g] = static_cast<std::int8_t>(-75 - (r + g) % 3);
    for (std::int64_t r = 0; r < b.rows(); ++r)
      for (std::int64_t g = 0; g < b.groups_per_row(); ++g)
        b.exponent_row(r)[g] = static_cast<std::int8_t>(-80 + (r % 7));
    check_all_paths(a, BOperand::gse(b), {}, 15);
  }

  TEST_CASE("gemm: K of zero writes alpha times zero") {
    const gsq::GseMatrix a(3, 0, {8, 32, 8});
    const gsq::GseMatrix b(5, 0, {8, 32, 8});
    check_all_paths(a, BOperand::gse(b), {2.0f, false}, 1);
    check_all_paths(a, BOperand::gse(b), {2.0f, true}, 2);
  }
}
