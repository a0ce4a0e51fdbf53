// gsq/gemm/driver.hpp — runs one packed GEMM: operand preparation, blocking, threads.
//
// Order of work, per call:
//   1. validate B's stored values once (decodable to finite floats) and flatten it into
//      a BSourceView; decode double-quantized NF4 scales to one float per block;
//   2. pack all of A (parallel over MR-row tiles) into the calling thread's workspace —
//      or, for thin N on AVX-512, read A's int8 rows in place (packing A would cost as
//      much as the product);
//   3. split C into units of (A tiles) × (B panels), one chunk of units per thread,
//      preferring to split N (no B panel is then packed twice); never split k;
//   4. per unit, one of two loop orders:
//      * B-resident (the unit's packed B is small, e.g. thin K or thin N, or prepacked
//        and small): pack all of it once, then run tiles outermost over every panel
//        with the whole K per call, so C is written row by row;
//      * streaming (large B): per panel, walk k in blocks of whole groups, pack the
//        block into L1-sized scratch (or point into a PackedB) and run every A tile of
//        the unit past it. The fp32 accumulators carry over between k-blocks in a
//        per-thread buffer, so the ascending-k order of the definition is kept exactly.
// Neither choice changes a single bit of the result: every element is computed by one
// kernel call sequence in ascending k, whatever the blocking or thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
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

/// Blocking knobs (core/context.hpp's GemmTuning), of the current context. Tests shrink
/// them to drive every loop order with small shapes; results never depend on them.
using Tuning = GemmTuning;
inline Tuning& tuning() noexcept { return current_context().gemm_tuning(); }

