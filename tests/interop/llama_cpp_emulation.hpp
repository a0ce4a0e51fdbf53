// llama_cpp_emulation.hpp — a plain scalar LLaMA forward over a GGUF's decoded weights
// that rounds the activations of every matrix product as llama.cpp's CPU backend does.
//
// The interop test's second reference: gsq's forward multiplies FP32 activations by the
// decoded weights, while ggml-cpu (ggml_compute_forward_mul_mat, ggml-cpu.c) first
// converts each activation row to the weight's vec_dot_type (type_traits_cpu):
//   F32 weight         → F32, unchanged;
//   F16 weight         → F16 (ggml_cpu_fp32_to_fp16: F16C, round to nearest even);
//   BF16 weight        → BF16 (ggml_compute_fp32_to_bf16: round to nearest even);
//   Q8_0, Q4_0 weights → Q8_0, Q4_1 → Q8_1: blocks of 32 (quantize_row_q8_0/_q8_1 in
//     ggml-cpu/arch/x86/quants.c, the AVX/AVX2 code every x86 build with AVX runs):
//       amax = max |x|,  d = amax/127 stored as FP16 (nearest even),
//       q = nearbyint(x · (127/amax))  — the FP32 reciprocal of amax/127, neither 1/d nor
//       the FP16 d, ties to even (_mm256_round_ps);
//     the product sees q·d_fp16. (ggml-quants.c's quantize_row_q8_0_ref/_q8_1_ref, the
//     scalar fallback without AVX, takes 1/d and roundf, ties away from zero.)
//     Q8_1 also stores s = FP16(d·Σq) with the FP32 d, and ggml_vec_dot_q4_1_q8_1 adds
//     m·s per block (m: the Q4_1 weight's block minimum), where the decoded weights
//     q_w·d_w + m would give m·d_fp16·Σq; so a Q4_1 product adds m·(s − d_fp16·Σq).
// Nothing else is rounded. The attention products are not either: llama_logits.mjs asks
// for an F32 KV cache (and no flash attention), so K·Q and V·softmax are F32 × F32
// products (with llama.cpp's default F16 cache, K and V would be stored in F16, and Q and
// the probabilities converted to F16 for those products).
//
// The rest is FP32, as in gsq's forward, with two of llama.cpp's scalar formulas where
// they differ from gsq's in the last bits: RMSNorm's scale (mean and 1/sqrt in float) and
// RoPE's angles (θ·s^i by repeated float products, cosf/sinf). Those last bits matter
// here: every rounding above is a step function, and an FP32 difference that moves a value
// across a step (an 8-bit code, the FP16 block scale d or sum s, an F16 value) changes
// the product by a whole step, which later layers and positions carry on. Softmax and
// SiLU (ggml's SIMD exp) and the summation orders of ggml's kernels are CPU-specific and
// not copied, so such crossings remain: the emulation gives llama.cpp's logits to FP32
// precision at most positions, but not all (the test counts them).
//
// Row by row, no SIMD, dot products in double: a reference, not a fast path. With
// rounding off it must give gsq's own forward up to FP32 summation order (the test
// checks it).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "gsq/io/gguf.hpp"
#include "gsq/io/gguf_export.hpp"
#include "gsq/io/gguf_llama.hpp"

