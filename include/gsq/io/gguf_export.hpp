// gsq/io/gguf_export.hpp — a gsq model as a llama.cpp GGUF: weights, metadata, tokenizer.
//
// `write_gguf_llama(path, weights, vocab, options)` writes a `general.architecture = llama`
// file that llama.cpp loads with no other file:
//   - tensors under llama.cpp's names (token_embd, blk.N.attn_q/k/v/output, ffn_gate/up/
//     down, attn_norm, ffn_norm, output_norm, output when untied), norms and other 1-D
//     tensors in F32 (as llama.cpp's convert does), 2-D weights in the chosen type; a
//     Q8_0/Q4_x weight whose rows are not a multiple of 32 falls back to F16 (reported);
//   - q/k rows in the interleaved RoPE order GGUF's llama expects (LLAMA_ROPE_TYPE_NORM
//     rotates pairs (2i, 2i+1)); weights of a rotate_half model (Hugging Face) are
//     permuted back as llama.cpp's convert_hf_to_gguf.py does;
//   - the llama hyper-parameters and the vocabulary as `tokenizer.ggml.model = llama`
//     (SentencePiece-style pieces with "▁", scores, token types, bos/eos/unk ids).
//     llama2.c vocabularies carry their own scores; a Hugging Face BPE vocabulary of
//     SentencePiece style (Metaspace "▁", as TinyStories-656K's) gets score −rank of the
//     merge that makes each piece, so llama.cpp's SPM tokenizer merges in BPE order.
//
// L4Q's quantized projections (codes q ∈ [−2^(n−1), 2^(n−1)−1], step s and offset b per
// group of 32, n ≤ 4) are written as Q4_1 without re-quantizing: d = s,
// m = b − 2^(n−1)·s and q_gguf = q + 2^(n−1) ∈ 0..15, so q_gguf·d + m = q·s + b. That is
// exact when s and m are FP16 values (train with L4qConfig::fp16_grid); otherwise they are
// rounded and the report says by how much the weights moved.
//
// `write_gguf_lora_adapter` writes a LoRA adapter for llama.cpp's --lora (general.type =
// adapter, adapter.type = lora, adapter.lora.alpha; blk.N.<proj>.weight.lora_a [r, in]
// and .lora_b [out, r], row-major as gsq holds A and B, q/k rows of B permuted as above).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/uniform.hpp"
#include "gsq/io/gguf.hpp"
#include "gsq/io/gguf_writer.hpp"
#include "gsq/io/hf_tokenizer.hpp"
#include "gsq/io/json.hpp"
#include "gsq/io/llama2c.hpp"
#include "gsq/io/llama2c_tokenizer.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/io/tokenizer.hpp"

GSQ_NAMESPACE_BEGIN

// ---- names -----------------------------------------------------------------------------------

