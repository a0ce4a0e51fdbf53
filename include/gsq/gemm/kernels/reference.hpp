// gsq/gemm/kernels/reference.hpp — the portable kernel over packed panels.
//
// The same arithmetic as gemm_nt_reference, read from the panel layout of gemm/pack.hpp:
// int32 group sums started from the packed correction, ldexp by e_a + e_b, fp32
// accumulation in ascending k, then alpha / accumulate. It is the kReference path, and
// the readable statement of what the SIMD kernels compute.
#pragma once

#include <cmath>
#include <cstdint>

#include "gsq/core/config.hpp"
#include "gsq/gemm/params.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm::kernels::reference {

inline void gemm_kernel(const KernelParams& p) noexcept {
  const std::int64_t data_bytes = std::int64_t{p.quads} * p.nr * 4;
  for (std::int64_t t = 0; t < p.tiles; ++t) {
    const std::uint8_t* a_tile = p.a + t * p.a_tile_stride;
    const float* ea_tile = p.a_exp + t * p.a_exp_stride;
    // acc is null when the call has a single k-block (results go straight to C).
    float* acc_tile = p.acc != nullptr ? p.acc + t * p.mr * p.nr : nullptr;
    for (int r = 0; r < p.mr; ++r) {
      const std::int64_t row = t * p.mr + r;
      for (int j = 0; j < p.nr; ++j) {
        float acc = p.first ? 0.0f : acc_tile[r * p.nr + j];
        for (std::int64_t g = 0; g < p.groups; ++g) {
          const std::int8_t* rec = p.b + g * p.b_record_bytes;
          const std::uint8_t* ag = a_tile + g * std::int64_t{p.quads} * p.mr * 4;
          std::int32_t sum = reinterpret_cast<const std::int32_t*>(rec + data_bytes)[j];
          const int nq = g == p.groups - 1 ? p.last_quads : p.quads;
          for (int q = 0; q < nq; ++q)
            for (int i = 0; i < 4; ++i)
              sum += ag[(q * p.mr + r) * 4 + i] * rec[(q * p.nr + j) * 4 + i];
          const float eb = reinterpret_cast<const float*>(rec + data_bytes + p.nr * 4)[j];
          acc += std::ldexp(static_cast<float>(sum), static_cast<int>(ea_tile[g * p.mr + r] + eb));
        }
        if (!p.last) {
          acc_tile[r * p.nr + j] = acc;
        } else if (row < p.m_valid && j < p.n_valid) {
          float& c = p.c[row * p.ldc + j];
          c = p.accumulate ? std::fma(p.alpha, acc, c) : p.alpha * acc;
        }
      }
    }
  }
}

}  // namespace gemm::kernels::reference
GSQ_NAMESPACE_END
