// bench/eigen_baseline.cpp — see eigen_baseline.hpp. Compiled with AVX-512/FMA flags
// (bench/CMakeLists.txt); called only after the benchmark checked the CPU has them.
#include "eigen_baseline.hpp"

#include <Eigen/Core>

namespace gsq_bench {

namespace {
using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMajor>;
using Map = Eigen::Map<RowMajor>;
}  // namespace

void eigen_gemm_f32(const float* a, bool transpose_a, const float* b, bool transpose_b, float* c,
                    std::int64_t m, std::int64_t n, std::int64_t k, int threads) {
  Eigen::setNbThreads(threads);
  const ConstMap am(a, transpose_a ? k : m, transpose_a ? m : k);
  const ConstMap bm(b, transpose_b ? n : k, transpose_b ? k : n);
  Map cm(c, m, n);
  if (!transpose_a && !transpose_b) cm.noalias() = am * bm;
  else if (transpose_a && !transpose_b) cm.noalias() = am.transpose() * bm;
  else if (!transpose_a && transpose_b) cm.noalias() = am * bm.transpose();
  else cm.noalias() = am.transpose() * bm.transpose();
}

const char* eigen_simd_instruction_sets() { return Eigen::SimdInstructionSetsInUse(); }

}  // namespace gsq_bench
