// gsq/gemm/gemm.hpp — the integer GEMM's public entry points (DESIGN.md "GEMM convention").
//
// One form: C[M,N] (+)= alpha · Σ_k A[m,k]·B[n,k], both operands GSE-INT, grouped along
// k and stored k-contiguous ("NT"). Per output element, exactly:
//     acc = 0.0f
//     for each k-group g, ascending:  acc += ldexp(float(Σ_{k in g} a_mk·b_nk), e_a + e_b)
//     C   = accumulate ? fma(alpha, acc, C) : alpha · acc
// The int32 group sum converts to float exactly (G·(2^(b-1)-1)^2 < 2^24) and the ldexp is
// a single correctly-rounded scaling, so every ISA path and thread count gives the same
// bits. Work is split over M and N only, never over k. gemm/reference.hpp holds this
// definition as a triple loop (gemm_nt_reference).
//
// B comes through a BOperand (gemm/operand.hpp): as stored, or regrouped from NF4 or a
// transposed GSE-INT tensor in the packing step. qcd_gemm_nt quantizes an fp32 A first
// (the QCD pattern). gemm_f32 is the FP32 twin on Eigen.
//
// TODO(gemm): the entry points below run the reference kernel; the packed, dispatched
// AVX2 / AVX-512 VNNI engine replaces their bodies (same contract).
#pragma once

#include <cstdint>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/gemm/dispatch.hpp"
#include "gsq/gemm/f32.hpp"
#include "gsq/gemm/operand.hpp"
#include "gsq/gemm/params.hpp"
#include "gsq/gemm/reference.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

/// C (+)= alpha · A·Bᵀ for GSE-INT A [M, K] and B given as a BOperand ([N, K]).
/// Throws ShapeError if k or C's extents disagree, FormatError if A and B do not share
/// the group size.
inline void gemm_nt(const GseMatrix& a, const BOperand& b, MatrixView<float> c,
                    const GemmOptions& options = {}) {
  detail::check_gemm_shapes(a.rows(), b.rows(), a.cols(), b.cols(), c, "gemm_nt");
  detail::check_same_group(a.spec(), b.spec(), "gemm_nt");
  detail::last_isa() = Isa::kReference;
  if (b.source() == BSource::kGse) {
    gemm_nt_reference(a, *b.gse_matrix(), c, options);
  } else if (b.source() == BSource::kPacked) {
    gemm_nt_reference(a, b.packed_matrix()->matrix(), c, options);
  } else {
    const GseMatrix regrouped = regroup_reference(b);
    gemm_nt_reference(a, regrouped, c, options);
  }
}

/// C (+)= alpha · A·Bᵀ for GSE-INT A [M, K] and B [N, K] on the selected ISA path.
inline void gemm_nt(const GseMatrix& a, const GseMatrix& b, MatrixView<float> c,
                    const GemmOptions& options = {}) {
  gemm_nt(a, BOperand::gse(b), c, options);
}

/// QCD: quantizes A from fp32 once into `a_spec` (a_transposed as quant/gse.hpp's
/// transpose flag: A = aᵀ grouped along a's rows), then C (+)= alpha · A·Bᵀ.
inline void qcd_gemm_nt(MatrixView<const float> a, bool a_transposed, const GseSpec& a_spec,
                        const BOperand& b, MatrixView<float> c, const GemmOptions& options = {},
                        const QuantizeOptions& quantize = {}) {
  a_spec.validate();
  const GseMatrix aq = quantize_gse(a, a_spec, a_transposed, quantize, MemoryCategory::kScratch);
  gemm_nt(aq, b, c, options);
}

}  // namespace gemm
GSQ_NAMESPACE_END