namespace interop {

/// An activation row as a product with a weight of some GGML type sees it.
struct RoundedRow {
  std::vector<float> value;     // x, or x in F16/BF16, or q·d of each 8-bit block
  std::vector<double> s_excess; // Q8_1 only: s − d_fp16·Σq per block (see the file comment)
};

inline float round_f16(float x) { return gsq::f16_to_float(gsq::float_to_f16(x)); }

/// `x` converted as ggml-cpu converts it for a product with a `weight`-typed matrix.
inline RoundedRow round_for(gsq::GgmlType weight, std::span<const float> x) {
  RoundedRow r{{x.begin(), x.end()}, {}};
  switch (weight) {
    case gsq::GgmlType::kF32: return r;
    case gsq::GgmlType::kF16:
      for (float& v : r.value) v = round_f16(v);
      return r;
    case gsq::GgmlType::kBF16:
      for (float& v : r.value) v = gsq::bf16_to_float(gsq::float_to_bf16(v));
      return r;
    case gsq::GgmlType::kQ8_0:
    case gsq::GgmlType::kQ4_0:
    case gsq::GgmlType::kQ4_1: break;
  }
  if (x.size() % 32 != 0) throw std::runtime_error("round_for: an 8-bit row needs whole blocks of 32");
  const bool q8_1 = weight == gsq::GgmlType::kQ4_1;
  for (std::size_t b = 0; b < x.size(); b += 32) {
    float amax = 0.0f;
    for (std::size_t j = b; j < b + 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f, d16 = round_f16(d);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    for (std::size_t j = b; j < b + 32; ++j) {
      const int q = static_cast<int>(std::nearbyint(x[j] * id));
      sum += q;
      r.value[j] = static_cast<float>(q) * d16;
    }
    if (q8_1) {
      const auto fsum = static_cast<float>(sum);
      r.s_excess.push_back(static_cast<double>(round_f16(d * fsum)) - static_cast<double>(d16) * fsum);
    }
  }
  return r;
}

/// LLaMA's forward as llama.cpp computes it on one GGUF (see the file comment).
class LlamaCppEmulation {
 public:
  /// `round` false: every product in FP32 (the sanity check against gsq's forward).
  explicit LlamaCppEmulation(const std::filesystem::path& gguf, bool round = true)
      : file_(gsq::GgufFile::open(gguf)), w_(gsq::read_gguf_llama(file_)) {
    if (w_.config.rope_scaling.enabled()) throw std::runtime_error("LlamaCppEmulation: scaled RoPE is not emulated");
    for (const auto& [name, t] : w_.tensors) {
      if (t.rank() != 2) continue;
      const gsq::GgufTensorInfo* info = file_.find_tensor(gsq::gguf_llama_tensor_name(name));
      const gsq::GgmlTypeInfo* type = info != nullptr ? gsq::ggml_type_info(info->type) : nullptr;
      if (type == nullptr || !type->supported)
        throw std::runtime_error("LlamaCppEmulation: no GGUF tensor of a type gsq writes for " + name);
      Weight wt{&t, round ? static_cast<gsq::GgmlType>(info->type) : gsq::GgmlType::kF32, {}};
      if (wt.type == gsq::GgmlType::kQ4_1) {  // block = FP16 d, FP16 m, 16 bytes of nibbles
        const std::span<const std::uint8_t> raw = file_.raw(*info);
        const auto stride = static_cast<std::size_t>(type->block_bytes);
        for (std::size_t at = 0; at + stride <= raw.size(); at += stride)
          wt.block_min.push_back(gsq::f16_to_float(gsq::io::detail::get_u16(raw.data() + at + 2)));
      }
      weights_.emplace(name, std::move(wt));
    }
  }

  // weights_ points into w_.
  LlamaCppEmulation(const LlamaCppEmulation&) = delete;
  LlamaCppEmulation& operator=(const LlamaCppEmulation&) = delete;

  /// Next-token logits [ids, vocab] of one sequence starting at position 0.
  gsq::Tensor<float> forward(std::span<const std::int32_t> ids) const {
    const gsq::LlamaConfig& c = w_.config;
    const auto n = static_cast<std::int64_t>(ids.size());
    const std::int64_t d = c.dim, kvd = c.kv_dim(), hd = c.hidden_dim;
    std::vector<float> x(static_cast<std::size_t>(n * d)), q(x.size()), attn(x.size()),
        k(static_cast<std::size_t>(n * kvd)), v(k.size()), normed(static_cast<std::size_t>(d)),
        out(static_cast<std::size_t>(d)), g(static_cast<std::size_t>(hd)), u(g.size());
    auto row = [](std::vector<float>& m, std::int64_t t, std::int64_t cols) {
      return std::span<float>(m.data() + t * cols, static_cast<std::size_t>(cols));
    };
    const gsq::Tensor<float>& embedding = w_.at("model.embed_tokens.weight");
    for (std::int64_t t = 0; t < n; ++t)  // get_rows: the decoded rows, nothing rounded
      std::copy_n(embedding.data() + ids[static_cast<std::size_t>(t)] * d, d, row(x, t, d).begin());
    for (std::int64_t l = 0; l < c.n_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      for (std::int64_t t = 0; t < n; ++t) {
        rms_norm(row(x, t, d), w_.at(p + "input_layernorm.weight"), normed);
        product(p + "self_attn.q_proj.weight", normed, row(q, t, d));
        product(p + "self_attn.k_proj.weight", normed, row(k, t, kvd));
        product(p + "self_attn.v_proj.weight", normed, row(v, t, kvd));
        rope(row(q, t, d), t);
        rope(row(k, t, kvd), t);
      }
      attention(q, k, v, n, attn);
      for (std::int64_t t = 0; t < n; ++t) {
        product(p + "self_attn.o_proj.weight", row(attn, t, d), out);
        std::span<float> xt = row(x, t, d);
        for (std::int64_t i = 0; i < d; ++i) xt[i] += out[i];
        rms_norm(xt, w_.at(p + "post_attention_layernorm.weight"), normed);
        product(p + "mlp.gate_proj.weight", normed, g);
        product(p + "mlp.up_proj.weight", normed, u);
        for (std::int64_t i = 0; i < hd; ++i) g[i] = g[i] * (1.0f / (1.0f + std::exp(-g[i]))) * u[i];
        product(p + "mlp.down_proj.weight", g, out);
        for (std::int64_t i = 0; i < d; ++i) xt[i] += out[i];
      }
    }
    // Tied: llama.cpp multiplies by token_embd in its stored type, as the lookup reads it.
    const std::string classifier = c.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    gsq::Tensor<float> logits({n, c.vocab_size});
    for (std::int64_t t = 0; t < n; ++t) {
      rms_norm(row(x, t, d), w_.at("model.norm.weight"), normed);
      product(classifier, normed, std::span<float>(logits.data() + t * c.vocab_size, static_cast<std::size_t>(c.vocab_size)));
    }
    return logits;
  }

 private:
  struct Weight {
    const gsq::Tensor<float>* value;  // [out, in], decoded from the file
    gsq::GgmlType type;               // what ggml rounds the activations to follows from it
    std::vector<float> block_min;     // Q4_1: m of every block, [out, in/32]
  };

  /// y = W·x with x rounded for W's type; the Q4_1 minimum meets Q8_1's FP16 s.
  void product(const std::string& name, std::span<const float> x, std::span<float> y) const {
    const Weight& w = weights_.at(name);
    const std::int64_t rows = w.value->dim(0), cols = w.value->dim(1), blocks = cols / 32;
    if (static_cast<std::int64_t>(x.size()) != cols || static_cast<std::int64_t>(y.size()) != rows)
      throw std::runtime_error("LlamaCppEmulation: shape mismatch in " + name);
    const RoundedRow a = round_for(w.type, x);
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* wr = w.value->data() + r * cols;
      double acc = 0.0;
      for (std::int64_t i = 0; i < cols; ++i) acc += static_cast<double>(wr[i]) * a.value[static_cast<std::size_t>(i)];
      for (std::size_t b = 0; b < a.s_excess.size(); ++b)
        acc += static_cast<double>(w.block_min[static_cast<std::size_t>(r * blocks) + b]) * a.s_excess[b];
      y[static_cast<std::size_t>(r)] = static_cast<float>(acc);
    }
  }

  /// RMSNorm as ggml_compute_forward_rms_norm_f32: float squares summed in double, the
  /// mean and 1/sqrt in float, y = x·scale·w (gsq keeps the mean in double).
  void rms_norm(std::span<const float> x, const gsq::Tensor<float>& w, std::span<float> y) const {
    double sum = 0.0;
    for (float v : x) sum += static_cast<double>(v * v);
    const auto mean = static_cast<float>(sum / static_cast<double>(x.size()));
    const float scale = 1.0f / std::sqrt(mean + w_.config.norm_eps);
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * scale * w.data()[i];
  }

  /// RoPE with ggml_rope_cache_init's angles: θ_0 = pos, θ_i+1 = θ_i·powf(base, −2/hs)
  /// in float, then cosf/sinf (gsq: pos·base^(−2i/hs) in double).
  void rope(std::span<float> x, std::int64_t pos) const {
    const gsq::LlamaConfig& c = w_.config;
    const std::int64_t hs = c.head_size(), half = hs / 2;
    const bool interleaved = c.rope_style == gsq::RopeStyle::kInterleaved;
    const float step = std::pow(c.rope_theta, -2.0f / static_cast<float>(hs));
    float theta = static_cast<float>(pos);
    for (std::int64_t i = 0; i < half; ++i, theta *= step) {
      const float cs = std::cos(theta), sn = std::sin(theta);
      for (std::size_t h = 0; h < x.size(); h += static_cast<std::size_t>(hs)) {
        float& a = x[h + static_cast<std::size_t>(interleaved ? 2 * i : i)];
        float& b = x[h + static_cast<std::size_t>(interleaved ? 2 * i + 1 : i + half)];
        const float x0 = a, x1 = b;
        a = x0 * cs - x1 * sn;
        b = x0 * sn + x1 * cs;
      }
    }
  }

  /// Causal attention with grouped KV heads, FP32 operands (not rounded: F32 KV cache).
  void attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                 std::int64_t n, std::vector<float>& out) const {
    const gsq::LlamaConfig& c = w_.config;
    const std::int64_t hs = c.head_size(), d = c.dim, kvd = c.kv_dim(), group = c.n_heads / c.n_kv_heads;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
    std::vector<double> p(static_cast<std::size_t>(n));
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t h = 0; h < c.n_heads; ++h) {
        const float* qh = q.data() + t * d + h * hs;
        const float* kh = k.data() + (h / group) * hs;  // + j·kvd for key j
        const float* vh = v.data() + (h / group) * hs;
        double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (std::int64_t j = 0; j <= t; ++j) {
          double s = 0.0;
          for (std::int64_t i = 0; i < hs; ++i) s += static_cast<double>(qh[i]) * kh[j * kvd + i];
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        for (std::int64_t j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - m);
          sum += p[j];
        }
        for (std::int64_t i = 0; i < hs; ++i) {
          double o = 0.0;
          for (std::int64_t j = 0; j <= t; ++j) o += p[j] * vh[j * kvd + i];
          out[t * d + h * hs + i] = static_cast<float>(o / sum);
        }
      }
  }

  gsq::GgufFile file_;
  gsq::LlamaWeights w_;
  std::map<std::string, Weight> weights_;
};

}  // namespace interop
