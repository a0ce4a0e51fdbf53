#include <doctest/doctest.h>

#include "gsq/core/error.hpp"

TEST_SUITE("core") {
  TEST_CASE("error: what() carries category and code and the subclass follows the category") {
    try {
      gsq::detail::throw_error(gsq::ErrorCode::kShapeMismatch, "x is 2x3, expected 3x3");
      FAIL("no throw");
    } catch (const gsq::ShapeError& e) {
      CHECK(std::string(e.what()) == "[gsq.shape.101] x is 2x3, expected 3x3");
      CHECK(e.code() == gsq::ErrorCode::kShapeMismatch);
    }
    CHECK_THROWS_AS(gsq::detail::throw_error(gsq::ErrorCode::kNonFinite, "t"), gsq::FormatError);
    CHECK_THROWS_AS(gsq::detail::throw_error(gsq::ErrorCode::kBadEnvironment, "t"),
                    gsq::ConfigError);
    CHECK_THROWS_AS(gsq::detail::throw_error(gsq::ErrorCode::kUnsupportedIsa, "t"),
                    gsq::UnsupportedIsa);
    CHECK_THROWS_AS(gsq::detail::throw_error(gsq::ErrorCode::kInvalidArgument, "t"), gsq::Error);
  }

  TEST_CASE("error: IoError names file and offset") {
    try {
      gsq::detail::throw_io_error(gsq::ErrorCode::kTruncated, "header declares 100 bytes",
                                  "model.bin", 28);
      FAIL("no throw");
    } catch (const gsq::IoError& e) {
      CHECK(std::string(e.what()) == "[gsq.io.302] model.bin at byte 28: header declares 100 bytes");
      CHECK(e.file() == "model.bin");
      CHECK(e.offset() == 28);
    }
  }
}
