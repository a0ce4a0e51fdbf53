// gsq/io/hf_llama.hpp — a Hugging Face LLaMA directory: config.json + model.safetensors,
// or a sharded checkpoint (model.safetensors.index.json + model-0000i-of-0000n.safetensors).
//
// Tensors keep their HF names (gsq's canonical ones) and their rows as stored: HF q/k
// rows are permuted for `rotate_half`, and the config says RopeStyle::kHalf. F32, F16
// and BF16 are converted to float.
//
// Two ways in:
//   * `HfLlamaSource` streams: a LlamaWeightSource over the memory-mapped shards that
//     hands each frozen projection over already quantized — read in blocks of rows,
//     NF4-quantized block by block, its pages released after — so building a Llama from
//     it never holds more than one row block of the float model (plus the embedding,
//     classifier and norms; a BF16 untied embedding stays in the mapped file). NF4 quantizes row by row, so the result is the same bits as
//     quantizing the whole FP32 tensor (test_hf_llama checks sharded == single-file ==
//     in-memory).
//   * `read_hf_llama` returns every tensor in FP32 (LlamaWeights), for small models,
//     inspection and tests.
//
// Tied embeddings: HF's save_pretrained drops one of two shared tensors and may record
// the alias in `__metadata__` (tinystories-656K stores only `lm_head.weight` with
// `model.embed_tokens.weight -> lm_head.weight`). gsq exposes the table as
// `model.embed_tokens.weight` and, when tied, no `lm_head.weight`. Tensors that are not
// LLaMA weights are rejected, except old checkpoints' `rotary_emb.inv_freq` buffers.
#pragma once

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/io/hf_config.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/safetensors_sharded.hpp"
#include "gsq/io/tensor_util.hpp"
#include "gsq/model/weights.hpp"
#include "gsq/nn/frozen_weight.hpp"
#include "gsq/quant/nf4.hpp"

GSQ_NAMESPACE_BEGIN

/// Where each canonical tensor of `config` is in `st`, without reading any data: the
/// first of each pair is the canonical name, the second the stored entry (aliases and the
/// tied lm_head resolved). Throws IoError for a missing or unexpected tensor, ShapeError
/// for a wrong shape; `source` (the config's path) appears in shape messages.
inline std::vector<std::pair<std::string, ShardedEntry>> hf_llama_tensor_plan(
    const LlamaConfig& config, const SafetensorsShards& st, const std::string& source) {
  std::vector<std::pair<std::string, ShardedEntry>> plan;
  std::set<std::string> used;
  auto resolve = [&](const std::string& name) -> const ShardedEntry* {
    if (const ShardedEntry* e = st.find(name)) return e;
    auto alias = st.metadata().find(name);  // {"model.embed_tokens.weight": "lm_head.weight"}
    if (alias != st.metadata().end())
      if (const ShardedEntry* e = st.find(alias->second)) return e;
    if (config.tied_embeddings && name == "model.embed_tokens.weight") return st.find("lm_head.weight");
    return nullptr;
  };
  for (const LlamaTensorSpec& spec : llama_tensor_specs(config)) {
    const ShardedEntry* e = resolve(spec.name);
    if (e == nullptr)
      detail::throw_io_error(ErrorCode::kCorrupt, "missing tensor \"" + spec.name + "\"", st.name(), -1);
    if (e->entry->shape != spec.shape)
      detail::throw_error(ErrorCode::kShapeMismatch,
                          e->file->name() + ": tensor \"" + e->name() + "\" has shape " +
                              shape_to_string(e->entry->shape) + ", the config (" + source +
                              ") needs " + shape_to_string(spec.shape) + " for " + spec.name);
    used.insert(e->name());
    plan.emplace_back(spec.name, *e);
  }
  for (const auto& [name, e] : st.entries()) {
    if (used.count(name) != 0) continue;
    const bool tied_head = config.tied_embeddings && name == "lm_head.weight";
    const bool inv_freq = name.ends_with(".rotary_emb.inv_freq");
    if (!tied_head && !inv_freq)
      detail::throw_io_error(ErrorCode::kCorrupt,
                             "unexpected tensor \"" + name + "\" (not a LLaMA weight of this config)",
                             e.file->name(), e.entry->begin);
  }
  return plan;
}

