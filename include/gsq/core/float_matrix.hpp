// gsq/core/float_matrix.hpp — a matrix stored as FP32 or as BF16.
//
// The frozen embedding and classifier tables of a real model are its largest
// non-projection tensors (Llama-2-7B: 2 × 32000 × 4096; Llama-3-8B: 2 × 128256 × 4096)
// and come as BF16 in the checkpoint. Widening them to FP32 doubles their memory and
// adds nothing: BF16 → FP32 is exact, so an FP32 product over the BF16 table gives the
// same bits as over its FP32 copy. A FloatMatrix keeps the dtype it was given; every
// reader widens as it reads (row copies here, GEMM packing for products), and only a
// table that trains must be FP32 (to_f32()).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "gsq/core/bf16.hpp"
#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"

GSQ_NAMESPACE_BEGIN

class FloatMatrix {
 public:
  FloatMatrix() = default;
  explicit FloatMatrix(Tensor<float> t) : f32_(std::move(t)) { check(f32_.rank()); }
  explicit FloatMatrix(Tensor<bf16> t) : bf16_(std::move(t)) { check(bf16_.rank()); }

  bool empty() const noexcept { return rows() == 0; }
  bool is_bf16() const noexcept { return bf16_.numel() > 0; }
  std::int64_t rows() const noexcept {
    return is_bf16() ? bf16_.dim(0) : f32_.rank() == 2 ? f32_.dim(0) : 0;
  }
  std::int64_t cols() const noexcept {
    return is_bf16() ? bf16_.dim(1) : f32_.rank() == 2 ? f32_.dim(1) : 0;
  }
  std::int64_t bytes() const noexcept { return f32_.bytes() + bf16_.bytes(); }

  /// Calls f with the stored view: MatrixView<const float> or MatrixView<const bf16>.
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (is_bf16()) return std::forward<F>(f)(MatrixView<const bf16>(bf16_.view()));
    return std::forward<F>(f)(MatrixView<const float>(f32_.view()));
  }

  /// Row r widened into out[0, cols).
  void copy_row(std::int64_t r, float* out) const {
    if (is_bf16()) {
      const bf16* src = bf16_.data() + r * cols();
      for (std::int64_t c = 0; c < cols(); ++c) out[c] = src[c].to_float();
    } else {
      const float* src = f32_.data() + r * cols();
      std::copy(src, src + cols(), out);
    }
  }

  /// The FP32 storage (throws when the matrix is BF16: call to_f32() first).
  Tensor<float>& f32() {
    GSQ_CHECK(!is_bf16(), ErrorCode::kInvalidArgument, "FloatMatrix::f32: the matrix is stored as BF16");
    return f32_;
  }
  const Tensor<float>& f32() const {
    GSQ_CHECK(!is_bf16(), ErrorCode::kInvalidArgument, "FloatMatrix::f32: the matrix is stored as BF16");
    return f32_;
  }
  /// Widens BF16 storage to FP32 in place (exact); a no-op for FP32.
  void to_f32() {
    if (!is_bf16()) return;
    f32_ = widened(MemoryCategory::kWeights);
    bf16_ = Tensor<bf16>();
  }
  /// An FP32 copy (exact), counted under `category`.
  Tensor<float> widened(MemoryCategory category) const {
    Tensor<float> t({rows(), cols()}, category);
    for (std::int64_t r = 0; r < rows(); ++r) copy_row(r, t.data() + r * cols());
    return t;
  }

 private:
  static void check(int rank) {
    GSQ_CHECK(rank == 2, ErrorCode::kInvalidExtent, "FloatMatrix: a [rows, cols] tensor is needed");
  }

  Tensor<float> f32_;
  Tensor<bf16> bf16_;
};

GSQ_NAMESPACE_END
