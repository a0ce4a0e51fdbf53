// gsq/nn/attention.hpp — causal multi-head attention with grouped KV heads (GQA).
//
// The attention core of a LLaMA block, between the q/k/v projections (plus RoPE) and the
// output projection. Per sequence b and query head h, with kv head g = h / (H / H_kv):
//     S = Q_h·K_gᵀ / sqrt(hs),   P = softmax(S) row-wise over visible keys,   O_h = P·V_g.
// Query i of a sequence with nq queries and nk keys sits at position nk − nq + i and sees
// keys 0..nk − nq + i: training passes nq = nk (plain causal mask), decoding with a KV
// cache passes the new queries against every cached key, with the same code.
//
// The two products (and the four of backward) run in FP32 or as GSE-INT GEMMs through
// gsq::gemm, chosen by `Bits` (nn/bits.hpp): Q, K, V, P are activations, dO and dS
// gradients; all operands are grouped along the product's k. Backward, per row:
//     dP = dO·Vᵀ,  dS = P ⊙ (dP − rowsum(P ⊙ dP)),  dQ = dS·K/√hs,
//     dK = dSᵀ·Q/√hs,  dV = Pᵀ·dO.
// The cache keeps one log-sum-exp per query row; backward recomputes P from Q and K
// (which the caller keeps anyway for their own projections) instead of storing
// [seq, seq] probabilities per head.
//
// Work is split over (sequence, kv head): each task owns its queries' outputs and its kv
// head's dK/dV, and sums query heads and rows in a fixed order, so results are
// bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/nn/bits.hpp"
#include "gsq/nn/fast_math.hpp"
#include "gsq/nn/workspace.hpp"
#include "gsq/quant/gse.hpp"

GSQ_NAMESPACE_BEGIN

namespace nn::detail {

/// Per-task buffers, reused across calls (one per parallel chunk).
struct AttentionScratch {
  Tensor<float> kt;  // FP32: K_g transposed [hs, nk]
  Tensor<float> vt;  // FP32: V_g transposed [hs, nk]
  Tensor<float> s;   // scores / probabilities: a row (FP32) or [nq, nk] (GSE)
  Tensor<float> dp;  // dP / dS, same shape as s
  GseMatrix gse[10];
};

/// s[j] = scale · Σ_d q[d]·kt[d, j] for j < n; the sum runs over d in order, vectorised
/// over j (no reassociation, so it is exact to reproduce in backward).
inline void attention_scores_row(const float* GSQ_RESTRICT q, const float* GSQ_RESTRICT kt,
                                 std::int64_t ld, std::int64_t n, std::int64_t hs, float scale,
                                 float* GSQ_RESTRICT s) noexcept {
  std::fill(s, s + n, 0.0f);
  for (std::int64_t d = 0; d < hs; ++d) {
    const float qd = q[d];
    const float* kr = kt + d * ld;
    for (std::int64_t j = 0; j < n; ++j) s[j] += qd * kr[j];
  }
  for (std::int64_t j = 0; j < n; ++j) s[j] *= scale;
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

}  // namespace nn::detail

class CausalAttention {
 public:
  /// What backward needs beyond Q, K, V: one log-sum-exp per (sequence, head, query).
  struct Cache {
    Tensor<float> lse;  // [batch·n_heads, queries]
    std::int64_t batch = 0;
    std::int64_t queries = 0;
    std::int64_t keys = 0;
    std::int64_t bytes() const noexcept { return lse.bytes(); }
  };

  CausalAttention() = default;
  /// H query heads, H_kv key/value heads (H a multiple of H_kv), head size hs; `bits`
  /// chooses FP32 or GSE-INT products (activation and gradient widths, shared group).
  CausalAttention(std::int64_t n_heads, std::int64_t n_kv_heads, std::int64_t head_size,
                  Bits bits = Bits::fp32())
      : n_heads_(n_heads), n_kv_heads_(n_kv_heads), head_size_(head_size), bits_(bits) {
    GSQ_CHECK(n_heads > 0 && n_kv_heads > 0 && head_size > 0 && n_heads % n_kv_heads == 0,
              ErrorCode::kInvalidArgument,
              "CausalAttention: need heads > 0, kv heads > 0 dividing heads and head size > 0, "
              "got " + std::to_string(n_heads) + ", " + std::to_string(n_kv_heads) + ", " +
                  std::to_string(head_size));
    bits_.validate();
  }

