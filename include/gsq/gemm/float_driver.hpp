// gsq/gemm/float_driver.hpp — runs one floating-point GEMM (gemm_f32, gemm_bf16): path
// choice, blocking, packing and threads.
//
// The design of the integer driver (gemm/driver.hpp), for float panels:
//   1. choose the path: the kernel of selected_isa() (FP32 FMA on AVX-512 or AVX2; for
//      BF16 vdpbf16ps where the CPU has AVX512_BF16, else the FP32 kernel on bf16-rounded,
//      pair-swapped panels, which performs the same roundings), or the reference loops;
//   2. split C into units of (A tile range) × (B panel range), preferring to split N
//      (each unit then packs its B panels once); never split k. Below a work threshold
//      everything runs on the calling thread (no parallel region for small products);
//   3. per unit: rows in blocks that keep the packed A block within a budget (one block,
//      packed once per thread, for most shapes); per block and panel, k in blocks whose
//      packed B fits the cache, every tile of the row block run past it. Between k-blocks
//      the fp32 accumulators go to a per-thread buffer and come back unchanged.
// Thin N (at most two panels per unit) reads FP32 A in place instead of packing it (the
// packing would cost as much as the product); only the last, partial tile is copied.
// Nothing here changes a bit of the result: every C element is one FMA (or vdpbf16ps)
// chain in ascending k, whatever the blocking, the unit split or the thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
#include "gsq/core/cpu.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/gemm/float_pack.hpp"
#include "gsq/gemm/float_reference.hpp"
#include "gsq/gemm/kernels/bf16_avx512.hpp"
#include "gsq/gemm/kernels/f32_avx2.hpp"
#include "gsq/gemm/kernels/f32_avx512.hpp"
#include "gsq/gemm/params.hpp"
#include "gsq/gemm/workspace.hpp"

#if GSQ_ARCH_X86_64
#include <xmmintrin.h>
#endif