/// llama.cpp's name of canonical tensor `name` ("model.layers.3.self_attn.q_proj.weight" →
/// "blk.3.attn_q.weight"); empty if it has none.
inline std::string gguf_llama_tensor_name(std::string_view name) {
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  constexpr std::string_view prefix = "model.layers.";
  if (!name.starts_with(prefix)) return {};
  const std::size_t dot = name.find('.', prefix.size());
  if (dot == std::string_view::npos) return {};
  const std::string_view layer = name.substr(prefix.size(), dot - prefix.size());
  const std::string_view rest = name.substr(dot + 1);
  static constexpr std::pair<std::string_view, std::string_view> kMap[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  for (const auto& [from, to] : kMap)
    if (rest == from) return "blk." + std::string(layer) + "." + std::string(to);
  return {};
}

// ---- vocabulary ------------------------------------------------------------------------------

/// SentencePiece token types as llama.cpp numbers them.
enum class GgufTokenType : std::int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

/// A vocabulary as GGUF's `tokenizer.ggml.*` keys hold it.
struct GgufVocab {
  std::string model = "llama";  // tokenizer.ggml.model
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<std::int32_t> types;
  std::int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  bool add_bos = true;
};

namespace io::detail {

/// "<0xHH>" byte pieces.
inline bool is_byte_piece(std::string_view p) noexcept {
  if (p.size() != 6 || !p.starts_with("<0x") || p[5] != '>') return false;
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return hex(p[3]) && hex(p[4]);
}

inline std::string spaces_to_metaspace(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == ' ') {
      out += "\xE2\x96\x81";  // ▁
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace io::detail

/// A llama2.c vocabulary (run.c's tokenizer.bin, exported from SentencePiece): " " back to
/// "▁", BOS/EOS "\n<s>\n" back to "<s>"/"</s>", byte pieces typed as bytes.
inline GgufVocab gguf_vocab_from_llama2c(const Llama2cTokenizer& t) {
  GgufVocab v;
  v.bos_id = t.bos_id();
  v.eos_id = t.eos_id();
  v.unk_id = 0;
  for (std::int32_t id = 0; id < t.vocab_size(); ++id) {
    std::string_view p = t.piece(id);
    GgufTokenType type = GgufTokenType::kNormal;
    std::string text;
    if (id == v.unk_id) {
      type = GgufTokenType::kUnknown;
      text = std::string(p);
    } else if (id == v.bos_id || id == v.eos_id) {
      type = GgufTokenType::kControl;
      text = id == v.bos_id ? "<s>" : "</s>";
      if (p.find('<') != std::string_view::npos && p.find('>') != std::string_view::npos)
        text = std::string(p.substr(p.find('<'), p.rfind('>') - p.find('<') + 1));  // "\n<s>\n" → "<s>"
    } else if (io::detail::is_byte_piece(p)) {
      type = GgufTokenType::kByte;
      text = std::string(p);
    } else {
      text = io::detail::spaces_to_metaspace(p);
    }
    v.tokens.push_back(std::move(text));
    v.scores.push_back(t.score(id));
    v.types.push_back(static_cast<std::int32_t>(type));
  }
  return v;
}

/// A Hugging Face BPE vocabulary (`t`, read from `tokenizer_json`): pieces as stored,
/// special added tokens as control, scores −rank of the merge producing each piece (0 for
/// pieces no merge produces).
inline GgufVocab gguf_vocab_from_hf(const HfBpeTokenizer& t, const std::filesystem::path& tokenizer_json) {
  namespace iod = io::detail;
  GgufVocab v;
  v.bos_id = t.bos_id();
  v.eos_id = t.eos_id();
  v.unk_id = t.unk_id();
  std::map<std::string, float> score;
  const MappedFile f = MappedFile::open(tokenizer_json);
  const iod::Json j = iod::parse_json(f.bytes(), f.name(), 0);
  const iod::JsonWhere where{f.name(), 0};
  const iod::Json& merges = iod::require_member(iod::require_member(j, "model", where), "merges", where);
  std::int64_t rank = 0;
  for (const iod::Json& m : merges) {
    std::string joined;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const std::size_t sp = s.find(' ');
      joined = sp == std::string::npos ? s : s.substr(0, sp) + s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      joined = m[0].get<std::string>() + m[1].get<std::string>();
    }
    score.emplace(joined, -static_cast<float>(rank));  // the first (best) rank wins
    ++rank;
  }
  for (std::int32_t id = 0; id < t.vocab_size(); ++id) {
    const std::string p(t.piece(id));
    GgufTokenType type = GgufTokenType::kNormal;
    if (id == v.unk_id) {
      type = GgufTokenType::kUnknown;
    } else if (t.is_special(id)) {
      type = GgufTokenType::kControl;
    } else if (io::detail::is_byte_piece(p)) {
      type = GgufTokenType::kByte;
    }
    auto it = score.find(p);
    v.tokens.push_back(p);
    v.scores.push_back(it != score.end() ? it->second : 0.0f);
    v.types.push_back(static_cast<std::int32_t>(type));
  }
  return v;
}

/// The vocabulary of `t` (`path` is the file it was read from, for HF merges).
inline GgufVocab gguf_vocab(const Tokenizer& t, const std::filesystem::path& path) {
  if (const auto* l2c = dynamic_cast<const Llama2cTokenizer*>(&t)) return gguf_vocab_from_llama2c(*l2c);
  if (const auto* hf = dynamic_cast<const HfBpeTokenizer*>(&t)) {
    std::error_code ec;
    const std::filesystem::path file =
        std::filesystem::is_directory(path, ec) ? path / "tokenizer.json" : path;
    return gguf_vocab_from_hf(*hf, file);
  }
  detail::throw_error(ErrorCode::kInvalidArgument,
                      "gguf export: no GGUF form for a tokenizer of kind " + std::string(t.kind()));
}

// ---- model -----------------------------------------------------------------------------------

struct GgufExportOptions {
  GgmlType type = GgmlType::kF32;  // for 2-D weights: F32, F16, BF16, Q8_0, Q4_0, Q4_1
  std::string name = "gsq";        // general.name
};

struct GgufExportReport {
  std::int64_t bytes = 0;               // file size
  std::vector<std::string> notes;       // fallbacks and rounding, for the user
  std::int64_t l4q_tensors = 0;         // projections written from L4Q codes as Q4_1
  double l4q_max_abs_diff = 0.0;        // max |GGUF weight − L4Q weight| over those
};

/// llama.cpp's general.file_type (LLAMA_FTYPE_*) of a model mostly in `t`.
inline std::uint32_t gguf_file_type(GgmlType t) noexcept {
  switch (t) {
    case GgmlType::kF32: return 0;
    case GgmlType::kF16: return 1;
    case GgmlType::kQ4_0: return 2;
    case GgmlType::kQ4_1: return 3;
    case GgmlType::kQ8_0: return 7;
    case GgmlType::kBF16: return 32;
  }
  return 0;
}

/// Parses --type: f32, f16, bf16, q8_0, q4_0, q4_1.
inline GgmlType parse_gguf_type(std::string_view s) {
  if (s == "f32") return GgmlType::kF32;
  if (s == "f16") return GgmlType::kF16;
  if (s == "bf16") return GgmlType::kBF16;
  if (s == "q8_0") return GgmlType::kQ8_0;
  if (s == "q4_0") return GgmlType::kQ4_0;
  if (s == "q4_1") return GgmlType::kQ4_1;
  detail::throw_error(ErrorCode::kInvalidArgument,
                      "GGUF tensor type must be f32, f16, bf16, q8_0, q4_0 or q4_1, got '" + std::string(s) + "'");
}

namespace io::detail {

/// The general.* and llama.* keys of a model of shape `c`.
inline void set_gguf_llama_hparams(GgufWriter& out, const LlamaConfig& c) {
  out.set("general.architecture", GgufValue::string("llama"));
  out.set("llama.context_length", GgufValue::u32(static_cast<std::uint32_t>(c.max_seq_len)));
  out.set("llama.embedding_length", GgufValue::u32(static_cast<std::uint32_t>(c.dim)));
  out.set("llama.block_count", GgufValue::u32(static_cast<std::uint32_t>(c.n_layers)));
  out.set("llama.feed_forward_length", GgufValue::u32(static_cast<std::uint32_t>(c.hidden_dim)));
  out.set("llama.attention.head_count", GgufValue::u32(static_cast<std::uint32_t>(c.n_heads)));
  out.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<std::uint32_t>(c.n_kv_heads)));
  out.set("llama.rope.dimension_count", GgufValue::u32(static_cast<std::uint32_t>(c.head_size())));
  out.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(c.norm_eps));
  out.set("llama.rope.freq_base", GgufValue::f32(c.rope_theta));
  out.set("llama.vocab_size", GgufValue::u32(static_cast<std::uint32_t>(c.vocab_size)));
}

