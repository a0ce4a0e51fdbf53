// Helpers shared by the GEMM tests: random GSE/NF4 operands, the definition per element,
// an FP64 product of dequantized operands with its FP32 error bound.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gsq/gemm/gemm.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/nf4.hpp"
#include "support/test_support.hpp"

namespace gsq::test::gemm {

/// A GSE-INT [rows, cols] from heavy-tailed random data (quantized by the reference).
inline GseMatrix random_gse(std::int64_t rows, std::int64_t cols, GseSpec spec,
                            std::uint64_t seed, float scale = 1.0f) {
  const Tensor<float> x = random_matrix(rows, cols, seed, scale);
  GseMatrix out(rows, cols, spec);
  quantize_gse_reference(x.view(), false, out);
  return out;
}

/// An NF4 weight [rows, cols] from random data.
inline Nf4Matrix random_nf4(std::int64_t rows, std::int64_t cols, std::uint64_t seed,
                            bool double_quant = false, float scale = 0.05f) {
  const Tensor<float> x = random_matrix(rows, cols, seed, scale);
  return quantize_nf4(x.view(), double_quant);
}

/// C of shape [m, n] filled with random values (for accumulate tests).
inline Tensor<float> random_c(std::int64_t m, std::int64_t n, std::uint64_t seed) {
  return random_matrix(m, n, seed, 3.0f);
}

/// The definition (gemm_nt_reference) on B regrouped by the reference regrouping.
inline Tensor<float> reference_product(const GseMatrix& a, const gsq::gemm::BOperand& b,
                                       const Tensor<float>& c0, const gsq::gemm::GemmOptions& o) {
  const GseMatrix br = gsq::gemm::regroup_reference(b);
  Tensor<float> c = c0.clone();
  ScopedIsa scope(Isa::kReference);
  gsq::gemm::gemm_nt_reference(a, br, c.view(), o);
  return c;
}

/// Runs gemm_nt on the current path into a copy of c0.
inline Tensor<float> engine_product(const GseMatrix& a, const gsq::gemm::BOperand& b,
                                    const Tensor<float>& c0, const gsq::gemm::GemmOptions& o) {
  Tensor<float> c = c0.clone();
  gsq::gemm::gemm_nt(a, b, c.view(), o);
  return c;
}

/// Bitwise equality of two tensors; on failure reports the first differing element.
inline bool same_bits(const Tensor<float>& x, const Tensor<float>& y) {
  if (x.numel() != y.numel()) return false;
  if (bitwise_equal(x.data(), y.data(), x.numel())) return true;
  const auto cols = x.view().cols();
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    std::uint32_t u, v;
    std::memcpy(&u, x.data() + i, 4);
    std::memcpy(&v, y.data() + i, 4);
    if (u != v) {
      MESSAGE("first difference at (" << i / cols << ", " << i % cols << "): " << x[i]
                                      << " vs " << y[i]);
      break;
    }
  }
  return false;
}

/// Forces the streaming loop order with tiny k-blocks (several blocks even for small K)
/// for its lifetime; the default thresholds would run most test shapes B-resident.
class ScopedStreaming {
 public:
  ScopedStreaming()
      : depth_(gsq::gemm::detail::tuning().block_depth_bytes.load()),
        resident_(gsq::gemm::detail::tuning().resident_bytes.load()) {
    gsq::gemm::detail::tuning().block_depth_bytes.store(64);
    gsq::gemm::detail::tuning().resident_bytes.store(0);
  }
  ~ScopedStreaming() {
    gsq::gemm::detail::tuning().block_depth_bytes.store(depth_);
    gsq::gemm::detail::tuning().resident_bytes.store(resident_);
  }
  ScopedStreaming(const ScopedStreaming&) = delete;
  ScopedStreaming& operator=(const ScopedStreaming&) = delete;

 private:
  std::int64_t depth_, resident_;
};

inline std::string shape_name(std::int64_t m, std::int64_t n, std::int64_t k) {
  return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k);
}

}  // namespace gsq::test::gemm
