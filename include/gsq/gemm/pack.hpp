// gsq/gemm/pack.hpp — the panel layout every GEMM kernel reads, and the scalar packers.
//
// Kernels never read a GseMatrix or an Nf4Matrix: the packing step turns the stored
// operands into panels, fused with decoding and regrouping (DESIGN.md "Store once,
// regroup in the packing step"). One layout serves every ISA, so a PackedB made once is
// valid for whichever path runs later.
//
// k is cut into groups of G (the GSE group); each group is padded to `quads` = ceil(G/4)
// runs of 4 bytes, so a kernel steps whole 4-byte quads (vpdpbusd's depth) and never
// straddles a group. Inside a group, padded positions hold zero mantissas.
//
//   A panel (MR rows per tile):  tile t → [group][quad][MR][4] u8, value a + 128
//                                exponents: tile t → [group][MR] float
//   B block (NR columns):        per group a record of
//                                  [quad][NR][4] int8        mantissas b
//                                  [NR] int32               corr = −128 · Σ_{k in group} b
//                                  [NR] float               exponent e_b
//
// A is stored offset by +128 so it is the unsigned operand of vpdpbusd; the int32 group
// sum starts from `corr`, which removes the offset exactly: Σ (a+128)·b − 128·Σ b = Σ a·b.
// Rows of A beyond M hold a = 0 (byte 128), columns of B beyond N hold b = 0, and every
// padded exponent is 0, so padding contributes exact zeros that are never stored.
// The last group of K only holds ceil((K − (groups−1)·G)/4) quads of data; kernels stop
// there (`last_quads`), which matters for thin K (LoRA rank 16 with G = 32).
//
// Two kernel shapes exist, chosen from N alone (so a PackedB fits every path):
// wide (4 × 48: 12 int32 + 12 fp32 accumulators) and narrow (12 × 16) for N ≤ 32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/nf4.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

/// A kernel's register tile: MR rows of A × NR columns of B (NR a multiple of 16).
template <int MR, int NR>
struct TileShape {
  static_assert(NR % 16 == 0, "B panels are whole 16-column vectors");
  static constexpr int kMr = MR;
  static constexpr int kNr = NR;
};
using WideTile = TileShape<4, 48>;
using NarrowTile = TileShape<12, 16>;

/// The shape used for an N-column product: narrow when N fits two 16-column panels.
struct KernelShape {
  int mr;
  int nr;
};
inline KernelShape kernel_shape_for(std::int64_t n) noexcept {
  if (n <= 32) return {NarrowTile::kMr, NarrowTile::kNr};
  return {WideTile::kMr, WideTile::kNr};
}

/// Sizes and strides of the packed operands of one product (see the file comment).
struct PanelGeometry {
  int mr = 4;
  int nr = 48;
  int group = 32;           // G
  int quads = 8;            // quads per group record, ceil(G / 4)
  std::int64_t k = 0;       // K
  std::int64_t groups = 0;  // ceil(K / G)
  int last_quads = 0;       // quads holding data in group `groups − 1`

  static PanelGeometry make(KernelShape shape, int group, std::int64_t k) noexcept {
    PanelGeometry g;
    g.mr = shape.mr;
    g.nr = shape.nr;
    g.group = group;
    g.quads = (group + 3) / 4;
    g.k = k;
    g.groups = (k + group - 1) / group;
    g.last_quads = g.groups > 0 ? static_cast<int>((k - (g.groups - 1) * group + 3) / 4) : 0;
    return g;
  }
  /// Quads to run in group g.
  int quads_in(std::int64_t g) const noexcept { return g == groups - 1 ? last_quads : quads; }

  std::int64_t a_group_bytes() const noexcept { return std::int64_t{quads} * mr * 4; }
  std::int64_t a_tile_bytes() const noexcept { return groups * a_group_bytes(); }
  std::int64_t a_tile_exps() const noexcept { return groups * mr; }
  std::int64_t a_tiles(std::int64_t m) const noexcept { return (m + mr - 1) / mr; }

