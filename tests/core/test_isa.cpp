#include <doctest/doctest.h>

#include "gsq/core/cpu.hpp"
#include "gsq/core/isa.hpp"

TEST_SUITE("core") {
  TEST_CASE("isa: reference is always supported and selectable") {
    MESSAGE("CPU features: " << gsq::cpu_features().to_string());
    CHECK(gsq::is_isa_supported(gsq::Isa::kReference));
    gsq::ScopedIsa scope(gsq::Isa::kReference);
    CHECK(gsq::selected_isa() == gsq::Isa::kReference);
  }

  TEST_CASE("isa: a scoped choice restores the previous one") {
    const gsq::Isa before = gsq::selected_isa();
    for (gsq::Isa isa : gsq::kAllIsas) {
      if (!gsq::is_isa_supported(isa)) {
        MESSAGE("skipping " << gsq::isa_name(isa) << ": not supported here");
        CHECK_THROWS_AS(gsq::ScopedIsa{isa}, gsq::UnsupportedIsa);
        continue;
      }
      {
        gsq::ScopedIsa scope(isa);
        CHECK(gsq::selected_isa() == isa);
      }
      CHECK(gsq::selected_isa() == before);
    }
  }

  TEST_CASE("isa: names parse and bad names are a ConfigError") {
    for (gsq::Isa isa : gsq::kAllIsas) CHECK(gsq::parse_isa(gsq::isa_name(isa)) == isa);
    CHECK_THROWS_AS(gsq::parse_isa("sse9"), gsq::ConfigError);
  }

  TEST_CASE("isa: feature implications hold") {
    const auto& f = gsq::cpu_features();
    if (f.has_avx512_path()) CHECK(f.has_avx2_path());
    if (f.avx512_vnni) CHECK(f.avx512f);
  }
}
