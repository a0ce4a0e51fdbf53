// fuzz/fuzz_target.cpp — the libFuzzer entry point, built once per target in
// fuzz_targets.hpp with -DGSQ_FUZZ_TARGET="<name>" (see fuzz/CMakeLists.txt).
//
// Inputs that parse or are rejected with gsq::Error are fine; anything else — another
// exception (std::terminate → abort), a sanitizer report, a leak, an allocation above
// -malloc_limit_mb, a timeout — is reported by libFuzzer as a crash.
#include <cstddef>
#include <cstdint>

#ifndef GSQ_FUZZ_TARGET
#error "define GSQ_FUZZ_TARGET to one of the names in fuzz_targets.hpp"
#endif

int gsq_fuzz_run(const char* target_name, const std::uint8_t* data, std::size_t size);  // fuzz_lib.cpp

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return gsq_fuzz_run(GSQ_FUZZ_TARGET, data, size);
}
