#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gsq/format/gse.hpp"
#include "gsq/format/mx.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/format/uniform.hpp"

TEST_SUITE("format") {
  TEST_CASE("gse: specs outside their ranges are rejected") {
    CHECK_NOTHROW((gsq::GseSpec{2, 8, 5}.validate()));
    CHECK_NOTHROW((gsq::GseSpec{8, 256, 8}.validate()));
    CHECK_THROWS_AS((gsq::GseSpec{1, 32, 8}.validate()), gsq::FormatError);
    CHECK_THROWS_AS((gsq::GseSpec{9, 32, 8}.validate()), gsq::FormatError);
    CHECK_THROWS_AS((gsq::GseSpec{8, 7, 8}.validate()), gsq::FormatError);
    CHECK_THROWS_AS((gsq::GseSpec{8, 257, 8}.validate()), gsq::FormatError);
    CHECK_THROWS_AS((gsq::GseSpec{8, 32, 6}.validate()), gsq::FormatError);
    CHECK(gsq::GseSpec{8, 32, 8}.bits_per_element() == 8.25);
    CHECK(gsq::GseSpec{4, 32, 8}.bits_per_element() == 4.25);
    CHECK(gsq::GseSpec{8, 32, 5}.exp_min() == -16);
    CHECK(gsq::GseSpec{8, 32, 5}.exp_max() == 15);
  }

  TEST_CASE("gse: nibble storage holds every 4-bit mantissa across odd groups") {
    // G = 9: groups straddle bytes, so set/get must address nibbles by global column.
    gsq::GseMatrix m(3, 20, gsq::GseSpec{4, 9, 8});
    CHECK(m.groups_per_row() == 3);
    CHECK(m.padded_cols() == 27);
    CHECK(m.row_bytes() == 14);
    for (std::int64_t r = 0; r < 3; ++r)
      for (std::int64_t c = 0; c < 27; ++c)
        m.set_mantissa(r, c, static_cast<int>((c + r) % 15) - 7);
    for (std::int64_t r = 0; r < 3; ++r)
      for (std::int64_t c = 0; c < 27; ++c)
        CHECK(m.mantissa(r, c) == static_cast<int>((c + r) % 15) - 7);
    // Fresh matrices hold zeros with e = e_min.
    gsq::GseMatrix z(2, 5, gsq::GseSpec{8, 8, 8});
    CHECK(z.exponent(1, 0) == -128);
    CHECK(z.value(1, 4) == 0.0f);
  }

  TEST_CASE("gse: codes are stored in at most b + 1 bits, 6-bit fields 4 per 3 bytes") {
    for (int bits = gsq::kMinGseBits; bits <= gsq::kMaxGseBits; ++bits) {
      for (int group : {8, 9, 15, 16, 17, 31, 32, 33, 64}) {
        const gsq::GseSpec spec{bits, group, 8};
        CAPTURE(spec.name());
        for (std::int64_t cols : {1, 2, 3, 5, 13, 31, 97}) {
          gsq::GseMatrix m(3, cols, spec);
          const std::int64_t padded = m.padded_cols();
          // Memory falls with the bits: at most b + 1 bits per padded element (+1 byte);
          // b = 2 shares the nibble layout of b <= 4 (DESIGN.md).
          CHECK(m.row_bytes() * 8 <= (std::max(bits, 3) + 1) * padded + 7);
          CHECK(m.row_bytes() == gsq::gse_code_bytes(spec.code_bits(), padded));
          const int qmax = spec.max_mantissa();
          auto code = [&](std::int64_t r, std::int64_t c) {
            return static_cast<int>((c * 7 + r * 3) % (2 * qmax + 1)) - qmax;
          };
          // Written out of order so neighbouring fields must survive read-modify-write.
          for (std::int64_t r = 0; r < 3; ++r) {
            for (std::int64_t c = padded - 1; c >= 0; c -= 2) m.set_mantissa(r, c, code(r, c));
            for (std::int64_t c = padded - 2; c >= 0; c -= 2) m.set_mantissa(r, c, code(r, c));
          }
          bool ok = true;
          std::vector<std::int8_t> plain(static_cast<std::size_t>(padded)), back(plain.size());
          std::vector<std::int8_t> packed(static_cast<std::size_t>(m.row_bytes()));
          for (std::int64_t r = 0; r < 3; ++r) {
            for (std::int64_t c = 0; c < padded; ++c) {
              ok = ok && m.mantissa(r, c) == code(r, c);
              plain[static_cast<std::size_t>(c)] = static_cast<std::int8_t>(code(r, c));
            }
            // The bulk packers produce the same bytes as element-wise stores, and invert.
            gsq::gse_pack_codes(plain.data(), padded, spec.code_bits(), packed.data());
            ok = ok && std::memcmp(packed.data(), m.mantissa_row(r), packed.size()) == 0;
            gsq::gse_unpack_codes(packed.data(), padded, spec.code_bits(), back.data());
            ok = ok && back == plain;
          }
          CAPTURE(cols);
          CHECK(ok);
        }
      }
    }
    CHECK(gsq::GseSpec{6, 32, 8}.code_bits() == 6);
    CHECK(gsq::GseSpec{5, 32, 8}.code_bits() == 6);
    CHECK(gsq::GseSpec{7, 32, 8}.code_bits() == 8);
    CHECK(gsq::GseMatrix(1, 64, gsq::GseSpec{6, 32, 8}).row_bytes() == 48);
  }

  TEST_CASE("nf4: storage layout pads rows to whole blocks with the zero code") {
    gsq::Nf4Matrix m(2, 70, false);
    CHECK(m.blocks_per_row() == 2);
    CHECK(m.row_bytes() == 64);
    CHECK(m.code(1, 127) == gsq::kNf4ZeroCode);
    m.set_code(1, 3, 15);
    m.set_code(1, 2, 1);
    CHECK(m.code(1, 3) == 15);
    CHECK(m.code(1, 2) == 1);
    CHECK(m.code_row(1)[1] == (1 | (15 << 4)));
    gsq::Nf4Matrix dq(2, 70, true);
    CHECK(dq.bytes() < m.bytes());
  }

  TEST_CASE("mx: blocks are 33 bytes and decode the extreme scales exactly") {
    CHECK(sizeof(gsq::MxInt8Block) == 33);
    gsq::MxInt8Matrix m(1, 40);
    CHECK(m.blocks_per_row() == 2);
    gsq::MxInt8Block& b = m.block(0, 1);
    b.elements[0] = 127;
    b.elements[1] = -128;
    b.scale = 254;
    CHECK(m.value(0, 32) == std::ldexp(127.0f, 121));
    // -128 · 2^121 = -2^128 lies outside fp32: MX allows it, the fp32 decode is -Inf.
    CHECK(m.value(0, 33) == -std::numeric_limits<float>::infinity());
    b.scale = 0;
    CHECK(m.value(0, 32) == std::ldexp(127.0f, -133));
    CHECK(m.value(0, 32) > 0.0f);
    CHECK(m.value(0, 0) == 0.0f);
  }

  TEST_CASE("uniform: storage packs codes and decodes with one fused multiply-add") {
    CHECK_THROWS_AS((gsq::UniformSpec{1, 128}.validate()), gsq::FormatError);
    CHECK_THROWS_AS((gsq::UniformSpec{4, 0}.validate()), gsq::FormatError);
    CHECK(gsq::UniformSpec{4, 128}.qmin() == -8);
    CHECK(gsq::UniformSpec{4, 128}.qmax() == 7);
    CHECK(gsq::UniformSpec{3, 128}.bits_per_element() == 3.5);
    for (int bits : {3, 4, 6, 8}) {
      const gsq::UniformSpec spec{bits, 5};
      gsq::UniformMatrix m(2, 13, spec);
      CHECK(m.groups_per_row() == 3);
      for (std::int64_t r = 0; r < 2; ++r)
        for (std::int64_t c = 0; c < 15; ++c)
          m.set_code(r, c,
                     spec.qmin() + static_cast<int>((c * 3 + r) % (spec.qmax() - spec.qmin() + 1)));
      for (std::int64_t r = 0; r < 2; ++r)
        for (std::int64_t c = 0; c < 15; ++c)
          CHECK(m.code(r, c) ==
                spec.qmin() + static_cast<int>((c * 3 + r) % (spec.qmax() - spec.qmin() + 1)));
      m.step_row(1)[2] = 0.1f;
      m.offset_row(1)[2] = 0.3f;
      CHECK(m.value(1, 12) == std::fma(static_cast<float>(m.code(1, 12)), 0.1f, 0.3f));
    }
  }
}
