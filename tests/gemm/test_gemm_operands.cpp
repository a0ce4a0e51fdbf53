// B operands in every stored form: NF4 (both orientations), transposed GSE-INT, prepacked.
// Regrouping must equal quantize_gse of the dequantized (transposed) matrix on every path,
// prepacked B must equal unpacked, and the three products of a layer (forward, dX, dW)
// must match both the definition and an FP64 product within the FP32 summation bound.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gemm_test_util.hpp"

using namespace gsq::test::gemm;
using gsq::GseMatrix;
using gsq::GseSpec;
using gsq::Nf4Matrix;
using gsq::Tensor;
using gsq::gemm::BOperand;
using gsq::gemm::GemmOptions;

namespace {

bool same_gse(const GseMatrix& x, const GseMatrix& y) {
  if (x.rows() != y.rows() || x.cols() != y.cols() || !(x.spec() == y.spec())) return false;
  for (std::int64_t r = 0; r < x.rows(); ++r) {
    for (std::int64_t g = 0; g < x.groups_per_row(); ++g)
      if (x.exponent(r, g) != y.exponent(r, g)) {
        MESSAGE("exponent differs at row " << r << " group " << g << ": " << x.exponent(r, g)
                                           << " vs " << y.exponent(r, g));
        return false;
      }
    for (std::int64_t c = 0; c < x.padded_cols(); ++c)
      if (x.mantissa(r, c) != y.mantissa(r, c)) {
        MESSAGE("mantissa differs at (" << r << ", " << c << "): " << x.mantissa(r, c) << " vs "
                                        << y.mantissa(r, c));
        return false;
      }
  }
  return true;
}

/// quantize_gse of the dequantized stored matrix, transposed when B = storedᵀ.
GseMatrix expected_regroup(const BOperand& b) {
  Tensor<float> x;
  bool transpose = false;
  switch (b.source()) {
    case gsq::gemm::BSource::kNf4:
    case gsq::gemm::BSource::kNf4Transposed: {
      const Nf4Matrix& w = *b.nf4_matrix();
      x = Tensor<float>({w.rows(), w.cols()});
      gsq::dequantize_nf4(w, x.view());
      transpose = b.source() == gsq::gemm::BSource::kNf4Transposed;
      break;
    }
    case gsq::gemm::BSource::kGseTransposed: {
      const GseMatrix& m = *b.gse_matrix();
      x = Tensor<float>({m.rows(), m.cols()});
      gsq::dequantize_gse(m, false, x.view());
      transpose = true;
      break;
    }
    default: FAIL("not a regrouping operand");
  }
  GseMatrix out(b.rows(), b.cols(), b.spec());
  gsq::quantize_gse_reference(x.view(), transpose, out);
  return out;
}

/// Regrouping operands of a few kinds over one stored NF4 weight and one GSE tensor.
struct Operands {
  Nf4Matrix w;      // [rows, cols]
  Nf4Matrix w_dq;   // same data, double-quantized scales
  GseMatrix m;      // [rows, cols] GSE-INT source for gse_transposed
};

Operands make_operands(std::int64_t rows, std::int64_t cols, GseSpec src, std::uint64_t seed) {
  const Tensor<float> x = gsq::test::random_matrix(rows, cols, seed, 0.05f);
  Operands o;
  o.w = gsq::quantize_nf4(x.view(), false);
  o.w_dq = gsq::quantize_nf4(x.view(), true);
  o.m = random_gse(rows, cols, src, seed + 1);
  return o;
}

/// |computed − exact| bound for C = alpha·Σ_g s_g (+ C0) summed in FP32: each s_g is
/// exact, the fp32 sum of n terms is within γ_n·Σ|s_g| (γ_n = n·u/(1 − n·u), u = 2^−24),
/// alpha and the final fma add one rounding each.
double fp32_bound(double sum_abs_groups, std::int64_t groups, double alpha, double result) {
  const double u = std::ldexp(1.0, -24);
  const double n = static_cast<double>(groups) + 1;
  const double gamma = n * u / (1 - n * u);
  return gamma * std::fabs(alpha) * sum_abs_groups + 2 * u * std::fabs(result) + 1e-35;
}

/// Checks C against the FP64 product of the dequantized A and (regrouped) B.
void check_against_fp64(const GseMatrix& a, const GseMatrix& b, const Tensor<float>& c,
                        const Tensor<float>& c0, const GemmOptions& o) {
  const int group = a.spec().group;
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < a.rows(); ++i) {
    for (std::int64_t j = 0; j < b.rows(); ++j) {
      double exact = 0, sum_abs = 0;
      for (std::int64_t g = 0; g < a.groups_per_row(); ++g) {
        double s = 0;
        for (std::int64_t k = g * group; k < std::min<std::int64_t>((g + 1) * group, a.cols()); ++k)
          s += static_cast<double>(a.value(i, k)) * static_cast<double>(b.value(j, k));
        exact += s;
        sum_abs += std::fabs(s);
      }
      const double want = o.alpha * exact + (o.accumulate ? static_cast<double>(c0(i, j)) : 0.0);
      const double bound = fp32_bound(sum_abs, a.groups_per_row(), o.alpha, want);
      if (std::fabs(static_cast<double>(c(i, j)) - want) > bound && bad++ < 3)
        MESSAGE("(" << i << ", " << j << "): got " << c(i, j) << " want " << want << " bound " << bound);
    }
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_SUITE("gemm") {
  TEST_CASE("gemm: regrouping equals quantize of the dequantized matrix on every path") {
    std::uint64_t seed = 1;
    for (GseSpec spec : {GseSpec{8, 32, 8}, GseSpec{4, 32, 8}, GseSpec{6, 64, 8}, GseSpec{5, 128, 8},
                         GseSpec{8, 24, 8}, GseSpec{7, 10, 5}, GseSpec{3, 16, 8}}) {
      for (GseSpec src : {GseSpec{8, 32, 8}, GseSpec{4, 16, 8}, GseSpec{6, 24, 5}}) {
        for (const auto& extent : {std::pair<std::int64_t, std::int64_t>{70, 130}, {33, 17}, {1, 200}, {129, 64}}) {
          const std::int64_t rows = extent.first, cols = extent.second;
          CAPTURE(spec.name());
          CAPTURE(src.name());
          CAPTURE(rows);
          CAPTURE(cols);
          const Operands o = make_operands(rows, cols, src, seed++);
          const BOperand ops[] = {BOperand::nf4(o.w, spec), BOperand::nf4_transposed(o.w, spec),
                                  BOperand::nf4(o.w_dq, spec), BOperand::nf4_transposed(o.w_dq, spec),
                                  BOperand::gse_transposed(o.m, spec)};
          for (const BOperand& op : ops) {
            const GseMatrix want = expected_regroup(op);
            CHECK(same_gse(gsq::gemm::regroup_reference(op), want));
            gsq::test::for_each_isa([&](gsq::Isa) {
              const gsq::gemm::PackedB p = gsq::gemm::pack_b(op);
              CHECK(same_gse(gsq::gemm::regroup_reference(BOperand::packed(p)), want));
            });
          }
        }
      }
    }
  }

  TEST_CASE("gemm: regrouped operands match the definition on every path") {
    std::uint64_t seed = 50;
    for (GseSpec spec : {GseSpec{8, 32, 8}, GseSpec{4, 32, 8}, GseSpec{6, 64, 8}, GseSpec{8, 128, 8},
                         GseSpec{5, 24, 8}}) {
      for (const auto& shape : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{17, 70, 130},
                                {5, 16, 300}, {33, 130, 65}, {1, 49, 16}}) {
        const std::int64_t m = std::get<0>(shape), n = std::get<1>(shape), k = std::get<2>(shape);
        CAPTURE(spec.name());
        CAPTURE(shape_name(m, n, k));
        const GseMatrix a = random_gse(m, k, {8, spec.group, 8}, seed++);
        const Operands fw = make_operands(n, k, {8, 32, 8}, seed++);  // stored [N, K]
        const Operands tr = make_operands(k, n, {6, 24, 8}, seed++);  // stored [K, N]
        const BOperand ops[] = {BOperand::nf4(fw.w, spec), BOperand::nf4(fw.w_dq, spec),
                                BOperand::nf4_transposed(tr.w, spec),
                                BOperand::gse_transposed(tr.m, spec)};
        for (const BOperand& op : ops) {
          for (GemmOptions opt : {GemmOptions{}, GemmOptions{-2.0f, true}}) {
            const Tensor<float> c0 = random_c(m, n, seed);
            const Tensor<float> want = reference_product(a, op, c0, opt);
            gsq::test::for_each_isa([&](gsq::Isa) {
              CHECK(same_bits(engine_product(a, op, c0, opt), want));
              ScopedStreaming streaming;
              CHECK(same_bits(engine_product(a, op, c0, opt), want));
            });
          }
        }
      }
    }
  }

  TEST_CASE("gemm: sub-byte stored codes give the bits of the same values stored as int8") {
    // The packing step unpacks 4- and 6-bit fields; the unpacked path is the same
    // mantissas and exponents stored one per byte (b = 8 storage holds any b < 8 code).
    auto widened = [](const GseMatrix& m) {
      GseMatrix w(m.rows(), m.cols(), {8, m.spec().group, m.spec().exp_bits});
      for (std::int64_t r = 0; r < m.rows(); ++r) {
        for (std::int64_t c = 0; c < m.padded_cols(); ++c) w.set_mantissa(r, c, m.mantissa(r, c));
        for (std::int64_t g = 0; g < m.groups_per_row(); ++g) w.exponent_row(r)[g] = m.exponent_row(r)[g];
      }
      return w;
    };
    std::uint64_t seed = 900;
    for (int bits = gsq::kMinGseBits; bits < gsq::kMaxGseBits; ++bits) {
      for (int group : {32, 16, 24, 9}) {
        const GseSpec spec{bits, group, 8};
        for (const auto& shape : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{1, 1, 1},
                                  {15, 16, 17}, {16, 17, 15}, {17, 15, 16}, {31, 33, 32},
                                  {33, 32, 31}, {7, 49, 131}, {13, 97, 33}}) {
          const std::int64_t m = std::get<0>(shape), n = std::get<1>(shape), k = std::get<2>(shape);
          CAPTURE(spec.name());
          CAPTURE(shape_name(m, n, k));
          const GseMatrix a = random_gse(m, k, spec, seed++);
          const GseMatrix b = random_gse(n, k, spec, seed++);
          const GseMatrix bt = random_gse(k, n, spec, seed++);  // Bᵀ stored, regrouped
          const GseMatrix a8 = widened(a), b8 = widened(b), bt8 = widened(bt);
          const GseSpec target{8, group, 8};
          const Tensor<float> c0 = random_c(m, n, seed);
          const GemmOptions opt{0.75f, true};
          gsq::test::for_each_isa([&](gsq::Isa) {
            CHECK(same_bits(engine_product(a, BOperand::gse(b), c0, opt),
                            engine_product(a8, BOperand::gse(b8), c0, opt)));
            CHECK(same_bits(engine_product(a, BOperand::gse_transposed(bt, target), c0, opt),
                            engine_product(a8, BOperand::gse_transposed(bt8, target), c0, opt)));
            ScopedStreaming streaming;
            CHECK(same_bits(engine_product(a, BOperand::gse(b), c0, opt),
                            reference_product(a8, BOperand::gse(b8), c0, opt)));
          });
        }
      }
    }
  }

