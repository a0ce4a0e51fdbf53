// bench/eigen_baseline.hpp — Eigen's FP32 product as a benchmark baseline, behind a plain
// function so its translation unit (eigen_baseline.cpp) can be compiled with the ISA flags
// Eigen needs (-mavx512f -mfma ...) while the rest of the binary keeps gsq's baseline
// flags. Only plain types cross this boundary; the TU includes no gsq header (an inline
// gsq function compiled there with AVX-512 could otherwise be the copy the linker keeps).
#pragma once

#include <cstdint>

namespace gsq_bench {

/// C [m, n] = op(A)·op(B), row-major, op = transpose when the flag is set (A stored
/// [k, m] / B stored [n, k]); Eigen on `threads` threads (Eigen::setNbThreads).
void eigen_gemm_f32(const float* a, bool transpose_a, const float* b, bool transpose_b, float* c,
                    std::int64_t m, std::int64_t n, std::int64_t k, int threads);

/// The SIMD instruction sets Eigen was compiled with in that TU (for the benchmark context).
const char* eigen_simd_instruction_sets();

}  // namespace gsq_bench
