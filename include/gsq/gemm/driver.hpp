// gsq/gemm/driver.hpp — runs one packed GEMM: operand preparation, blocking, threads.
//
// Order of work, per call:
//   1. validate B's stored values once (decodable to finite floats) and flatten it into
//      a BSourceView; decode double-quantized NF4 scales to one float per block;
//   2. pack all of A (parallel over MR-row tiles) into the calling thread's workspace;
//   3. split C into units of (A tiles) × (B panels), one chunk of units per thread,
//      preferring to split N (no B panel is then packed twice); never split k;
//   4. per unit and panel, walk k in blocks of whole groups: pack the block (or point
//      into a PackedB), run the kernel over every A tile of the unit. Blocking k keeps
//      the B block in L1 while the A tiles stream past it; the fp32 accumulators carry
//      over between blocks in a per-thread buffer, so the ascending-k order of the
//      definition is kept exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/gemm/dispatch.hpp"
#include "gsq/gemm/operand.hpp"
#include "gsq/gemm/pack.hpp"
#include "gsq/gemm/params.hpp"
#include "gsq/gemm/workspace.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm::detail {

/// Bytes of k per B block: the block (NR × this) stays in L1 while A tiles stream by.
inline constexpr std::int64_t kBlockDepthBytes = 512;

/// Whole groups per k-block (at least one).
inline std::int64_t block_groups(const PanelGeometry& geo) noexcept {
  return std::max<std::int64_t>(1, kBlockDepthBytes / (std::int64_t{geo.quads} * 4));
}

/// Floats of packing scratch a thread needs (staging rows, one decoded group).
inline std::int64_t pack_scratch_floats(const PanelGeometry& geo) noexcept {
  const std::int64_t kbytes = (block_groups(geo) * geo.group + 63) / 64 * 64;
  return std::max<std::int64_t>(16 * kbytes / 4 + 2 * kbytes + 256,
                                std::int64_t{kMaxGseGroup} * geo.nr + 256);
}

/// Throws FormatError (kNonFinite) unless every stored value of a GSE-INT source decodes
/// to a finite fp32 number. Only groups whose exponent allows |m|·2^e >= 2^128 are read.
inline void check_gse_source_finite(const GseMatrix& m, const char* what) {
  const GseSpec& s = m.spec();
  const int safe_exp = 128 - (s.bits - 1);  // |m| < 2^(b-1)  ⇒  |m|·2^e < 2^128
  for (std::int64_t r = 0; r < m.rows(); ++r) {
    const std::int8_t* e = m.exponent_row(r);
    for (std::int64_t g = 0; g < m.groups_per_row(); ++g) {
      if (GSQ_LIKELY(e[g] <= safe_exp)) continue;
      const std::int64_t c1 = std::min<std::int64_t>((g + 1) * s.group, m.cols());
      for (std::int64_t c = g * s.group; c < c1; ++c) {
        const float v = m.value(r, c);
        if (!std::isfinite(v))
          gsq::detail::throw_error(ErrorCode::kNonFinite,
                      std::string(what) + ": stored value at row " + std::to_string(r) +
                          ", column " + std::to_string(c) + " decodes to " +
                          (std::isnan(v) ? "NaN" : "Inf") + " and cannot be regrouped");
      }
    }
  }
}

/// Decoded NF4 block scales (one float per block, row-major), checked finite.
inline const float* nf4_absmax(const Nf4Matrix& w, Workspace& ws, const char* what) {
  const std::int64_t blocks = w.blocks_per_row();
  const float* absmax = nullptr;
  if (!w.double_quant()) {
    absmax = w.absmax().data();
  } else {
    float* out = reserve(ws.absmax, w.rows() * blocks);
    for (std::int64_t r = 0; r < w.rows(); ++r)
      for (std::int64_t b = 0; b < blocks; ++b) out[r * blocks + b] = w.block_absmax(r, b);
    absmax = out;
  }
  for (std::int64_t i = 0; i < w.rows() * blocks; ++i) {
    if (GSQ_UNLIKELY(!std::isfinite(absmax[i])))
      gsq::detail::throw_error(ErrorCode::kNonFinite,
                  std::string(what) + ": NF4 block scale of row " + std::to_string(i / blocks) +
                      ", block " + std::to_string(i % blocks) + " is not finite");
  }
  return absmax;
}

/// Flattens a (non-packed) BOperand for the packers, validating its stored values.
inline BSourceView make_source(const BOperand& b, Workspace& ws) {
  BSourceView s;
  s.rows = b.rows();
  s.cols = b.cols();
  s.bits = b.spec().bits;
  s.exp_min = b.spec().exp_min();
  s.exp_max = b.spec().exp_max();
  switch (b.source()) {
    case BSource::kGse:
    case BSource::kGseTransposed: {
      const GseMatrix& m = *b.gse_matrix();
      s.kind = b.source() == BSource::kGse ? BSourceView::Kind::kGse
                                           : BSourceView::Kind::kGseTransposed;
      s.mant = m.mantissa_row(0);
      s.mant_stride = m.row_bytes();
      s.exps = m.exponent_row(0);
      s.exp_stride = m.groups_per_row();
      s.src_bits = m.spec().bits;
      s.src_group = m.spec().group;
      if (s.kind == BSourceView::Kind::kGseTransposed)
        check_gse_source_finite(m, "gemm_nt: B (GSE-INT, transposed)");
      break;
    }
    case BSource::kNf4:
    case BSource::kNf4Transposed: {
      const Nf4Matrix& w = *b.nf4_matrix();
      s.kind = b.source() == BSource::kNf4 ? BSourceView::Kind::kNf4
                                           : BSourceView::Kind::kNf4Transposed;
      s.codes = w.code_row(0);
      s.code_stride = w.row_bytes();
      s.absmax = nf4_absmax(w, ws, "gemm_nt: B (NF4)");
      s.absmax_stride = w.blocks_per_row();
      break;
    }
    case BSource::kPacked: break;
  }
  return s;
}

