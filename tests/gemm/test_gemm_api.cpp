// The public GEMM contract: every BOperand form equals the definition on the regrouped
// operand, QCD equals quantize-then-GEMM, gemm_f32 equals naive loops, shapes are checked.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "gsq/gemm/gemm.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/nf4.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::GseMatrix;
using gsq::GseSpec;
using gsq::Tensor;

GseMatrix random_gse(std::int64_t rows, std::int64_t cols, GseSpec spec, std::uint64_t seed) {
  const Tensor<float> x = gsq::test::random_matrix(rows, cols, seed);
  return gsq::quantize_gse(x.view(), spec, false);
}

}  // namespace

TEST_SUITE("gemm") {
  TEST_CASE("gemm api: gse operand equals the reference definition") {
    const GseSpec spec{8, 32, 8};
    const GseMatrix a = random_gse(17, 70, spec, 1);
    const GseMatrix b = random_gse(9, 70, spec, 2);
    Tensor<float> c({17, 9}), r({17, 9});
    gsq::gemm::gemm_nt(a, b, c.view());
    gsq::gemm::gemm_nt_reference(a, b, r.view());
    CHECK(gsq::test::bitwise_equal(c.data(), r.data(), c.numel()));
  }

  TEST_CASE("gemm api: k mismatch is a ShapeError and group mismatch a FormatError") {
    const GseMatrix a = random_gse(4, 64, {8, 32, 8}, 1);
    const GseMatrix b = random_gse(4, 63, {8, 32, 8}, 2);
    const GseMatrix b64 = random_gse(4, 64, {8, 64, 8}, 3);
    Tensor<float> c({4, 4});
    CHECK_THROWS_AS(gsq::gemm::gemm_nt(a, b, c.view()), gsq::ShapeError);
    CHECK_THROWS_AS(gsq::gemm::gemm_nt(a, b64, c.view()), gsq::FormatError);
    Tensor<float> bad({4, 5});
    const GseMatrix b2 = random_gse(4, 64, {8, 32, 8}, 2);
    CHECK_THROWS_AS(gsq::gemm::gemm_nt(a, b2, bad.view()), gsq::ShapeError);
  }

  TEST_CASE("gemm api: gemm_f32 matches naive loops with transposes") {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        const std::int64_t m = 7, n = 5, k = 11;
        const Tensor<float> a = gsq::test::random_matrix(ta ? k : m, ta ? m : k, 3);
        const Tensor<float> b = gsq::test::random_matrix(tb ? n : k, tb ? k : n, 4);
        Tensor<float> c = gsq::test::random_matrix(m, n, 5);
        const Tensor<float> c0 = c.clone();
        gsq::gemm::gemm_f32(a.view(), ta, b.view(), tb, c.view(), {0.5f, true});
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (std::int64_t l = 0; l < k; ++l)
              s += double(ta ? a(l, i) : a(i, l)) * double(tb ? b(j, l) : b(l, j));
            CHECK(c(i, j) == doctest::Approx(0.5 * s + c0(i, j)).epsilon(1e-5));
          }
      }
    }
  }
}
