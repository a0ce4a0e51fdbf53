#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gsq/core/parallel.hpp"
#include "gsq/quant/gse.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::GseMatrix;
using gsq::GseSpec;
using gsq::Rounding;

constexpr float kFltMax = std::numeric_limits<float>::max();
constexpr float kDenormMin = std::numeric_limits<float>::denorm_min();

// Every stored byte (mantissas incl. tail padding, exponents) of two matrices agrees.
bool same_storage(const GseMatrix& a, const GseMatrix& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols() || !(a.spec() == b.spec())) return false;
  for (std::int64_t r = 0; r < a.rows(); ++r) {
    if (std::memcmp(a.mantissa_row(r), b.mantissa_row(r), static_cast<std::size_t>(a.row_bytes())))
      return false;
    if (std::memcmp(a.exponent_row(r), b.exponent_row(r),
                    static_cast<std::size_t>(a.groups_per_row())))
      return false;
  }
  return true;
}

// Heavy-tailed data whose rows span the whole float range: row r is scaled by 2^k with k
// cycling through extreme exponents, some rows are all zero, subnormal, near FLT_MAX,
// or mix huge and tiny values (so scaled values underflow into the subnormals).
gsq::Tensor<float> awkward_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  gsq::Tensor<float> t = gsq::test::random_matrix(rows, cols, seed);
  static const int kScales[] = {0, -140, 120, -60, 30, -126, 100, -20, 7};
  for (std::int64_t r = 0; r < rows; ++r) {
    const int kind = static_cast<int>((static_cast<std::uint64_t>(r) + seed) % 13);
    for (std::int64_t c = 0; c < cols; ++c) {
      float& v = t(r, c);
      switch (kind) {
        case 9:
          v = 0.0f;
          break;
        case 10:
          v = kDenormMin * static_cast<float>((c * 7 + r) % 23) * (c % 2 ? -1.0f : 1.0f);
          break;
        case 11:
          v = (c % 3 == 0 ? kFltMax : kFltMax * 0.37f * v / 30.0f);
          break;
        case 12:
          v = (c % 5 == 0 ? 3e30f : 1e-41f * v);
          break;
        default:
          v = std::ldexp(v, kScales[kind]);
          break;
      }
      if (!std::isfinite(v)) v = kFltMax;
    }
  }
  return t;
}

// A plain transpose copy (test-only; the library never makes one).
gsq::Tensor<float> transposed(const gsq::Tensor<float>& t) {
  gsq::Tensor<float> out({t.view().cols(), t.view().rows()});
  for (std::int64_t r = 0; r < t.view().rows(); ++r)
    for (std::int64_t c = 0; c < t.view().cols(); ++c) out(c, r) = t(r, c);
  return out;
}