  std::int64_t n_heads() const noexcept { return n_heads_; }
  std::int64_t n_kv_heads() const noexcept { return n_kv_heads_; }
  std::int64_t head_size() const noexcept { return head_size_; }
  const Bits& bits() const noexcept { return bits_; }
  void set_bits(const Bits& bits) {
    bits.validate();
    bits_ = bits;
  }
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
    run_tasks(batch, [&](std::int64_t b, std::int64_t g, nn::detail::AttentionScratch& ws) {
      if (bits_.is_fp32())
        forward_fp32(q, k, v, b, g, nq, nk, out, lse, ws);
      else
        forward_gse(q, k, v, b, g, nq, nk, out, lse, ws);
    });
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
    run_tasks(cache.batch, [&](std::int64_t b, std::int64_t g, nn::detail::AttentionScratch& ws) {
      if (bits_.is_fp32())
        backward_fp32(q, k, v, dout, b, g, nq, nk, lse, dq, dk, dv, ws);
      else
        backward_gse(q, k, v, dout, b, g, nq, nk, lse, dq, dk, dv, ws);
    });
  }

  /// Bytes of scratch held between calls (counted as kScratch).
  std::int64_t scratch_bytes() const noexcept {
    std::int64_t n = 0;
    for (const auto& ws : scratch_) {
      n += ws.kt.bytes() + ws.vt.bytes() + ws.s.bytes() + ws.dp.bytes();
      for (const auto& m : ws.gse) n += m.bytes();
    }
    return n;
  }

 private:
  using Scratch = nn::detail::AttentionScratch;

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

  /// Runs fn(b, g, scratch) for every (sequence, kv head), in parallel chunks that each
  /// own one scratch.
  template <class Fn>
  void run_tasks(std::int64_t batch, Fn&& fn) const {
    const std::int64_t count = batch * n_kv_heads_;
    const std::int64_t threads = std::max(1, num_threads());
    const std::int64_t grain = (count + threads - 1) / threads;
    const std::int64_t chunks = (count + grain - 1) / grain;
    if (static_cast<std::int64_t>(scratch_.size()) < chunks)
      scratch_.resize(static_cast<std::size_t>(chunks));
    parallel_for_chunks(count, grain, [&](std::int64_t begin, std::int64_t end) {
      Scratch& ws = scratch_[static_cast<std::size_t>(begin / grain)];
      for (std::int64_t t = begin; t < end; ++t) fn(t / n_kv_heads_, t % n_kv_heads_, ws);
    });
  }

  std::int64_t group_size() const noexcept { return n_heads_ / n_kv_heads_; }

  // ---- FP32 -------------------------------------------------------------------------

  /// kt [hs, nk] = rows b·nk.. of x, columns of kv head g, transposed.
  void transpose_head(MatrixView<const float> x, std::int64_t b, std::int64_t g, std::int64_t nk,
                      Tensor<float>& dst) const {
    const std::int64_t hs = head_size_;
    float* t = ensure_matrix(dst, hs, nk, MemoryCategory::kScratch).data();
    for (std::int64_t j = 0; j < nk; ++j) {
      const float* r = x.row(b * nk + j) + g * hs;
      for (std::int64_t d = 0; d < hs; ++d) t[d * nk + j] = r[d];
    }
  }

