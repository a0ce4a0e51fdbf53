// gsq/nn/kernels/lora_merge_reference.hpp — the scalar definition of the LoRA merge
// W[r, :] += Σ_j coef[r, j] · A[j, :] and the flat parameters every path takes.
//
// Per element, j ascending: w = fma(coef[r, j], a[j, k], w) — one rounding per term, so
// the AVX2 and AVX-512 kernels (one vfmadd per term, in the same order) give the same
// bits. L4Q merges its adapter into the base weight with it before quantizing, so the
// rounding decisions of the quantizer do not depend on the ISA.
#pragma once

#include <cmath>
#include <cstdint>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN
namespace nn::kernels {

struct MergeParams {
  float* w = nullptr;  // [rows, cols], row stride w_stride, updated in place
  std::int64_t w_stride = 0;
  const float* a = nullptr;  // [rank, cols], row stride a_stride
  std::int64_t a_stride = 0;
  const float* coef = nullptr;  // [rows, rank], row stride coef_stride (c·B)
  std::int64_t coef_stride = 0;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t rank = 0;
};

namespace reference {

inline void merge_rows(const MergeParams& p) noexcept {
  for (std::int64_t r = 0; r < p.rows; ++r) {
    float* w = p.w + r * p.w_stride;
    const float* coef = p.coef + r * p.coef_stride;
    for (std::int64_t k = 0; k < p.cols; ++k) {
      float acc = w[k];
      for (std::int64_t j = 0; j < p.rank; ++j) acc = std::fma(coef[j], p.a[j * p.a_stride + k], acc);
      w[k] = acc;
    }
  }
}

}  // namespace reference
}  // namespace nn::kernels
GSQ_NAMESPACE_END
