// gsq/io/quantized_base.hpp — a Llama's frozen base saved in its stored form, so a large
// model is quantized once (`gsq-finetune --save-base FILE`) and later runs load it
// without reading the original checkpoint or quantizing again.
//
// File: safetensors, __metadata__ format "gsq-base", format_version "1", config (the
// LlamaConfig as JSON, io/export.hpp), base_format (nf4 | gse | fp32), double_quant,
// gse_spec "bits,group,exp_bits", tokenizer (the tokenizer path it came with, or "").
// Tensors, under each projection's HF weight name <w> (e.g. model.layers.0.mlp.up_proj.weight):
//     nf4:  <w>.nf4_codes U8 [out, row_bytes]; <w>.nf4_absmax F32 [out, blocks]
//           or, double-quantized, <w>.nf4_dq_codes I8 [out·blocks], <w>.nf4_dq_scales F32,
//           <w>.nf4_dq_offset F32 [1]
//     gse:  <w>.gse_mantissas I8 [out, row_bytes]; <w>.gse_exponents I8 [out, groups]
//     fp32: <w> F32 [out, in]
// and the embedding, norms and untied classifier under their HF names, in BF16 when every
// value is a BF16 value (a model loaded from BF16 shards), else F32 — so the reload is
// the same model bit for bit (test_sharded checks it).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/float_matrix.hpp"
#include "gsq/io/dtype.hpp"
#include "gsq/io/export.hpp"
#include "gsq/io/llama_weights.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/io/safetensors_sharded.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/weights.hpp"

GSQ_NAMESPACE_BEGIN

inline constexpr std::string_view kQuantizedBaseFormatName = "gsq-base";

namespace io::detail {

/// The frozen base weight of a projection, whatever sits in the slot.
inline const FrozenWeight& projection_base(Projection& p, const std::string& name) {
  if (const LoraLinear* l = p.get_if<LoraLinear>()) return l->frozen_weight();
  if (const L4qLinear* l = p.get_if<L4qLinear>()) return l->frozen_weight();
  if (const Linear* l = p.get_if<Linear>()) {
    GSQ_CHECK(!l->is_trainable(), ErrorCode::kInvalidArgument,
              "save_quantized_base: projection " + name + " is trainable, not a frozen base");
    return l->frozen_weight();
  }
  gsq::detail::throw_error(ErrorCode::kInvalidArgument, "save_quantized_base: projection " + name + " is empty");
}

inline bool all_bf16(const float* v, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i)
    if (bf16_to_float(float_to_bf16(v[i])) != v[i] && !(v[i] != v[i])) return false;
  return true;
}

template <class T>
std::span<const std::uint8_t> as_bytes_of(const T* p, std::int64_t n) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(p), static_cast<std::size_t>(n) * sizeof(T)};
}

}  // namespace io::detail