  TEST_CASE("gemm: prepacked B gives the same bits as unpacked") {
    const GseSpec spec{8, 32, 8};
    const GseMatrix a = random_gse(37, 200, spec, 3);
    const GseMatrix b = random_gse(100, 200, spec, 4);
    const GseMatrix b4 = random_gse(20, 200, {4, 32, 8}, 5);
    const Operands fw = make_operands(100, 200, spec, 6);
    const Operands tr = make_operands(200, 100, spec, 7);
    const BOperand ops[] = {BOperand::gse(b), BOperand::gse(b4), BOperand::nf4(fw.w, spec),
                            BOperand::nf4_transposed(tr.w, spec), BOperand::gse_transposed(tr.m, spec)};
    for (const BOperand& op : ops) {
      const Tensor<float> c0 = random_c(37, op.rows(), 8);
      gsq::test::for_each_isa([&](gsq::Isa) {
        const gsq::gemm::PackedB p = gsq::gemm::pack_b(op);
        CHECK(p.bytes() > 0);
        CHECK(p.rows() == op.rows());
        CHECK(p.cols() == op.cols());
        const Tensor<float> direct = engine_product(a, op, c0, {0.5f, true});
        CHECK(same_bits(engine_product(a, BOperand::packed(p), c0, {0.5f, true}), direct));
        // A pack made on one path serves every other.
        gsq::test::for_each_isa([&](gsq::Isa) {
          CHECK(same_bits(engine_product(a, BOperand::packed(p), c0, {0.5f, true}), direct));
          ScopedStreaming streaming;
          CHECK(same_bits(engine_product(a, BOperand::packed(p), c0, {0.5f, true}), direct));
        });
      });
    }
  }

