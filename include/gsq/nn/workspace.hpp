// gsq/nn/workspace.hpp — reusable buffers for layer caches and workspaces.
//
// Layers run the same shapes step after step, and page faults are slow on the machines
// gsq targets (DESIGN.md "Machine facts"): a cache or workspace tensor is therefore
// allocated on first use and reused while its shape stays the same, instead of being
// freed and reallocated every step. `ensure_matrix` (FP32) and `ensure_gse`
// (GSE-INT) are that one rule.
#pragma once

#include <cstdint>

#include "gsq/core/config.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"

GSQ_NAMESPACE_BEGIN

/// Makes `t` a [rows, cols] matrix, reallocating (tagged `category`) only when its shape
/// differs, and returns its view. Contents are unspecified after a reuse
/// (zero after a reallocation).
template <class T>
MatrixView<T> ensure_matrix(Tensor<T>& t, std::int64_t rows, std::int64_t cols,
                            MemoryCategory category) {
  if (!(t.rank() == 2 && t.dim(0) == rows && t.dim(1) == cols))
    t = Tensor<T>({rows, cols}, category);
  return t.view();
}

/// Makes `m` a [rows, cols] GSE-INT matrix of format `spec`, reallocating (tagged
/// `category`) only when its shape or format differs.
inline GseMatrix& ensure_gse(GseMatrix& m, std::int64_t rows, std::int64_t cols,
                             const GseSpec& spec, MemoryCategory category) {
  if (!(m.rows() == rows && m.cols() == cols && m.spec() == spec && m.bytes() > 0))
    m = GseMatrix(rows, cols, spec, category);
  return m;
}

GSQ_NAMESPACE_END
