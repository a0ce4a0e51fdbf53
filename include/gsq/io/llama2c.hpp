// gsq/io/llama2c.hpp — Karpathy's llama2.c "legacy" checkpoint (`.bin`): read and write.
//
// Layout (little-endian): 7 x int32 header `dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len` (vocab_size < 0: the classifier is stored separately),
// then float32 arrays, each weight [out][in], stacked over layers:
//   token_embedding [vocab][dim]; rms_att [L][dim]; wq [L][dim][dim];
//   wk [L][kv_dim][dim]; wv [L][kv_dim][dim]; wo [L][dim][dim]; rms_ffn [L][dim];
//   w1 [L][hidden][dim]; w2 [L][dim][hidden]; w3 [L][hidden][dim]; rms_final [dim];
//   freq_cis_real [seq][head/2]; freq_cis_imag [seq][head/2]; (wcls [vocab][dim] if untied)
// The file has no magic, so the header is trusted only if the size it implies equals the
// file size exactly (computed with overflow checks before anything is allocated). The
// RoPE tables are skipped on read (the model recomputes them) and written on export so
// run.c can still use the file.
//
// Names map to the canonical Hugging Face ones: w1 = gate_proj, w3 = up_proj,
// w2 = down_proj. llama2.c rotates interleaved pairs, so the config says
// RopeStyle::kInterleaved and q/k rows are kept exactly as stored. The format fixes
// RMSNorm eps = 1e-5, rope theta = 10000 and BOS/EOS = 1/2.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/io/atomic_file.hpp"
#include "gsq/io/bytes.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/mapped_file.hpp"
#include "gsq/model/config.hpp"

GSQ_NAMESPACE_BEGIN

/// Where each tensor of a llama2.c file lives, computed from its header alone.
struct Llama2cLayout {
  struct Region {
    std::string name;                 // canonical name
    std::vector<std::int64_t> shape;  // float32 elements, [out, in] or [dim]
    std::int64_t offset = 0;          // absolute byte offset
    std::int64_t bytes = 0;
  };
  LlamaConfig config;
  std::vector<Region> tensors;
  std::int64_t rope_tables_offset = 0;  // the skipped freq_cis_real/imag tables
  std::int64_t rope_tables_bytes = 0;
  std::int64_t file_bytes = 0;
};

namespace io::detail {

inline constexpr std::int64_t kLlama2cHeaderBytes = 28;
inline constexpr std::uint32_t kLlama2cVersionMagic = 0x616b3432;  // "ak42", newer exports

/// The llama2.c-fixed parts of a config with the given extents.
inline LlamaConfig llama2c_config(std::int64_t dim, std::int64_t hidden, std::int64_t layers,
                                  std::int64_t heads, std::int64_t kv_heads, std::int64_t vocab,
                                  std::int64_t seq, bool tied) {
  LlamaConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.max_seq_len = seq;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_style = RopeStyle::kInterleaved;
  c.tied_embeddings = tied;
  c.bos_id = 1;
  c.eos_id = 2;
  return c;
}

}  // namespace io::detail

