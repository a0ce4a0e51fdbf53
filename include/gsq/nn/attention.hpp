// gsq/nn/attention.hpp — causal multi-head attention with grouped KV heads (GQA), fused.
//
// The attention core of a LLaMA block, between the q/k/v projections (plus RoPE) and the
// output projection. Per sequence b and query head h, with kv head g = h / (H / H_kv):
//     S = Q_h·K_gᵀ / sqrt(hs),   P = softmax(S) row-wise over visible keys,   O_h = P·V_g.
// Query i of a sequence with nq queries and nk keys sits at position nk − nq + i and sees
// keys 0..nk − nq + i: training passes nq = nk (plain causal mask), decoding with a KV
// cache passes the new queries against every cached key, with the same code.
//
// FP32 and BF16 products run flash-style: blocks of 64 queries × 64 keys, an online
// softmax per row (running maximum m and sum l; O rescaled by exp(m_old − m_new) when
// the maximum grows), key blocks entirely above the diagonal skipped, never a [nq, nk]
// matrix. The cache keeps the output O and one log-sum-exp per row; backward recomputes
// P = exp(S − lse) block by block:
//     dP = dO·Vᵀ,  dS = P ⊙ (dP − rowsum(dO ⊙ O)) / √hs,
//     dQ = dS·K,  dK = dSᵀ·Q,  dV = Pᵀ·dO.
// The block products are nn/kernels/attention_*.hpp (reference, AVX2, AVX-512; BF16 with
// vdpbf16ps where the CPU has AVX512-BF16): FP32, or BF16 operands with FP32 accumulation
// — the softmax, its statistics and the rescaling are FP32 (row sums in double) in both.
//
// Work splits so that every output element is computed by one task with a fixed order:
// forward and dQ over (sequence, head, query block), dK and dV over (sequence, kv head,
// key block) in a second pass (each task runs its query heads and query blocks in order;
// P and dS are recomputed there, 7 block products per visible block instead of 5, the
// price of not reducing across threads). Results are bit-identical for any thread count,
// and for every ISA path (the kernels reproduce the reference's order exactly).
//
// GSE-INT products (`Bits` not FP32) keep their earlier form: per (sequence, kv head),
// whole-sequence GEMMs through gsq::gemm with operands grouped along each product's k
// (Q, K, V, P activations, dO and dS gradients), the [nq, nk] scores materialised per
// head and the masked half computed. Quantizing P per block would change its numerics
// (a block's P is relative to the running maximum, not the final one).
//
// Scratch: per-call packed operands (K transposed, BF16 pairs) and per-task blocks live
// in the per-thread shared scratch (nn/scratch.hpp), grow-only, so steady-state steps
// allocate nothing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/cpu.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/nn/bits.hpp"
#include "gsq/nn/fast_math.hpp"
#include "gsq/nn/kernels/attention_avx2.hpp"
#include "gsq/nn/kernels/attention_avx512.hpp"
#include "gsq/nn/kernels/attention_reference.hpp"
#include "gsq/nn/scratch.hpp"
#include "gsq/nn/workspace.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN

namespace nn::detail {

/// The block kernels of one ISA path.
struct AttentionKernels {
  void (*scores_f32)(const kernels::ScoresF32&) noexcept = kernels::reference::scores_f32;
  void (*accumulate_f32)(const kernels::AccumulateF32&) noexcept = kernels::reference::accumulate_f32;
  void (*scores_bf16)(const kernels::ScoresBf16&) noexcept = kernels::reference::scores_bf16;
  void (*accumulate_bf16)(const kernels::AccumulateBf16&) noexcept =
      kernels::reference::accumulate_bf16;
};

/// The kernels for `isa`. BF16 uses vdpbf16ps on the AVX-512 path when the CPU has
/// AVX512-BF16, and the reference kernels otherwise (same bits, slower).
inline AttentionKernels attention_kernels(Isa isa) noexcept {
  AttentionKernels k;
#if GSQ_HAVE_X86_SIMD
  if (isa == Isa::kAvx512Vnni) {
    k.scores_f32 = kernels::avx512::scores_f32;
    k.accumulate_f32 = kernels::avx512::accumulate_f32;
    if (cpu_features().avx512_bf16) {
      k.scores_bf16 = kernels::avx512::scores_bf16;
      k.accumulate_bf16 = kernels::avx512::accumulate_bf16;
    }
  } else if (isa == Isa::kAvx2) {
    k.scores_f32 = kernels::avx2::scores_f32;
    k.accumulate_f32 = kernels::avx2::accumulate_f32;
  }
#else
  (void)isa;
#endif
  return k;
}

/// Turns scores s[0, n) into probabilities in place; returns the log-sum-exp. The
/// exponentials are a vectorised loop; their sum runs in double, in order.
inline float softmax_row(float* s, std::int64_t n) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
  for (std::int64_t j = 0; j < n; ++j) s[j] = exp_approx(s[j] - m);
  double sum = 0.0;
  for (std::int64_t j = 0; j < n; ++j) sum += s[j];
  const auto inv = static_cast<float>(1.0 / sum);
  for (std::int64_t j = 0; j < n; ++j) s[j] *= inv;
  return m + static_cast<float>(std::log(sum));
}