  TEST_CASE("gemm: packed weights are counted under the chosen memory category") {
    const GseMatrix b = random_gse(64, 256, {8, 32, 8}, 9);
    const std::int64_t before = gsq::memory_usage().current_of(gsq::MemoryCategory::kWeights);
    {
      const gsq::gemm::PackedB p = gsq::gemm::pack_b(BOperand::gse(b), gsq::MemoryCategory::kWeights);
      CHECK(gsq::memory_usage().current_of(gsq::MemoryCategory::kWeights) - before == p.bytes());
    }
    CHECK(gsq::memory_usage().current_of(gsq::MemoryCategory::kWeights) == before);
  }

  TEST_CASE("gemm: the three products of a layer match reference and FP64") {
    // Y = X·Wᵀ (k = in), dX = dY·W (B = Wᵀ, k = out), dW = dYᵀ·X (k = tokens).
    const std::int64_t tokens = 96, in = 160, out = 80;
    const GseSpec s8{8, 32, 8};
    const Tensor<float> x = gsq::test::random_matrix(tokens, in, 1);
    const Tensor<float> dy = gsq::test::random_matrix(tokens, out, 2, 1e-3f);
    const Tensor<float> wf = gsq::test::random_matrix(out, in, 3, 0.05f);
    const Nf4Matrix w = gsq::quantize_nf4(wf.view());
    const GseMatrix wq = gsq::quantize_gse(wf.view(), s8, false);     // GSE weight [out, in]
    const GseMatrix xq = gsq::quantize_gse(x.view(), s8, false);      // cached X, along in
    const GseMatrix dyq = gsq::quantize_gse(dy.view(), s8, false);    // dY along out
    const GseMatrix dyq_t = gsq::quantize_gse(dy.view(), s8, true);   // dYᵀ along tokens

    struct Product {
      const char* name;
      const GseMatrix* a;
      BOperand b;
    };
    const Product products[] = {
        {"forward X·W0ᵀ (NF4)", &xq, BOperand::nf4(w, s8)},
        {"forward X·W0ᵀ (GSE)", &xq, BOperand::gse(wq)},
        {"dX = dY·W0 (NF4 transposed)", &dyq, BOperand::nf4_transposed(w, s8)},
        {"dX = dY·W0 (GSE transposed)", &dyq, BOperand::gse_transposed(wq, s8)},
        {"dW = dYᵀ·X (k = tokens)", &dyq_t, BOperand::gse_transposed(xq, s8)},
    };
    for (const Product& p : products) {
      CAPTURE(p.name);
      const GseMatrix b = gsq::gemm::regroup_reference(p.b);
      for (GemmOptions opt : {GemmOptions{}, GemmOptions{0.125f, true}}) {
        const Tensor<float> c0 = random_c(p.a->rows(), p.b.rows(), 4);
        const Tensor<float> want = reference_product(*p.a, p.b, c0, opt);
        check_against_fp64(*p.a, b, want, c0, opt);
        gsq::test::for_each_isa([&](gsq::Isa) {
          const Tensor<float> got = engine_product(*p.a, p.b, c0, opt);
          CHECK(same_bits(got, want));
        });
      }
    }
    // QCD quantizes A from fp32 (transposed for dW) and gives the same bits.
    gsq::test::for_each_isa([&](gsq::Isa) {
      Tensor<float> y({tokens, out}), y_qcd({tokens, out});
      gsq::gemm::gemm_nt(xq, BOperand::nf4(w, s8), y.view());
      gsq::gemm::qcd_gemm_nt(x.view(), false, s8, BOperand::nf4(w, s8), y_qcd.view());
      CHECK(same_bits(y, y_qcd));
      Tensor<float> dw({out, in}), dw_qcd({out, in});
      gsq::gemm::gemm_nt(dyq_t, BOperand::gse_transposed(xq, s8), dw.view());
      gsq::gemm::qcd_gemm_nt(dy.view(), true, s8, BOperand::gse_transposed(xq, s8), dw_qcd.view());
      CHECK(same_bits(dw, dw_qcd));
    });
  }