/// Heads of canonical q/k projection `name`, 0 for any other tensor.
inline std::int64_t rope_heads(const LlamaConfig& c, std::string_view name) {
  if (name.ends_with("self_attn.q_proj.weight")) return c.n_heads;
  if (name.ends_with("self_attn.k_proj.weight")) return c.n_kv_heads;
  return 0;
}

/// The HF rotate_half → interleaved permutation of `rows` (a q/k weight's rows or B's rows).
inline std::vector<float> interleave_rows(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t heads) {
  Tensor<float> t({rows, cols});
  std::copy(w, w + rows * cols, t.data());
  return unpermute_rope_rows(t, heads);
}

/// Q4_1 blocks of an L4Q matrix (group 32, bits ≤ 4): d = s, m = b − 2^(n−1)·s,
/// q + 2^(n−1) in the nibbles. Row order `row_of[r]` (the RoPE permutation) or identity.
/// Adds max |decoded − fma(q, s, b)| to `max_diff`; counts rounded scales in `rounded`.
inline std::vector<std::uint8_t> l4q_to_q4_1(const UniformMatrix& q, const std::vector<std::int64_t>& row_of,
                                             double& max_diff, std::int64_t& rounded) {
  const std::int64_t rows = q.rows(), cols = q.cols(), blocks = cols / 32;
  const int half = 1 << (q.spec().bits - 1);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(rows * blocks * 20));
  float decoded[32];
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t src = row_of.empty() ? r : row_of[static_cast<std::size_t>(r)];
    for (std::int64_t b = 0; b < blocks; ++b) {
      std::uint8_t* blk = out.data() + (r * blocks + b) * 20;
      const float s = q.step(src, b), off = q.offset(src, b);
      const float m = off - static_cast<float>(half) * s;
      const std::uint16_t d16 = float_to_f16(s), m16 = float_to_f16(m);
      if (f16_to_float(d16) != s || f16_to_float(m16) != m) ++rounded;
      put_u16(blk, d16);
      put_u16(blk + 2, m16);
      for (int j = 0; j < 16; ++j) {
        const int lo = q.code(src, b * 32 + j) + half, hi = q.code(src, b * 32 + j + 16) + half;
        blk[4 + j] = static_cast<std::uint8_t>(lo | (hi << 4));
      }
      ggml_decode(GgmlType::kQ4_1, blk, 32, decoded);
      for (int j = 0; j < 32; ++j)
        max_diff = std::max(max_diff, static_cast<double>(std::fabs(decoded[j] - q.value(src, b * 32 + j))));
    }
  }
  return out;
}

}  // namespace io::detail