/// A LlamaWeightSource streaming from safetensors (single file or shards); see the file
/// comment. Each canonical tensor can be taken once.
class HfLlamaSource final : public LlamaWeightSource {
 public:
  /// Values per row block read and quantized at a time (4 MiB of floats).
  static constexpr std::int64_t kBlockValues = std::int64_t{1} << 20;

  HfLlamaSource(const LlamaConfig& config, SafetensorsShards shards, std::string source)
      : config_(config), shards_(std::move(shards)), source_(std::move(source)) {
    for (auto& [name, e] : hf_llama_tensor_plan(config_, shards_, source_)) plan_.emplace(name, e);
  }

  const LlamaConfig& config() const noexcept { return config_; }
  const SafetensorsShards& shards() const noexcept { return shards_; }

  Tensor<float> take(const std::string& name, const std::vector<std::int64_t>& shape) override {
    const ShardedEntry& e = locate(name, shape);
    Tensor<float> t = make_tensor<float>(shape, MemoryCategory::kWeights, name);
    const std::int64_t rows = shape.size() == 2 ? shape[0] : 1;
    const std::int64_t cols = rows > 0 ? t.numel() / rows : 0;
    const std::int64_t block = std::max<std::int64_t>(1, kBlockValues / std::max<std::int64_t>(cols, 1));
    for (std::int64_t r0 = 0; r0 < rows; r0 += block) {  // release pages as we go
      const std::int64_t r1 = std::min(rows, r0 + block);
      SafetensorsShards::read_rows(e, r0, r1,
                                   std::span<float>(t.data() + r0 * cols, static_cast<std::size_t>((r1 - r0) * cols)));
      SafetensorsShards::release(e);
    }
    return t;
  }

  /// BF16 tables are kept as stored (exact); others widened. An untied embedding is
  /// borrowed from the mapped file (FloatMatrix::borrowed: only the rows a run looks up
  /// become resident); the classifier, read whole at every step, is copied.
  FloatMatrix take_table(const std::string& name, const std::vector<std::int64_t>& shape) override {
    if (plan_.count(name) == 0 || plan_.at(name).entry->dtype != DType::kBF16) return FloatMatrix(take(name, shape));
    const ShardedEntry& e = locate(name, shape);
    if (is_lookup_table(name, config_))
      if (FloatMatrix lent = borrow_bf16_matrix(shards_.owner(e), *e.entry); !lent.empty()) return lent;
    Tensor<bf16> t = make_tensor<bf16>(shape, MemoryCategory::kWeights, name);
    const std::span<const std::uint8_t> bytes = e.file->raw(*e.entry);
    GSQ_CHECK(static_cast<std::int64_t>(bytes.size()) == t.bytes(), ErrorCode::kShapeMismatch,
              source_ + ": tensor \"" + name + "\" holds " + std::to_string(bytes.size()) + " bytes, not " +
                  std::to_string(t.bytes()));
    const std::int64_t block_bytes = kBlockValues * 2;
    for (std::int64_t at = 0; at < t.bytes(); at += block_bytes) {
      const std::int64_t n = std::min(block_bytes, t.bytes() - at);
      std::memcpy(reinterpret_cast<std::uint8_t*>(t.data()) + at, bytes.data() + at, static_cast<std::size_t>(n));
      SafetensorsShards::release(e);  // the file's pages never add up to the table's size
    }
    return FloatMatrix(std::move(t));
  }

