#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gsq/core/parallel.hpp"
#include "gsq/quant/nf4.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::kNf4Block;
using gsq::kNf4Codebook;

// Distance in double from the normalised value to entry j.
double dist(float x, int j) { return std::fabs(static_cast<double>(x) - kNf4Codebook[j]); }

// Checks that `code` is a nearest entry to x, and that ties go towards zero.
bool is_nearest(float x, int code) {
  for (int j = 0; j < 16; ++j) {
    if (dist(x, j) < dist(x, code)) return false;
    if (j != code && dist(x, j) == dist(x, code) &&
        std::fabs(kNf4Codebook[j]) < std::fabs(kNf4Codebook[code]))
      return false;
  }
  return true;
}

bool same_codes(const gsq::Nf4Matrix& a, const gsq::Nf4Matrix& b) {
  for (std::int64_t r = 0; r < a.rows(); ++r)
    for (std::int64_t i = 0; i < a.row_bytes(); ++i)
      if (a.code_row(r)[i] != b.code_row(r)[i]) return false;
  for (std::int64_t r = 0; r < a.rows(); ++r)
    for (std::int64_t blk = 0; blk < a.blocks_per_row(); ++blk) {
      const float x = a.block_absmax(r, blk), y = b.block_absmax(r, blk);
      if (std::memcmp(&x, &y, sizeof x) != 0) return false;
    }
  return true;
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("nf4: codebook is strictly increasing and symmetric at the ends") {
    for (int i = 0; i + 1 < 16; ++i) CHECK(kNf4Codebook[i] < kNf4Codebook[i + 1]);
    CHECK(kNf4Codebook[0] == -1.0f);
    CHECK(kNf4Codebook[15] == 1.0f);
    CHECK(kNf4Codebook[gsq::kNf4ZeroCode] == 0.0f);
  }

  TEST_CASE("nf4: thresholds pick the nearest entry with ties towards zero") {
    const auto& t = gsq::quant::kernels::nf4_thresholds();
    for (int i = 0; i < 15; ++i) {
      // The threshold and its neighbours on both sides, plus the exact midpoint if it is a float.
      for (float x : {t[i], std::nextafter(t[i], -2.0f), std::nextafter(t[i], 2.0f),
                      std::nextafter(std::nextafter(t[i], -2.0f), -2.0f)}) {
        const int code = gsq::quant::kernels::reference::nf4_code(x);
        CAPTURE(x);
        CHECK(is_nearest(x, code));
      }
    }
    // A dense sweep of [-1, 1].
    for (int k = -100000; k <= 100000; ++k) {
      const float x = static_cast<float>(k) / 100000.0f;
      REQUIRE(is_nearest(x, gsq::quant::kernels::reference::nf4_code(x)));
    }
  }

  TEST_CASE("nf4: codebook entries times absmax encode exactly") {
    // Row: each block holds every codebook entry scaled by a power of two, so the
    // decode must reproduce the input exactly.
    gsq::Tensor<float> w({3, 2 * kNf4Block});
    for (std::int64_t r = 0; r < 3; ++r)
      for (std::int64_t c = 0; c < 2 * kNf4Block; ++c)
        w(r, c) = kNf4Codebook[c % 16] * std::ldexp(1.0f, static_cast<int>(r * 3 - 2 + c / 64));
    gsq::test::for_each_isa([&](gsq::Isa) {
      const gsq::Nf4Matrix q = gsq::quantize_nf4(w);
      for (std::int64_t r = 0; r < 3; ++r)
        for (std::int64_t c = 0; c < 2 * kNf4Block; ++c) {
          CHECK(q.code(r, c) == c % 16);
          CHECK(q.value(r, c) == w(r, c));
        }
      gsq::Tensor<float> back({3, 2 * kNf4Block});
      gsq::dequantize_nf4(q, back);
      CHECK(gsq::test::bitwise_equal(back.data(), w.data(), w.numel()));
    });
  }

  TEST_CASE("nf4: every code is the nearest entry at edge sizes") {
    for (std::int64_t cols : gsq::test::kEdgeSizes) {
      for (std::int64_t extra : {0, 63, 64, 65, 128}) {
        const std::int64_t n = cols + extra;
        CAPTURE(n);
        gsq::Tensor<float> w = gsq::test::random_matrix(3, n, 11 + static_cast<std::uint64_t>(n));
        const gsq::Nf4Matrix q = gsq::quantize_nf4(w);
        REQUIRE(q.blocks_per_row() == (n + kNf4Block - 1) / kNf4Block);
        for (std::int64_t r = 0; r < 3; ++r) {
          for (std::int64_t blk = 0; blk < q.blocks_per_row(); ++blk) {
            float amax = 0.0f;
            for (std::int64_t c = blk * kNf4Block; c < std::min(n, (blk + 1) * kNf4Block); ++c)
              amax = std::max(amax, std::fabs(w(r, c)));
            REQUIRE(q.block_absmax(r, blk) == amax);
          }
          for (std::int64_t c = 0; c < q.blocks_per_row() * kNf4Block; ++c) {
            if (c >= n) {
              REQUIRE(q.code(r, c) == gsq::kNf4ZeroCode);
              continue;
            }
            const float amax = q.block_absmax(r, c / kNf4Block);
            if (amax == 0.0f) {
              REQUIRE(q.code(r, c) == gsq::kNf4ZeroCode);
              continue;
            }
            REQUIRE(is_nearest(w(r, c) / amax, q.code(r, c)));
          }
        }
      }
    }
  }

  TEST_CASE("nf4: all-zero tiny and huge blocks") {
    gsq::Tensor<float> w({2, 3 * kNf4Block});
    const float tiny = std::numeric_limits<float>::denorm_min();
    const float big = std::numeric_limits<float>::max();
    for (std::int64_t c = 0; c < 3 * kNf4Block; ++c) {
      w(0, c) = 0.0f;  // block 0 of row 0: zeros
      w(1, c) = (c % 2 ? -1.0f : 1.0f) * (c < 64 ? tiny * static_cast<float>(c % 5) : big);
    }
    for (std::int64_t c = 64; c < 3 * kNf4Block; ++c) w(0, c) = std::ldexp(1.0f, -140) * (c % 7);
    const gsq::Nf4Matrix q = gsq::quantize_nf4(w);
    for (std::int64_t c = 0; c < kNf4Block; ++c) CHECK(q.code(0, c) == gsq::kNf4ZeroCode);
    CHECK(q.block_absmax(0, 0) == 0.0f);
    gsq::Tensor<float> back({2, 3 * kNf4Block});
    gsq::dequantize_nf4(q, back);
    for (std::int64_t r = 0; r < 2; ++r)
      for (std::int64_t c = 0; c < 3 * kNf4Block; ++c) {
        CHECK(std::isfinite(back(r, c)));
        const float amax = q.block_absmax(r, c / kNf4Block);
        if (amax > 0.0f) CHECK(is_nearest(w(r, c) / amax, q.code(r, c)));
      }
    CHECK(back(1, 64) == big);
  }

  TEST_CASE("nf4: non-finite input names the tensor row and column") {
    gsq::Tensor<float> w = gsq::test::random_matrix(4, 100, 3);
    w(2, 77) = std::numeric_limits<float>::quiet_NaN();
    gsq::test::for_each_isa([&](gsq::Isa) {
      try {
        (void)gsq::quantize_nf4(w, false, gsq::MemoryCategory::kWeights, "layers.0.wq");
        FAIL("expected a FormatError");
      } catch (const gsq::FormatError& e) {
        CHECK(e.code() == gsq::ErrorCode::kNonFinite);
        const std::string what = e.what();
        CHECK(what.find("layers.0.wq") != std::string::npos);
        CHECK(what.find("row 2") != std::string::npos);
        CHECK(what.find("column 77") != std::string::npos);
        CHECK(what.find("NaN") != std::string::npos);
      }
    });
    w(2, 77) = -std::numeric_limits<float>::infinity();
    CHECK_THROWS_AS(gsq::quantize_nf4(w, true), gsq::FormatError);
  }

  TEST_CASE("nf4: double quantization follows the documented layout and error bound") {
    const std::int64_t rows = 37, cols = 3 * kNf4Block + 5;  // 111 rows × 4 blocks: two runs of 256
    gsq::Tensor<float> w = gsq::test::random_matrix(rows * 3, cols, 5);
    const gsq::Nf4Matrix plain = gsq::quantize_nf4(w, false);
    const gsq::Nf4Matrix dq = gsq::quantize_nf4(w, true);
    REQUIRE(dq.double_quant());
    const std::int64_t n = plain.rows() * plain.blocks_per_row();
    REQUIRE(n > gsq::kNf4DoubleQuantBlock);
    REQUIRE(dq.dq_scales().size() ==
            (n + gsq::kNf4DoubleQuantBlock - 1) / gsq::kNf4DoubleQuantBlock);
    double mean = 0;
    for (std::int64_t i = 0; i < n; ++i) mean += plain.absmax()[i];
    mean /= static_cast<double>(n);
    CHECK(dq.dq_offset() == static_cast<float>(mean));
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t r = i / plain.blocks_per_row(), b = i % plain.blocks_per_row();
      const float scale = dq.dq_scales()[i / gsq::kNf4DoubleQuantBlock];
      CHECK(dq.dq_codes()[i] >= -127);
      // Half a step plus a few ulps of the decode arithmetic.
      CHECK(std::fabs(dq.block_absmax(r, b) - plain.absmax()[i]) <=
            0.5f * scale + 4e-7f * std::fabs(plain.absmax()[i]) + 1e-30f);
    }
    // Codes are chosen against the true absmax: the same as without double quantization.
    for (std::int64_t r = 0; r < plain.rows(); ++r)
      for (std::int64_t i = 0; i < plain.row_bytes(); ++i)
        REQUIRE(plain.code_row(r)[i] == dq.code_row(r)[i]);
    CHECK(dq.bytes() < plain.bytes());
  }

  TEST_CASE("nf4: every ISA path is bit-identical to the reference") {
    for (std::int64_t cols : gsq::test::kEdgeSizes) {
      for (std::int64_t extra : {0, 64, 129}) {
        const std::int64_t n = cols + extra;
        CAPTURE(n);
        gsq::Tensor<float> w = gsq::test::random_matrix(5, n, 100 + static_cast<std::uint64_t>(n));
        gsq::Nf4Matrix ref;
        gsq::Tensor<float> ref_out({5, n});
        std::vector<float> ref_row(static_cast<std::size_t>((n + 63) / 64 * 64));
        {
          gsq::ScopedIsa scope(gsq::Isa::kReference);
          ref = gsq::quantize_nf4(w, true);
          gsq::dequantize_nf4(ref, ref_out);
          gsq::decode_nf4_row(ref, 4, ref_row.data());
        }
        gsq::test::for_each_isa([&](gsq::Isa) {
          const gsq::Nf4Matrix q = gsq::quantize_nf4(w, true);
          REQUIRE(same_codes(q, ref));
          // The in-place form over a used matrix gives the same bits.
          gsq::Nf4Matrix reused = gsq::quantize_nf4(gsq::test::random_matrix(5, n, 1), true);
          gsq::quantize_nf4(w, reused);
          REQUIRE(same_codes(reused, ref));
          gsq::Tensor<float> out({5, n});
          gsq::dequantize_nf4(ref, out);
          REQUIRE(gsq::test::bitwise_equal(out.data(), ref_out.data(), out.numel()));
          std::vector<float> row(ref_row.size());
          gsq::decode_nf4_row(ref, 4, row.data());
          REQUIRE(gsq::test::bitwise_equal(row.data(), ref_row.data(),
                                           static_cast<std::int64_t>(row.size())));
          for (std::int64_t c = 0; c < n; ++c) REQUIRE(out(2, c) == ref.value(2, c));
        });
      }
    }
  }

  TEST_CASE("nf4: values on and beside every threshold get the same code on every path") {
    // Block absmax 1, so w / absmax is exactly the threshold or its neighbour.
    const auto& t = gsq::quant::kernels::nf4_thresholds();
    gsq::Tensor<float> w({3, kNf4Block});
    for (std::int64_t r = 0; r < 3; ++r) {
      w(r, 0) = (r == 1 ? -1.0f : 1.0f);
      for (std::int64_t c = 1; c < kNf4Block; ++c) {
        const float x = t[static_cast<std::size_t>((c - 1) % 15)];
        w(r, c) = r == 0 ? x : (r == 1 ? std::nextafter(x, -2.0f) : std::nextafter(x, 2.0f));
      }
    }
    gsq::Nf4Matrix ref;
    {
      gsq::ScopedIsa scope(gsq::Isa::kReference);
      ref = gsq::quantize_nf4(w);
    }
    for (std::int64_t r = 0; r < 3; ++r)
      for (std::int64_t c = 0; c < kNf4Block; ++c) REQUIRE(is_nearest(w(r, c), ref.code(r, c)));
    gsq::test::for_each_isa([&](gsq::Isa) { CHECK(same_codes(gsq::quantize_nf4(w), ref)); });
  }

  TEST_CASE("nf4: one thread and two threads give the same bits") {
    gsq::Tensor<float> w = gsq::test::random_matrix(301, 1000, 9);
    gsq::set_num_threads(1);
    const gsq::Nf4Matrix a = gsq::quantize_nf4(w, true);
    gsq::Tensor<float> da({301, 1000});
    gsq::dequantize_nf4(a, da);
    gsq::set_num_threads(2);
    const gsq::Nf4Matrix b = gsq::quantize_nf4(w, true);
    gsq::Tensor<float> db({301, 1000});
    gsq::dequantize_nf4(b, db);
    gsq::set_num_threads(0);
    CHECK(same_codes(a, b));
    CHECK(gsq::test::bitwise_equal(da.data(), db.data(), da.numel()));
  }
}
