// gsq/gemm/operand.hpp — how the GEMM reads its B operand from the form it is stored in.
//
// DESIGN.md "Store once, regroup in the packing step": a frozen weight lives once, in
// NF4 or GSE-INT; a cached activation lives once, in GSE-INT grouped along its feature
// axis. The three products of a layer need B = [N, K] grouped along K in different
// orientations, so a BOperand names the stored tensor plus the orientation and format
// the GEMM wants; the packing step decodes the stored values to exact floats and
// re-encodes each k-group into the requested GseSpec (round-half-even), fused with the
// panel layout. The result equals quantize_gse(dequantized matrix [transposed], spec).
//
//   BOperand::gse(b)                   B = b as stored (no regrouping)
//   BOperand::gse_transposed(m, spec)  B = mᵀ: rows of B are m's columns, regrouped along
//                                      m's rows (e.g. Xᵀ for dW = dYᵀ·X, k = tokens)
//   BOperand::nf4(w, spec)             B = W  [out, in], k = in   (forward Y = X·Wᵀ)
//   BOperand::nf4_transposed(w, spec)  B = Wᵀ [in, out], k = out  (input grad dX = dY·W)
//   BOperand::packed(p)                a PackedB made earlier by pack_b (optional cache)
//
// A BOperand is a view: it does not own the stored tensor, which must outlive it.
#pragma once

#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/gemm/pack.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/nf4.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

class PackedB;

/// Where a B operand's values come from.
enum class BSource {
  kGse,            // a GseMatrix [N, K], used as stored
  kGseTransposed,  // a GseMatrix [K, N], regrouped along its rows
  kNf4,            // an Nf4Matrix [N, K] (out, in), regrouped along in
  kNf4Transposed,  // an Nf4Matrix [K, N] (out, in), regrouped along out
  kPacked,         // a PackedB
};

class BOperand {
 public:
  /// B = b as stored ([N, K], groups along K).
  static BOperand gse(const GseMatrix& b) {
    BOperand op(BSource::kGse, b.rows(), b.cols(), b.spec());
    op.gse_ = &b;
    return op;
  }
  /// B = mᵀ: B's rows are m's columns; values regrouped along m's rows into `spec`.
  static BOperand gse_transposed(const GseMatrix& m, const GseSpec& spec) {
    spec.validate();
    BOperand op(BSource::kGseTransposed, m.cols(), m.rows(), spec);
    op.gse_ = &m;
    return op;
  }
  /// B = W [out, in], k = in, regrouped from NF4 blocks into `spec`.
  static BOperand nf4(const Nf4Matrix& w, const GseSpec& spec) {
    spec.validate();
    BOperand op(BSource::kNf4, w.rows(), w.cols(), spec);
    op.nf4_ = &w;
    return op;
  }
  /// B = Wᵀ [in, out], k = out, regrouped along W's rows into `spec`.
  static BOperand nf4_transposed(const Nf4Matrix& w, const GseSpec& spec) {
    spec.validate();
    BOperand op(BSource::kNf4Transposed, w.cols(), w.rows(), spec);
    op.nf4_ = &w;
    return op;
  }
  /// A prepacked B (see pack_b).
  static BOperand packed(const PackedB& p);

  /// N: output columns of the GEMM.
  std::int64_t rows() const noexcept { return rows_; }
  /// K: the reduction extent.
  std::int64_t cols() const noexcept { return cols_; }
  /// The GSE-INT format B has inside the GEMM.
  const GseSpec& spec() const noexcept { return spec_; }
  BSource source() const noexcept { return source_; }
  const GseMatrix* gse_matrix() const noexcept { return gse_; }
  const Nf4Matrix* nf4_matrix() const noexcept { return nf4_; }
  const PackedB* packed_matrix() const noexcept { return packed_; }

 private:
  BOperand(BSource source, std::int64_t rows, std::int64_t cols, const GseSpec& spec)
      : source_(source), rows_(rows), cols_(cols), spec_(spec) {}

  BSource source_;
  std::int64_t rows_;
  std::int64_t cols_;
  GseSpec spec_;
  const GseMatrix* gse_ = nullptr;
  const Nf4Matrix* nf4_ = nullptr;
  const PackedB* packed_ = nullptr;
};

