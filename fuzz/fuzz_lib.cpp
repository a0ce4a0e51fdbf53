// fuzz/fuzz_lib.cpp — all fuzz targets compiled once (with coverage instrumentation),
// linked into each fuzz_<target> binary; fuzz_target.cpp only picks one by name.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "fuzz_targets.hpp"

int gsq_fuzz_run(const char* target_name, const std::uint8_t* data, std::size_t size) {
  static const gsq::fuzz::Target* target = [&] {
    const gsq::fuzz::Target* t = gsq::fuzz::find_target(target_name);
    if (t == nullptr) {
      std::fprintf(stderr, "unknown fuzz target %s\n", target_name);
      std::abort();
    }
    return t;
  }();
  (void)target->run(std::span<const std::uint8_t>(data, size));
  return 0;
}
