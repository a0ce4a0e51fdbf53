// gsq/core/float_matrix.hpp — a matrix stored as FP32 or as BF16.
//
// The frozen embedding and classifier tables of a real model are its largest
// non-projection tensors (Llama-2-7B: 2 × 32000 × 4096; Llama-3-8B: 2 × 128256 × 4096)
// and come as BF16 in the checkpoint. Widening them to FP32 doubles their memory and
// adds nothing: BF16 → FP32 is exact, so an FP32 product over the BF16 table gives the
// same bits as over its FP32 copy. A FloatMatrix keeps the dtype it was given; every
// reader widens as it reads (row copies here, GEMM packing for products), and only a
// table that trains must be FP32 (to_f32()).
//
// A BF16 table can also be borrowed: rows that live in someone else's read-only memory
// (a memory-mapped checkpoint), kept alive by `owner`. An untied embedding is only ever
// read a row per token, so borrowing it from the file costs the resident pages of the
// rows a run looks up instead of the whole table (Llama-3-8B: 1 GiB). Borrowed bytes are
// not gsq allocations: bytes() and the memory accounting leave them out.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
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
  FloatMatrix(FloatMatrix&& o) noexcept
      : f32_(std::move(o.f32_)), bf16_(std::move(o.bf16_)),
        borrowed_(std::exchange(o.borrowed_, {})), owner_(std::move(o.owner_)), drop_(std::move(o.drop_)) {}
  FloatMatrix& operator=(FloatMatrix&& o) noexcept {
    f32_ = std::move(o.f32_);
    bf16_ = std::move(o.bf16_);
    borrowed_ = std::exchange(o.borrowed_, {});
    owner_ = std::move(o.owner_);
    drop_ = std::move(o.drop_);
    return *this;
  }
  explicit FloatMatrix(Tensor<float> t) : f32_(std::move(t)) { check(f32_.rank()); }
  explicit FloatMatrix(Tensor<bf16> t) : bf16_(std::move(t)) {
    check(bf16_.rank());
    borrowed_ = MatrixView<const bf16>(bf16_.view());
  }
  /// Bytes of borrowed values a reader is done with (drop_rows): the owner may drop
  /// their pages, which must read back unchanged when touched again.
  using DropPages = std::function<void(std::span<const std::uint8_t>)>;

  /// Borrows [rows, cols] BF16 values at `data` (row-major, read-only), which stay valid
  /// as long as `owner` lives.
  static FloatMatrix borrowed(const bf16* data, std::int64_t rows, std::int64_t cols,
                              std::shared_ptr<const void> owner, DropPages drop = {}) {
    GSQ_CHECK(rows > 0 && cols > 0 && data != nullptr && owner != nullptr, ErrorCode::kInvalidExtent,
              "FloatMatrix::borrowed: a non-empty table and its owner are needed");
    FloatMatrix m;
    m.borrowed_ = MatrixView<const bf16>(data, rows, cols);
    m.owner_ = std::move(owner);
    m.drop_ = std::move(drop);
    return m;
  }

  /// Tells the owner of borrowed values that rows [r0, r1) are not needed soon (a
  /// streaming reader such as the export, so a pass over the table does not leave all of
  /// it resident). A no-op for owned values.
  void drop_rows(std::int64_t r0, std::int64_t r1) const {
    if (!drop_ || r1 <= r0) return;
    drop_(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(borrowed_.row(r0)),
                                        static_cast<std::size_t>((r1 - r0) * cols()) * sizeof(bf16)));
  }

  bool empty() const noexcept { return rows() == 0; }
  bool is_bf16() const noexcept { return borrowed_.rows() > 0; }
  /// Whether the values are borrowed rather than owned (see the file comment).
  bool is_borrowed() const noexcept { return owner_ != nullptr; }
  std::int64_t rows() const noexcept {
    return is_bf16() ? borrowed_.rows() : f32_.rank() == 2 ? f32_.dim(0) : 0;
  }
  std::int64_t cols() const noexcept {
    return is_bf16() ? borrowed_.cols() : f32_.rank() == 2 ? f32_.dim(1) : 0;
  }
  /// Bytes gsq allocated for the values (0 when borrowed).
  std::int64_t bytes() const noexcept { return f32_.bytes() + bf16_.bytes(); }

  /// Calls f with the stored view: MatrixView<const float> or MatrixView<const bf16>.
  template <class F>
  decltype(auto) visit(F&& f) const {
    if (is_bf16()) return std::forward<F>(f)(borrowed_);
    return std::forward<F>(f)(MatrixView<const float>(f32_.view()));
  }

  /// Row r widened into out[0, cols).
  void copy_row(std::int64_t r, float* out) const {
    if (is_bf16()) {
      const bf16* src = borrowed_.row(r);
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
    borrowed_ = MatrixView<const bf16>();
    owner_.reset();
    drop_ = nullptr;
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
  MatrixView<const bf16> borrowed_;     // the BF16 values: bf16_'s, or borrowed
  std::shared_ptr<const void> owner_;  // keeps borrowed values alive
  DropPages drop_;                     // the owner's page release, if it has one
};

GSQ_NAMESPACE_END