/// Saves the frozen base of `model` (see the file comment); `tokenizer` is recorded.
inline void save_quantized_base(const std::filesystem::path& path, Llama& model,
                                const std::string& tokenizer = "") {
  namespace iod = io::detail;
  const LlamaConfig& c = model.config();
  std::vector<io::detail::RawTensorRef> refs;
  std::vector<std::vector<std::uint8_t>> owned;  // BF16 copies
  std::string format;
  bool double_quant = false;
  GseSpec gse;
  auto put_float = [&](const std::string& name, const float* data, std::vector<std::int64_t> shape) {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    if (!iod::all_bf16(data, n)) {
      refs.push_back({name, DType::kF32, shape, iod::as_bytes_of(data, n)});
      return;
    }
    std::vector<std::uint8_t>& b = owned.emplace_back(static_cast<std::size_t>(n) * 2);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::uint16_t h = float_to_bf16(data[i]);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    refs.push_back({name, DType::kBF16, shape, std::span<const std::uint8_t>(b)});
  };
  // A BF16 table is written as it is held (no copy); an FP32 one through put_float.
  auto put_table = [&](const std::string& name, const FloatMatrix& t) {
    const std::vector<std::int64_t> shape{t.rows(), t.cols()};
    t.visit([&](auto v) {
      using T = std::remove_cv_t<typename decltype(v)::value_type>;
      if constexpr (std::is_same_v<T, bf16>)
        refs.push_back({name, DType::kBF16, shape, iod::as_bytes_of(v.data(), v.rows() * v.cols())});
      else
        put_float(name, v.data(), shape);
    });
  };
  const std::int64_t d = c.dim;
  put_table("model.embed_tokens.weight", model.embedding().weight());
  for (std::int64_t l = 0; l < c.n_layers; ++l) {
    Llama::Block& b = model.block(l);
    put_float(llama_layer_tensor_name(l, "input_layernorm.weight"), b.attn_norm.weight().data(), {d});
    put_float(llama_layer_tensor_name(l, "post_attention_layernorm.weight"), b.mlp_norm.weight().data(), {d});
    for (std::string_view proj : kLlamaProjections) {
      const bool attn = proj == "q_proj" || proj == "k_proj" || proj == "v_proj" || proj == "o_proj";
      const std::string w = llama_layer_tensor_name(l, (attn ? "self_attn." : "mlp.") + std::string(proj) + ".weight");
      const FrozenWeight& f = iod::projection_base(model.projection(l, proj), w);
      const std::string this_format(weight_format_name(f.format()));
      GSQ_CHECK(format.empty() || format == this_format, ErrorCode::kInvalidArgument,
                "save_quantized_base: projections are stored as both " + format + " and " + this_format);
      format = this_format;
      const std::int64_t rows = f.out_features();
      if (const Nf4Matrix* m = f.nf4_matrix()) {
        double_quant = m->double_quant();
        refs.push_back({w + ".nf4_codes", DType::kU8, {rows, m->row_bytes()},
                        iod::as_bytes_of(m->code_row(0), rows * m->row_bytes())});
        if (!m->double_quant()) {
          refs.push_back({w + ".nf4_absmax", DType::kF32, {rows, m->blocks_per_row()},
                          iod::as_bytes_of(m->absmax().data(), m->absmax().size())});
        } else {
          refs.push_back({w + ".nf4_dq_codes", DType::kI8, {m->dq_codes().size()},
                          iod::as_bytes_of(m->dq_codes().data(), m->dq_codes().size())});
          refs.push_back({w + ".nf4_dq_scales", DType::kF32, {m->dq_scales().size()},
                          iod::as_bytes_of(m->dq_scales().data(), m->dq_scales().size())});
          std::vector<std::uint8_t>& off = owned.emplace_back(4);
          const float o = m->dq_offset();
          std::memcpy(off.data(), &o, 4);
          refs.push_back({w + ".nf4_dq_offset", DType::kF32, {1}, std::span<const std::uint8_t>(off)});
        }
      } else if (const GseMatrix* g = f.gse_matrix()) {
        gse = g->spec();
        refs.push_back({w + ".gse_mantissas", DType::kI8, {rows, g->row_bytes()},
                        iod::as_bytes_of(g->mantissa_row(0), rows * g->row_bytes())});
        refs.push_back({w + ".gse_exponents", DType::kI8, {rows, g->groups_per_row()},
                        iod::as_bytes_of(g->exponent_row(0), rows * g->groups_per_row())});
      } else if (const Tensor<float>* t = f.fp32_tensor()) {
        refs.push_back({w, DType::kF32, {rows, f.in_features()}, iod::float_bytes(*t)});
      }
    }
  }
  put_float("model.norm.weight", model.final_norm().weight().data(), {d});
  if (!c.tied_embeddings) put_table("lm_head.weight", model.classifier_weight());
  iod::write_safetensors_raw(path, std::move(refs),
                        {{"format", std::string(kQuantizedBaseFormatName)},
                         {"format_version", "1"},
                         {"config", llama_config_json(c).dump()},
                         {"base_format", format},
                         {"double_quant", double_quant ? "true" : "false"},
                         {"gse_spec", std::to_string(gse.bits) + "," + std::to_string(gse.group) + "," +
                                          std::to_string(gse.exp_bits)},
                         {"tokenizer", tokenizer}});
}

/// A LlamaWeightSource over a gsq-base file: frozen projections come back in their
/// stored form (the model must ask for the same format), everything else as floats.
class QuantizedBaseSource final : public LlamaWeightSource {
 public:
  explicit QuantizedBaseSource(const std::filesystem::path& path)
      : st_(std::make_shared<const SafetensorsFile>(SafetensorsFile::open(path))) {
    namespace iod = io::detail;
    const auto& m = st_->metadata();
    auto meta = [&](const char* key) -> const std::string& {
      auto it = m.find(key);
      if (it == m.end())
        gsq::detail::throw_io_error(ErrorCode::kCorrupt, std::string("__metadata__ lacks \"") + key + "\"",
                                    st_->name(), 8);
      return it->second;
    };
    if (meta("format") != kQuantizedBaseFormatName || meta("format_version") != "1")
      gsq::detail::throw_io_error(ErrorCode::kCorrupt, "not a gsq-base file (format_version 1)", st_->name(), 8);
    const std::string& cfg = meta("config");
    const iod::Json j = iod::parse_json(std::span<const std::uint8_t>(
                                            reinterpret_cast<const std::uint8_t*>(cfg.data()), cfg.size()),
                                        st_->name(), 8);
    config_ = llama_config_from_json(j, iod::JsonWhere{st_->name(), 8});
    format_ = meta("base_format");
    double_quant_ = meta("double_quant") == "true";
    tokenizer_ = meta("tokenizer");
    const std::string& spec = meta("gse_spec");
    if (std::sscanf(spec.c_str(), "%d,%d,%d", &gse_.bits, &gse_.group, &gse_.exp_bits) != 3)
      gsq::detail::throw_io_error(ErrorCode::kCorrupt, "bad gse_spec \"" + spec + "\"", st_->name(), 8);
  }

  const LlamaConfig& config() const noexcept { return config_; }
  const std::string& tokenizer() const noexcept { return tokenizer_; }
  /// "nf4", "gse" or "fp32".
  const std::string& base_format() const noexcept { return format_; }
  bool double_quant() const noexcept { return double_quant_; }