/// p[j] = exp(s[j] − lse) in place for j < n: probabilities recomputed from scores.
inline void probabilities_from_lse(float* s, std::int64_t n, float lse) noexcept {
  for (std::int64_t j = 0; j < n; ++j) s[j] = exp_approx(s[j] - lse);
}

/// dst[j] = bf16(src[j]) for j < n, zeros up to `padded`.
inline void to_bf16(const float* src, std::int64_t n, std::uint16_t* dst, std::int64_t padded) noexcept {
  for (std::int64_t j = 0; j < n; ++j) dst[j] = kernels::bf16_bits(src[j]);
  for (std::int64_t j = n; j < padded; ++j) dst[j] = 0;
}

}  // namespace nn::detail

class CausalAttention {
 public:
  static constexpr std::int64_t kBlock = 64;  // queries and keys per block

  /// What backward needs beyond Q, K, V: one log-sum-exp per (sequence, head, query)
  /// and, for the FP32 / BF16 products, the output O (for rowsum(dO ⊙ O)).
  struct Cache {
    Tensor<float> lse;  // [batch·n_heads, queries]
    Tensor<float> out;  // [batch·queries, n_heads·hs]
    std::int64_t batch = 0;
    std::int64_t queries = 0;
    std::int64_t keys = 0;
    std::int64_t bytes() const noexcept { return lse.bytes() + out.bytes(); }
  };

  CausalAttention() = default;
  /// H query heads, H_kv key/value heads (H a multiple of H_kv), head size hs; `bits`
  /// chooses FP32 or GSE-INT products (activation and gradient widths, shared group);
  /// with FP32 `bits`, `bf16` rounds the products' operands to BF16 (FP32 accumulation).
  CausalAttention(std::int64_t n_heads, std::int64_t n_kv_heads, std::int64_t head_size,
                  Bits bits = Bits::fp32(), bool bf16 = false)
      : n_heads_(n_heads), n_kv_heads_(n_kv_heads), head_size_(head_size), bits_(bits) {
    GSQ_CHECK(n_heads > 0 && n_kv_heads > 0 && head_size > 0 && n_heads % n_kv_heads == 0,
              ErrorCode::kInvalidArgument,
              "CausalAttention: need heads > 0, kv heads > 0 dividing heads and head size > 0, "
              "got " + std::to_string(n_heads) + ", " + std::to_string(n_kv_heads) + ", " +
                  std::to_string(head_size));
    bits_.validate();
    set_bf16(bf16);
  }