/// Whole groups per k-block (at least one).
inline std::int64_t block_groups(const PanelGeometry& geo) noexcept {
  return std::max<std::int64_t>(
      1, tuning().block_depth_bytes.load(std::memory_order_relaxed) / (std::int64_t{geo.quads} * 4));
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

/// The A operand of one call, packed or (thin N on AVX-512) read in place.
struct PreparedA {
  const GseMatrix* source = nullptr;   // packed layout: each worker packs what it needs
  const std::uint8_t* data = nullptr;  // direct: A's mantissa rows
  const float* exps = nullptr;         // packed: tile layout; direct: [row][group]
  std::int64_t rows = 0;
  bool direct = false;
  std::int64_t row_stride = 0;         // direct: bytes between A rows
  std::int64_t full_tiles = 0;         // direct: tiles whose MR rows all exist
  const std::uint8_t* tail = nullptr;  // direct: copy of the last partial tile, zero rows added
};

/// Whether the kernel of `path` can read A in place for this product.
inline bool can_read_a_directly(const GseMatrix& a, const PanelGeometry& geo, Isa isa) noexcept {
  return isa == Isa::kAvx512Vnni && geo.mr == NarrowTile::kMr && geo.nr == NarrowTile::kNr &&
         !a.spec().is_packed() && geo.group % 4 == 0;
}

/// Prepares A for a call. Direct layout (thin N on AVX-512): float exponents per row and
/// a padded copy of the last tile, serially (they are small). Packed layout: nothing yet —
/// each worker thread packs the tiles it runs into its own workspace (see run_packed),
/// so one call opens a single parallel region.
inline PreparedA prepare_a(const GseMatrix& a, const PanelGeometry& geo, const PathTable& path) {
  PreparedA out;
  out.rows = a.rows();
  out.source = &a;
  if (!can_read_a_directly(a, geo, path.isa)) return out;
  Workspace& ws = thread_workspace();
  const std::int64_t tiles = geo.a_tiles(a.rows());
  out.direct = true;
  out.row_stride = a.row_bytes();
  out.full_tiles = a.rows() / geo.mr;
  const std::int64_t groups = geo.groups;
  float* exps = reserve(ws.a_exp, std::max<std::int64_t>(1, tiles * geo.mr * groups));
  for (std::int64_t r = 0; r < tiles * geo.mr; ++r)
    for (std::int64_t g = 0; g < groups; ++g)
      exps[r * groups + g] = r < a.rows() ? static_cast<float>(a.exponent_row(r)[g]) : 0.0f;
  out.exps = exps;
  out.data = reinterpret_cast<const std::uint8_t*>(a.mantissa_row(0));
  if (out.full_tiles < tiles) {
    std::uint8_t* tail = reserve(ws.a_panel, geo.mr * a.row_bytes());
    std::memset(tail, 0, static_cast<std::size_t>(geo.mr * a.row_bytes()));
    for (std::int64_t r = out.full_tiles * geo.mr; r < a.rows(); ++r)
      std::memcpy(tail + (r - out.full_tiles * geo.mr) * a.row_bytes(), a.mantissa_row(r),
                  static_cast<std::size_t>(a.row_bytes()));
    out.tail = tail;
  }
  return out;
}

/// A worker's packed copy of A tiles [first, last) (packed layout only).
struct ThreadA {
  const std::uint8_t* data = nullptr;
  const float* exps = nullptr;
  std::int64_t first = 0;
  std::int64_t last = 0;
};

/// Makes sure `mine` holds tiles [t0, t1) of A, packing them into `ws` if not.
inline void ensure_packed(ThreadA& mine, const PreparedA& a, const PanelGeometry& geo,
                          const PathTable& path, Workspace& ws, std::int64_t t0, std::int64_t t1) {
  if (a.direct || (t0 >= mine.first && t1 <= mine.last && mine.data != nullptr)) return;
  std::uint8_t* data = reserve(ws.a_panel, std::max<std::int64_t>(1, (t1 - t0) * geo.a_tile_bytes()));
  float* exps = reserve(ws.a_exp, std::max<std::int64_t>(1, (t1 - t0) * geo.a_tile_exps()));
  path.pack_a(*a.source, geo, t0, t1, data, exps);
  mine = {data, exps, t0, t1};
}

/// Runs the kernel for A tiles [t0, t1) against the B records `b` of groups [g0, g1)
/// of panel p. `kp` carries the call-invariant fields; `acc` holds tile t0's partials.
inline void run_tiles(const PathTable& path, KernelParams kp, const PreparedA& a, const ThreadA& mine,
                      const PanelGeometry& geo, std::int64_t t0, std::int64_t t1, std::int64_t p,
                      std::int64_t g0, std::int64_t g1, const std::int8_t* b, float* acc,
                      MatrixView<float> c) {
  kp.b = b;
  kp.groups = g1 - g0;
  kp.last_quads = g1 == geo.groups ? geo.last_quads : geo.quads;
  kp.first = g0 == 0;
  kp.last = g1 == geo.groups;
  kp.n_valid = static_cast<int>(std::min<std::int64_t>(geo.nr, c.cols() - p * geo.nr));
  auto call = [&](std::int64_t ta, std::int64_t tb, const std::uint8_t* a_data) {
    kp.tiles = tb - ta;
    kp.acc = acc != nullptr ? acc + (ta - t0) * geo.mr * geo.nr : nullptr;
    kp.c = c.data() + ta * geo.mr * c.stride() + p * geo.nr;
    kp.m_valid = c.rows() - ta * geo.mr;
    if (a.direct) {
      kp.a = a_data + g0 * geo.group;
      kp.a_exp = a.exps + ta * geo.mr * geo.groups + g0;
    } else {
      kp.a = mine.data + (ta - mine.first) * geo.a_tile_bytes() + g0 * geo.a_group_bytes();
      kp.a_exp = mine.exps + (ta - mine.first) * geo.a_tile_exps() + g0 * geo.mr;
    }
    path.kernel(kp);
  };
  if (!a.direct) {
    call(t0, t1, nullptr);
    return;
  }
  const std::int64_t split = std::min(t1, std::max(t0, a.full_tiles));
  if (split > t0) call(t0, split, a.data + t0 * geo.mr * a.row_stride);
  if (t1 > split) call(split, t1, a.tail);  // the partial last tile
}

/// C (+)= alpha · A·Bᵀ from prepared A; B packed block by block, packed up front, or
/// prepacked.
inline void run_packed(const PreparedA& a, const PanelGeometry& geo, const BSourceView& src,
                       const PackedB* packed, MatrixView<float> c, const GemmOptions& options,
                       const PathTable& path) {
  const std::int64_t m = c.rows();
  const std::int64_t n = c.cols();
  const std::int64_t tiles = geo.a_tiles(m);
  const std::int64_t panels = geo.b_panels(n);
  const std::int64_t kb = block_groups(geo);
  const std::int64_t resident = tuning().resident_bytes.load(std::memory_order_relaxed);

  // Units: p_chunks × m_chunks. With panels to spare, one unit per panel (each packed
  // once), handed out dynamically so a descheduled or slower thread never holds up the
  // rest; when N is thin, M is split instead, one unit per thread (each unit packs its
  // own copy of the small B). Which thread runs a unit never changes its bits.
  // B-resident units keep contiguous panel ranges (C is then written in long row runs).
  const std::int64_t threads = num_threads();
  const bool resident_mode =
      (panels + threads - 1) / threads * geo.b_panel_bytes() <= resident;
  const std::int64_t p_chunks =
      !resident_mode && panels >= 2 * threads ? panels : std::min(panels, threads);
  const std::int64_t m_chunks = std::min(tiles, (threads + p_chunks - 1) / p_chunks);
  const std::int64_t units = p_chunks * m_chunks;
  std::atomic<std::int64_t> next_unit{0};

  KernelParams base;
  base.a_tile_stride = a.direct ? geo.mr * a.row_stride : geo.a_tile_bytes();
  base.a_exp_stride = a.direct ? geo.mr * geo.groups : geo.a_tile_exps();
  base.a_row_stride = a.direct ? a.row_stride : 0;
  base.a_exp_row_stride = a.direct ? geo.groups : 0;
  base.b_record_bytes = geo.b_record_bytes();
  base.quads = geo.quads;
  base.mr = geo.mr;
  base.nr = geo.nr;
  base.ldc = c.stride();
  base.alpha = options.alpha;
  base.accumulate = options.accumulate;

  parallel_for_chunks(std::min(units, threads), 1, [&](std::int64_t, std::int64_t) {
    Workspace& ws = thread_workspace();
    ThreadA mine;
    for (std::int64_t u = next_unit.fetch_add(1, std::memory_order_relaxed); u < units;
         u = next_unit.fetch_add(1, std::memory_order_relaxed)) {
      const std::int64_t pc = u / m_chunks, mc = u % m_chunks;
      const std::int64_t p0 = pc * panels / p_chunks, p1 = (pc + 1) * panels / p_chunks;
      const std::int64_t t0 = mc * tiles / m_chunks, t1 = (mc + 1) * tiles / m_chunks;
      if (t0 == t1) continue;
      ensure_packed(mine, a, geo, path, ws, t0, t1);
      const std::int64_t share = (p1 - p0) * geo.b_panel_bytes();
      if (packed != nullptr || resident_mode) {
        // All of this unit's B is available at once: tiles outermost, whole K per call.
        const std::int8_t* b_all;
        std::int64_t b_first_panel = p0;
        if (packed != nullptr) {
          b_all = packed->panel(0);
          b_first_panel = 0;
        } else {
          std::int8_t* buf = reserve(ws.b_block, share);
          float* scratch = reserve(ws.scratch, pack_scratch_floats(geo));
          for (std::int64_t p = p0; p < p1; ++p)
            for (std::int64_t g0 = 0; g0 < geo.groups; g0 += kb)
              path.pack_b(src, geo, p * geo.nr, g0, std::min(geo.groups, g0 + kb),
                          buf + (p - p0) * geo.b_panel_bytes() + g0 * geo.b_record_bytes(), scratch);
          b_all = buf;
        }
        const bool big_b = packed != nullptr && !resident_mode;
        if (!big_b) {
          const std::int64_t chunk = std::clamp<std::int64_t>(
              (32 << 10) / std::max<std::int64_t>(1, geo.a_tile_bytes()), 1, 4);
          for (std::int64_t tc = t0; tc < t1; tc += chunk) {
            const std::int64_t tc1 = std::min(t1, tc + chunk);
            for (std::int64_t p = p0; p < p1; ++p)
              run_tiles(path, base, a, mine, geo, tc, tc1, p, 0, geo.groups,
                        b_all + (p - b_first_panel) * geo.b_panel_bytes(), nullptr, c);
          }
          continue;
        }
        // A large prepacked B: panels outermost, k-blocked like the streaming case.
        float* acc = kb >= geo.groups ? nullptr : reserve(ws.acc, (t1 - t0) * geo.mr * geo.nr);
        for (std::int64_t p = p0; p < p1; ++p)
          for (std::int64_t g0 = 0; g0 < geo.groups; g0 += kb)
            run_tiles(path, base, a, mine, geo, t0, t1, p, g0, std::min(geo.groups, g0 + kb),
                      b_all + p * geo.b_panel_bytes() + g0 * geo.b_record_bytes(), acc, c);
        continue;
      }
      // Streaming: per panel and k-block, pack the block into L1-sized scratch and run
      // every tile of the unit past it.
      std::int8_t* b_block = reserve(ws.b_block, kb * geo.b_record_bytes());
      float* scratch = reserve(ws.scratch, pack_scratch_floats(geo));
      float* acc = kb >= geo.groups ? nullptr : reserve(ws.acc, (t1 - t0) * geo.mr * geo.nr);
      for (std::int64_t p = p0; p < p1; ++p) {
        for (std::int64_t g0 = 0; g0 < geo.groups; g0 += kb) {
          const std::int64_t g1 = std::min(geo.groups, g0 + kb);
          path.pack_b(src, geo, p * geo.nr, g0, g1, b_block, scratch);
          run_tiles(path, base, a, mine, geo, t0, t1, p, g0, g1, b_block, acc, c);
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