/// The B operand as a plain GseMatrix [N, K] in spec(): the regrouping written as its
/// definition (dequantize, then quantize_gse_reference with the transpose flag). Slow;
/// for the reference path and tests. Throws FormatError if a stored value decodes to a
/// non-finite number.
GseMatrix regroup_reference(const BOperand& b, MemoryCategory category = MemoryCategory::kScratch);

/// Owning prepacked B panels: an optional cache that trades memory for packing time
/// (DESIGN.md: off by default, counted by the memory accounting). Made by pack_b
/// (gemm/gemm.hpp) in the layout of gemm/pack.hpp, which every ISA path reads.
class PackedB {
 public:
  PackedB() = default;
  std::int64_t rows() const noexcept { return rows_; }
  std::int64_t cols() const noexcept { return geometry_.k; }
  /// The GSE-INT format of the packed values.
  const GseSpec& spec() const noexcept { return spec_; }
  /// Bytes held (counted under the category given to pack_b).
  std::int64_t bytes() const noexcept { return panels_.bytes(); }
  const PanelGeometry& geometry() const noexcept { return geometry_; }
  /// The records of panel p (columns [p·nr, p·nr + nr)), all groups.
  const std::int8_t* panel(std::int64_t p) const noexcept {
    return panels_.data() + p * geometry_.b_panel_bytes();
  }

 private:
  friend PackedB pack_b(const BOperand& b, MemoryCategory category);
  std::int64_t rows_ = 0;
  GseSpec spec_{};
  PanelGeometry geometry_{};
  AlignedBuffer<std::int8_t> panels_;
};

/// Packs `b` once for reuse across GEMM calls (defined in gemm/gemm.hpp). The panels are
/// counted under `category`: kScratch by default; a long-lived weight cache may prefer
/// kWeights so memory reports show it next to the weight it copies.
PackedB pack_b(const BOperand& b, MemoryCategory category = MemoryCategory::kScratch);

inline BOperand BOperand::packed(const PackedB& p) {
  BOperand op(BSource::kPacked, p.rows(), p.cols(), p.spec());
  op.packed_ = &p;
  return op;
}

inline GseMatrix regroup_reference(const BOperand& b, MemoryCategory category) {
  QuantizeOptions q;
  q.name = "GEMM B operand (regrouped)";
  switch (b.source()) {
    case BSource::kGse: {
      GseMatrix out = b.gse_matrix()->clone();
      return out;
    }
    case BSource::kPacked: {
      // Read the values back from the panels: mantissas, and each group's exponent.
      const PackedB& p = *b.packed_matrix();
      const PanelGeometry& geo = p.geometry();
      GseMatrix out(b.rows(), b.cols(), b.spec(), category);
      for (std::int64_t n = 0; n < b.rows(); ++n) {
        const std::int8_t* panel = p.panel(n / geo.nr);
        const int j = static_cast<int>(n % geo.nr);
        for (std::int64_t g = 0; g < geo.groups; ++g) {
          const std::int8_t* rec = panel + g * geo.b_record_bytes();
          const float e = reinterpret_cast<const float*>(rec + geo.b_data_bytes() + geo.nr * 4)[j];
          out.exponent_row(n)[g] = static_cast<std::int8_t>(e);
          for (int i = 0; i < geo.group; ++i)
            out.set_mantissa(n, g * geo.group + i, rec[(i / 4) * geo.nr * 4 + j * 4 + i % 4]);
        }
      }
      return out;
    }
    case BSource::kGseTransposed: {
      const GseMatrix& m = *b.gse_matrix();
      Tensor<float> x({m.rows(), m.cols()}, MemoryCategory::kScratch);
      dequantize_gse_reference(m, false, x.view());
      GseMatrix out(b.rows(), b.cols(), b.spec(), category);
      quantize_gse_reference(x.view(), true, out, q);
      return out;
    }
    case BSource::kNf4:
    case BSource::kNf4Transposed: {
      const Nf4Matrix& w = *b.nf4_matrix();
      Tensor<float> x({w.rows(), w.cols()}, MemoryCategory::kScratch);
      for (std::int64_t r = 0; r < w.rows(); ++r)
        for (std::int64_t c = 0; c < w.cols(); ++c) x(r, c) = w.value(r, c);
      GseMatrix out(b.rows(), b.cols(), b.spec(), category);
      quantize_gse_reference(x.view(), b.source() == BSource::kNf4Transposed, out, q);
      return out;
    }
  }
  return {};
}

}  // namespace gemm
GSQ_NAMESPACE_END
