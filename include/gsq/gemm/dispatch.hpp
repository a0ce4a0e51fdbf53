// gsq/gemm/dispatch.hpp — which GEMM path runs, and which one ran.
//
// The path is gsq::selected_isa() (core/isa.hpp: program choice, then GSQ_ISA, then
// CPUID); every path gives the same bits, so the choice only changes speed. Each path
// is a table of plain function pointers (STYLE.md §5.7): its kernel and its packers.
// active_isa() reports the path of the last GEMM on this thread, for tests, benchmarks
// and examples (as ruy's last_used_path()).
#pragma once

#include <cstdint>

#include "gsq/core/config.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/kernels/avx2.hpp"
#include "gsq/gemm/kernels/avx2_pack.hpp"
#include "gsq/gemm/kernels/avx512_vnni.hpp"
#include "gsq/gemm/kernels/avx512_vnni_pack.hpp"
#include "gsq/gemm/kernels/reference.hpp"
#include "gsq/gemm/pack.hpp"
#include "gsq/gemm/params.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

namespace detail {

using KernelFn = void (*)(const KernelParams&) noexcept;
using PackAFn = void (*)(const GseMatrix&, const PanelGeometry&, std::int64_t, std::int64_t,
                         std::uint8_t*, float*) noexcept;
using PackBFn = void (*)(const BSourceView&, const PanelGeometry&, std::int64_t, std::int64_t,
                         std::int64_t, std::int8_t*, float*) noexcept;

/// One path: its kernel and its packers.
struct PathTable {
  Isa isa;
  KernelFn kernel;
  PackAFn pack_a;
  PackBFn pack_b;
};

inline PathTable path_table(Isa isa) noexcept {
#if GSQ_HAVE_X86_SIMD
  switch (isa) {
    case Isa::kAvx512Vnni:
      return {isa, &kernels::avx512_vnni::gemm_kernel, &kernels::avx512_vnni::pack_a,
              &kernels::avx512_vnni::pack_b};
    case Isa::kAvx2:
      return {isa, &kernels::avx2::gemm_kernel, &kernels::avx2::pack_a, &kernels::avx2::pack_b};
    case Isa::kReference: break;
  }
#endif
  return {Isa::kReference, &kernels::reference::gemm_kernel, &pack_a_reference,
          &pack_b_reference};
}

inline Isa& last_isa() noexcept {
  static thread_local Isa isa = Isa::kReference;
  return isa;
}

}  // namespace detail

// The choice itself is gsq's (core/isa.hpp), shared with every other dispatched layer;
// it is reachable under gsq::gemm as STYLE.md names it.
using ::gsq::ScopedIsa;
using ::gsq::selected_isa;
using ::gsq::set_isa_mask;

/// The path the last integer GEMM on this thread ran (kReference before any call).
inline Isa active_isa() noexcept { return detail::last_isa(); }

}  // namespace gemm
GSQ_NAMESPACE_END
