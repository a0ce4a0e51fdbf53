#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "gsq/quant/gse.hpp"
#include "gsq/quant/mx.hpp"
#include "support/test_support.hpp"

namespace {

bool same_storage(const gsq::GseMatrix& a, const gsq::GseMatrix& b) {
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

// Data over the whole exponent range, so scale bytes from 5 to 254 all occur.
gsq::Tensor<float> wide_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  gsq::Tensor<float> t = gsq::test::random_matrix(rows, cols, seed);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const int k = static_cast<int>((r * 37 + (c / 32) * 11) % 250) - 140;
      t(r, c) = std::ldexp(t(r, c), k);
      if (!std::isfinite(t(r, c))) t(r, c) = 1e38f;
    }
  return t;
}

void expect_bad_encoding(const gsq::MxInt8Matrix& mx, const std::string& where) {
  try {
    (void)gsq::from_mxint8(mx);
    FAIL("expected a FormatError");
  } catch (const gsq::FormatError& e) {
    CHECK(e.code() == gsq::ErrorCode::kBadEncoding);
    CAPTURE(e.what());
    CHECK(std::string(e.what()).find(where) != std::string::npos);
  }
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("mx: GSE-INT8 exports to MXINT8 and back bit-identically") {
    for (std::int64_t cols : {std::int64_t{1}, std::int64_t{31}, std::int64_t{32}, std::int64_t{33},
                              std::int64_t{100}, std::int64_t{257}}) {
      CAPTURE(cols);
      const gsq::Tensor<float> x = wide_matrix(9, cols, static_cast<std::uint64_t>(cols));
      const gsq::GseMatrix q = gsq::quantize_gse(x, gsq::MxInt8Format::spec(), false);
      const gsq::MxInt8Matrix mx = gsq::to_mxint8(q);
      REQUIRE(mx.blocks_per_row() == q.groups_per_row());
      gsq::Tensor<float> from_gse({9, cols}), from_mx({9, cols});
      gsq::dequantize_gse(q, false, from_gse);
      gsq::dequantize_mxint8(mx, from_mx);
      CHECK(gsq::test::bitwise_equal(from_gse.data(), from_mx.data(), from_gse.numel()));
      for (std::int64_t r = 0; r < 9; ++r)
        for (std::int64_t g = 0; g < q.groups_per_row(); ++g) {
          REQUIRE(mx.block(r, g).scale == q.exponent(r, g) + 133);
          REQUIRE(mx.block(r, g).scale != gsq::kE8M0Nan);
        }
      CHECK(same_storage(gsq::from_mxint8(mx), q));
    }
  }

  TEST_CASE("mx: the OCP example values decode as specified") {
    gsq::MxInt8Matrix mx(1, 32);
    gsq::MxInt8Block& b = mx.block(0, 0);
    b.scale = 127;         // X = 1
    b.elements[0] = 64;    // 64 · 2^-6 = 1
    b.elements[1] = -1;    // -2^-6
    b.elements[2] = 127;   // 127/64
    b.elements[3] = -128;  // -2
    CHECK(mx.value(0, 0) == 1.0f);
    CHECK(mx.value(0, 1) == -0.015625f);
    CHECK(mx.value(0, 2) == 1.984375f);
    CHECK(mx.value(0, 3) == -2.0f);
    b.scale = 130;  // X = 8
    CHECK(mx.value(0, 0) == 8.0f);
    b.scale = gsq::kE8M0Nan;
    CHECK(std::isnan(mx.value(0, 0)));
  }

  TEST_CASE("mx: narrower GSE formats with G 32 export exactly") {
    const gsq::Tensor<float> x = wide_matrix(5, 70, 4);
    for (const gsq::GseSpec spec : {gsq::GseSpec{4, 32, 8}, gsq::GseSpec{6, 32, 5}}) {
      const gsq::GseMatrix q = gsq::quantize_gse(x, spec, false);
      const gsq::MxInt8Matrix mx = gsq::to_mxint8(q);
      gsq::Tensor<float> a({5, 70}), b({5, 70});
      gsq::dequantize_gse(q, false, a);
      gsq::dequantize_mxint8(mx, b);
      CHECK(gsq::test::bitwise_equal(a.data(), b.data(), a.numel()));
      gsq::dequantize_gse(gsq::from_mxint8(mx), false, b);
      CHECK(gsq::test::bitwise_equal(a.data(), b.data(), a.numel()));
    }
    const gsq::GseMatrix g64 = gsq::quantize_gse(x, gsq::GseSpec{8, 64, 8}, false);
    CHECK_THROWS_AS(gsq::to_mxint8(g64), gsq::FormatError);
  }

  TEST_CASE("mx: exponents above the E8M0 range are lowered exactly or rejected") {
    gsq::GseMatrix q(2, 32, gsq::MxInt8Format::spec());
    for (std::int64_t r = 0; r < 2; ++r) {
      q.exponent_row(r)[0] = 125;  // s would be 258
      for (std::int64_t c = 0; c < 32; ++c) q.set_mantissa(r, c, static_cast<int>(c % 7) - 3);
    }
    q.set_mantissa(1, 5, 100);  // 100 · 2^4 does not fit int8
    try {
      (void)gsq::to_mxint8(q);
      FAIL("expected a FormatError");
    } catch (const gsq::FormatError& e) {
      CHECK(e.code() == gsq::ErrorCode::kBadEncoding);
      CHECK(std::string(e.what()).find("row 1, block 0") != std::string::npos);
    }
    q.set_mantissa(1, 5, 7);  // 7 · 16 = 112 fits
    const gsq::MxInt8Matrix mx = gsq::to_mxint8(q);
    CHECK(mx.block(0, 0).scale == 254);
    for (std::int64_t c = 0; c < 32; ++c) {
      CHECK(mx.value(0, c) == q.value(0, c));
      CHECK(mx.value(1, c) == q.value(1, c));
    }
  }

  TEST_CASE("mx: foreign blocks are rescaled exactly or rejected by name") {
    gsq::MxInt8Matrix mx(3, 40);
    // Row 0 block 0: element -128 with all elements even → halved, exponent + 1.
    gsq::MxInt8Block& a = mx.block(0, 0);
    a.scale = 120;
    for (int i = 0; i < 32; ++i) a.elements[i] = static_cast<std::int8_t>(i % 2 ? -128 : 2 * i);
    // Row 1 block 1: scale 2 → e = -131 < -128, elements multiples of 8 → exact.
    gsq::MxInt8Block& b = mx.block(1, 1);
    b.scale = 2;
    for (int i = 0; i < 32; ++i) b.elements[i] = static_cast<std::int8_t>(8 * (i % 9) - 32);
    // Row 2 block 1: all zero with scale 0; its padding (cols 40..63) holds junk.
    gsq::MxInt8Block& c = mx.block(2, 1);
    c.scale = 0;
    for (int i = 8; i < 32; ++i) c.elements[i] = 77;
    const gsq::GseMatrix q = gsq::from_mxint8(mx);
    CHECK(q.exponent(0, 0) == 120 - 133 + 1);
    CHECK(q.exponent(1, 1) == -128);
    CHECK(q.exponent(2, 1) == -128);
    for (std::int64_t r = 0; r < 3; ++r) {
      for (std::int64_t col = 0; col < 40; ++col) {
        CAPTURE(r);
        CAPTURE(col);
        REQUIRE(q.value(r, col) == mx.value(r, col));
        REQUIRE(std::abs(q.mantissa(r, col)) <= 127);
      }
      for (std::int64_t col = 40; col < 64; ++col) REQUIRE(q.mantissa(r, col) == 0);
    }

    gsq::MxInt8Matrix odd = gsq::MxInt8Matrix(3, 40);
    odd.block(2, 1).elements[0] = -128;
    odd.block(2, 1).elements[3] = 5;
    expect_bad_encoding(odd, "row 2, block 1");
    gsq::MxInt8Matrix tiny(2, 64);
    tiny.block(1, 0).scale = 1;  // e = -132: elements must be multiples of 16
    tiny.block(1, 0).elements[7] = 24;
    expect_bad_encoding(tiny, "row 1, block 0");
    gsq::MxInt8Matrix nan(2, 64);
    nan.block(0, 1).scale = gsq::kE8M0Nan;
    expect_bad_encoding(nan, "row 0, block 1");
  }
}