/// Writes `w` (and its vocabulary) as a llama GGUF at `path`. `l4q`, when given, holds
/// L4Q-quantized projections by canonical name; those with group 32 and ≤ 4 bits are
/// written as Q4_1 from their codes (the others from `w` in `options.type`).
inline GgufExportReport write_gguf_llama(const std::filesystem::path& path, const LlamaWeights& w,
                                         const GgufVocab& vocab, const GgufExportOptions& options = {},
                                         const std::map<std::string, UniformMatrix>* l4q = nullptr) {
  check_llama_weights(w);
  const LlamaConfig& c = w.config;
  GSQ_CHECK(static_cast<std::int64_t>(vocab.tokens.size()) == c.vocab_size &&
                vocab.scores.size() == vocab.tokens.size() && vocab.types.size() == vocab.tokens.size(),
            ErrorCode::kShapeMismatch,
            "write_gguf_llama: the vocabulary has " + std::to_string(vocab.tokens.size()) +
                " tokens, the model " + std::to_string(c.vocab_size));
  GgufExportReport report;
  GgufWriter out(path);
  io::detail::set_gguf_llama_hparams(out, c);
  out.set("general.name", GgufValue::string(options.name));
  out.set("general.file_type", GgufValue::u32(gguf_file_type(l4q != nullptr ? GgmlType::kQ4_1 : options.type)));
  out.set("general.quantization_version", GgufValue::u32(2));
  out.set("tokenizer.ggml.model", GgufValue::string(vocab.model));
  out.set("tokenizer.ggml.tokens", GgufValue::strings(vocab.tokens));
  out.set("tokenizer.ggml.scores", GgufValue::f32s(vocab.scores));
  out.set("tokenizer.ggml.token_type", GgufValue::i32s(vocab.types));
  if (vocab.bos_id >= 0) out.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<std::uint32_t>(vocab.bos_id)));
  if (vocab.eos_id >= 0) out.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<std::uint32_t>(vocab.eos_id)));
  if (vocab.unk_id >= 0) out.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<std::uint32_t>(vocab.unk_id)));
  out.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(vocab.add_bos));
  out.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));

  // Declare every tensor (llama.cpp order: embedding, blocks, final norm, classifier).
  struct Item {
    std::string canonical, gguf;
    GgmlType type;
    const UniformMatrix* codes;
  };
  std::vector<Item> items;
  for (const LlamaTensorSpec& spec : llama_tensor_specs(c)) {
    Item it{spec.name, gguf_llama_tensor_name(spec.name), GgmlType::kF32, nullptr};
    if (spec.shape.size() == 2) {
      it.type = options.type;
      if (l4q != nullptr) {
        auto q = l4q->find(spec.name);
        if (q != l4q->end()) {
          if (q->second.spec().group == 32 && q->second.spec().bits <= 4 && spec.shape[1] % 32 == 0) {
            it.type = GgmlType::kQ4_1;
            it.codes = &q->second;
          } else {
            report.notes.push_back(spec.name + ": L4Q " + q->second.spec().name() +
                                   " has no lossless GGUF form (Q4_1 needs group 32 and <= 4 bits); written as " +
                                   std::string(ggml_type_info(options.type).name));
          }
        }
      }
      const std::int64_t block = ggml_type_info(it.type).block;
      if (spec.shape[1] % block != 0) {
        report.notes.push_back(spec.name + ": rows of " + std::to_string(spec.shape[1]) +
                               " are not a multiple of " + std::to_string(block) + ", written as F16 instead of " +
                               std::string(ggml_type_info(it.type).name));
        it.type = GgmlType::kF16;
      }
    }
    out.add_tensor(it.gguf, spec.shape, it.type);
    items.push_back(std::move(it));
  }

  std::int64_t rounded = 0;
  for (const Item& it : items) {
    const Tensor<float>& t = w.at(it.canonical);
    const std::int64_t heads = c.rope_style == RopeStyle::kHalf ? io::detail::rope_heads(c, it.canonical) : 0;
    if (it.codes != nullptr) {
      std::vector<std::int64_t> row_of;
      if (heads > 0) {  // the same row permutation as interleave_rows, as an index map
        const std::int64_t rows = t.dim(0), hs = rows / heads, half = hs / 2;
        row_of.resize(static_cast<std::size_t>(rows));
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t i = 0; i < half; ++i)
            for (std::int64_t s = 0; s < 2; ++s) row_of[static_cast<std::size_t>(h * hs + 2 * i + s)] = h * hs + s * half + i;
      }
      const std::vector<std::uint8_t> bytes = io::detail::l4q_to_q4_1(*it.codes, row_of, report.l4q_max_abs_diff, rounded);
      out.write_tensor_bytes(it.gguf, bytes);
      ++report.l4q_tensors;
    } else if (heads > 0) {
      const std::vector<float> p = io::detail::interleave_rows(t.data(), t.dim(0), t.dim(1), heads);
      out.write_tensor(it.gguf, p);
    } else {
      out.write_tensor(it.gguf, std::span<const float>(t.data(), static_cast<std::size_t>(t.numel())));
    }
  }
  out.finish();
  if (rounded > 0)
    report.notes.push_back(std::to_string(rounded) +
                           " L4Q groups had a step or minimum that FP16 cannot hold exactly; max weight change " +
                           std::to_string(report.l4q_max_abs_diff) + " (train with the fp16 grid option to avoid it)");
  report.bytes = static_cast<std::int64_t>(std::filesystem::file_size(path));
  return report;
}