  std::int64_t b_data_bytes() const noexcept { return std::int64_t{quads} * nr * 4; }
  std::int64_t b_record_bytes() const noexcept { return b_data_bytes() + std::int64_t{nr} * 8; }
  std::int64_t b_panel_bytes() const noexcept { return groups * b_record_bytes(); }
  std::int64_t b_panels(std::int64_t n) const noexcept { return (n + nr - 1) / nr; }
};

/// Where B's values come from, flattened for packers (pointers and extents only).
/// For NF4 the absmaxes are always given decoded, one float per block.
struct BSourceView {
  enum class Kind { kGse, kGseTransposed, kNf4, kNf4Transposed };
  Kind kind = Kind::kGse;
  std::int64_t rows = 0;  // N (B's rows)
  std::int64_t cols = 0;  // K
  // GSE-INT source (kGse: [N, K]; kGseTransposed: [K, N], grouped along N)
  const std::int8_t* mant = nullptr;
  std::int64_t mant_stride = 0;  // bytes per stored row
  const std::int8_t* exps = nullptr;
  std::int64_t exp_stride = 0;   // groups per stored row
  int src_bits = 8;
  int src_group = 32;
  // NF4 source (stored [out, in] in both orientations)
  const std::uint8_t* codes = nullptr;
  std::int64_t code_stride = 0;    // bytes per stored row
  const float* absmax = nullptr;
  std::int64_t absmax_stride = 0;  // blocks per stored row
  // the GSE-INT format B takes in the GEMM (regrouping target)
  int bits = 8;
  int exp_min = -128;
  int exp_max = 127;
};

namespace detail {

/// One mantissa of a GSE-INT source row of b-bit mantissas (int8, 6-bit or 4-bit fields).
inline int source_mantissa(const std::int8_t* row, int bits, std::int64_t c) noexcept {
  return gse_load_code(row, gse_code_bits(bits), c);
}

/// The exact fp32 value of B[n, k] (k < K, n < N) for a regrouping source.
inline float source_value(const BSourceView& s, std::int64_t n, std::int64_t k) noexcept {
  switch (s.kind) {
    case BSourceView::Kind::kGseTransposed: {
      const std::int8_t* row = s.mant + k * s.mant_stride;
      return std::ldexp(static_cast<float>(source_mantissa(row, s.src_bits, n)),
                        s.exps[k * s.exp_stride + n / s.src_group]);
    }
    case BSourceView::Kind::kNf4: {
      const int code = (s.codes[n * s.code_stride + (k >> 1)] >> ((k & 1) * 4)) & 0xF;
      return kNf4Codebook[code] * s.absmax[n * s.absmax_stride + k / kNf4Block];
    }
    case BSourceView::Kind::kNf4Transposed: {
      const int code = (s.codes[k * s.code_stride + (n >> 1)] >> ((n & 1) * 4)) & 0xF;
      return kNf4Codebook[code] * s.absmax[k * s.absmax_stride + n / kNf4Block];
    }
    case BSourceView::Kind::kGse: break;
  }
  return 0.0f;
}

/// GSE-INT encoding of one group of `count` finite values, round-half-even, exactly as
/// quant/gse.hpp defines it: e = ilogb(amax) − (b − 2) clamped, m = clamp(rint(x·2^−e)).
inline int encode_group_reference(const float* x, std::int64_t count, int bits, int exp_min,
                                  int exp_max, std::int8_t* m) noexcept {
  float amax = 0.0f;
  for (std::int64_t i = 0; i < count; ++i) amax = std::max(amax, std::fabs(x[i]));
  if (amax == 0.0f) {
    for (std::int64_t i = 0; i < count; ++i) m[i] = 0;
    return exp_min;
  }
  const int e = std::clamp(std::ilogb(amax) - (bits - 2), exp_min, exp_max);
  const float qmax = static_cast<float>((1 << (bits - 1)) - 1);
  for (std::int64_t i = 0; i < count; ++i)
    m[i] = static_cast<std::int8_t>(std::clamp(std::nearbyint(std::ldexp(x[i], -e)), -qmax, qmax));
  return e;
}

}  // namespace detail

