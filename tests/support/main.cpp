// The main of every unit-test binary: doctest's, plus one environment variable.
//
// GSQ_TEST_ISA=<reference|avx2|avx512> restricts the tests' ISA loops (for_each_isa in
// test_support.hpp) to that one path. ctest runs the kernel layers once per SIMD path
// this way (tests/CMakeLists.txt, label `isa`); a path this CPU or build lacks exits
// with status 77 and a "SKIPPED:" line, which ctest reports as a skipped test — so a
// machine without AVX-512 shows "avx512: skipped", not a pass it never ran.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"

int main(int argc, char** argv) {
  if (const char* forced = std::getenv("GSQ_TEST_ISA"); forced != nullptr && *forced != '\0') {
    try {
      const gsq::Isa isa = gsq::parse_isa(forced, "GSQ_TEST_ISA");
      if (!gsq::is_isa_supported(isa)) {
        std::printf("SKIPPED: ISA %s is not supported by this CPU or build\n", forced);
        return 77;
      }
    } catch (const gsq::Error& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 2;
    }
  }
  doctest::Context context(argc, argv);
  return context.run();
}
