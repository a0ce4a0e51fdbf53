// gemm_f32 and gemm_bf16 on gsq's float engine: every ISA path against the definition
// (float_reference.hpp) bit for bit, every transpose combination, alpha and accumulate,
// strided views, edge and real-ish sizes, every loop order (tiny blocks), thread counts
// 1/2/3, and the error against an FP64 product within a derived bound.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/core/bf16.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/gemm/f32.hpp"
#include "support/test_support.hpp"

using gsq::MatrixView;
using gsq::Tensor;
using gsq::gemm::GemmOptions;

namespace {

struct Shape {
  std::int64_t m, n, k;
};

/// A matrix embedded in a wider buffer (row stride = cols + pad), random values.
struct Strided {
  Tensor<float> buf;
  std::int64_t rows, cols, stride;
  Strided(std::int64_t r, std::int64_t c, std::uint64_t seed, std::int64_t pad = 3)
      : buf(gsq::test::random_matrix(std::max<std::int64_t>(r, 1), c + pad, seed)),
        rows(r),
        cols(c),
        stride(c + pad) {}
  MatrixView<const float> view() const { return {buf.data(), rows, cols, stride}; }
  MatrixView<float> mut() { return {buf.data(), rows, cols, stride}; }
};

/// Forces the small-block loop orders (several k-blocks, one tile per row block, no
/// serial threshold) for its lifetime.
class ScopedTinyBlocks {
 public:
  ScopedTinyBlocks() {
    auto& t = gsq::gemm::detail::float_tuning();
    saved_[0] = t.float_block_steps.load();
    saved_[1] = t.float_a_block_bytes.load();
    saved_[2] = t.float_serial_macs.load();
    t.float_block_steps = 6;
    t.float_a_block_bytes = 1;
    t.float_serial_macs = 0;
  }
  ~ScopedTinyBlocks() {
    auto& t = gsq::gemm::detail::float_tuning();
    t.float_block_steps = saved_[0];
    t.float_a_block_bytes = saved_[1];
    t.float_serial_macs = saved_[2];
  }

 private:
  std::int64_t saved_[3];
};

bool same_bits(const Tensor<float>& x, const Tensor<float>& y) {
  if (x.numel() != y.numel()) return false;
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    if (std::memcmp(x.data() + i, y.data() + i, 4) != 0) {
      MESSAGE("first difference at flat index " << i << ": " << x[i] << " vs " << y[i]);
      return false;
    }
  }
  return true;
}

/// Operands of C [m, n] = op(A) op(B) stored as the transposes ask, with row padding.
struct Problem {
  Strided a, b;
  bool ta, tb;
  Tensor<float> c0;
  Problem(Shape s, bool ta_, bool tb_, std::uint64_t seed)
      : a(ta_ ? s.k : s.m, ta_ ? s.m : s.k, seed),
        b(tb_ ? s.n : s.k, tb_ ? s.k : s.n, seed + 1),
        ta(ta_),
        tb(tb_),
        c0(gsq::test::random_matrix(s.m, s.n, seed + 2)) {}
  Tensor<float> run(bool bf16, const GemmOptions& o) const {
    Tensor<float> c = c0.clone();
    if (bf16) gsq::gemm::gemm_bf16(a.view(), ta, b.view(), tb, c.view(), o);
    else gsq::gemm::gemm_f32(a.view(), ta, b.view(), tb, c.view(), o);
    return c;
  }
  Tensor<float> reference(bool bf16, const GemmOptions& o) const {
    Tensor<float> c = c0.clone();
    if (bf16) gsq::gemm::gemm_bf16_reference<float, float>(a.view(), ta, b.view(), tb, c.view(), o);
    else gsq::gemm::gemm_f32_reference(a.view(), ta, b.view(), tb, c.view(), o);
    return c;
  }
};

std::vector<Shape> edge_shapes() {
  std::vector<Shape> shapes;
  for (std::int64_t s : {1, 2, 7, 15, 16, 17, 31, 32, 33, 97}) {
    shapes.push_back({s, 37, 45});
    shapes.push_back({13, s, 45});
    shapes.push_back({13, 37, s});
  }
  shapes.push_back({25, 16, 300});   // thin N (LoRA X·Aᵀ): A read in place
  shapes.push_back({16, 70, 130});   // thin M (LoRA dHᵀ·X)
  shapes.push_back({40, 100, 16});   // thin K (LoRA H·Bᵀ)
  shapes.push_back({1, 1, 1});
  return shapes;
}