  std::int64_t n_heads() const noexcept { return n_heads_; }
  std::int64_t n_kv_heads() const noexcept { return n_kv_heads_; }
  std::int64_t head_size() const noexcept { return head_size_; }
  const Bits& bits() const noexcept { return bits_; }
  void set_bits(const Bits& bits) {
    bits.validate();
    bits_ = bits;
  }
  /// Whether the FP32-mode products take BF16 operands (no effect with GSE-INT bits).
  bool bf16() const noexcept { return bf16_; }
  void set_bf16(bool on) {
    GSQ_CHECK(!on || head_size_ % 2 == 0, ErrorCode::kInvalidArgument,
              "CausalAttention: BF16 products need an even head size, got " +
                  std::to_string(head_size_));
    bf16_ = on;
  }
  /// "fp32", "bf16" or the GSE-INT precision's name.
  std::string precision_name() const { return bits_.is_fp32() ? (bf16_ ? "bf16" : "fp32") : bits_.name(); }
  float scale() const noexcept {
    return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_size_)));
  }

  /// out [batch·nq, H·hs] = attention of q [batch·nq, H·hs] over k, v [batch·nk, H_kv·hs]
  /// (nk ≥ nq; query i sees keys up to nk − nq + i). With a cache, keeps what backward
  /// needs (q, k and v stay the caller's).
  void forward(MatrixView<const float> q, MatrixView<const float> k, MatrixView<const float> v,
               std::int64_t batch, MatrixView<float> out, Cache* cache) const {
    const std::pair<std::int64_t, std::int64_t> extents =
        check_operands(q, k, v, batch, "CausalAttention::forward");
    const std::int64_t nq = extents.first;
    const std::int64_t nk = extents.second;
    check_shape(out, q.rows(), q.cols(), "CausalAttention::forward output");
    float* lse = nullptr;
    if (cache != nullptr) {
      lse = ensure_matrix(cache->lse, batch * n_heads_, nq, MemoryCategory::kActivations).data();
      cache->batch = batch;
      cache->queries = nq;
      cache->keys = nk;
    }
    if (bits_.is_fp32()) {
      forward_float(q, k, v, batch, nq, nk, out, lse);
      if (cache != nullptr) {
        MatrixView<float> o = ensure_matrix(cache->out, out.rows(), out.cols(), MemoryCategory::kActivations);
        for (std::int64_t r = 0; r < out.rows(); ++r) std::copy(out.row(r), out.row(r) + out.cols(), o.row(r));
      }
    } else {
      if (cache != nullptr) cache->out = Tensor<float>();
      run_gse_tasks(batch, [&](std::int64_t b, std::int64_t g) {
        forward_gse(q, k, v, b, g, nq, nk, out, lse);
      });
    }
  }

  /// dq, dk, dv (shaped as q, k, v; overwritten) from dout, given the forward's operands
  /// and cache.
  void backward(MatrixView<const float> q, MatrixView<const float> k, MatrixView<const float> v,
                MatrixView<const float> dout, const Cache& cache, MatrixView<float> dq,
                MatrixView<float> dk, MatrixView<float> dv) const {
    GSQ_CHECK(cache.batch > 0, ErrorCode::kInvalidArgument,
              "CausalAttention::backward: the cache is empty (forward ran without one)");
    const std::pair<std::int64_t, std::int64_t> extents =
        check_operands(q, k, v, cache.batch, "CausalAttention::backward");
    const std::int64_t nq = extents.first;
    const std::int64_t nk = extents.second;
    GSQ_CHECK(nq == cache.queries && nk == cache.keys, ErrorCode::kShapeMismatch,
              "CausalAttention::backward: operands do not match the cached forward");
    check_shape(dout, q.rows(), q.cols(), "CausalAttention::backward dout");
    check_shape(dq, q.rows(), q.cols(), "CausalAttention::backward dq");
    check_shape(dk, k.rows(), k.cols(), "CausalAttention::backward dk");
    check_shape(dv, v.rows(), v.cols(), "CausalAttention::backward dv");
    const float* lse = cache.lse.data();
    if (bits_.is_fp32()) {
      GSQ_CHECK(cache.out.rank() == 2 && cache.out.dim(0) == q.rows() && cache.out.dim(1) == q.cols(),
                ErrorCode::kInvalidArgument,
                "CausalAttention::backward: the cache holds no FP32 output (forward ran with "
                "GSE-INT products)");
      backward_float(q, k, v, dout, cache.out.view(), cache.batch, nq, nk, lse, dq, dk, dv);
    } else {
      run_gse_tasks(cache.batch, [&](std::int64_t b, std::int64_t g) {
        backward_gse(q, k, v, dout, b, g, nq, nk, lse, dq, dk, dv);
      });
    }
  }

  /// Useful multiply-adds of forward (2 products) over the visible (unmasked) pairs, for
  /// benchmarks: H·hs·Σ_i visible(i) per product and sequence.
  std::int64_t visible_pairs(std::int64_t nq, std::int64_t nk) const noexcept {
    return nq * (nk - nq) + nq * (nq + 1) / 2;
  }

 private:
  using Kernels = nn::detail::AttentionKernels;
  static constexpr std::int64_t kTileFloats = kBlock * kBlock;

  std::pair<std::int64_t, std::int64_t> check_operands(MatrixView<const float> q,
                                                       MatrixView<const float> k,
                                                       MatrixView<const float> v,
                                                       std::int64_t batch, const char* what) const {
    GSQ_CHECK(n_heads_ > 0, ErrorCode::kInvalidArgument,
              std::string(what) + ": used before construction");
    GSQ_CHECK(batch > 0 && q.rows() % batch == 0 && k.rows() % batch == 0, ErrorCode::kShapeMismatch,
              std::string(what) + ": " + std::to_string(q.rows()) + " query rows and " +
                  std::to_string(k.rows()) + " key rows are not whole sequences of a batch of " +
                  std::to_string(batch));
    const std::int64_t nq = q.rows() / batch;
    const std::int64_t nk = k.rows() / batch;
    GSQ_CHECK(nq >= 1 && nk >= nq, ErrorCode::kShapeMismatch,
              std::string(what) + ": need 1 <= queries <= keys per sequence, got " +
                  std::to_string(nq) + " and " + std::to_string(nk));
    check_shape(q, batch * nq, n_heads_ * head_size_, what);
    check_shape(k, batch * nk, n_kv_heads_ * head_size_, what);
    check_shape(v, batch * nk, n_kv_heads_ * head_size_, what);
    return {nq, nk};
  }

  std::int64_t group_size() const noexcept { return n_heads_ / n_kv_heads_; }
  static std::int64_t blocks(std::int64_t n) noexcept { return (n + kBlock - 1) / kBlock; }
  static std::int64_t even(std::int64_t n) noexcept { return n + (n & 1); }

  // ---- packing -----------------------------------------------------------------------

  /// dst [hs, nk] = rows b·nk.. of x, columns of head g, transposed (FP32).
  void pack_transposed_f32(MatrixView<const float> x, std::int64_t b, std::int64_t g,
                           std::int64_t nk, float* dst) const {
    const std::int64_t hs = head_size_;
    for (std::int64_t j = 0; j < nk; ++j) {
      const float* r = x.row(b * nk + j) + g * hs;
      for (std::int64_t d = 0; d < hs; ++d) dst[d * nk + j] = r[d];
    }
  }
  /// BF16 pairs along the head dimension: dst[(t·nk + j)·2 + e] = x[b·nk + j, g·hs + 2t + e].
  void pack_pairs_along_head(MatrixView<const float> x, std::int64_t b, std::int64_t g,
                             std::int64_t nk, std::uint16_t* dst) const {
    const std::int64_t hs = head_size_;
    for (std::int64_t j = 0; j < nk; ++j) {
      const float* r = x.row(b * nk + j) + g * hs;
      for (std::int64_t t = 0; t < hs / 2; ++t) {
        dst[(t * nk + j) * 2] = nn::kernels::bf16_bits(r[2 * t]);
        dst[(t * nk + j) * 2 + 1] = nn::kernels::bf16_bits(r[2 * t + 1]);
      }
    }
  }
  /// BF16 pairs along the rows: dst[(t·hs + d)·2 + e] = x[b·n + 2t + e, g·hs + d], the
  /// odd tail row zero (dst holds even(n)·hs values).
  void pack_pairs_along_rows(MatrixView<const float> x, std::int64_t b, std::int64_t g,
                             std::int64_t n, std::uint16_t* dst) const {
    const std::int64_t hs = head_size_;
    for (std::int64_t j = 0; j < even(n); ++j) {
      const float* r = j < n ? x.row(b * n + j) + g * hs : nullptr;
      const std::int64_t t = j / 2, e = j & 1;
      for (std::int64_t d = 0; d < hs; ++d)
        dst[(t * hs + d) * 2 + e] = r != nullptr ? nn::kernels::bf16_bits(r[d]) : std::uint16_t{0};
    }
  }
  /// BF16 copy of rows b·n.. of head h (row stride hs).
  void pack_rows_bf16(MatrixView<const float> x, std::int64_t b, std::int64_t h, std::int64_t n,
                      std::uint16_t* dst) const {
    const std::int64_t hs = head_size_;
    for (std::int64_t i = 0; i < n; ++i) nn::detail::to_bf16(x.row(b * n + i) + h * hs, hs, dst + i * hs, hs);
  }

  // ---- softmax pieces on one block ---------------------------------------------------

  /// Visible keys of query row i (0-based in the sequence) inside the key block starting
  /// at j0 with `cols` keys: 0..cols.
  static std::int64_t visible_in_block(std::int64_t offset, std::int64_t i, std::int64_t j0,
                                       std::int64_t cols) noexcept {
    return std::clamp<std::int64_t>(offset + i + 1 - j0, 0, cols);
  }

  /// p[r, j] = exp(s[r, j] − lse_r) for visible j, 0 otherwise; then, with dp given,
  /// ds[r, j] = p·(dp − D_r)·scale (in dp's storage).
  void recompute_block(float* s, float* dp, std::int64_t rows, std::int64_t cols,
                       std::int64_t offset, std::int64_t i0, std::int64_t j0, const float* lse_rows,
                       const float* d_rows) const {
    const float sc = scale();
    for (std::int64_t r = 0; r < rows; ++r) {
      float* sr = s + r * kBlock;
      float* dr = dp + r * kBlock;
      const std::int64_t vis = visible_in_block(offset, i0 + r, j0, cols);
      const float lse = lse_rows[r];
      const float dd = d_rows[r];
      for (std::int64_t j = 0; j < vis; ++j) sr[j] = nn::detail::exp_approx(sr[j] - lse);
      for (std::int64_t j = vis; j < cols; ++j) sr[j] = 0.0f;
      for (std::int64_t j = 0; j < cols; ++j) dr[j] = sr[j] * (dr[j] - dd) * sc;
    }
  }

  // ---- FP32 / BF16 -------------------------------------------------------------------

  void forward_float(MatrixView<const float> q, MatrixView<const float> k,
                     MatrixView<const float> v, std::int64_t batch, std::int64_t nq,
                     std::int64_t nk, MatrixView<float> out, float* lse) const {
    const Kernels kern = nn::detail::attention_kernels(selected_isa());
    const std::int64_t hs = head_size_, H = n_heads_, G = n_kv_heads_;
    const std::int64_t offset = nk - nq;
    const std::int64_t qblocks = blocks(nq);
    // Packed operands, shared by all tasks (this thread's scratch; tasks read it).
    const std::int64_t per_kv = bf16_ ? hs * nk + even(nk) * hs : hs * nk;  // in floats or bf16
    const std::int64_t packed_floats =
        bf16_ ? (batch * G * per_kv + batch * nq * H * hs + 1) / 2 : batch * G * per_kv;
    float* packed = detail::shared_scratch_floats(detail::ScratchSlot::kAttentionPacked, packed_floats);
    auto* packed16 = reinterpret_cast<std::uint16_t*>(packed);
    parallel_for(batch * G, [&](std::int64_t t) {
      const std::int64_t b = t / G, g = t % G;
      if (!bf16_) {
        pack_transposed_f32(k, b, g, nk, packed + t * per_kv);
      } else {
        pack_pairs_along_head(k, b, g, nk, packed16 + t * per_kv);
        pack_pairs_along_rows(v, b, g, nk, packed16 + t * per_kv + hs * nk);
        for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h)
          pack_rows_bf16(q, b, h, nq, packed16 + batch * G * per_kv + (b * H + h) * nq * hs);
      }
    });
    parallel_for(batch * H * qblocks, [&](std::int64_t task) {
      const std::int64_t qb = task % qblocks;
      const std::int64_t h = (task / qblocks) % H;
      const std::int64_t b = task / (qblocks * H);
      const std::int64_t g = h / group_size();
      const std::int64_t i0 = qb * kBlock;
      const std::int64_t rows = std::min(kBlock, nq - i0);
      const std::int64_t last_key = offset + i0 + rows - 1;
      float* ws = detail::shared_scratch_floats(detail::ScratchSlot::kAttention, 2 * kTileFloats + 4 * kBlock);
      float* s = ws;
      auto* p16 = reinterpret_cast<std::uint16_t*>(ws + kTileFloats);
      float* m = ws + 2 * kTileFloats;
      double* l = reinterpret_cast<double*>(m + 2 * kBlock);
      float* o = out.row(b * nq + i0) + h * hs;
      const std::int64_t ldo = out.stride();
      for (std::int64_t r = 0; r < rows; ++r) {
        m[r] = -std::numeric_limits<float>::infinity();
        l[r] = 0.0;
        std::fill(o + r * ldo, o + r * ldo + hs, 0.0f);
      }
      const std::int64_t kv = b * G + g;
      for (std::int64_t j0 = 0; j0 <= last_key; j0 += kBlock) {
        const std::int64_t cols = std::min({kBlock, nk - j0, last_key + 1 - j0});
        if (!bf16_) {
          kern.scores_f32({q.row(b * nq + i0) + h * hs, q.stride(), packed + kv * per_kv + j0, nk,
                           s, kBlock, rows, cols, hs, scale()});
        } else {
          kern.scores_bf16({packed16 + batch * G * per_kv + ((b * H + h) * nq + i0) * hs, hs,
                            packed16 + kv * per_kv + j0 * 2, nk, s, kBlock, rows, cols, hs / 2,
                            scale()});
        }
        for (std::int64_t r = 0; r < rows; ++r) {
          float* sr = s + r * kBlock;
          const std::int64_t vis = visible_in_block(offset, i0 + r, j0, cols);
          float mx = m[r];
          for (std::int64_t j = 0; j < vis; ++j) mx = std::max(mx, sr[j]);
          if (mx > m[r]) {  // rescale what is accumulated (nothing yet when m was −inf)
            const float alpha = m[r] == -std::numeric_limits<float>::infinity()
                                    ? 0.0f
                                    : nn::detail::exp_approx(m[r] - mx);
            l[r] *= alpha;
            float* orow = o + r * ldo;
            for (std::int64_t d = 0; d < hs; ++d) orow[d] *= alpha;
            m[r] = mx;
          }
          for (std::int64_t j = 0; j < vis; ++j) sr[j] = nn::detail::exp_approx(sr[j] - mx);
          for (std::int64_t j = vis; j < cols; ++j) sr[j] = 0.0f;
          double sum = 0.0;
          for (std::int64_t j = 0; j < vis; ++j) sum += sr[j];
          l[r] += sum;
          if (bf16_) nn::detail::to_bf16(sr, cols, p16 + r * kBlock, even(cols));
        }
        if (!bf16_) {
          kern.accumulate_f32({o, ldo, s, kBlock, 1, v.row(b * nk + j0) + g * hs, v.stride(), rows,
                               cols, hs});
        } else {
          kern.accumulate_bf16({o, ldo, p16, kBlock, packed16 + kv * per_kv + hs * nk + j0 * hs,
                                hs, rows, even(cols) / 2, hs});
        }
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        const auto inv = static_cast<float>(1.0 / l[r]);
        float* orow = o + r * ldo;
        for (std::int64_t d = 0; d < hs; ++d) orow[d] *= inv;
        if (lse != nullptr) lse[(b * H + h) * nq + i0 + r] = m[r] + static_cast<float>(std::log(l[r]));
      }
    });
  }

  void backward_float(MatrixView<const float> q, MatrixView<const float> k,
                      MatrixView<const float> v, MatrixView<const float> dout,
                      MatrixView<const float> o, std::int64_t batch, std::int64_t nq,
                      std::int64_t nk, const float* lse, MatrixView<float> dq,
                      MatrixView<float> dk, MatrixView<float> dv) const {
    const Kernels kern = nn::detail::attention_kernels(selected_isa());
    const std::int64_t hs = head_size_, H = n_heads_, G = n_kv_heads_;
    const std::int64_t offset = nk - nq;
    const std::int64_t qblocks = blocks(nq), kblocks = blocks(nk);
    // Packed operands. FP32: Kᵀ and Vᵀ per kv head. BF16: Kᵀ and Vᵀ pairs along the head
    // dimension, K pairs along keys per kv head; Q and dO rows, and pairs along queries,
    // per head. Then D = rowsum(dO ⊙ O) per (sequence, head, query).
    const std::int64_t per_kv = bf16_ ? 2 * hs * nk + even(nk) * hs : 2 * hs * nk;
    const std::int64_t per_head = bf16_ ? 2 * nq * hs + 2 * even(nq) * hs : 0;
    const std::int64_t packed_units = batch * G * per_kv + batch * H * per_head;
    const std::int64_t packed_floats = bf16_ ? (packed_units + 1) / 2 : packed_units;
    float* packed = detail::shared_scratch_floats(detail::ScratchSlot::kAttentionPacked,
                                                  packed_floats + batch * H * nq);
    auto* packed16 = reinterpret_cast<std::uint16_t*>(packed);
    float* drow = packed + packed_floats;
    auto kv_base = [&](std::int64_t kv) { return kv * per_kv; };
    auto head_base = [&](std::int64_t bh) { return batch * G * per_kv + bh * per_head; };
    parallel_for(batch * G, [&](std::int64_t t) {
      const std::int64_t b = t / G, g = t % G;
      if (!bf16_) {
        pack_transposed_f32(k, b, g, nk, packed + kv_base(t));
        pack_transposed_f32(v, b, g, nk, packed + kv_base(t) + hs * nk);
      } else {
        pack_pairs_along_head(k, b, g, nk, packed16 + kv_base(t));
        pack_pairs_along_head(v, b, g, nk, packed16 + kv_base(t) + hs * nk);
        pack_pairs_along_rows(k, b, g, nk, packed16 + kv_base(t) + 2 * hs * nk);
      }
      for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
        const std::int64_t bh = b * H + h;
        if (bf16_) {
          std::uint16_t* base = packed16 + head_base(bh);
          pack_rows_bf16(q, b, h, nq, base);
          pack_rows_bf16(dout, b, h, nq, base + nq * hs);
          pack_pairs_along_rows(q, b, h, nq, base + 2 * nq * hs);
          pack_pairs_along_rows(dout, b, h, nq, base + 2 * nq * hs + even(nq) * hs);
        }
        for (std::int64_t i = 0; i < nq; ++i) {
          const float* dor = dout.row(b * nq + i) + h * hs;
          const float* orow = o.row(b * nq + i) + h * hs;
          double dot = 0.0;
          for (std::int64_t d = 0; d < hs; ++d) dot += static_cast<double>(dor[d]) * orow[d];
          drow[bh * nq + i] = static_cast<float>(dot);
        }
      }
    });
    // S and dP of query rows [i0, i0 + rows) against keys [j0, j0 + cols) into s, dp.
    auto scores = [&](std::int64_t b, std::int64_t h, std::int64_t i0, std::int64_t rows,
                      std::int64_t j0, std::int64_t cols, float* s, float* dp) {
      const std::int64_t g = h / group_size(), kv = b * G + g, bh = b * H + h;
      if (!bf16_) {
        kern.scores_f32({q.row(b * nq + i0) + h * hs, q.stride(), packed + kv_base(kv) + j0, nk, s,
                         kBlock, rows, cols, hs, scale()});
        kern.scores_f32({dout.row(b * nq + i0) + h * hs, dout.stride(),
                         packed + kv_base(kv) + hs * nk + j0, nk, dp, kBlock, rows, cols, hs, 1.0f});
      } else {
        const std::uint16_t* base = packed16 + head_base(bh);
        kern.scores_bf16({base + i0 * hs, hs, packed16 + kv_base(kv) + j0 * 2, nk, s, kBlock, rows,
                          cols, hs / 2, scale()});
        kern.scores_bf16({base + nq * hs + i0 * hs, hs, packed16 + kv_base(kv) + hs * nk + j0 * 2,
                          nk, dp, kBlock, rows, cols, hs / 2, 1.0f});
      }
      recompute_block(s, dp, rows, cols, offset, i0, j0, lse + bh * nq + i0, drow + bh * nq + i0);
    };
    // Pass 1: dQ over (sequence, head, query block).
    parallel_for(batch * H * qblocks, [&](std::int64_t task) {
      const std::int64_t qb = task % qblocks;
      const std::int64_t h = (task / qblocks) % H;
      const std::int64_t b = task / (qblocks * H);
      const std::int64_t g = h / group_size(), kv = b * G + g;
      const std::int64_t i0 = qb * kBlock, rows = std::min(kBlock, nq - i0);
      const std::int64_t last_key = offset + i0 + rows - 1;
      float* ws = detail::shared_scratch_floats(detail::ScratchSlot::kAttention, 3 * kTileFloats);
      float* s = ws;
      float* dp = ws + kTileFloats;
      auto* ds16 = reinterpret_cast<std::uint16_t*>(ws + 2 * kTileFloats);
      float* dqr = dq.row(b * nq + i0) + h * hs;
      for (std::int64_t r = 0; r < rows; ++r) std::fill(dqr + r * dq.stride(), dqr + r * dq.stride() + hs, 0.0f);
      for (std::int64_t j0 = 0; j0 <= last_key; j0 += kBlock) {
        const std::int64_t cols = std::min({kBlock, nk - j0, last_key + 1 - j0});
        scores(b, h, i0, rows, j0, cols, s, dp);
        if (!bf16_) {
          kern.accumulate_f32({dqr, dq.stride(), dp, kBlock, 1, k.row(b * nk + j0) + g * hs,
                               k.stride(), rows, cols, hs});
        } else {
          for (std::int64_t r = 0; r < rows; ++r)
            nn::detail::to_bf16(dp + r * kBlock, cols, ds16 + r * kBlock, even(cols));
          kern.accumulate_bf16({dqr, dq.stride(), ds16, kBlock,
                                packed16 + kv_base(kv) + 2 * hs * nk + j0 * hs, hs, rows,
                                even(cols) / 2, hs});
        }
      }
    });
    // Pass 2: dK and dV over (sequence, kv head, key block); query heads of the group and
    // query blocks in order.
    parallel_for(batch * G * kblocks, [&](std::int64_t task) {
      const std::int64_t kb = task % kblocks;
      const std::int64_t g = (task / kblocks) % G;
      const std::int64_t b = task / (kblocks * G);
      const std::int64_t j0 = kb * kBlock, cols = std::min(kBlock, nk - j0);
      float* ws = detail::shared_scratch_floats(detail::ScratchSlot::kAttention, 4 * kTileFloats);
      float* s = ws;
      float* dp = ws + kTileFloats;
      auto* pt16 = reinterpret_cast<std::uint16_t*>(ws + 2 * kTileFloats);
      auto* dst16 = reinterpret_cast<std::uint16_t*>(ws + 3 * kTileFloats);
      float* dkr = dk.row(b * nk + j0) + g * hs;
      float* dvr = dv.row(b * nk + j0) + g * hs;
      for (std::int64_t c = 0; c < cols; ++c) {
        std::fill(dkr + c * dk.stride(), dkr + c * dk.stride() + hs, 0.0f);
        std::fill(dvr + c * dv.stride(), dvr + c * dv.stride() + hs, 0.0f);
      }
      // The first query that sees key j0 is j0 − offset.
      const std::int64_t first_q = std::max<std::int64_t>(0, j0 - offset);
      for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
        const std::int64_t bh = b * H + h;
        for (std::int64_t i0 = (first_q / kBlock) * kBlock; i0 < nq; i0 += kBlock) {
          const std::int64_t rows = std::min(kBlock, nq - i0);
          scores(b, h, i0, rows, j0, cols, s, dp);
          if (!bf16_) {
            kern.accumulate_f32({dvr, dv.stride(), s, 1, kBlock, dout.row(b * nq + i0) + h * hs,
                                 dout.stride(), cols, rows, hs});
            kern.accumulate_f32({dkr, dk.stride(), dp, 1, kBlock, q.row(b * nq + i0) + h * hs,
                                 q.stride(), cols, rows, hs});
          } else {
            const std::int64_t rp = even(rows);
            for (std::int64_t c = 0; c < cols; ++c) {
              for (std::int64_t r = 0; r < rows; ++r) {
                pt16[c * kBlock + r] = nn::kernels::bf16_bits(s[r * kBlock + c]);
                dst16[c * kBlock + r] = nn::kernels::bf16_bits(dp[r * kBlock + c]);
              }
              for (std::int64_t r = rows; r < rp; ++r) pt16[c * kBlock + r] = dst16[c * kBlock + r] = 0;
            }
            const std::uint16_t* base = packed16 + head_base(bh) + 2 * nq * hs;
            kern.accumulate_bf16({dvr, dv.stride(), pt16, kBlock, base + even(nq) * hs + i0 * hs, hs,
                                  cols, rp / 2, hs});
            kern.accumulate_bf16({dkr, dk.stride(), dst16, kBlock, base + i0 * hs, hs, cols, rp / 2, hs});
          }
        }
      }
    });
  }

  // ---- GSE-INT -----------------------------------------------------------------------

  /// Runs fn(b, g) for every (sequence, kv head) in parallel.
  template <class Fn>
  void run_gse_tasks(std::int64_t batch, Fn&& fn) const {
    parallel_for(batch * n_kv_heads_, [&](std::int64_t t) { fn(t / n_kv_heads_, t % n_kv_heads_); });
  }

  /// Quantizes `src` (transposed or not) into this thread's scratch sub-slot `slot`.
  static GseMatrix& quantize_into(int slot, MatrixView<const float> src, bool transpose,
                                  const GseSpec& spec, const char* name) {
    GseMatrix& m = detail::shared_gse(detail::ScratchSlot::kAttention, slot,
                                      transpose ? src.cols() : src.rows(),
                                      transpose ? src.rows() : src.cols(), spec);
    QuantizeOptions options;
    options.name = name;
    quantize_gse(src, transpose, m, options);
    return m;
  }

  // ---- GSE-INT ----------------------------------------------------------------------

  void forward_gse(MatrixView<const float> q, MatrixView<const float> k,
                   MatrixView<const float> v, std::int64_t b, std::int64_t g, std::int64_t nq,
                   std::int64_t nk, MatrixView<float> out, float* lse) const {
    const std::int64_t hs = head_size_;
    const std::int64_t offset = nk - nq;
    const GseSpec act = bits_.activation_spec();
    const GseMatrix& kq =
        quantize_into(0, k.block(b * nk, g * hs, nk, hs), false, act, "attention K");
    const GseMatrix& vtq =
        quantize_into(1, v.block(b * nk, g * hs, nk, hs), true, act, "attention V");
    MatrixView<float> s(detail::shared_scratch_floats(detail::ScratchSlot::kAttention, nq * nk), nq, nk);
    for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
      const GseMatrix& qq =
          quantize_into(2, q.block(b * nq, h * hs, nq, hs), false, act, "attention Q");
      gemm::gemm_nt(qq, kq, s, {.alpha = scale(), .accumulate = false});
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t n = offset + i + 1;
        const float row_lse = nn::detail::softmax_row(s.row(i), n);
        if (lse != nullptr) lse[(b * n_heads_ + h) * nq + i] = row_lse;
        std::fill(s.row(i) + n, s.row(i) + nk, 0.0f);
      }
      const GseMatrix& pq = quantize_into(3, s, false, act, "attention P");
      gemm::gemm_nt(pq, vtq, out.block(b * nq, h * hs, nq, hs));
    }
  }

  void backward_gse(MatrixView<const float> q, MatrixView<const float> k,
                    MatrixView<const float> v, MatrixView<const float> dout, std::int64_t b,
                    std::int64_t g, std::int64_t nq, std::int64_t nk, const float* lse,
                    MatrixView<float> dq, MatrixView<float> dk, MatrixView<float> dv) const {
    const std::int64_t hs = head_size_;
    const std::int64_t offset = nk - nq;
    const float sc = scale();
    const GseSpec act = bits_.activation_spec();
    const GseSpec grad = bits_.gradient_spec();
    const MatrixView<const float> kg = k.block(b * nk, g * hs, nk, hs);
    const MatrixView<const float> vg = v.block(b * nk, g * hs, nk, hs);
    const GseMatrix& kq = quantize_into(0, kg, false, act, "attention K");
    const GseMatrix& vq = quantize_into(1, vg, false, act, "attention V");
    const GseMatrix& ktq = quantize_into(2, kg, true, act, "attention K");
    MatrixView<float> dkg = dk.block(b * nk, g * hs, nk, hs);
    MatrixView<float> dvg = dv.block(b * nk, g * hs, nk, hs);
    for (std::int64_t j = 0; j < nk; ++j) {
      std::fill(dkg.row(j), dkg.row(j) + hs, 0.0f);
      std::fill(dvg.row(j), dvg.row(j) + hs, 0.0f);
    }
    float* pds = detail::shared_scratch_floats(detail::ScratchSlot::kAttention, 2 * nq * nk);
    MatrixView<float> p(pds, nq, nk);
    MatrixView<float> ds(pds + nq * nk, nq, nk);
    for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
      const MatrixView<const float> qh = q.block(b * nq, h * hs, nq, hs);
      const MatrixView<const float> doh = dout.block(b * nq, h * hs, nq, hs);
      const GseMatrix& qq = quantize_into(3, qh, false, act, "attention Q");
      gemm::gemm_nt(qq, kq, p, {.alpha = sc, .accumulate = false});
      const GseMatrix& doq = quantize_into(4, doh, false, grad, "attention dO");
      gemm::gemm_nt(doq, vq, ds);  // dP
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t n = offset + i + 1;
        float* pr = p.row(i);
        float* dsr = ds.row(i);
        nn::detail::probabilities_from_lse(pr, n, lse[(b * n_heads_ + h) * nq + i]);
        double dot = 0.0;
        for (std::int64_t j = 0; j < n; ++j) dot += static_cast<double>(pr[j]) * dsr[j];
        const auto row_dot = static_cast<float>(dot);
        for (std::int64_t j = 0; j < n; ++j) dsr[j] = pr[j] * (dsr[j] - row_dot);
        std::fill(pr + n, pr + nk, 0.0f);
        std::fill(dsr + n, dsr + nk, 0.0f);
      }
      const GseMatrix& dsq = quantize_into(5, ds, false, grad, "attention dS");
      gemm::gemm_nt(dsq, ktq, dq.block(b * nq, h * hs, nq, hs), {.alpha = sc, .accumulate = false});
      const GseMatrix& dstq = quantize_into(6, ds, true, grad, "attention dS");
      const GseMatrix& qtq = quantize_into(7, qh, true, act, "attention Q");
      gemm::gemm_nt(dstq, qtq, dkg, {.alpha = sc, .accumulate = true});
      const GseMatrix& ptq = quantize_into(8, p, true, act, "attention P");
      const GseMatrix& dotq = quantize_into(9, doh, true, grad, "attention dO");
      gemm::gemm_nt(ptq, dotq, dvg, {.alpha = 1.0f, .accumulate = true});
    }
  }

  std::int64_t n_heads_ = 0;
  std::int64_t n_kv_heads_ = 0;
  std::int64_t head_size_ = 0;
  Bits bits_ = Bits::fp32();
  bool bf16_ = false;
};

GSQ_NAMESPACE_END