GSQ_NAMESPACE_BEGIN
namespace gemm {

/// Which float path ran last on this thread ("avx512", "avx512_bf16", "avx2",
/// "reference"), for tests, benchmarks and examples.
inline const char*& last_float_path_name() noexcept {
  static thread_local const char* name = "reference";
  return name;
}
inline const char* active_float_path() noexcept { return last_float_path_name(); }

namespace detail {

/// Blocking knobs of the current context (core/context.hpp's GemmTuning, float_*
/// fields). Tests shrink them to drive every loop order with small shapes; the bits
/// never depend on them.
inline GemmTuning& float_tuning() noexcept { return current_context().gemm_tuning(); }

using FloatKernelFn = void (*)(const FloatKernelParams&) noexcept;
/// A path's packer for FP32 sources (its panel kind only); arguments as pack_lines.
using FloatPackFn = void (*)(const float*, std::int64_t, bool, std::int64_t, std::int64_t, int,
                             std::int64_t, std::int64_t, std::int64_t, void*) noexcept;

#if GSQ_HAVE_X86_SIMD
inline void pack_f32_avx512(const float* d, std::int64_t st, bool tr, std::int64_t first,
                            std::int64_t count, int width, std::int64_t k, std::int64_t s0,
                            std::int64_t s1, void* out) noexcept {
  kernels::f32_avx512::pack_f32(d, st, tr, first, count, width, k, s0, s1, static_cast<float*>(out));
}
inline void pack_pairs_avx512(const float* d, std::int64_t st, bool tr, std::int64_t first,
                              std::int64_t count, int width, std::int64_t k, std::int64_t s0,
                              std::int64_t s1, void* out) noexcept {
  kernels::bf16_avx512::pack_pairs(d, st, tr, first, count, width, k, s0, s1,
                                   static_cast<std::uint32_t*>(out));
}
#endif

/// One float path: kernel, tile shape, panel kind, and whether it runs flush-to-zero.
struct FloatPath {
  const char* name = "reference";
  FloatKernelFn kernel = nullptr;  // null: the reference loops
  FloatKind kind = FloatKind::kF32;
  int mr = 0;
  int nr_wide = 0;
  int nr_narrow = 0;
  bool flush_to_zero = false;
  FloatPackFn pack = nullptr;  // FP32 sources; null: detail::pack_lines
};

inline FloatPath float_path(Isa isa, bool bf16_product) noexcept {
  FloatPath p;
#if GSQ_HAVE_X86_SIMD
  const FloatKind kind = bf16_product ? FloatKind::kBf16AsF32 : FloatKind::kF32;
  switch (isa) {
    case Isa::kAvx512Vnni:
      if (bf16_product && cpu_features().avx512_bf16)
        return {"avx512_bf16", &kernels::bf16_avx512::gemm_kernel, FloatKind::kBf16Pairs,
                kernels::bf16_avx512::kMr, 32, 16, true, &pack_pairs_avx512};
      return {"avx512", &kernels::f32_avx512::gemm_kernel, kind, kernels::f32_avx512::kMr,
              kernels::f32_avx512::kNrWide, kernels::f32_avx512::kNrNarrow, bf16_product,
              bf16_product ? nullptr : &pack_f32_avx512};
    case Isa::kAvx2:
      return {"avx2", &kernels::f32_avx2::gemm_kernel, kind, kernels::f32_avx2::kMr,
              kernels::f32_avx2::kNrWide, kernels::f32_avx2::kNrNarrow, bf16_product, nullptr};
    case Isa::kReference: break;
  }
#else
  (void)isa;
  (void)bf16_product;
#endif
  return p;
}

/// MXCSR flush-to-zero and denormals-are-zero for a scope (BF16 products), restored after.
class ScopedFlushToZero {
 public:
  explicit ScopedFlushToZero(bool on) noexcept : on_(on) {
#if GSQ_ARCH_X86_64
    if (on_) {
      saved_ = _mm_getcsr();
      _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
    }
#endif
  }
  ~ScopedFlushToZero() {
#if GSQ_ARCH_X86_64
    if (on_) _mm_setcsr(saved_);
#endif
  }
  ScopedFlushToZero(const ScopedFlushToZero&) = delete;
  ScopedFlushToZero& operator=(const ScopedFlushToZero&) = delete;

