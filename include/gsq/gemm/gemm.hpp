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
// (the QCD pattern). gemm_f32 is the FP32 twin (gsq's float kernels, f32.hpp).
//
// The engine: gemm/driver.hpp (blocking, threads), gemm/pack.hpp (panel layout),
// gemm/dispatch.hpp (paths), gemm/kernels/ (one file per ISA).
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
#include "gsq/gemm/driver.hpp"
#include "gsq/gemm/f32.hpp"
#include "gsq/gemm/operand.hpp"
#include "gsq/gemm/params.hpp"
#include "gsq/gemm/reference.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

/// C (+)= alpha · A·Bᵀ for GSE-INT A [M, K] and B given as a BOperand ([N, K]).
/// Throws ShapeError if k or C's extents disagree, FormatError if A and B do not share
/// the group size or B holds values that do not decode to finite numbers.
inline void gemm_nt(const GseMatrix& a, const BOperand& b, MatrixView<float> c,
                    const GemmOptions& options = {}) {
  detail::check_gemm_shapes(a.rows(), b.rows(), a.cols(), b.cols(), c, "gemm_nt");
  detail::check_same_group(a.spec(), b.spec(), "gemm_nt");
  const detail::PathTable path = detail::path_table(selected_isa());
  detail::last_isa() = path.isa;
  if (c.rows() == 0 || c.cols() == 0) return;
  if (a.cols() == 0) {
    detail::write_empty_product(c, options);
    return;
  }
  const PackedB* packed = b.source() == BSource::kPacked ? b.packed_matrix() : nullptr;
  const PanelGeometry geo = packed ? packed->geometry()
                                   : PanelGeometry::make(kernel_shape_for(b.rows()),
                                                         a.spec().group, a.cols());
  const BSourceView src = packed ? BSourceView{} : detail::make_source(b, detail::thread_workspace());
  const detail::PreparedA pa = detail::prepare_a(a, geo, path);
  detail::run_packed(pa, geo, src, packed, c, options, path);
}

/// C (+)= alpha · A·Bᵀ for GSE-INT A [M, K] and B [N, K] on the selected ISA path.
inline void gemm_nt(const GseMatrix& a, const GseMatrix& b, MatrixView<float> c,
                    const GemmOptions& options = {}) {
  gemm_nt(a, BOperand::gse(b), c, options);
}

inline PackedB pack_b(const BOperand& b, MemoryCategory category) {
  GSQ_CHECK(b.source() != BSource::kPacked, ErrorCode::kInvalidArgument,
            "pack_b: the operand is already packed");
  const detail::PathTable path = detail::path_table(selected_isa());
  PackedB p;
  p.rows_ = b.rows();
  p.spec_ = b.spec();
  p.geometry_ = PanelGeometry::make(kernel_shape_for(b.rows()), b.spec().group, b.cols());
  const PanelGeometry& geo = p.geometry_;
  const std::int64_t panels = geo.b_panels(b.rows());
  p.panels_ = AlignedBuffer<std::int8_t>(std::max<std::int64_t>(1, panels * geo.b_panel_bytes()),
                                         category, kUninitialized);
  if (geo.groups == 0) return p;
  const BSourceView src = detail::make_source(b, detail::thread_workspace());
  std::int8_t* out = p.panels_.data();
  const std::int64_t kb = detail::block_groups(geo);
  parallel_for_chunks(panels, 1, [&](std::int64_t p0, std::int64_t p1) {
    float* scratch = detail::reserve(detail::thread_workspace().scratch,
                                     detail::pack_scratch_floats(geo));
    for (std::int64_t q = p0; q < p1; ++q)
      for (std::int64_t g0 = 0; g0 < geo.groups; g0 += kb)
        path.pack_b(src, geo, q * geo.nr, g0, std::min(geo.groups, g0 + kb),
                    out + q * geo.b_panel_bytes() + g0 * geo.b_record_bytes(), scratch);
  });
  return p;
}

/// QCD: quantizes A from fp32 once into `a_spec` (a_transposed as quant/gse.hpp's
/// transpose flag: A = aᵀ grouped along a's rows), then C (+)= alpha · A·Bᵀ. The
/// quantized A lives in a per-thread workspace reused across calls of the same shape.
inline void qcd_gemm_nt(MatrixView<const float> a, bool a_transposed, const GseSpec& a_spec,
                        const BOperand& b, MatrixView<float> c, const GemmOptions& options = {},
                        const QuantizeOptions& quantize = {}) {
  a_spec.validate();
  const std::int64_t m = a_transposed ? a.cols() : a.rows();
  const std::int64_t k = a_transposed ? a.rows() : a.cols();
  detail::check_gemm_shapes(m, b.rows(), k, b.cols(), c, "qcd_gemm_nt");
  detail::check_same_group(a_spec, b.spec(), "qcd_gemm_nt");
  GseMatrix& aq = detail::thread_workspace().qcd_a;
  if (aq.rows() != m || aq.cols() != k || !(aq.spec() == a_spec)) {
    aq = GseMatrix();  // release first so peak memory is not doubled
    aq = GseMatrix(m, k, a_spec, MemoryCategory::kScratch);
  }
  quantize_gse(a, a_transposed, aq, quantize);
  gemm_nt(aq, b, c, options);
}

}  // namespace gemm
GSQ_NAMESPACE_END
