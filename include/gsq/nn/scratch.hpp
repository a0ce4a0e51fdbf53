// gsq/nn/scratch.hpp — scratch buffers shared by all layers of a thread.
//
// Some layer work needs weight-sized temporaries (L4Q's merged and quantized weight,
// [out, in]), activation-sized ones for a forward without a cache, or gradient-sized
// ones that live for one backward call (dY and dH quantized in both orientations).
// Owning them per layer would multiply them by the number of layers in a model (on
// stories260K that made integer training's scratch twice FP32's), although layers run
// one after another. So they live here, once per thread: FP32 slots grow to the largest
// request and are then reused (page faults are slow on the target machines), GSE-INT
// slots are kept per (slot, shape, format), a handful in any model. Everything is
// counted under MemoryCategory::kScratch. Contents are unspecified on return; a view is
// valid until the next request for the same slot on the same thread.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>

#include "gsq/core/config.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/workspace.hpp"

GSQ_NAMESPACE_BEGIN
namespace detail {

enum class ScratchSlot : int {
  kWeight = 0,   // a merged weight [out, in]
  kWeightWork,   // its quantized form, then its gradient [out, in]
  kBlock,        // a block of weight rows
  kActivation,   // an activation-sized temporary
  kAdapter,      // an adapter-sized temporary (e.g. a re-strided LoRA A, H = X·Aᵀ)
  kGradient,     // an output gradient dY [tokens, out], grouped along out
  kGradientT,    // the same, transposed: [out, tokens], grouped along tokens
  kAdapterGradient,   // a LoRA hidden gradient dH [tokens, rank]
  kAdapterGradientT,  // its transpose [rank, tokens]
  kHidden,       // the MLP's down input a = silu(g)·u, or dg in backward [tokens, hidden]
  kHiddenGate,   // g = gate(x) of a forward without a cache
  kHiddenUp,     // u = up(x) of a forward without a cache, or du in backward
  kCount
};

/// One thread's shared scratch.
struct SharedScratch {
  using GseKey = std::tuple<int, std::int64_t, std::int64_t, int, int, int>;
  Tensor<float> fp32[static_cast<int>(ScratchSlot::kCount)];
  std::map<GseKey, GseMatrix> gse;
};
inline SharedScratch& thread_scratch() noexcept {
  thread_local SharedScratch scratch;
  return scratch;
}

/// A [rows, cols] FP32 scratch matrix for `slot` on this thread.
inline MatrixView<float> shared_scratch(ScratchSlot slot, std::int64_t rows, std::int64_t cols) {
  Tensor<float>& t = thread_scratch().fp32[static_cast<int>(slot)];
  if (t.numel() < rows * cols) {
    t = Tensor<float>();  // release first so peak memory is not doubled
    t = Tensor<float>({rows * cols}, MemoryCategory::kScratch);
  }
  return MatrixView<float>(t.data(), rows, cols);
}

/// A [rows, cols] GSE-INT scratch matrix of format `spec` for `slot` on this thread.
inline GseMatrix& shared_gse(ScratchSlot slot, std::int64_t rows, std::int64_t cols,
                             const GseSpec& spec) {
  auto& buffers = thread_scratch().gse;
  const SharedScratch::GseKey key{static_cast<int>(slot), rows, cols, spec.bits, spec.group, spec.exp_bits};
  auto it = buffers.find(key);
  if (it == buffers.end())
    it = buffers.emplace(key, GseMatrix(rows, cols, spec, MemoryCategory::kScratch)).first;
  return it->second;
}

}  // namespace detail

/// Frees the scratch gsq keeps between calls, on every thread: the layers' shared
/// temporaries (above) and the GEMM's packing workspaces. Everything is allocated again
/// on demand. Call it between two models in one process, so that the memory accounting
/// of the second counts the scratch it needs itself (gsq-sweep, bench_model do).
inline void release_scratch() {
  run_on_each_thread([] {
    gemm::detail::release_thread_workspace();
    detail::thread_scratch() = detail::SharedScratch{};
  });
}

GSQ_NAMESPACE_END
