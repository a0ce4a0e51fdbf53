// gsq/io/tensor_util.hpp — shapes as vectors, as files declare them, and Tensor<float> from them.
//
// File formats describe a tensor's shape as a list of any length; `Tensor<T>` holds rank
// 1..4. These helpers bridge the two in one place: a rank-0 (scalar) tensor becomes a
// rank-1 tensor of one element, a rank above 4 is a ShapeError naming the tensor.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"

GSQ_NAMESPACE_BEGIN

/// "[2048, 128]", for messages and listings.
inline std::string shape_to_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

/// The extents of `t`, outermost first.
template <class T>
std::vector<std::int64_t> tensor_shape(const Tensor<T>& t) {
  std::vector<std::int64_t> s(static_cast<std::size_t>(t.rank()));
  for (int i = 0; i < t.rank(); ++i) s[static_cast<std::size_t>(i)] = t.dim(i);
  return s;
}

/// A zero-filled tensor of `shape` (rank 0 → one element); `what` names it in errors.
template <class T>
Tensor<T> make_tensor(const std::vector<std::int64_t>& shape, MemoryCategory category,
                      std::string_view what) {
  switch (shape.size()) {
    case 0: return Tensor<T>({1}, category);
    case 1: return Tensor<T>({shape[0]}, category);
    case 2: return Tensor<T>({shape[0], shape[1]}, category);
    case 3: return Tensor<T>({shape[0], shape[1], shape[2]}, category);
    case 4: return Tensor<T>({shape[0], shape[1], shape[2], shape[3]}, category);
    default:
      detail::throw_error(ErrorCode::kInvalidExtent,
                          std::string(what) + ": rank " + std::to_string(shape.size()) +
                              " is above gsq's maximum of " + std::to_string(kMaxRank));
  }
}

GSQ_NAMESPACE_END