/// Packs tiles [t0, t1) of A (a GseMatrix [M, K]) into `out` / `out_exp` (pointing at
/// tile t0). Portable; every path's A packer must produce the same bytes.
inline void pack_a_reference(const GseMatrix& a, const PanelGeometry& geo, std::int64_t t0,
                             std::int64_t t1, std::uint8_t* out, float* out_exp) noexcept {
  const int bits = a.spec().bits;
  for (std::int64_t t = t0; t < t1; ++t) {
    std::uint8_t* tile = out + (t - t0) * geo.a_tile_bytes();
    float* texp = out_exp + (t - t0) * geo.a_tile_exps();
    for (int r = 0; r < geo.mr; ++r) {
      const std::int64_t row = t * geo.mr + r;
      const bool valid = row < a.rows();
      const std::int8_t* src = valid ? a.mantissa_row(row) : nullptr;
      for (std::int64_t g = 0; g < geo.groups; ++g) {
        texp[g * geo.mr + r] = valid ? static_cast<float>(a.exponent_row(row)[g]) : 0.0f;
        std::uint8_t* dst = tile + g * geo.a_group_bytes() + r * 4;
        for (int j = 0; j < geo.quads * 4; ++j) {
          const int v = (valid && j < geo.group)
                            ? detail::source_mantissa(src, bits, g * geo.group + j)
                            : 0;
          dst[(j / 4) * geo.mr * 4 + (j % 4)] = static_cast<std::uint8_t>(v + 128);
        }
      }
    }
  }
}

/// Packs groups [g0, g1) of the B panel starting at column n0 into `out` (records of
/// geo.b_record_bytes()). `scratch` holds at least geo.group floats. Portable.
inline void pack_b_reference(const BSourceView& s, const PanelGeometry& geo, std::int64_t n0,
                             std::int64_t g0, std::int64_t g1, std::int8_t* out,
                             float* scratch) noexcept {
  std::int8_t m[kMaxGseGroup];
  for (std::int64_t g = g0; g < g1; ++g) {
    std::int8_t* rec = out + (g - g0) * geo.b_record_bytes();
    auto* corr = reinterpret_cast<std::int32_t*>(rec + geo.b_data_bytes());
    auto* exps = reinterpret_cast<float*>(rec + geo.b_data_bytes() + geo.nr * 4);
    std::memset(rec, 0, static_cast<std::size_t>(geo.b_data_bytes()));
    const std::int64_t k0 = g * geo.group;
    const std::int64_t count = std::min<std::int64_t>(geo.group, s.cols - k0);
    for (int j = 0; j < geo.nr; ++j) {
      const std::int64_t n = n0 + j;
      int e = 0;
      if (n >= s.rows) {
        std::fill(m, m + geo.group, std::int8_t{0});
      } else if (s.kind == BSourceView::Kind::kGse) {
        const std::int8_t* row = s.mant + n * s.mant_stride;
        for (int i = 0; i < geo.group; ++i)
          m[i] = static_cast<std::int8_t>(detail::source_mantissa(row, s.src_bits, k0 + i));
        e = s.exps[n * s.exp_stride + g];
      } else {
        for (std::int64_t i = 0; i < count; ++i) scratch[i] = detail::source_value(s, n, k0 + i);
        e = detail::encode_group_reference(scratch, count, s.bits, s.exp_min, s.exp_max, m);
        std::fill(m + count, m + geo.group, std::int8_t{0});
      }
      std::int32_t sum = 0;
      for (int i = 0; i < geo.group; ++i) {
        rec[(i / 4) * geo.nr * 4 + j * 4 + (i % 4)] = m[i];
        sum += m[i];
      }
      corr[j] = -128 * sum;
      exps[j] = static_cast<float>(e);
    }
  }
}

}  // namespace gemm
GSQ_NAMESPACE_END
