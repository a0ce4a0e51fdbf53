// gsq/nn/lora_merge.hpp — W[rows] += c·B[rows]·A, the LoRA merge, on the selected ISA.
//
// L4Q recomputes its merged weight W = W0 + c·B·A in every forward and backward
// (memory-optimised backward) before quantizing it, so the merge is on its critical path
// and must give the same bits on every machine: the definition is an fma chain in
// ascending rank order (nn/kernels/lora_merge_reference.hpp), and the AVX2 / AVX-512
// kernels reproduce it exactly.
#pragma once

#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/kernels/lora_merge_avx2.hpp"
#include "gsq/nn/kernels/lora_merge_avx512.hpp"
#include "gsq/nn/kernels/lora_merge_reference.hpp"

GSQ_NAMESPACE_BEGIN
namespace detail {

/// w [rows, cols] += coef [rows, rank] · a [rank, cols], each element an fma chain over
/// the rank in ascending order. Serial (callers parallelise over row blocks).
inline void lora_merge_rows(MatrixView<float> w, MatrixView<const float> coef,
                            MatrixView<const float> a, Isa isa = selected_isa()) {
  GSQ_CHECK(coef.rows() == w.rows() && coef.cols() == a.rows() && a.cols() == w.cols(),
            ErrorCode::kShapeMismatch,
            "lora_merge_rows: w " + shape_string(w) + ", coef " + shape_string(coef) + ", a " +
                shape_string(a) + " do not fit");
  const nn::kernels::MergeParams p{w.data(),  w.stride(), a.data(), a.stride(), coef.data(),
                                   coef.stride(), w.rows(), w.cols(), a.rows()};
  switch (isa) {
#if GSQ_HAVE_X86_SIMD
    case Isa::kAvx512Vnni: nn::kernels::avx512::merge_rows(p); break;
    case Isa::kAvx2: nn::kernels::avx2::merge_rows(p); break;
#endif
    default: nn::kernels::reference::merge_rows(p); break;
  }
}

}  // namespace detail
GSQ_NAMESPACE_END