 private:
  bool on_;
  unsigned saved_ = 0;
};

/// C (+)= alpha · op(A) · op(B) on a kernel path. `a` gives op(A) lines (rows i, k);
/// `b` gives op(B) lines (columns j, k). m, n, k >= 1.
template <class TA, class TB>
void run_float_gemm(const OpView<TA>& a, const OpView<TB>& b, std::int64_t m, std::int64_t n,
                    std::int64_t k, MatrixView<float> c, const GemmOptions& options,
                    const FloatPath& path) {
  const FloatKind kind = path.kind;
  const int mr = path.mr;
  const int nr = n <= path.nr_narrow ? path.nr_narrow : path.nr_wide;
  // Packing steps (k or pairs of k) and kernel steps per packing step.
  const std::int64_t pack_total = kind == FloatKind::kF32 ? k : (k + 1) / 2;
  const std::int64_t step_mul = kind == FloatKind::kBf16AsF32 ? 2 : 1;
  const std::int64_t tiles = (m + mr - 1) / mr;
  const std::int64_t panels = (n + nr - 1) / nr;
  const GemmTuning& tune = float_tuning();
  const std::int64_t kb = std::max<std::int64_t>(
      1, tune.float_block_steps.load(std::memory_order_relaxed) / step_mul);
  const std::int64_t tile_units = pack_total * step_mul * mr;  // one packed A tile, all k
  const std::int64_t rb_tiles = std::max<std::int64_t>(
      1, tune.float_a_block_bytes.load(std::memory_order_relaxed) / (4 * tile_units));
  const bool multi_k = pack_total > kb;

  const std::int64_t threads =
      m * n * k < tune.float_serial_macs.load(std::memory_order_relaxed) ? 1 : num_threads();
  // Units: with panels to spare, one per panel handed out dynamically (a slow or
  // descheduled thread never holds up the rest) when A is packed once per thread;
  // contiguous panel ranges when A needs several row blocks; M split when N is thin.
  std::int64_t p_chunks, m_chunks;
  if (panels >= 2 * threads) {
    p_chunks = tiles <= rb_tiles ? panels : threads;
    m_chunks = 1;
  } else {
    p_chunks = std::min(panels, threads);
    m_chunks = std::min(tiles, (threads + p_chunks - 1) / p_chunks);
  }
  const std::int64_t units = p_chunks * m_chunks;
  std::atomic<std::int64_t> next_unit{0};
  const bool direct_capable = kind == FloatKind::kF32 && std::is_same_v<TA, float>;

  FloatKernelParams base;
  base.nr = nr;
  base.ldc = c.stride();
  base.alpha = options.alpha;
  base.accumulate = options.accumulate;

  // The path's vectorised packer for FP32 sources, else the portable one.
  auto pack = [&](const auto& x, std::int64_t first, std::int64_t count, int width,
                  std::int64_t s0, std::int64_t s1, void* dst) {
    using T = std::remove_cv_t<std::remove_reference_t<decltype(*x.data)>>;
    if constexpr (std::is_same_v<T, float>) {
      if (path.pack != nullptr) {
        path.pack(x.data, x.stride, x.transposed, first, count, width, k, s0, s1, dst);
        return;
      }
    }
    pack_lines(x, first, count, width, k, s0, s1, kind, dst);
  };

  parallel_for_chunks(std::min(units, threads), 1, [&](std::int64_t, std::int64_t) {
    ScopedFlushToZero ftz(path.flush_to_zero);
    Workspace& ws = thread_workspace();
    std::int64_t cached_t0 = -1, cached_t1 = -1;  // tiles whose packed A is in ws.f32_a
    for (std::int64_t u = next_unit.fetch_add(1, std::memory_order_relaxed); u < units;
         u = next_unit.fetch_add(1, std::memory_order_relaxed)) {
      const std::int64_t pc = u / m_chunks, mc = u % m_chunks;
      const std::int64_t p0 = pc * panels / p_chunks, p1 = (pc + 1) * panels / p_chunks;
      const std::int64_t t0 = mc * tiles / m_chunks, t1 = (mc + 1) * tiles / m_chunks;
      if (t0 == t1 || p0 == p1) continue;
      const bool direct = direct_capable && p1 - p0 <= 2;
      for (std::int64_t r0 = t0; r0 < t1; r0 += rb_tiles) {
        const std::int64_t r1 = std::min(t1, r0 + rb_tiles);
        // A for tiles [r0, r1): packed (cached across units), or in place with only the
        // last partial tile packed.
        const std::int64_t full_end = direct ? std::min(r1, m / mr) : r0;
        const std::int64_t pack_from = std::max(r0, full_end);
        void* a_packed = nullptr;
        if (pack_from < r1) {
          if (kind == FloatKind::kBf16Pairs) {
            std::uint32_t* buf = reserve(ws.bf16_a, (r1 - pack_from) * tile_units);
            a_packed = buf;
          } else {
            a_packed = reserve(ws.f32_a, (r1 - pack_from) * tile_units);
          }
          if (direct || cached_t0 != pack_from || cached_t1 != r1) {
            for (std::int64_t t = pack_from; t < r1; ++t) {
              const std::int64_t rows = std::min<std::int64_t>(mr, m - t * mr);
              auto* dst = static_cast<std::uint32_t*>(a_packed) + (t - pack_from) * tile_units;
              pack(a, t * mr, rows, mr, 0, pack_total, dst);
            }
            cached_t0 = direct ? -1 : pack_from;
            cached_t1 = direct ? -1 : r1;
          }
        }
        float* acc = multi_k ? reserve(ws.acc, (r1 - r0) * mr * nr) : nullptr;
        for (std::int64_t p = p0; p < p1; ++p) {
          const std::int64_t n0 = p * nr;
          const std::int64_t n_valid = std::min<std::int64_t>(nr, n - n0);
          for (std::int64_t s0 = 0; s0 < pack_total; s0 += kb) {
            const std::int64_t s1 = std::min(pack_total, s0 + kb);
            void* b_block;
            if (kind == FloatKind::kBf16Pairs)
              b_block = reserve(ws.bf16_b, kb * nr);
            else
              b_block = reserve(ws.f32_b, kb * step_mul * nr);
            pack(b, n0, n_valid, nr, s0, s1, b_block);
            FloatKernelParams kp = base;
            kp.b = b_block;
            kp.steps = (s1 - s0) * step_mul;
            kp.n_valid = static_cast<int>(n_valid);
            kp.first = s0 == 0;
            kp.last = s1 == pack_total;
            auto run = [&](std::int64_t ta, std::int64_t tb, const void* a_ptr,
                           std::int64_t tile_stride, std::int64_t row_stride,
                           std::int64_t step_stride) {
              if (ta >= tb) return;
              kp.a = a_ptr;
              kp.a_tile_stride = tile_stride;
              kp.a_row_stride = row_stride;
              kp.a_step_stride = step_stride;
              kp.tiles = tb - ta;
              kp.m_valid = m - ta * mr;
              kp.c = c.data() + ta * mr * c.stride() + n0;
              kp.acc = acc != nullptr ? acc + (ta - r0) * mr * nr : nullptr;
              path.kernel(kp);
            };
            if constexpr (std::is_same_v<TA, float>) {
              if (full_end > r0) {  // direct FP32 A: op(A)[i, k] at data + i·rs + k·ks
                const std::int64_t rs = a.transposed ? 1 : a.stride;
                const std::int64_t ks = a.transposed ? a.stride : 1;
                run(r0, full_end, a.data + r0 * mr * rs + s0 * ks, mr * rs, rs, ks);
              }
            }
            if (pack_from < r1) {
              const std::uint32_t* a0 = static_cast<const std::uint32_t*>(a_packed) +
                                        s0 * step_mul * mr;
              run(pack_from, r1, a0, tile_units, 0, 0);
            }
          }
        }
      }
    }
  });
}

/// Checks shapes, handles empty products, and runs the chosen path.
template <class TA, class TB>
void float_gemm(MatrixView<const TA> a, bool transpose_a, MatrixView<const TB> b,
                bool transpose_b, MatrixView<float> c, const GemmOptions& options,
                bool bf16_product, const char* what, bool force_reference = false) {
  const std::int64_t m = transpose_a ? a.cols() : a.rows();
  const std::int64_t ka = transpose_a ? a.rows() : a.cols();
  const std::int64_t kb = transpose_b ? b.cols() : b.rows();
  const std::int64_t n = transpose_b ? b.rows() : b.cols();
  GSQ_CHECK(ka == kb, ErrorCode::kShapeMismatch,
            std::string(what) + ": op(A) has k=" + std::to_string(ka) + " but op(B) has k=" +
                std::to_string(kb));
  check_shape(c, m, n, (std::string(what) + ": C").c_str());
  if (m == 0 || n == 0) return;
  const OpView<TA> av{a.data(), a.stride(), transpose_a};
  const OpView<TB> bv{b.data(), b.stride(), !transpose_b};  // lines = columns of op(B)
  const FloatPath path =
      float_path(force_reference ? Isa::kReference : selected_isa(), bf16_product);
  last_float_path_name() = path.name;
  if (path.kernel == nullptr || ka == 0) {
    gemm_float_reference(av, bv, ka, c, options, bf16_product);
    return;
  }
  run_float_gemm(av, bv, m, n, ka, c, options, path);
}

}  // namespace detail
}  // namespace gemm
GSQ_NAMESPACE_END
