// gsq/gemm/workspace.hpp — per-thread scratch buffers that live across GEMM calls.
//
// Page faults are slow on the machines gsq targets (DESIGN.md "Machine facts"), so the
// packed A panel, the B block being packed and the partial accumulators are allocated
// once per thread, grown when a larger product needs more, and reused. They are ordinary
// AlignedBuffers counted under MemoryCategory::kScratch.
#pragma once

#include <cstdint>

#include "gsq/core/config.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/format/gse.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm::detail {

struct Workspace {
  AlignedBuffer<std::uint8_t> a_panel;  // packed A (the calling thread's)
  AlignedBuffer<float> a_exp;
  AlignedBuffer<std::int8_t> b_block;   // one packed B block
  AlignedBuffer<float> acc;             // fp32 partial sums between k-blocks
  AlignedBuffer<float> scratch;         // decode / regroup staging
  AlignedBuffer<float> absmax;          // decoded NF4 block scales (double quantization)
  GseMatrix qcd_a;                      // qcd_gemm_nt: A quantized from fp32
  AlignedBuffer<float> f32_a;           // gemm_f32/gemm_bf16 (float_driver.hpp): packed A
  AlignedBuffer<float> f32_b;           //   one packed B block
  AlignedBuffer<std::uint32_t> bf16_a;  //   the same as bf16 pairs (vdpbf16ps)
  AlignedBuffer<std::uint32_t> bf16_b;
};

/// This thread's workspace.
inline Workspace& thread_workspace() noexcept {
  static thread_local Workspace ws;
  return ws;
}

/// Frees this thread's workspace (it is allocated again by the next GEMM).
inline void release_thread_workspace() noexcept { thread_workspace() = Workspace{}; }

/// At least `count` elements of `buf`, reallocating (uninitialised) only to grow.
template <class T>
T* reserve(AlignedBuffer<T>& buf, std::int64_t count) {
  if (buf.size() < count) {
    buf = AlignedBuffer<T>();  // release first so peak memory is not doubled
    buf = AlignedBuffer<T>(count, MemoryCategory::kScratch, kUninitialized);
  }
  return buf.data();
}

}  // namespace gemm::detail
GSQ_NAMESPACE_END