  Tensor<float> take(const std::string& name, const std::vector<std::int64_t>& shape) override {
    const SafetensorsEntry& e = entry(name, shape);
    return st_->to_float(e, MemoryCategory::kWeights);
  }

  /// Tables saved as BF16 come back as BF16; an untied embedding stays in the mapped
  /// file (is_lookup_table), as from HfLlamaSource.
  FloatMatrix take_table(const std::string& name, const std::vector<std::int64_t>& shape) override {
    if (st_->at(name).dtype != DType::kBF16) return FloatMatrix(take(name, shape));
    if (is_lookup_table(name, config_)) {
      const SafetensorsEntry& e = entry(name, shape);
      if (FloatMatrix lent = borrow_bf16_matrix(st_, e); !lent.empty()) return lent;
    }
    Tensor<bf16> t({shape.at(0), shape.at(1)}, MemoryCategory::kWeights);
    copy(name, shape, t.data());
    return FloatMatrix(std::move(t));
  }

  FrozenWeight take_frozen(const std::string& name, const std::vector<std::int64_t>& shape,
                           const FrozenFormat& f) override {
    const std::string want(weight_format_name(f.format));
    GSQ_CHECK(want == format_ && (f.format != WeightFormat::kNf4 || f.double_quant == double_quant_) &&
                  (f.format != WeightFormat::kGse ||
                   (f.gse.bits == gse_.bits && f.gse.group == gse_.group && f.gse.exp_bits == gse_.exp_bits)),
              ErrorCode::kInvalidArgument,
              st_->name() + ": the saved base holds " + format_ + (double_quant_ ? " (double-quantized)" : "") +
                  " weights; the model asks for " + want + (f.double_quant ? " (double-quantized)" : "") +
                  " — use the same --base (and --precision for gse) it was saved with");
    const std::int64_t rows = shape.at(0), cols = shape.at(1);
    if (f.format == WeightFormat::kFp32) return FrozenWeight::from_fp32(take(name, shape));
    if (f.format == WeightFormat::kNf4) {
      Nf4Matrix m(rows, cols, double_quant_, MemoryCategory::kWeights);
      copy(name + ".nf4_codes", {rows, m.row_bytes()}, m.code_row(0));
      if (!double_quant_) {
        copy(name + ".nf4_absmax", {rows, m.blocks_per_row()}, m.absmax().data());
      } else {
        copy(name + ".nf4_dq_codes", {m.dq_codes().size()}, m.dq_codes().data());
        copy(name + ".nf4_dq_scales", {m.dq_scales().size()}, m.dq_scales().data());
        float offset = 0;
        copy(name + ".nf4_dq_offset", {1}, &offset);
        m.set_dq_offset(offset);
      }
      return FrozenWeight::from_nf4(std::move(m));
    }
    GseMatrix g(rows, cols, gse_, MemoryCategory::kWeights);
    copy(name + ".gse_mantissas", {rows, g.row_bytes()}, g.mantissa_row(0));
    copy(name + ".gse_exponents", {rows, g.groups_per_row()}, g.exponent_row(0));
    return FrozenWeight::from_gse(std::move(g));
  }

  void finish() override {
    for (const SafetensorsEntry& e : st_->entries())
      if (used_.count(e.name) == 0)
        gsq::detail::throw_io_error(ErrorCode::kCorrupt, "unexpected tensor \"" + e.name + "\"", st_->name(), e.begin);
  }

 private:
  const SafetensorsEntry& entry(const std::string& name, const std::vector<std::int64_t>& shape) {
    const SafetensorsEntry& e = st_->at(name);
    if (e.shape != shape)
      gsq::detail::throw_io_error(ErrorCode::kCorrupt,
                                  "tensor \"" + name + "\" has shape " + shape_to_string(e.shape) + ", expected " +
                                      shape_to_string(shape),
                                  st_->name(), e.begin);
    used_.insert(name);
    return e;
  }
  template <class T>
  void copy(const std::string& name, std::vector<std::int64_t> shape, T* out) {
    const SafetensorsEntry& e = entry(name, shape);
    const std::span<const std::uint8_t> raw = st_->raw(e);
    if (dtype_bytes(e.dtype) != static_cast<std::int64_t>(sizeof(T)))
      gsq::detail::throw_io_error(ErrorCode::kCorrupt, "tensor \"" + name + "\" has the wrong dtype", st_->name(),
                                  e.begin);
    if (!raw.empty()) std::memcpy(out, raw.data(), raw.size());
  }

  std::shared_ptr<const SafetensorsFile> st_;  // shared with borrowed tables
  LlamaConfig config_;
  std::string format_;
  bool double_quant_ = false;
  GseSpec gse_;
  std::string tokenizer_;
  std::set<std::string> used_;
};

/// Whether `path` is a gsq-base file.
inline bool is_quantized_base_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec) || path.extension() != ".safetensors") return false;
  const SafetensorsFile st = SafetensorsFile::open(path);
  const auto it = st.metadata().find("format");
  return it != st.metadata().end() && it->second == kQuantizedBaseFormatName;
}

GSQ_NAMESPACE_END
