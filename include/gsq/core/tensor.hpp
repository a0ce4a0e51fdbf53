// gsq/core/tensor.hpp — an owning aligned tensor and non-owning row-major matrix views.
//
// gsq's math is matrices: tokens × features. `Tensor<T>` owns up to 4-D row-major data
// (64-byte aligned, counted by category); `MatrixView<T>` / `MatrixView<const T>` is a
// pointer + rows + cols + row stride that every algorithm takes. Views are cheap to
// copy and never own. Element access is bounds-checked in debug builds; whole-operand
// checks (shapes that must agree) always run at API boundaries and throw ShapeError.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"

GSQ_NAMESPACE_BEGIN

template <class T>
class MatrixView {
 public:
  using value_type = std::remove_const_t<T>;

  MatrixView() = default;
  MatrixView(T* data, std::int64_t rows, std::int64_t cols)
      : MatrixView(data, rows, cols, cols) {}
  MatrixView(T* data, std::int64_t rows, std::int64_t cols, std::int64_t stride)
      : data_(data), rows_(rows), cols_(cols), stride_(stride) {
    GSQ_CHECK(rows >= 0 && cols >= 0 && stride >= cols, ErrorCode::kInvalidExtent,
              "MatrixView: invalid extents rows=" + std::to_string(rows) +
                  " cols=" + std::to_string(cols) + " stride=" + std::to_string(stride));
  }
  // A view of T converts to a view of const T.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  MatrixView(const MatrixView<U>& other)  // NOLINT(google-explicit-constructor)
      : data_(other.data()), rows_(other.rows()), cols_(other.cols()), stride_(other.stride()) {}

  T* data() const noexcept { return data_; }
  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t cols() const noexcept { return cols_; }
  std::int64_t stride() const noexcept { return stride_; }
  std::int64_t size() const noexcept { return rows_ * cols_; }
  bool empty() const noexcept { return rows_ == 0 || cols_ == 0; }
  bool is_contiguous() const noexcept { return stride_ == cols_ || rows_ <= 1; }

  T& operator()(std::int64_t r, std::int64_t c) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_ && c >= 0 && c < cols_);
    return data_[r * stride_ + c];
  }
  T* row(std::int64_t r) const noexcept {
    GSQ_ASSERT(r >= 0 && r < rows_);
    return data_ + r * stride_;
  }
  /// Rows [first, first + count), all columns.
  MatrixView row_range(std::int64_t first, std::int64_t count) const {
    return block(first, 0, count, cols_);
  }
  MatrixView block(std::int64_t r0, std::int64_t c0, std::int64_t nr, std::int64_t nc) const {
    GSQ_CHECK(r0 >= 0 && c0 >= 0 && nr >= 0 && nc >= 0 && r0 + nr <= rows_ && c0 + nc <= cols_,
              ErrorCode::kIndexOutOfRange,
              "MatrixView::block [" + std::to_string(r0) + "+" + std::to_string(nr) + ", " +
                  std::to_string(c0) + "+" + std::to_string(nc) + "] outside " +
                  std::to_string(rows_) + "x" + std::to_string(cols_));
    return MatrixView(data_ + r0 * stride_ + c0, nr, nc, stride_);
  }

 private:
  T* data_ = nullptr;
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  std::int64_t stride_ = 0;
};

/// "rows x cols", for error messages.
template <class T>
std::string shape_string(const MatrixView<T>& v) {
  return std::to_string(v.rows()) + "x" + std::to_string(v.cols());
}

/// Throws ShapeError unless `v` is rows x cols; `what` names the operand.
template <class T>
void check_shape(const MatrixView<T>& v, std::int64_t rows, std::int64_t cols,
                 const char* what) {
  GSQ_CHECK(v.rows() == rows && v.cols() == cols, ErrorCode::kShapeMismatch,
            std::string(what) + ": expected " + std::to_string(rows) + "x" +
                std::to_string(cols) + ", got " + shape_string(v));
}

inline constexpr int kMaxRank = 4;

/// An owning row-major tensor of rank 1..4.
template <class T>
class Tensor {
 public:
  Tensor() = default;
  Tensor(std::initializer_list<std::int64_t> shape,
         MemoryCategory category = MemoryCategory::kActivations) {
    GSQ_CHECK(shape.size() >= 1 && shape.size() <= kMaxRank, ErrorCode::kInvalidExtent,
              "Tensor: rank must be 1.." + std::to_string(kMaxRank) + ", got " +
                  std::to_string(shape.size()));
    rank_ = static_cast<int>(shape.size());
    std::int64_t n = 1;
    int i = 0;
    for (std::int64_t d : shape) {
      GSQ_CHECK(d >= 0, ErrorCode::kInvalidExtent,
                "Tensor: negative extent " + std::to_string(d) + " in dimension " +
                    std::to_string(i));
      shape_[i++] = d;
      n *= d;
    }
    buffer_ = AlignedBuffer<T>(n, category);
  }
  /// A 2-D tensor holding a copy of `src`.
  static Tensor copy_of(MatrixView<const T> src,
                        MemoryCategory category = MemoryCategory::kActivations) {
    Tensor t({src.rows(), src.cols()}, category);
    for (std::int64_t r = 0; r < src.rows(); ++r)
      std::copy(src.row(r), src.row(r) + src.cols(), t.data() + r * src.cols());
    return t;
  }

  Tensor clone() const {
    Tensor t;
    t.buffer_ = buffer_.clone();
    t.shape_ = shape_;
    t.rank_ = rank_;
    return t;
  }

  int rank() const noexcept { return rank_; }
  std::int64_t dim(int i) const noexcept {
    GSQ_ASSERT(i >= 0 && i < rank_);
    return shape_[i];
  }
  std::int64_t numel() const noexcept { return buffer_.size(); }
  std::int64_t bytes() const noexcept { return buffer_.bytes(); }
  T* data() noexcept { return buffer_.data(); }
  const T* data() const noexcept { return buffer_.data(); }
  T& operator[](std::int64_t i) noexcept { return buffer_[i]; }
  const T& operator[](std::int64_t i) const noexcept { return buffer_[i]; }
  T* begin() noexcept { return buffer_.begin(); }
  T* end() noexcept { return buffer_.end(); }
  const T* begin() const noexcept { return buffer_.begin(); }
  const T* end() const noexcept { return buffer_.end(); }

  /// Matrix view: the last dimension is the columns, all leading ones fold into rows.
  MatrixView<T> view() noexcept { return {data(), rows_folded(), cols_last(), cols_last()}; }
  MatrixView<const T> view() const noexcept {
    return {data(), rows_folded(), cols_last(), cols_last()};
  }
  operator MatrixView<T>() noexcept { return view(); }              // NOLINT
  operator MatrixView<const T>() const noexcept { return view(); }  // NOLINT

  T& operator()(std::int64_t r, std::int64_t c) noexcept { return view()(r, c); }
  const T& operator()(std::int64_t r, std::int64_t c) const noexcept { return view()(r, c); }

 private:
  std::int64_t cols_last() const noexcept { return rank_ == 0 ? 0 : shape_[rank_ - 1]; }
  std::int64_t rows_folded() const noexcept {
    std::int64_t r = 1;
    for (int i = 0; i + 1 < rank_; ++i) r *= shape_[i];
    return rank_ == 0 ? 0 : r;
  }

  AlignedBuffer<T> buffer_;
  std::array<std::int64_t, kMaxRank> shape_{};
  int rank_ = 0;
};

GSQ_NAMESPACE_END