  TEST_CASE("gemm: an FP64 product bounds every result on edge shapes") {
    std::uint64_t seed = 900;
    for (const auto& shape : {std::tuple<std::int64_t, std::int64_t, std::int64_t>{15, 17, 31}, {33, 63, 65},
                              {1, 97, 513}, {16, 16, 2048}}) {
      const std::int64_t m = std::get<0>(shape), n = std::get<1>(shape), k = std::get<2>(shape);
      const GseMatrix a = random_gse(m, k, {8, 32, 8}, seed++);
      const GseMatrix b = random_gse(n, k, {6, 32, 8}, seed++);
      const Tensor<float> c0 = random_c(m, n, seed++);
      for (GemmOptions opt : {GemmOptions{}, GemmOptions{3.0f, true}}) {
        gsq::test::for_each_isa([&](gsq::Isa) {
          check_against_fp64(a, b, engine_product(a, BOperand::gse(b), c0, opt), c0, opt);
        });
      }
    }
  }

  TEST_CASE("gemm: a real shape matches the definition at sampled entries") {
    // 64 × 2048 × 2048 (a 64-token forward of a 2048-wide layer), checked at sampled
    // (row, column) pairs against the definition on NF4 and GSE weights.
    const std::int64_t m = 64, n = 2048, k = 2048;
    const GseSpec s8{8, 32, 8};
    const GseMatrix a = random_gse(m, k, s8, 11);
    const Tensor<float> wf = gsq::test::random_matrix(n, k, 12, 0.02f);
    const Nf4Matrix w = gsq::quantize_nf4(wf.view());
    const BOperand op = BOperand::nf4(w, s8);
    const GseMatrix b = gsq::gemm::regroup_reference(op);
    // The definition at sampled entries: rows of A and B sliced out, gemm_nt_reference.
    const std::int64_t rows[] = {0, 1, 31, 63}, cols[] = {0, 47, 48, 1000, 2047};
    gsq::test::for_each_isa([&](gsq::Isa) {
      Tensor<float> c({m, n});
      gsq::gemm::gemm_nt(a, op, c.view());
      for (std::int64_t r : rows) {
        for (std::int64_t j : cols) {
          float acc = 0.0f;
          for (std::int64_t g = 0; g < a.groups_per_row(); ++g) {
            std::int32_t sum = 0;
            for (std::int64_t kk = g * 32; kk < (g + 1) * 32; ++kk) sum += a.mantissa(r, kk) * b.mantissa(j, kk);
            acc += std::ldexp(static_cast<float>(sum), a.exponent(r, g) + b.exponent(j, g));
          }
          CHECK(c(r, j) == acc);
        }
      }
    });
  }

