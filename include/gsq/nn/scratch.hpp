// gsq/nn/scratch.hpp — scratch buffers shared by all layers of a thread.
//
// Some layer work needs weight-sized temporaries (L4Q's merged and quantized weight,
// [out, in]), activation-sized ones for a forward without a cache, or gradient-sized
// ones that live for one backward call (dY and dH quantized in both orientations).
// Owning them per layer would multiply them by the number of layers in a model (on
// stories260K that made integer training's scratch twice FP32's), although layers run
// one after another. So they live here, once per thread, and only grow: an FP32 slot
// keeps the largest request seen and serves every smaller one from the same storage, a
// GSE-INT slot (one per slot and format, a handful in any model) likewise reshapes its
// largest buffer in place. Batch lengths vary from step to step (the trainer trims each
// batch to its own length), so keying buffers on the shape would add buffers for every
// new length and never free them; grow-only slots stop allocating once the longest batch
// has been seen, and a step then allocates nothing and faults no pages. Everything is
// counted under MemoryCategory::kScratch. Contents are unspecified on return; a view is
// valid until the next request for the same slot on the same thread.
#pragma once

#include <algorithm>
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
  kAttention,    // attention's per-task blocks (nn/attention.hpp); GSE-INT: sub-slots 0..9
  kAttentionPacked,  // attention's packed operands of one call, read by every task
  kClassifier,   // the fused classifier's logit chunk and its gradient (nn/loss.hpp)
  kCount
};

/// One thread's shared scratch.
struct SharedScratch {
  using GseKey = std::tuple<int, int, int, int>;  // slot·16 + sub-slot, bits, group, exp bits
  Tensor<float> fp32[static_cast<int>(ScratchSlot::kCount)];
  std::map<GseKey, GseMatrix> gse;
};
inline SharedScratch& thread_scratch() noexcept {
  thread_local SharedScratch scratch;
  return scratch;
}

/// `count` floats of FP32 scratch for `slot` on this thread (grow-only).
inline float* shared_scratch_floats(ScratchSlot slot, std::int64_t count) {
  Tensor<float>& t = thread_scratch().fp32[static_cast<int>(slot)];
  if (t.numel() < count) {
    t = Tensor<float>();  // release first so peak memory is not doubled
    t = Tensor<float>({count}, MemoryCategory::kScratch);
  }
  return t.data();
}

/// A [rows, cols] FP32 scratch matrix for `slot` on this thread.
inline MatrixView<float> shared_scratch(ScratchSlot slot, std::int64_t rows, std::int64_t cols) {
  return MatrixView<float>(shared_scratch_floats(slot, rows * cols), rows, cols);
}

/// A [rows, cols] GSE-INT scratch matrix of format `spec` for `slot` (and sub-slot `sub`,
/// 0..15, for callers that need several at once) on this thread. Grow-only: the slot's
/// buffer is reshaped in place when it is large enough, else replaced by one at least as
/// large as both the old buffer and the request.
inline GseMatrix& shared_gse(ScratchSlot slot, int sub, std::int64_t rows, std::int64_t cols,
                             const GseSpec& spec) {
  auto& buffers = thread_scratch().gse;
  const SharedScratch::GseKey key{static_cast<int>(slot) * 16 + sub, spec.bits, spec.group,
                                  spec.exp_bits};
  GseMatrix& m = buffers[key];
  if (m.bytes() > 0 && m.reshape_within(rows, cols)) return m;
  const std::int64_t groups = (cols + spec.group - 1) / spec.group;
  const std::int64_t mantissa_bytes = gse_code_bytes(spec.code_bits(), groups * spec.group);
  const std::int64_t per_row = mantissa_bytes + groups;  // bytes of one row with its exponents
  const std::int64_t old_rows = per_row > 0 ? (m.bytes() + per_row - 1) / per_row : 0;
  m = GseMatrix();  // release first so peak memory is not doubled
  m = GseMatrix(std::max(rows, old_rows), cols, spec, MemoryCategory::kScratch);
  m.reshape_within(rows, cols);
  return m;
}
inline GseMatrix& shared_gse(ScratchSlot slot, std::int64_t rows, std::int64_t cols,
                             const GseSpec& spec) {
  return shared_gse(slot, 0, rows, cols, spec);
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