void check_isa_paths(const gsq::Tensor<float>& x, const GseSpec& spec, bool transpose,
                     Rounding rounding) {
  const std::int64_t rows = transpose ? x.view().cols() : x.view().rows();
  const std::int64_t cols = transpose ? x.view().rows() : x.view().cols();
  gsq::QuantizeOptions options;
  options.rounding = rounding;
  options.seed = 1234;
  options.stream = 7;
  GseMatrix ref(rows, cols, spec);
  gsq::quantize_gse_reference(x, transpose, ref, options);
  gsq::Tensor<float> ref_back({x.view().rows(), x.view().cols()});
  gsq::dequantize_gse_reference(ref, transpose, ref_back);
  gsq::test::for_each_isa([&](gsq::Isa) {
    GseMatrix q(rows, cols, spec);
    gsq::quantize_gse(x, transpose, q, options);
    REQUIRE(same_storage(q, ref));
    gsq::Tensor<float> back({x.view().rows(), x.view().cols()});
    gsq::dequantize_gse(ref, transpose, back);
    REQUIRE(gsq::test::bitwise_equal(back.data(), ref_back.data(), back.numel()));
  });
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("gse: every ISA path is bit-identical to the reference") {
    // Formats: all bit-widths, fast-path and odd group sizes, both exponent widths.
    for (int bits = gsq::kMinGseBits; bits <= gsq::kMaxGseBits; ++bits) {
      for (int group : {8, 9, 24, 32, 64, 100, 128, 256}) {
        for (int exp_bits : {5, 8}) {
          const GseSpec spec{bits, group, exp_bits};
          // Shapes: tiny, G-1/G/G+1 along both axes, odd sizes straddling tiles.
          // The long rows reach the 16-groups-at-once fast path (and its tail).
          const std::int64_t shapes[][2] = {
              {1, 1},          {3, group - 1}, {5, group}, {2, group + 1},  {17, 2 * group + 3},
              {group + 1, 17}, {33, 65},       {7, 131},   {3, 16 * group}, {2, 33 * group + 5}};
          for (const auto& shape : shapes) {
            const auto seed = static_cast<std::uint64_t>(bits * 1000 + group * 10 + exp_bits);
            const gsq::Tensor<float> x = awkward_matrix(shape[0], shape[1], seed);
            for (bool transpose : {false, true}) {
              for (Rounding rounding : {Rounding::kNearestEven, Rounding::kStochastic}) {
                CAPTURE(spec.name());
                CAPTURE(shape[0]);
                CAPTURE(shape[1]);
                CAPTURE(transpose);
                CAPTURE(static_cast<int>(rounding));
                check_isa_paths(x, spec, transpose, rounding);
              }
            }
          }
        }
      }
    }
  }

  TEST_CASE("gse: edge sizes along both axes are bit-identical on every path") {
    for (std::int64_t n : gsq::test::kEdgeSizes) {
      for (const GseSpec spec : {GseSpec{8, 32, 8}, GseSpec{4, 32, 8}, GseSpec{3, 64, 5}}) {
        const gsq::Tensor<float> x = awkward_matrix(n, 2 * n + 1, static_cast<std::uint64_t>(n));
        CAPTURE(n);
        CAPTURE(spec.name());
        for (bool transpose : {false, true}) {
          check_isa_paths(x, spec, transpose, Rounding::kNearestEven);
          check_isa_paths(x, spec, transpose, Rounding::kStochastic);
        }
      }
    }
  }

  TEST_CASE("gse: round trip error is at most half a step unless saturated") {
    for (int bits : {2, 3, 4, 5, 8}) {
      for (int group : {8, 32, 33, 128}) {
        const GseSpec spec{bits, group, 8};
        for (std::int64_t cols : {std::int64_t{1}, std::int64_t{group - 1}, std::int64_t{group},
                                  std::int64_t{group + 1}, std::int64_t{97}}) {
          const gsq::Tensor<float> x = awkward_matrix(13, cols, static_cast<std::uint64_t>(cols));
          const GseMatrix q = gsq::quantize_gse(x, spec, false);
          gsq::Tensor<float> back({13, cols});
          gsq::dequantize_gse(q, false, back);
          const int qmax = spec.max_mantissa();
          for (std::int64_t r = 0; r < 13; ++r)
            for (std::int64_t c = 0; c < cols; ++c) {
              const int e = q.exponent(r, c / group);
              const double step = std::ldexp(1.0, e);
              const double err = std::fabs(static_cast<double>(x(r, c)) - back(r, c));
              CAPTURE(spec.name());
              CAPTURE(x(r, c));
              REQUIRE(std::isfinite(back(r, c)));
              if (std::fabs(x(r, c)) <= qmax * step) {
                REQUIRE(err <= 0.5 * step);
              } else {
                // Only the top of the range saturates, and by less than one step.
                REQUIRE(std::abs(q.mantissa(r, c)) == qmax);
                REQUIRE(err < step);
              }
            }
          // The tail padding holds zeros.
          for (std::int64_t r = 0; r < 13; ++r)
            for (std::int64_t c = cols; c < q.padded_cols(); ++c) REQUIRE(q.mantissa(r, c) == 0);
        }
      }
    }
  }

  TEST_CASE("gse: all-zero subnormal and FLT_MAX groups") {
    gsq::Tensor<float> x({4, 64});
    for (std::int64_t c = 0; c < 64; ++c) {
      x(0, c) = (c % 2 ? -0.0f : 0.0f);
      x(1, c) = kDenormMin * static_cast<float>(c);  // subnormal group
      x(2, c) = (c % 2 ? -kFltMax : kFltMax) * (c < 32 ? 1.0f : 0.5f);
      x(3, c) = std::ldexp(1.0f, -120) * static_cast<float>(c - 32);  // e well above e_min
    }
    gsq::test::for_each_isa([&](gsq::Isa) {
      const GseMatrix q = gsq::quantize_gse(x, GseSpec{8, 32, 8}, false);
      CHECK(q.exponent(0, 0) == -128);
      for (std::int64_t c = 0; c < 64; ++c) CHECK(q.mantissa(0, c) == 0);
      // Subnormal groups clamp to e_min = -128: steps of 2^-128, values below half a step → 0.
      CHECK(q.exponent(1, 0) == -128);
      CHECK(q.mantissa(1, 31) == 0);
      CHECK(q.exponent(2, 0) == 127 - 6);
      CHECK(q.mantissa(2, 0) == 127);  // FLT_MAX·2^-121 ≈ 127.99 saturates
      CHECK(q.mantissa(2, 1) == -127);
      CHECK(q.exponent(2, 1) == 126 - 6);  // FLT_MAX/2 in the second group
      CHECK(q.mantissa(2, 32) == 127);
      CHECK(std::isfinite(q.value(2, 0)));
      CHECK(q.exponent(3, 0) == -120 + 5 - 6);  // amax = 32·2^-120
      CHECK(q.exponent(3, 1) == -120 + 4 - 6);  // amax = 31·2^-120
      CHECK(q.value(3, 0) == x(3, 0));          // small integers times 2^-120 are exact
      CHECK(q.value(3, 63) == x(3, 63));
      // With b=2 the exponent of a subnormal group (ilogb >= -149) also clamps to -128.
      const GseMatrix q2 = gsq::quantize_gse(x, GseSpec{2, 32, 8}, false);
      CHECK(q2.exponent(1, 1) == -128);
    });
  }

  TEST_CASE("gse: five exponent bits clamp to -16..15 and saturate") {
    gsq::Tensor<float> x({3, 32});
    for (std::int64_t c = 0; c < 32; ++c) {
      x(0, c) = 1e9f * static_cast<float>(c - 16);   // e would be 29+4-6 > 15
      x(1, c) = 1e-9f * static_cast<float>(c - 16);  // e would be far below -16
      x(2, c) = static_cast<float>(c - 16);          // in range: exact
    }
    gsq::test::for_each_isa([&](gsq::Isa) {
      const GseMatrix q = gsq::quantize_gse(x, GseSpec{8, 32, 5}, false);
      CHECK(q.exponent(0, 0) == 15);
      CHECK(q.mantissa(0, 0) == -127);
      CHECK(q.mantissa(0, 31) == 127);
      CHECK(q.mantissa(0, 16) == 0);
      CHECK(q.exponent(1, 0) == -16);
      for (std::int64_t c = 0; c < 32; ++c) CHECK(q.mantissa(1, c) == 0);  // < 2^-17
      CHECK(q.exponent(2, 0) == 4 - 6);
      for (std::int64_t c = 0; c < 32; ++c) CHECK(q.value(2, c) == x(2, c));
    });
  }

  TEST_CASE("gse: non-finite input names the tensor and source position") {
    for (bool transpose : {false, true}) {
      for (float bad :
           {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
            -std::numeric_limits<float>::infinity()}) {
        gsq::Tensor<float> x = gsq::test::random_matrix(37, 70, 3);
        x(21, 45) = bad;
        gsq::test::for_each_isa([&](gsq::Isa) {
          gsq::QuantizeOptions options;
          options.name = "blocks.3.attn.x";
          CAPTURE(transpose);
          try {
            (void)gsq::quantize_gse(x, GseSpec{8, 32, 8}, transpose, options);
            FAIL("expected a FormatError");
          } catch (const gsq::FormatError& e) {
            CHECK(e.code() == gsq::ErrorCode::kNonFinite);
            const std::string what = e.what();
            CHECK(what.find("blocks.3.attn.x") != std::string::npos);
            CHECK(what.find("row 21, column 45") != std::string::npos);
            CHECK(what.find(std::isnan(bad) ? "NaN" : "Inf") != std::string::npos);
          }
        });
      }
    }
  }

  TEST_CASE("gse: transposed quantization equals quantizing a transposed copy") {
    const gsq::Tensor<float> x = awkward_matrix(70, 45, 77);
    const gsq::Tensor<float> xt = transposed(x);
    for (const GseSpec spec : {GseSpec{8, 32, 8}, GseSpec{4, 24, 8}, GseSpec{6, 9, 5}}) {
      gsq::test::for_each_isa([&](gsq::Isa) {
        const GseMatrix a = gsq::quantize_gse(x, spec, true);
        const GseMatrix b = gsq::quantize_gse(xt, spec, false);
        CHECK(same_storage(a, b));
        gsq::Tensor<float> da({70, 45}), db({45, 70});
        gsq::dequantize_gse(a, true, da);
        gsq::dequantize_gse(b, false, db);
        CHECK(gsq::test::bitwise_equal(transposed(db).data(), da.data(), da.numel()));
      });
    }
  }

  TEST_CASE("gse: strided views are read and written through their stride") {
    gsq::Tensor<float> big = awkward_matrix(40, 100, 5);
    const gsq::MatrixView<const float> x = big.view().block(3, 7, 30, 70);
    const gsq::Tensor<float> dense = gsq::Tensor<float>::copy_of(x);
    for (bool transpose : {false, true}) {
      gsq::test::for_each_isa([&](gsq::Isa) {
        const GseMatrix a = gsq::quantize_gse(x, GseSpec{5, 32, 8}, transpose);
        const GseMatrix b = gsq::quantize_gse(dense, GseSpec{5, 32, 8}, transpose);
        CHECK(same_storage(a, b));
        gsq::Tensor<float> out({40, 100});
        for (float& v : out) v = -7.0f;
        gsq::MatrixView<float> window = out.view().block(5, 11, 30, 70);
        gsq::dequantize_gse(a, transpose, window);
        for (std::int64_t r = 0; r < 40; ++r)
          for (std::int64_t c = 0; c < 100; ++c) {
            const bool inside = r >= 5 && r < 35 && c >= 11 && c < 81;
            if (!inside) REQUIRE(out(r, c) == -7.0f);
          }
        CHECK(out(5, 11) == (transpose ? a.value(0, 0) : a.value(0, 0)));
      });
    }
  }

  TEST_CASE("gse: stochastic rounding is unbiased") {
    // Each row: one value that pins e (64 → e = 0 for b = 8), then n copies of x whose
    // scaled value has fractional part f. Each decoded copy is floor(x) + Bernoulli(f),
    // so the mean over N copies has standard deviation sqrt(f(1-f)/N).
    const std::int64_t rows = 64, cols = 1024;
    for (float x : {0.3f, -2.7f, 10.5f, 0.01f}) {
      gsq::Tensor<float> src({rows, cols});
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) src(r, c) = (c % 32 == 0) ? 64.0f : x;
      gsq::QuantizeOptions options;
      options.rounding = Rounding::kStochastic;
      options.seed = 2024;
      const GseMatrix q = gsq::quantize_gse(src, GseSpec{8, 32, 8}, false, options);
      double sum = 0;
      std::int64_t n = 0;
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c)
          if (c % 32 != 0) {
            REQUIRE(q.exponent(r, c / 32) == 0);
            const int m = q.mantissa(r, c);
            REQUIRE((m == std::floor(x) || m == std::floor(x) + 1));
            sum += m;
            ++n;
          }
      const double f = x - std::floor(x);
      const double sd = std::sqrt(f * (1 - f) / static_cast<double>(n));
      CAPTURE(x);
      CHECK(std::fabs(sum / static_cast<double>(n) - x) <= 5 * sd + 1e-7);
      // Different seeds give different draws; the same seed the same bits.
      gsq::QuantizeOptions other = options;
      other.seed = 2025;
      CHECK(!same_storage(q, gsq::quantize_gse(src, GseSpec{8, 32, 8}, false, other)));
      CHECK(same_storage(q, gsq::quantize_gse(src, GseSpec{8, 32, 8}, false, options)));
    }
  }

  TEST_CASE("gse: SIMD Philox matches the scalar generator across the 32-bit carry") {
#if GSQ_HAVE_X86_SIMD
    for (std::uint64_t index : {std::uint64_t{0}, std::uint64_t{123456789},
                                (std::uint64_t{1} << 32) - 5, (std::uint64_t{7} << 32) - 1}) {
      float out[16];
      if (gsq::is_isa_supported(gsq::Isa::kAvx512Vnni)) {
        gsq::quant::kernels::avx512::uniform_batch(99, 5, index, out);
        for (int i = 0; i < 16; ++i) CHECK(out[i] == gsq::random_uniform(99, 5, index + i));
      }
      if (gsq::is_isa_supported(gsq::Isa::kAvx2)) {
        gsq::quant::kernels::avx2::uniform_batch(99, 5, index, out);
        for (int i = 0; i < 8; ++i) CHECK(out[i] == gsq::random_uniform(99, 5, index + i));
      }
    }
#else
    MESSAGE("skipping: no x86 SIMD in this build");
#endif
  }

  TEST_CASE("gse: one thread and two threads give the same bits") {
    const gsq::Tensor<float> x = awkward_matrix(300, 257, 8);
    gsq::QuantizeOptions options;
    options.rounding = Rounding::kStochastic;
    options.seed = 3;
    for (bool transpose : {false, true}) {
      gsq::test::for_each_isa([&](gsq::Isa) {
        gsq::set_num_threads(1);
        const GseMatrix a = gsq::quantize_gse(x, GseSpec{4, 32, 8}, transpose, options);
        gsq::Tensor<float> da({300, 257});
        gsq::dequantize_gse(a, transpose, da);
        gsq::set_num_threads(2);
        const GseMatrix b = gsq::quantize_gse(x, GseSpec{4, 32, 8}, transpose, options);
        gsq::Tensor<float> db({300, 257});
        gsq::dequantize_gse(b, transpose, db);
        gsq::set_num_threads(0);
        CHECK(same_storage(a, b));
        CHECK(gsq::test::bitwise_equal(da.data(), db.data(), da.numel()));
      });
    }
  }

  TEST_CASE("gse: shape mismatches throw ShapeError") {
    const gsq::Tensor<float> x = gsq::test::random_matrix(4, 40, 1);
    GseMatrix wrong(40, 5, GseSpec{8, 32, 8});
    CHECK_THROWS_AS(gsq::quantize_gse(x, false, wrong), gsq::ShapeError);
    GseMatrix q = gsq::quantize_gse(x, GseSpec{8, 32, 8}, false);
    gsq::Tensor<float> out({4, 41});
    CHECK_THROWS_AS(gsq::dequantize_gse(q, false, out), gsq::ShapeError);
    CHECK_THROWS_AS(gsq::dequantize_gse(q, true, out), gsq::ShapeError);
  }
}