  TEST_CASE("gemm: stored values that cannot be decoded are a FormatError") {
    const GseMatrix a = random_gse(4, 64, {8, 32, 8}, 1);
    Tensor<float> c({4, 64});
    // An NF4 block scale of NaN.
    Nf4Matrix w = gsq::quantize_nf4(gsq::test::random_matrix(64, 64, 2).view());
    w.absmax()[5] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(gsq::gemm::gemm_nt(a, BOperand::nf4(w, {8, 32, 8}), c.view()), gsq::FormatError);
    CHECK_THROWS_AS(gsq::gemm::pack_b(BOperand::nf4_transposed(w, {8, 32, 8})), gsq::FormatError);
    // A GSE-INT value 127·2^127 overflows fp32 and cannot be regrouped.
    GseMatrix m = random_gse(64, 64, {8, 32, 8}, 3);
    m.exponent_row(9)[1] = 127;
    m.set_mantissa(9, 40, 127);
    CHECK_THROWS_AS(gsq::gemm::gemm_nt(a, BOperand::gse_transposed(m, {8, 32, 8}), c.view()),
                    gsq::FormatError);
    // ... used as stored it is fine (no decoding), like the definition.
    CHECK_NOTHROW(gsq::gemm::gemm_nt(a, BOperand::gse(m), c.view()));
  }