/// Reads and checks the header of a llama2.c checkpoint and lays out its tensors.
inline Llama2cLayout llama2c_layout(const MappedFile& file) {
  namespace iod = io::detail;
  const std::string& name = file.name();
  iod::ByteReader r(file.bytes(), name);
  if (file.size() >= 4) {
    std::uint32_t magic = 0;
    std::memcpy(&magic, file.data(), 4);
    if (magic == iod::kLlama2cVersionMagic)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "a llama2.c version-1/2 export (magic \"ak42\"); gsq reads the "
                             "legacy (version 0) format only",
                             name, 0);
  }
  std::int32_t h[7];
  const char* fields[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                           "seq_len"};
  for (int i = 0; i < 7; ++i) h[i] = r.read_i32(std::string("the header field ") + fields[i]);
  for (int i = 0; i < 7; ++i)
    if (h[i] <= 0 && !(i == 5 && h[i] < 0))
      detail::throw_io_error(ErrorCode::kCorrupt,
                             std::string("header field ") + fields[i] + " = " +
                                 std::to_string(h[i]) + " must be positive",
                             name, 4 * i);
  const bool tied = h[5] > 0;
  const std::int64_t vocab = tied ? std::int64_t{h[5]} : -std::int64_t{h[5]};

  Llama2cLayout layout;
  layout.config = iod::llama2c_config(h[0], h[1], h[2], h[3], h[4], vocab, h[6], tied);
  try {
    layout.config.validate("header");
  } catch (const Error& e) {
    const std::string what = e.what();
    const std::size_t cut = what.find("] ");
    detail::throw_io_error(ErrorCode::kCorrupt,
                           cut == std::string::npos ? what : what.substr(cut + 2), name, 0);
  }
  const LlamaConfig& c = layout.config;
  layout.file_bytes = static_cast<std::int64_t>(file.size());

  // The size the header implies, in closed form with checked arithmetic, is compared with
  // the file before anything per layer is built (a hostile n_layers must cost nothing).
  auto mul = [&](std::int64_t a, std::int64_t b) { return iod::checked_mul(a, b, name, 0, "header"); };
  auto add = [&](std::int64_t a, std::int64_t b) { return iod::checked_add(a, b, name, 0, "header"); };
  const std::int64_t d = c.dim, kv = c.kv_dim(), hid = c.hidden_dim;
  std::int64_t per_layer = add(mul(2, d), mul(mul(2, d), d));   // norms, wq, wo
  per_layer = add(per_layer, mul(mul(2, kv), d));                // wk, wv
  per_layer = add(per_layer, mul(mul(3, hid), d));               // w1, w2, w3
  std::int64_t floats = add(mul(vocab, d), mul(c.n_layers, per_layer));
  floats = add(add(floats, d), mul(c.max_seq_len, c.head_size()));  // rms_final, RoPE tables
  if (!tied) floats = add(floats, mul(vocab, d));
  const std::int64_t expected = add(iod::kLlama2cHeaderBytes, mul(floats, 4));
  if (expected > layout.file_bytes)
    detail::throw_io_error(ErrorCode::kTruncated,
                           "the header (dim " + std::to_string(d) + ", layers " +
                               std::to_string(c.n_layers) + ", vocab " + std::to_string(h[5]) +
                               ") implies " + std::to_string(expected) + " bytes, the file has " +
                               std::to_string(layout.file_bytes),
                           name, layout.file_bytes);
  if (expected < layout.file_bytes)
    detail::throw_io_error(ErrorCode::kCorrupt,
                           std::to_string(layout.file_bytes - expected) +
                               " bytes after the data the header implies (not a llama2.c legacy "
                               "checkpoint, or a different header)",
                           name, expected);

  // Lay out every region; `pos` counts bytes and ends at `expected`.
  std::int64_t pos = iod::kLlama2cHeaderBytes;
  auto add_region = [&](const std::string& tensor, std::vector<std::int64_t> shape) {
    std::int64_t n = 1;
    for (std::int64_t extent : shape) n = mul(n, extent);
    const std::int64_t bytes = mul(n, 4);
    layout.tensors.push_back({tensor, std::move(shape), pos, bytes});
    pos = iod::checked_add(pos, bytes, name, 0, "header");
  };
  // Stacked [L][...] arrays: one region per layer.
  auto add_stacked = [&](std::string_view suffix, std::vector<std::int64_t> shape) {
    for (std::int64_t l = 0; l < c.n_layers; ++l) add_region(llama_layer_tensor_name(l, suffix), shape);
  };
  add_region("model.embed_tokens.weight", {vocab, d});
  add_stacked("input_layernorm.weight", {d});
  add_stacked("self_attn.q_proj.weight", {d, d});
  add_stacked("self_attn.k_proj.weight", {kv, d});
  add_stacked("self_attn.v_proj.weight", {kv, d});
  add_stacked("self_attn.o_proj.weight", {d, d});
  add_stacked("post_attention_layernorm.weight", {d});
  add_stacked("mlp.gate_proj.weight", {hid, d});   // w1
  add_stacked("mlp.down_proj.weight", {d, hid});   // w2
  add_stacked("mlp.up_proj.weight", {hid, d});     // w3
  add_region("model.norm.weight", {d});
  layout.rope_tables_offset = pos;
  layout.rope_tables_bytes = mul(mul(c.max_seq_len, c.head_size()), 4);  // real + imag halves
  pos = iod::checked_add(pos, layout.rope_tables_bytes, name, 0, "header");
  if (!tied) add_region("lm_head.weight", {vocab, d});
  GSQ_ASSERT(pos == expected);
  return layout;
}

/// Reads a llama2.c checkpoint already in memory (fuzzers, tests).
inline LlamaWeights read_llama2c(const MappedFile& file) {
  const Llama2cLayout layout = llama2c_layout(file);
  LlamaWeights w;
  w.config = layout.config;
  w.source = file.name();
  for (const Llama2cLayout::Region& region : layout.tensors) {
    Tensor<float> t = make_tensor<float>(region.shape, MemoryCategory::kWeights, region.name);
    std::memcpy(t.data(), file.data() + region.offset, static_cast<std::size_t>(region.bytes));
    w.tensors.emplace(region.name, std::move(t));
  }
  check_llama_weights(w);
  return w;
}

/// Reads the llama2.c checkpoint at `path`.
inline LlamaWeights read_llama2c(const std::filesystem::path& path) {
  return read_llama2c(MappedFile::open(path));
}

struct Llama2cWriteOptions {
  /// The format cannot store rms eps != 1e-5 or rope theta != 10000; writing such a model
  /// anyway (it then loads with the llama2.c values) needs this flag.
  bool allow_lossy = false;
};