/// The packed A operand of one call.
struct PackedA {
  const std::uint8_t* data = nullptr;
  const float* exps = nullptr;
  std::int64_t rows = 0;
};

/// Packs all of A into the calling thread's workspace, in parallel over tiles.
inline PackedA pack_a_all(const GseMatrix& a, const PanelGeometry& geo, const PathTable& path) {
  Workspace& ws = thread_workspace();
  const std::int64_t tiles = geo.a_tiles(a.rows());
  std::uint8_t* data = reserve(ws.a_panel, std::max<std::int64_t>(1, tiles * geo.a_tile_bytes()));
  float* exps = reserve(ws.a_exp, std::max<std::int64_t>(1, tiles * geo.a_tile_exps()));
  const std::int64_t grain = std::max<std::int64_t>(1, (1 << 16) / std::max<std::int64_t>(1, geo.a_tile_bytes()));
  parallel_for_chunks(tiles, grain, [&](std::int64_t t0, std::int64_t t1) {
    path.pack_a(a, geo, t0, t1, data + t0 * geo.a_tile_bytes(), exps + t0 * geo.a_tile_exps());
  });
  return {data, exps, a.rows()};
}

/// C (+)= alpha · A·Bᵀ from packed A; B packed block by block (or prepacked).
inline void run_packed(const PackedA& a, const PanelGeometry& geo, const BSourceView& src,
                       const PackedB* packed, MatrixView<float> c, const GemmOptions& options,
                       const PathTable& path) {
  const std::int64_t m = c.rows();
  const std::int64_t n = c.cols();
  const std::int64_t tiles = geo.a_tiles(m);
  const std::int64_t panels = geo.b_panels(n);
  const std::int64_t kb = block_groups(geo);
  const bool one_block = kb >= geo.groups;

  // Units: p_chunks × m_chunks; split N first (each panel packed once), M when N is thin.
  const std::int64_t threads = num_threads();
  const std::int64_t p_chunks = std::min(panels, threads);
  const std::int64_t m_chunks = std::min(tiles, (threads + p_chunks - 1) / p_chunks);
  const std::int64_t units = p_chunks * m_chunks;

  parallel_for_chunks(units, 1, [&](std::int64_t u0, std::int64_t u1) {
    Workspace& ws = thread_workspace();
    std::int8_t* b_block = packed ? nullptr : reserve(ws.b_block, kb * geo.b_record_bytes());
    float* scratch = packed ? nullptr : reserve(ws.scratch, pack_scratch_floats(geo));
    for (std::int64_t u = u0; u < u1; ++u) {
      const std::int64_t pc = u / m_chunks, mc = u % m_chunks;
      const std::int64_t p0 = pc * panels / p_chunks, p1 = (pc + 1) * panels / p_chunks;
      const std::int64_t t0 = mc * tiles / m_chunks, t1 = (mc + 1) * tiles / m_chunks;
      if (t0 == t1) continue;
      float* acc = one_block ? nullptr : reserve(ws.acc, (t1 - t0) * geo.mr * geo.nr);
      KernelParams kp;
      kp.a_tile_stride = geo.a_tile_bytes();
      kp.a_exp_stride = geo.a_tile_exps();
      kp.tiles = t1 - t0;
      kp.b_record_bytes = geo.b_record_bytes();
      kp.quads = geo.quads;
      kp.mr = geo.mr;
      kp.nr = geo.nr;
      kp.acc = acc;
      kp.ldc = c.stride();
      kp.m_valid = m - t0 * geo.mr;
      kp.alpha = options.alpha;
      kp.accumulate = options.accumulate;
      for (std::int64_t p = p0; p < p1; ++p) {
        kp.c = c.data() + t0 * geo.mr * c.stride() + p * geo.nr;
        kp.n_valid = static_cast<int>(std::min<std::int64_t>(geo.nr, n - p * geo.nr));
        for (std::int64_t g0 = 0; g0 < geo.groups; g0 += kb) {
          const std::int64_t g1 = std::min(geo.groups, g0 + kb);
          if (packed) {
            kp.b = packed->panel(p) + g0 * geo.b_record_bytes();
          } else {
            path.pack_b(src, geo, p * geo.nr, g0, g1, b_block, scratch);
            kp.b = b_block;
          }
          kp.a = a.data + t0 * geo.a_tile_bytes() + g0 * geo.a_group_bytes();
          kp.a_exp = a.exps + t0 * geo.a_tile_exps() + g0 * geo.mr;
          kp.groups = g1 - g0;
          kp.last_quads = g1 == geo.groups ? geo.last_quads : geo.quads;
          kp.first = g0 == 0;
          kp.last = g1 == geo.groups;
          path.kernel(kp);
        }
      }
    }
  });
}

/// C for K = 0: every accumulator is +0.
inline void write_empty_product(MatrixView<float> c, const GemmOptions& options) noexcept {
  for (std::int64_t i = 0; i < c.rows(); ++i)
    for (std::int64_t j = 0; j < c.cols(); ++j)
      c(i, j) = options.accumulate ? std::fma(options.alpha, 0.0f, c(i, j)) : options.alpha * 0.0f;
}

}  // namespace gemm::detail
GSQ_NAMESPACE_END