  TEST_CASE("gemm: operand shape and format errors") {
    const GseMatrix a = random_gse(4, 64, {8, 32, 8}, 1);
    const Nf4Matrix w = gsq::quantize_nf4(gsq::test::random_matrix(30, 64, 2).view());
    Tensor<float> c({4, 30});
    CHECK_NOTHROW(gsq::gemm::gemm_nt(a, BOperand::nf4(w, {8, 32, 8}), c.view()));
    // nf4_transposed has K = 30 rows of W: k mismatch.
    CHECK_THROWS_AS(gsq::gemm::gemm_nt(a, BOperand::nf4_transposed(w, {8, 32, 8}), c.view()),
                    gsq::ShapeError);
    // Group sizes must agree.
    CHECK_THROWS_AS(gsq::gemm::gemm_nt(a, BOperand::nf4(w, {8, 64, 8}), c.view()), gsq::FormatError);
    // Invalid regroup specs.
    CHECK_THROWS_AS(BOperand::nf4(w, {9, 32, 8}), gsq::FormatError);
    CHECK_THROWS_AS(BOperand::gse_transposed(a, {8, 7, 8}), gsq::FormatError);
    // A prepacked operand cannot be packed again.
    const gsq::gemm::PackedB p = gsq::gemm::pack_b(BOperand::nf4(w, {8, 32, 8}));
    CHECK_THROWS_AS(gsq::gemm::pack_b(BOperand::packed(p)), gsq::ConfigError);
    // QCD: A's fp32 extents are checked too.
    const Tensor<float> x = gsq::test::random_matrix(4, 63, 3);
    CHECK_THROWS_AS(gsq::gemm::qcd_gemm_nt(x.view(), false, {8, 32, 8}, BOperand::nf4(w, {8, 32, 8}), c.view()),
                    gsq::ShapeError);
  }
}