namespace io::detail {

/// HF rotate_half rows → Meta interleaved rows of one q/k projection with `heads` heads:
/// W_meta = W_hf.view(heads, 2, hs/2, in).transpose(1, 2).reshape(heads*hs, in).
inline std::vector<float> unpermute_rope_rows(const Tensor<float>& w, std::int64_t heads) {
  const std::int64_t rows = w.dim(0), in = w.dim(1), hs = rows / heads, half = hs / 2;
  std::vector<float> out(static_cast<std::size_t>(w.numel()));
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < half; ++i)
      for (std::int64_t s = 0; s < 2; ++s) {
        const float* src = w.data() + (h * hs + s * half + i) * in;
        std::memcpy(out.data() + (h * hs + 2 * i + s) * in, src, static_cast<std::size_t>(in) * 4);
      }
  return out;
}

}  // namespace io::detail

/// Writes `w` as a llama2.c legacy checkpoint at `path`, atomically. Weights with
/// RopeStyle::kHalf (Hugging Face) get their q/k rows un-permuted so that the file works
/// with llama2.c's interleaved RoPE.
inline void write_llama2c(const std::filesystem::path& path, const LlamaWeights& w,
                          const Llama2cWriteOptions& options = {}) {
  check_llama_weights(w);
  const LlamaConfig& c = w.config;
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max();
  GSQ_CHECK(c.dim <= kMax && c.hidden_dim <= kMax && c.n_layers <= kMax && c.n_heads <= kMax &&
                c.n_kv_heads <= kMax && c.vocab_size <= kMax && c.max_seq_len <= kMax,
            ErrorCode::kInvalidArgument, "write_llama2c: an extent does not fit the int32 header");
  GSQ_CHECK(options.allow_lossy || (c.norm_eps == 1e-5f && c.rope_theta == 10000.0f),
            ErrorCode::kInvalidArgument,
            "write_llama2c: the llama2.c format fixes rms eps 1e-5 and rope theta 10000, this "
            "model has eps " + std::to_string(c.norm_eps) + " and theta " +
                std::to_string(c.rope_theta) + " (set allow_lossy to write it anyway)");

  AtomicFileWriter out(path);
  const std::int32_t header[7] = {
      static_cast<std::int32_t>(c.dim),        static_cast<std::int32_t>(c.hidden_dim),
      static_cast<std::int32_t>(c.n_layers),   static_cast<std::int32_t>(c.n_heads),
      static_cast<std::int32_t>(c.n_kv_heads),
      static_cast<std::int32_t>(c.tied_embeddings ? c.vocab_size : -c.vocab_size),
      static_cast<std::int32_t>(c.max_seq_len)};
  out.write(header, sizeof(header));
  auto put = [&](const std::string& name) {
    const Tensor<float>& t = w.at(name);
    out.write(t.data(), static_cast<std::size_t>(t.numel()) * sizeof(float));
  };
  auto put_stacked = [&](std::string_view suffix) {
    for (std::int64_t l = 0; l < c.n_layers; ++l) {
      const std::string name = llama_layer_tensor_name(l, suffix);
      const bool q = suffix == "self_attn.q_proj.weight", k = suffix == "self_attn.k_proj.weight";
      if (c.rope_style == RopeStyle::kHalf && (q || k)) {
        const std::vector<float> rows =
            io::detail::unpermute_rope_rows(w.at(name), q ? c.n_heads : c.n_kv_heads);
        out.write(rows.data(), rows.size() * sizeof(float));
      } else {
        put(name);
      }
    }
  };
  put("model.embed_tokens.weight");
  put_stacked("input_layernorm.weight");
  put_stacked("self_attn.q_proj.weight");
  put_stacked("self_attn.k_proj.weight");
  put_stacked("self_attn.v_proj.weight");
  put_stacked("self_attn.o_proj.weight");
  put_stacked("post_attention_layernorm.weight");
  put_stacked("mlp.gate_proj.weight");
  put_stacked("mlp.down_proj.weight");
  put_stacked("mlp.up_proj.weight");
  put("model.norm.weight");
  // RoPE tables as llama2.c's export computes them (float32): cos and sin of
  // pos * theta^(-2j/head_size).
  const std::int64_t hs = c.head_size(), half = hs / 2;
  std::vector<float> freqs(static_cast<std::size_t>(half));
  for (std::int64_t j = 0; j < half; ++j)
    freqs[static_cast<std::size_t>(j)] =
        1.0f / std::pow(c.rope_theta, static_cast<float>(2 * j) / static_cast<float>(hs));
  for (int part = 0; part < 2; ++part) {
    std::vector<float> row(static_cast<std::size_t>(half));
    for (std::int64_t p = 0; p < c.max_seq_len; ++p) {
      for (std::int64_t j = 0; j < half; ++j) {
        const float angle = static_cast<float>(p) * freqs[static_cast<std::size_t>(j)];
        row[static_cast<std::size_t>(j)] = part == 0 ? std::cos(angle) : std::sin(angle);
      }
      out.write(row.data(), row.size() * sizeof(float));
    }
  }
  if (!c.tied_embeddings) put("lm_head.weight");
  out.commit();
}

GSQ_NAMESPACE_END