// ---- LoRA adapter ----------------------------------------------------------------------------

/// One LoRA pair of a projection: A [rank, in], B [out, rank] (W = W0 + alpha/rank · B·A).
struct GgufLoraPair {
  std::string canonical;  // "model.layers.0.self_attn.q_proj.weight"
  Tensor<float> a, b;
};

/// Writes a llama.cpp LoRA adapter GGUF. llama.cpp computes W0·x + scale·B(A·x) with
/// scale = user_scale · alpha / rank, rank read from A's shape; B's q/k rows are
/// interleaved for a rotate_half base as the base's rows were.
inline std::int64_t write_gguf_lora_adapter(const std::filesystem::path& path, const LlamaConfig& c,
                                            const std::vector<GgufLoraPair>& pairs, float alpha,
                                            const std::string& name = "gsq-lora") {
  GgufWriter out(path);
  out.set("general.architecture", GgufValue::string("llama"));
  out.set("general.type", GgufValue::string("adapter"));
  out.set("general.name", GgufValue::string(name));
  out.set("adapter.type", GgufValue::string("lora"));
  out.set("adapter.lora.alpha", GgufValue::f32(alpha));
  for (const GgufLoraPair& p : pairs) {
    const std::string base = gguf_llama_tensor_name(p.canonical);
    GSQ_CHECK(!base.empty() && p.a.rank() == 2 && p.b.rank() == 2 && p.a.dim(0) == p.b.dim(1),
              ErrorCode::kShapeMismatch, "write_gguf_lora_adapter: bad pair for " + p.canonical);
    out.add_tensor(base + ".lora_a", {p.a.dim(0), p.a.dim(1)}, GgmlType::kF32);
    out.add_tensor(base + ".lora_b", {p.b.dim(0), p.b.dim(1)}, GgmlType::kF32);
  }
  for (const GgufLoraPair& p : pairs) {
    const std::string base = gguf_llama_tensor_name(p.canonical);
    out.write_tensor(base + ".lora_a", std::span<const float>(p.a.data(), static_cast<std::size_t>(p.a.numel())));
    const std::int64_t heads = c.rope_style == RopeStyle::kHalf ? io::detail::rope_heads(c, p.canonical) : 0;
    if (heads > 0) {
      out.write_tensor(base + ".lora_b", io::detail::interleave_rows(p.b.data(), p.b.dim(0), p.b.dim(1), heads));
    } else {
      out.write_tensor(base + ".lora_b", std::span<const float>(p.b.data(), static_cast<std::size_t>(p.b.numel())));
    }
  }
  out.finish();
  return static_cast<std::int64_t>(std::filesystem::file_size(path));
}

GSQ_NAMESPACE_END