  void forward_fp32(MatrixView<const float> q, MatrixView<const float> k,
                    MatrixView<const float> v, std::int64_t b, std::int64_t g, std::int64_t nq,
                    std::int64_t nk, MatrixView<float> out, float* lse, Scratch& ws) const {
    const std::int64_t hs = head_size_;
    const std::int64_t offset = nk - nq;
    transpose_head(k, b, g, nk, ws.kt);
    const float* kt = ws.kt.data();
    float* s = ensure_matrix(ws.s, 1, nk, MemoryCategory::kScratch).data();
    for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t n = offset + i + 1;  // visible keys
        nn::detail::attention_scores_row(q.row(b * nq + i) + h * hs, kt, nk, n, hs, scale(), s);
        const float row_lse = nn::detail::softmax_row(s, n);
        if (lse != nullptr) lse[(b * n_heads_ + h) * nq + i] = row_lse;
        float* GSQ_RESTRICT o = out.row(b * nq + i) + h * hs;
        std::fill(o, o + hs, 0.0f);
        for (std::int64_t j = 0; j < n; ++j) {
          const float p = s[j];
          const float* GSQ_RESTRICT vr = v.row(b * nk + j) + g * hs;
          for (std::int64_t d = 0; d < hs; ++d) o[d] += p * vr[d];
        }
      }
    }
  }

  void backward_fp32(MatrixView<const float> q, MatrixView<const float> k,
                     MatrixView<const float> v, MatrixView<const float> dout, std::int64_t b,
                     std::int64_t g, std::int64_t nq, std::int64_t nk, const float* lse,
                     MatrixView<float> dq, MatrixView<float> dk, MatrixView<float> dv,
                     Scratch& ws) const {
    const std::int64_t hs = head_size_;
    const std::int64_t offset = nk - nq;
    const float sc = scale();
    transpose_head(k, b, g, nk, ws.kt);
    transpose_head(v, b, g, nk, ws.vt);
    const float* kt = ws.kt.data();
    const float* vt = ws.vt.data();
    float* p = ensure_matrix(ws.s, 1, nk, MemoryCategory::kScratch).data();
    float* ds = ensure_matrix(ws.dp, 1, nk, MemoryCategory::kScratch).data();
    for (std::int64_t j = 0; j < nk; ++j) {
      std::fill(dk.row(b * nk + j) + g * hs, dk.row(b * nk + j) + (g + 1) * hs, 0.0f);
      std::fill(dv.row(b * nk + j) + g * hs, dv.row(b * nk + j) + (g + 1) * hs, 0.0f);
    }
    for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t n = offset + i + 1;
        const float* qr = q.row(b * nq + i) + h * hs;
        const float* dor = dout.row(b * nq + i) + h * hs;
        nn::detail::attention_scores_row(qr, kt, nk, n, hs, sc, p);
        nn::detail::probabilities_from_lse(p, n, lse[(b * n_heads_ + h) * nq + i]);
        nn::detail::attention_scores_row(dor, vt, nk, n, hs, 1.0f, ds);  // dP = dO·Vᵀ
        double dot = 0.0;
        for (std::int64_t j = 0; j < n; ++j) dot += static_cast<double>(p[j]) * ds[j];
        const auto row_dot = static_cast<float>(dot);
        for (std::int64_t j = 0; j < n; ++j) ds[j] = p[j] * (ds[j] - row_dot) * sc;
        float* GSQ_RESTRICT dqr = dq.row(b * nq + i) + h * hs;
        std::fill(dqr, dqr + hs, 0.0f);
        for (std::int64_t j = 0; j < n; ++j) {
          const float* GSQ_RESTRICT kr = k.row(b * nk + j) + g * hs;
          float* GSQ_RESTRICT dkr = dk.row(b * nk + j) + g * hs;
          float* GSQ_RESTRICT dvr = dv.row(b * nk + j) + g * hs;
          const float dsj = ds[j];
          const float pj = p[j];
          for (std::int64_t d = 0; d < hs; ++d) {
            dqr[d] += dsj * kr[d];
            dkr[d] += dsj * qr[d];
            dvr[d] += pj * dor[d];
          }
        }
      }
    }
  }

  // ---- GSE-INT ----------------------------------------------------------------------

  /// Quantizes `src` (transposed or not) into scratch slot `slot` and returns it.
  GseMatrix& quantize_into(Scratch& ws, int slot, MatrixView<const float> src, bool transpose,
                           const GseSpec& spec, const char* name) const {
    GseMatrix& m = ensure_gse(ws.gse[slot], transpose ? src.cols() : src.rows(),
                              transpose ? src.rows() : src.cols(), spec, MemoryCategory::kScratch);
    QuantizeOptions options;
    options.name = name;
    quantize_gse(src, transpose, m, options);
    return m;
  }

  void forward_gse(MatrixView<const float> q, MatrixView<const float> k,
                   MatrixView<const float> v, std::int64_t b, std::int64_t g, std::int64_t nq,
                   std::int64_t nk, MatrixView<float> out, float* lse, Scratch& ws) const {
    const std::int64_t hs = head_size_;
    const std::int64_t offset = nk - nq;
    const GseSpec act = bits_.activation_spec();
    const GseMatrix& kq =
        quantize_into(ws, 0, k.block(b * nk, g * hs, nk, hs), false, act, "attention K");
    const GseMatrix& vtq =
        quantize_into(ws, 1, v.block(b * nk, g * hs, nk, hs), true, act, "attention V");
    MatrixView<float> s = ensure_matrix(ws.s, nq, nk, MemoryCategory::kScratch);
    for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
      const GseMatrix& qq =
          quantize_into(ws, 2, q.block(b * nq, h * hs, nq, hs), false, act, "attention Q");
      gemm::gemm_nt(qq, kq, s, {.alpha = scale(), .accumulate = false});
      for (std::int64_t i = 0; i < nq; ++i) {
        const std::int64_t n = offset + i + 1;
        const float row_lse = nn::detail::softmax_row(s.row(i), n);
        if (lse != nullptr) lse[(b * n_heads_ + h) * nq + i] = row_lse;
        std::fill(s.row(i) + n, s.row(i) + nk, 0.0f);
      }
      const GseMatrix& pq = quantize_into(ws, 3, s, false, act, "attention P");
      gemm::gemm_nt(pq, vtq, out.block(b * nq, h * hs, nq, hs));
    }
  }

  void backward_gse(MatrixView<const float> q, MatrixView<const float> k,
                    MatrixView<const float> v, MatrixView<const float> dout, std::int64_t b,
                    std::int64_t g, std::int64_t nq, std::int64_t nk, const float* lse,
                    MatrixView<float> dq, MatrixView<float> dk, MatrixView<float> dv,
                    Scratch& ws) const {
    const std::int64_t hs = head_size_;
    const std::int64_t offset = nk - nq;
    const float sc = scale();
    const GseSpec act = bits_.activation_spec();
    const GseSpec grad = bits_.gradient_spec();
    const MatrixView<const float> kg = k.block(b * nk, g * hs, nk, hs);
    const MatrixView<const float> vg = v.block(b * nk, g * hs, nk, hs);
    const GseMatrix& kq = quantize_into(ws, 0, kg, false, act, "attention K");
    const GseMatrix& vq = quantize_into(ws, 1, vg, false, act, "attention V");
    const GseMatrix& ktq = quantize_into(ws, 2, kg, true, act, "attention K");
    MatrixView<float> dkg = dk.block(b * nk, g * hs, nk, hs);
    MatrixView<float> dvg = dv.block(b * nk, g * hs, nk, hs);
    for (std::int64_t j = 0; j < nk; ++j) {
      std::fill(dkg.row(j), dkg.row(j) + hs, 0.0f);
      std::fill(dvg.row(j), dvg.row(j) + hs, 0.0f);
    }
    MatrixView<float> p = ensure_matrix(ws.s, nq, nk, MemoryCategory::kScratch);
    MatrixView<float> ds = ensure_matrix(ws.dp, nq, nk, MemoryCategory::kScratch);
    for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) {
      const MatrixView<const float> qh = q.block(b * nq, h * hs, nq, hs);
      const MatrixView<const float> doh = dout.block(b * nq, h * hs, nq, hs);
      const GseMatrix& qq = quantize_into(ws, 3, qh, false, act, "attention Q");
      gemm::gemm_nt(qq, kq, p, {.alpha = sc, .accumulate = false});
      const GseMatrix& doq = quantize_into(ws, 4, doh, false, grad, "attention dO");
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
      const GseMatrix& dsq = quantize_into(ws, 5, ds, false, grad, "attention dS");
      gemm::gemm_nt(dsq, ktq, dq.block(b * nq, h * hs, nq, hs), {.alpha = sc, .accumulate = false});
      const GseMatrix& dstq = quantize_into(ws, 6, ds, true, grad, "attention dS");
      const GseMatrix& qtq = quantize_into(ws, 7, qh, true, act, "attention Q");
      gemm::gemm_nt(dstq, qtq, dkg, {.alpha = sc, .accumulate = true});
      const GseMatrix& ptq = quantize_into(ws, 8, p, true, act, "attention P");
      const GseMatrix& dotq = quantize_into(ws, 9, doh, true, grad, "attention dO");
      gemm::gemm_nt(ptq, dotq, dvg, {.alpha = 1.0f, .accumulate = true});
    }
  }

  std::int64_t n_heads_ = 0;
  std::int64_t n_kv_heads_ = 0;
  std::int64_t head_size_ = 0;
  Bits bits_ = Bits::fp32();
  mutable std::vector<Scratch> scratch_;  // one per parallel chunk, reused across calls
};

GSQ_NAMESPACE_END