void check_paths_match_reference(bool bf16) {
  std::uint64_t seed = 100;
  for (const Shape& s : edge_shapes()) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const Problem p(s, ta, tb, seed++);
      for (const GemmOptions& o : {GemmOptions{1.0f, false}, GemmOptions{-0.75f, true}}) {
        CAPTURE(s.m);
        CAPTURE(s.n);
        CAPTURE(s.k);
        CAPTURE(ta);
        CAPTURE(tb);
        CAPTURE(o.accumulate);
        const Tensor<float> want = p.reference(bf16, o);
        gsq::test::for_each_isa([&](gsq::Isa) {
          CHECK(same_bits(p.run(bf16, o), want));
          ScopedTinyBlocks tiny;
          CHECK(same_bits(p.run(bf16, o), want));
        });
      }
    }
  }
}

/// |C − exact| <= bound, exact in FP64 from the operands as given (or bf16-rounded).
void check_against_fp64(const Problem& p, Shape s, const GemmOptions& o, bool bf16) {
  const Tensor<float> got = p.run(bf16, o);
  auto av = [&](std::int64_t i, std::int64_t k) {
    const float v = p.ta ? p.a.view()(k, i) : p.a.view()(i, k);
    return static_cast<double>(bf16 ? gsq::to_bf16(v).to_float() : v);
  };
  auto bv = [&](std::int64_t k, std::int64_t j) {
    const float v = p.tb ? p.b.view()(j, k) : p.b.view()(k, j);
    return static_cast<double>(bf16 ? gsq::to_bf16(v).to_float() : v);
  };
  // FP32 summation of K exact products: |err| <= gamma_K·Σ|a·b| (gamma_K = K·u/(1−K·u),
  // u = 2^-24), then one rounding each for alpha·acc and the accumulate.
  const double u = std::ldexp(1.0, -24);
  const double gamma = static_cast<double>(s.k + 2) * u / (1.0 - static_cast<double>(s.k + 2) * u);
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < s.m; ++i) {
    for (std::int64_t j = 0; j < s.n; ++j) {
      double exact = 0, mag = 0;
      for (std::int64_t k = 0; k < s.k; ++k) {
        exact += av(i, k) * bv(k, j);
        mag += std::fabs(av(i, k) * bv(k, j));
      }
      const double alpha = o.alpha;
      const double c0 = p.c0(i, j);
      const double want = o.accumulate ? alpha * exact + c0 : alpha * exact;
      const double bound = gamma * (std::fabs(alpha) * mag + (o.accumulate ? std::fabs(c0) : 0)) +
                           u * std::fabs(want) + 1e-30;
      if (std::fabs(static_cast<double>(got(i, j)) - want) > bound) ++bad;
    }
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_SUITE("gemm") {
  TEST_CASE("gemm f32: every ISA is bit-identical to reference for every transpose") {
    check_paths_match_reference(false);
  }

  TEST_CASE("gemm bf16: every ISA is bit-identical to reference for every transpose") {
    if (!gsq::cpu_features().avx512_bf16)
      MESSAGE("this CPU lacks AVX512_BF16: the avx512 path runs the FP32-kernel emulation");
    check_paths_match_reference(true);
  }

  TEST_CASE("gemm bf16: the reference reproduces vdpbf16ps on cancelling sums") {
    // Large magnitudes that cancel make the two roundings per pair visible: any other
    // order or a fused pair sum would differ somewhere.
    const Shape s{24, 40, 257};
    Problem p(s, false, true, 7);
    for (std::int64_t i = 0; i < p.a.buf.numel(); ++i) p.a.buf[i] *= (i % 3 == 0 ? 4096.0f : 1.0f);
    const GemmOptions o{1.0f, false};
    const Tensor<float> want = p.reference(true, o);
    gsq::test::for_each_isa([&](gsq::Isa) { CHECK(same_bits(p.run(true, o), want)); });
  }

  TEST_CASE("gemm bf16: bf16 operands give the bits of their float values") {
    const Shape s{19, 45, 77};
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const Problem p(s, ta, tb, 300 + t);
      // The same operands as bf16 storage.
      auto to_bf16 = [](const Strided& x) {
        std::vector<gsq::bf16> out(static_cast<std::size_t>(x.rows * x.cols));
        for (std::int64_t r = 0; r < x.rows; ++r)
          for (std::int64_t c = 0; c < x.cols; ++c)
            out[static_cast<std::size_t>(r * x.cols + c)] = gsq::to_bf16(x.view()(r, c));
        return out;
      };
      const auto ah = to_bf16(p.a), bh = to_bf16(p.b);
      const MatrixView<const gsq::bf16> av(ah.data(), p.a.rows, p.a.cols);
      const MatrixView<const gsq::bf16> bv(bh.data(), p.b.rows, p.b.cols);
      const GemmOptions o{0.5f, true};
      const Tensor<float> want = p.run(true, o);
      gsq::test::for_each_isa([&](gsq::Isa) {
        Tensor<float> c1 = p.c0.clone(), c2 = p.c0.clone(), c3 = p.c0.clone();
        gsq::gemm::gemm_bf16(p.a.view(), ta, bv, tb, c1.view(), o);
        gsq::gemm::gemm_bf16(av, ta, p.b.view(), tb, c2.view(), o);
        gsq::gemm::gemm_bf16(av, ta, bv, tb, c3.view(), o);
        CHECK(same_bits(c1, want));
        CHECK(same_bits(c2, want));
        CHECK(same_bits(c3, want));
      });
    }
  }

  TEST_CASE("gemm f32: error against FP64 within the FP32 summation bound") {
    for (const Shape& s : {Shape{17, 33, 600}, Shape{5, 70, 1031}}) {
      for (int t = 0; t < 4; ++t) {
        const Problem p(s, t & 1, t & 2, 500 + t);
        gsq::test::for_each_isa([&](gsq::Isa) {
          check_against_fp64(p, s, {1.0f, false}, false);
          check_against_fp64(p, s, {0.5f, true}, false);
          // BF16 against the exact product of the bf16-rounded operands: the same bound.
          check_against_fp64(p, s, {1.0f, false}, true);
        });
      }
    }
  }

  TEST_CASE("gemm bf16: error against FP64 of the unrounded operands is the rounding bound") {
    const Shape s{9, 31, 512};
    const Problem p(s, false, true, 77);
    const Tensor<float> got = p.run(true, {1.0f, false});
    // Each operand rounds with relative error <= 2^-9: a product by <= 2^-8 + 2^-18; plus
    // the FP32 summation (gamma_K).
    const double gamma = 514 * std::ldexp(1.0, -24) / (1 - 514 * std::ldexp(1.0, -24));
    const double rel = std::ldexp(1.0, -8) + std::ldexp(1.0, -18) + gamma;
    std::int64_t bad = 0;
    for (std::int64_t i = 0; i < s.m; ++i)
      for (std::int64_t j = 0; j < s.n; ++j) {
        double exact = 0, mag = 0;
        for (std::int64_t k = 0; k < s.k; ++k) {
          const double prod = static_cast<double>(p.a.view()(i, k)) * p.b.view()(j, k);
          exact += prod;
          mag += std::fabs(prod);
        }
        if (std::fabs(got(i, j) - exact) > rel * mag * (1 + 1e-6)) ++bad;
      }
    CHECK(bad == 0);
  }

  TEST_CASE("gemm f32: one two and three threads give the same bits at large k") {
    // k >= 512 (where Eigen's threaded product changed bits), a LoRA-thin shape, the
    // weight-gradient shape (k = tokens, A transposed) and the input-gradient shape.
    struct Case {
      Shape s;
      bool ta, tb;
    };
    const Case cases[] = {{{96, 200, 1031}, false, true},
                          {{64, 16, 700}, false, true},
                          {{70, 48, 600}, true, false},
                          {{48, 90, 2100}, false, false}};
    for (bool bf16 : {false, true}) {
      for (const Case& cs : cases) {
        const Problem p(cs.s, cs.ta, cs.tb, 900);
        for (const GemmOptions& o : {GemmOptions{1.0f, false}, GemmOptions{0.25f, true}}) {
          gsq::test::for_each_isa([&](gsq::Isa) {
            auto& tune = gsq::gemm::detail::float_tuning();
            const std::int64_t serial = tune.float_serial_macs.load();
            tune.float_serial_macs = 0;  // these shapes must really run threaded
            gsq::set_num_threads(1);
            const Tensor<float> one = p.run(bf16, o);
            gsq::set_num_threads(2);
            const Tensor<float> two = p.run(bf16, o);
            gsq::set_num_threads(3);
            const Tensor<float> three = p.run(bf16, o);
            gsq::set_num_threads(0);
            tune.float_serial_macs = serial;
            CHECK(same_bits(one, two));
            CHECK(same_bits(one, three));
          });
        }
        // And the reference (checked once per case: it is slow).
        CHECK(same_bits(p.run(bf16, {1.0f, false}), p.reference(bf16, {1.0f, false})));
      }
    }
  }

  TEST_CASE("gemm f32: classifier shape 256x32000x256 is the same on every path and thread count") {
    // Logits h·Wᵀ with a 32000-word vocabulary; the reference is checked on a few rows
    // (every row is computed independently, so a row block of C is a full check of it).
    const Shape s{256, 32000, 256};
    const Problem p(s, false, true, 4242);
    for (bool bf16 : {false, true}) {
      CAPTURE(bf16);
      const GemmOptions o{1.0f, false};
      gsq::set_num_threads(1);
      const Tensor<float> base = p.run(bf16, o);  // the best path here
      gsq::set_num_threads(0);
      gsq::test::for_each_isa([&](gsq::Isa isa) {
        if (isa == gsq::Isa::kReference) return;  // checked below on a row block
        for (int threads : {1, 2, 3}) {
          gsq::set_num_threads(threads);
          CHECK(same_bits(p.run(bf16, o), base));
        }
        gsq::set_num_threads(0);
      });
      const std::int64_t rows = 13;
      Tensor<float> want({rows, s.n});
      const MatrixView<const float> a_rows = p.a.view().block(100, 0, rows, s.k);
      if (bf16)
        gsq::gemm::gemm_bf16_reference<float, float>(a_rows, false, p.b.view(), true, want.view(), o);
      else
        gsq::gemm::gemm_f32_reference(a_rows, false, p.b.view(), true, want.view(), o);
      CHECK(std::memcmp(want.data(), base.data() + 100 * s.n, rows * s.n * sizeof(float)) == 0);
    }
  }

  TEST_CASE("gemm f32: K of zero writes alpha times zero and shapes are checked") {
    Tensor<float> a({4, 0}), b({0, 5});
    Tensor<float> c = gsq::test::random_matrix(4, 5, 1);
    const Tensor<float> c0 = c.clone();
    gsq::gemm::gemm_f32(a.view(), false, b.view(), false, c.view(), {2.0f, true});
    CHECK(same_bits(c, c0));
    gsq::gemm::gemm_bf16(a.view(), false, b.view(), false, c.view(), {2.0f, false});
    for (float v : c) CHECK(v == 0.0f);
    Tensor<float> bad({6, 5});
    CHECK_THROWS_AS(gsq::gemm::gemm_f32(a.view(), false, bad.view(), false, c.view()), gsq::ShapeError);
    Tensor<float> a2({4, 6}), c_bad({4, 4});
    CHECK_THROWS_AS(gsq::gemm::gemm_f32(a2.view(), false, bad.view(), false, c_bad.view()), gsq::ShapeError);
    CHECK_THROWS_AS(gsq::gemm::gemm_bf16(a2.view(), false, bad.view(), false, c_bad.view()), gsq::ShapeError);
  }

  TEST_CASE("gemm bf16: rounding is to nearest even and NaN stays NaN") {
    CHECK(gsq::to_bf16(1.0f).bits == 0x3F80);
    CHECK(gsq::to_bf16(std::bit_cast<float>(0x3F808000u)).bits == 0x3F80);  // tie to even
    CHECK(gsq::to_bf16(std::bit_cast<float>(0x3F818000u)).bits == 0x3F82);  // tie to even (up)
    CHECK(gsq::to_bf16(std::bit_cast<float>(0x3F808001u)).bits == 0x3F81);  // above the tie
    CHECK(std::isnan(gsq::to_bf16(std::nanf("")).to_float()));
    CHECK(gsq::to_bf16(-2.5f).to_float() == -2.5f);
  }
}
