// gsq/gemm/dispatch.hpp — which GEMM path runs, and which one ran.
//
// The path is gsq::selected_isa() (core/isa.hpp: program choice, then GSQ_ISA, then
// CPUID); every path gives the same bits, so the choice only changes speed.
// active_isa() reports the path of the last GEMM on this thread, for tests, benchmarks
// and examples (as ruy's last_used_path()).
#pragma once

#include "gsq/core/config.hpp"
#include "gsq/core/isa.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

namespace detail {
inline Isa& last_isa() noexcept {
  static thread_local Isa isa = Isa::kReference;
  return isa;
}
}  // namespace detail

/// The path the last integer GEMM on this thread ran (kReference before any call).
inline Isa active_isa() noexcept { return detail::last_isa(); }

}  // namespace gemm
GSQ_NAMESPACE_END