  FrozenWeight take_frozen(const std::string& name, const std::vector<std::int64_t>& shape,
                           const FrozenFormat& format) override {
    if (format.format != WeightFormat::kNf4) return make_frozen_weight(take(name, shape), format);
    const ShardedEntry& e = locate(name, shape);
    const std::int64_t rows = shape.at(0), cols = shape.at(1);
    Nf4Matrix out(rows, cols, format.double_quant, MemoryCategory::kWeights);
    const std::int64_t blocks = out.blocks_per_row();
    AlignedBuffer<float> absmax;  // every block's absmax, for double quantization
    if (format.double_quant) absmax = AlignedBuffer<float>(rows * blocks, MemoryCategory::kScratch);
    const std::int64_t block = std::max<std::int64_t>(1, kBlockValues / cols);
    buffer_.resize(static_cast<std::size_t>(std::min(block, rows) * cols));
    Nf4Matrix part;
    for (std::int64_t r0 = 0; r0 < rows; r0 += block) {
      const std::int64_t r1 = std::min(rows, r0 + block), n = r1 - r0;
      SafetensorsShards::read_rows(e, r0, r1, std::span<float>(buffer_.data(), static_cast<std::size_t>(n * cols)));
      if (part.rows() != n) part = Nf4Matrix(n, cols, false, MemoryCategory::kScratch);
      quantize_nf4(MatrixView<const float>(buffer_.data(), n, cols), part, name.c_str());
      std::memcpy(out.code_row(r0), part.code_row(0), static_cast<std::size_t>(n * out.row_bytes()));
      float* dst = (format.double_quant ? absmax.data() : out.absmax().data()) + r0 * blocks;
      std::memcpy(dst, part.absmax().data(), static_cast<std::size_t>(n * blocks) * sizeof(float));
      SafetensorsShards::release(e);
    }
    if (format.double_quant) detail::double_quantize_absmax(absmax.data(), rows * blocks, out);
    return FrozenWeight::from_nf4(std::move(out));
  }

  void finish() override {
    for (const auto& [name, e] : plan_)
      if (taken_.count(name) == 0)
        detail::throw_io_error(ErrorCode::kCorrupt, "tensor \"" + name + "\" was never used", shards_.name(), -1);
  }

 private:
  const ShardedEntry& locate(const std::string& name, const std::vector<std::int64_t>& shape) {
    auto it = plan_.find(name);
    if (it == plan_.end())
      detail::throw_io_error(ErrorCode::kCorrupt, "no tensor \"" + name + "\" for this config",
                             shards_.name(), -1);
    if (it->second.entry->shape != shape)
      detail::throw_error(ErrorCode::kShapeMismatch,
                          source_ + ": tensor \"" + name + "\" has shape " +
                              shape_to_string(it->second.entry->shape) + ", the model needs " +
                              shape_to_string(shape));
    if (!taken_.insert(name).second)
      detail::throw_error(ErrorCode::kInvalidArgument, "HfLlamaSource: tensor \"" + name + "\" taken twice");
    return it->second;
  }

  LlamaConfig config_;
  SafetensorsShards shards_;
  std::string source_;
  std::map<std::string, ShardedEntry> plan_;
  std::set<std::string> taken_;
  std::vector<float> buffer_;  // one row block, reused
};

/// Opens a Hugging Face LLaMA directory (single file or sharded) for streaming.
inline std::unique_ptr<HfLlamaSource> open_hf_llama(const std::filesystem::path& dir) {
  const LlamaConfig config = read_hf_config(dir / "config.json");
  return std::make_unique<HfLlamaSource>(config, SafetensorsShards::open(dir),
                                         (dir / "config.json").string());
}

/// Every tensor of `source` in FP32.
inline LlamaWeights llama_weights_from_source(HfLlamaSource& source, const std::string& name) {
  LlamaWeights w;
  w.config = source.config();
  w.source = name;
  for (const LlamaTensorSpec& spec : llama_tensor_specs(w.config))
    w.tensors.emplace(spec.name, source.take(spec.name, spec.shape));
  check_llama_weights(w);
  return w;
}

/// Reads a Hugging Face LLaMA directory (single file or sharded) into FP32 tensors.
inline LlamaWeights read_hf_llama(const std::filesystem::path& dir) {
  std::unique_ptr<HfLlamaSource> source = open_hf_llama(dir);
  return llama_weights_from_source(*source, (dir / "config.json").string());
}

GSQ_NAMESPACE_END
