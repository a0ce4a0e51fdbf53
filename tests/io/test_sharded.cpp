// Sharded safetensors checkpoints, the random checkpoint writer and streaming loads:
// a model written as several shards loads to the same model, bit for bit, as the same
// tensors in one file and as the in-memory FP32 tensors quantized whole.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/io/export.hpp"
#include "gsq/io/hf_config.hpp"
#include "gsq/io/hf_llama.hpp"
#include "gsq/io/load_llama.hpp"
#include "gsq/io/quantized_base.hpp"
#include "gsq/io/random_checkpoint.hpp"
#include "gsq/io/safetensors_sharded.hpp"
#include "gsq/io/tokenizer_factory.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/nn/rope.hpp"
#include "io/io_test_util.hpp"

namespace {

using gsq::test::expect_io_error;
using gsq::test::TempDir;

gsq::LlamaConfig small_config(bool tied) {
  gsq::LlamaConfig c = gsq::llama_shape("tiny");
  c.dim = 128;  // two NF4 blocks per row; hidden 160 leaves a partial block in down_proj
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.tied_embeddings = tied;
  return c;
}

bool same_bits(const gsq::Tensor<float>& a, const gsq::Tensor<float>& b) {
  return a.numel() == b.numel() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0;
}

/// The bytes of every NF4 projection of `m` in order.
std::vector<std::uint8_t> nf4_bytes(gsq::Llama& m) {
  std::vector<std::uint8_t> out;
  for (std::int64_t l = 0; l < m.n_layers(); ++l)
    for (std::string_view p : gsq::kLlamaProjections) {
      const gsq::Linear* lin = m.projection(l, p).get_if<gsq::Linear>();
      REQUIRE(lin != nullptr);
      const gsq::Nf4Matrix* w = lin->frozen_weight().nf4_matrix();
      REQUIRE(w != nullptr);
      const auto* codes = w->code_row(0);
      out.insert(out.end(), codes, codes + w->rows() * w->row_bytes());
      if (w->double_quant()) {
        const auto* q = reinterpret_cast<const std::uint8_t*>(w->dq_codes().data());
        out.insert(out.end(), q, q + w->dq_codes().bytes());
        const auto* s = reinterpret_cast<const std::uint8_t*>(w->dq_scales().data());
        out.insert(out.end(), s, s + w->dq_scales().bytes());
      } else {
        const auto* a = reinterpret_cast<const std::uint8_t*>(w->absmax().data());
        out.insert(out.end(), a, a + w->absmax().bytes());
      }
    }
  return out;
}

gsq::Tensor<float> logits_of(gsq::Llama& m) {
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back((i * 37 + 5) % static_cast<int>(m.config().vocab_size));
  return m.forward(ids, 2);
}

/// config.json of `c` with `edit` applied, parsed back.
gsq::LlamaConfig parse_edited(const gsq::LlamaConfig& c, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = gsq::hf_config_json(c);
  edit(j);
  const std::string text = j.dump();
  return gsq::parse_hf_config(gsq::MappedFile::from_bytes(
      std::vector<std::uint8_t>(text.begin(), text.end()), "config.json"));
}

/// HF's _compute_llama3_parameters for pair i of a head of `hs`, spelled out again.
double llama3_reference_freq(double theta, std::int64_t hs, std::int64_t i, double factor, double low,
                             double high, double context) {
  const double inv = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(hs));
  const double wavelen = 2.0 * 3.14159265358979323846 / inv;
  const double low_wavelen = context / low, high_wavelen = context / high;
  double f = wavelen > low_wavelen ? inv / factor : inv;
  const double smooth = (context / wavelen - low) / (high - low);
  const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
  if (medium) f = (1.0 - smooth) * f / factor + smooth * f;
  return f;
}

/// Sets every LoRA B of `m` to small random values, so merging changes the weights.
void perturb_adapters(gsq::Llama& m) {
  gsq::CounterRng rng(99, 1);
  for (const gsq::Parameter& p : m.parameters())
    if (p.name.find("lora_B") != std::string::npos)
      for (float& v : *p.value) v = 0.01f * rng.next_normal();
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("random checkpoint: several shards with an index and the same tensors as one file") {
    for (const bool tied : {false, true}) {
      CAPTURE(tied);
      const gsq::LlamaConfig c = small_config(tied);
      TempDir dir;
      gsq::RandomCheckpointOptions o;
      o.seed = 7;
      o.shard_bytes = 60000;
      const auto files = gsq::write_random_checkpoint(dir / "sharded", c, o);
      o.shard_bytes = 0;
      gsq::write_random_checkpoint(dir / "single", c, o);
      CHECK(std::filesystem::exists(dir / "single" / "model.safetensors"));
      CHECK(!std::filesystem::exists(dir / "single" / "model.safetensors.index.json"));

      const gsq::SafetensorsShards shards = gsq::SafetensorsShards::open(dir / "sharded");
      CHECK(shards.sharded());
      CHECK(shards.shard_count() >= 3);
      CHECK(std::filesystem::exists(dir / "sharded" / gsq::shard_file_name(0, shards.shard_count())));
      const nlohmann::json index =
          nlohmann::json::parse(gsq::test::read_text(dir / "sharded" / "model.safetensors.index.json"));
      CHECK(index["weight_map"].size() == gsq::llama_tensor_specs(c).size());

      const gsq::LlamaWeights a = gsq::read_hf_llama(dir / "sharded");
      const gsq::LlamaWeights b = gsq::load_llama(dir / "single");
      REQUIRE(a.tensors.size() == b.tensors.size());
      for (const auto& entry : a.tensors) {  // no structured binding: clang 14 cannot capture one
        const std::string& name = entry.first;
        const gsq::Tensor<float>& t = entry.second;
        CAPTURE(name);
        CHECK(same_bits(t, b.at(name)));
      }
      // Sensible values: projections ~N(0, 0.02) rounded to BF16, norms exactly 1.
      const gsq::Tensor<float>& q = a.at("model.layers.0.self_attn.q_proj.weight");
      double sum2 = 0;
      for (float v : q) sum2 += static_cast<double>(v) * v;
      CHECK(std::sqrt(sum2 / static_cast<double>(q.numel())) == doctest::Approx(0.02).epsilon(0.05));
      for (float v : a.at("model.norm.weight")) CHECK(v == 1.0f);
      // Another seed differs; the tokenizer loads with the model's vocabulary.
      o.seed = 8;
      gsq::write_random_checkpoint(dir / "other", c, o);
      CHECK(!same_bits(gsq::read_hf_llama(dir / "other").at("model.layers.1.mlp.up_proj.weight"),
                       a.at("model.layers.1.mlp.up_proj.weight")));
      CHECK(gsq::load_tokenizer(dir / "sharded")->vocab_size() == c.vocab_size);
      CHECK(files.back().filename() == "tokenizer.bin");
    }
  }

  TEST_CASE("streaming load: sharded NF4 equals single file equals quantizing the FP32 tensors") {
    for (const bool tied : {false, true})
      for (const bool dq : {false, true}) {
        CAPTURE(tied);
        CAPTURE(dq);
        const gsq::LlamaConfig c = small_config(tied);
        TempDir dir;
        gsq::RandomCheckpointOptions o;
        o.seed = 3;
        o.shard_bytes = 50000;
        gsq::write_random_checkpoint(dir / "sharded", c, o);
        o.shard_bytes = 0;
        gsq::write_random_checkpoint(dir / "single", c, o);

        gsq::LlamaOptions opts = gsq::LlamaOptions::uniform(gsq::Bits::w8a8g8(), gsq::WeightFormat::kNf4);
        opts.double_quant = dq;
        std::unique_ptr<gsq::Llama> built;
        {  // the source (and its SafetensorsShards) is gone before the model runs
          gsq::LlamaSource s1 = gsq::open_llama(dir / "sharded");
          built = std::make_unique<gsq::Llama>(s1.config, *s1.source, opts);
        }
        gsq::Llama& m1 = *built;
        gsq::LlamaSource s2 = gsq::open_llama(dir / "single" / "config.json");
        gsq::Llama m2(s2.config, *s2.source, opts);
        gsq::Llama m3(c, gsq::read_hf_llama(dir / "single").tensors, opts);
        const auto b1 = nf4_bytes(m1);
        CHECK(b1 == nf4_bytes(m2));
        CHECK(b1 == nf4_bytes(m3));
        const gsq::Tensor<float> l1 = logits_of(m1);
        CHECK(same_bits(l1, logits_of(m2)));
        CHECK(same_bits(l1, logits_of(m3)));
        // The streaming loads keep the BF16 tables as BF16 (the map holds FP32 copies):
        // half their bytes, the same logits; an untied embedding is not copied at all but
        // read from the mapped shard (it outlives the source), a tied one is the classifier.
        CHECK(m1.embedding().weight().is_bf16());
        CHECK(m1.embedding().weight().is_borrowed() == !tied);
        CHECK(m1.classifier_weight().is_bf16());
        CHECK(!m1.classifier_weight().is_borrowed());
        CHECK(!m3.embedding().weight().is_bf16());
        const std::int64_t fp32_tables = c.vocab_size * c.dim * 4 * (tied ? 1 : 2);
        const std::int64_t bf16_owned = c.vocab_size * c.dim * 2;  // the classifier (or tied table)
        CHECK(m3.weight_bytes() - m1.weight_bytes() == fp32_tables - bf16_owned);
      }
  }

  TEST_CASE("streaming load: a source hands each tensor over once and checks shapes") {
    TempDir dir;
    gsq::RandomCheckpointOptions o;
    o.shard_bytes = 0;
    gsq::write_random_checkpoint(dir.path(), small_config(false), o);
    std::unique_ptr<gsq::HfLlamaSource> s = gsq::open_hf_llama(dir.path());
    (void)s->take("model.norm.weight", {128});
    CHECK_THROWS_AS(s->take("model.norm.weight", {128}), gsq::Error);
    CHECK_THROWS_AS(s->take("model.layers.0.input_layernorm.weight", {64}), gsq::Error);
    CHECK(expect_io_error([&] { (void)s->take("model.layers.9.input_layernorm.weight", {128}); }).has_value());
    CHECK(expect_io_error([&] { s->finish(); }).has_value());  // most tensors never taken
  }

  TEST_CASE("sharded index: inconsistent index files are IoErrors naming the problem") {
    const gsq::LlamaConfig c = small_config(false);
    TempDir dir;
    gsq::RandomCheckpointOptions o;
    o.shard_bytes = 60000;
    gsq::write_random_checkpoint(dir.path(), c, o);
    const auto index_path = dir / "model.safetensors.index.json";
    const nlohmann::json good = nlohmann::json::parse(gsq::test::read_text(index_path));
    auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
      nlohmann::json j = good;
      edit(j);
      gsq::test::write_text(index_path, j.dump());
      return expect_io_error([&] { (void)gsq::read_hf_llama(dir.path()); });
    };
    const std::string first_shard = gsq::shard_file_name(0, gsq::SafetensorsShards::open(dir.path()).shard_count());
    // A tensor listed in the wrong shard.
    auto e = with([&](nlohmann::json& j) { j["weight_map"]["model.norm.weight"] = first_shard; });
    REQUIRE(e);
    CHECK(std::string(e->what()).find("model.norm.weight") != std::string::npos);
    // A shard tensor not listed at all.
    e = with([&](nlohmann::json& j) { j["weight_map"].erase("model.layers.0.mlp.up_proj.weight"); });
    CHECK(e.has_value());
    // Paths outside the directory, missing shard files, no weight_map.
    e = with([&](nlohmann::json& j) { j["weight_map"]["model.norm.weight"] = "../x.safetensors"; });
    REQUIRE(e);
    CHECK(std::string(e->what()).find("plain file name") != std::string::npos);
    e = with([&](nlohmann::json& j) { j["weight_map"]["model.norm.weight"] = "nope.safetensors"; });
    CHECK(e.has_value());
    e = with([&](nlohmann::json& j) { j.erase("weight_map"); });
    REQUIRE(e);
    CHECK(std::string(e->what()).find("weight_map") != std::string::npos);
    gsq::test::write_text(index_path, good.dump());
    CHECK(gsq::read_hf_llama(dir.path()).tensors.size() == gsq::llama_tensor_specs(c).size());
  }

  TEST_CASE("random checkpoint: named shapes are the published configs") {
    const gsq::LlamaConfig t = gsq::llama_shape("tinyllama-1.1b");
    CHECK(t.dim == 2048);
    CHECK(t.hidden_dim == 5632);
    CHECK(t.n_layers == 22);
    CHECK(t.n_kv_heads == 4);
    const gsq::LlamaConfig l3 = gsq::llama_shape("llama3-8b");
    CHECK(l3.vocab_size == 128256);
    CHECK(l3.n_kv_heads == 8);
    CHECK(l3.rope_theta == 500000.0f);
    CHECK(gsq::llama_shape("llama2-13b").n_layers == 40);
    CHECK(gsq::llama_shape("llama2-7b").hidden_dim == 11008);
    CHECK_THROWS_AS(gsq::llama_shape("gpt2"), gsq::Error);
  }

  TEST_CASE("hf config: the variants real models use load and build") {
    gsq::LlamaConfig base = small_config(false);
    // GQA, Llama-3 theta, eps, both tie settings, max positions.
    gsq::LlamaConfig c = parse_edited(base, [](nlohmann::json& j) {
      j["num_key_value_heads"] = 1;
      j["rope_theta"] = 500000.0;
      j["rms_norm_eps"] = 1e-6;
      j["max_position_embeddings"] = 8192;
      j["tie_word_embeddings"] = true;
      j["torch_dtype"] = "bfloat16";  // harmless keys are ignored
      j["initializer_range"] = 0.02;
      j["use_cache"] = true;
      j["pretraining_tp"] = 1;
    });
    CHECK(c.n_kv_heads == 1);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.norm_eps == 1e-6f);
    CHECK(c.max_seq_len == 8192);
    CHECK(c.tied_embeddings);
    CHECK(!c.rope_scaling.enabled());
    // Vocabularies of real models.
    for (std::int64_t vocab : {32000, 128256})
      CHECK(parse_edited(base, [&](nlohmann::json& j) { j["vocab_size"] = vocab; }).vocab_size == vocab);
    // Llama 3.1 rope scaling (and "type" spelled the old way); "default" is no scaling.
    c = parse_edited(base, [](nlohmann::json& j) {
      j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    });
    CHECK(c.rope_scaling.factor == 8.0);
    CHECK(c.rope_scaling.high_freq_factor == 4.0);
    CHECK(c.rope_scaling.original_max_positions == 8192);
    CHECK(parse_edited(base, [](nlohmann::json& j) {
            j["rope_scaling"] = {{"type", "llama3"}, {"factor", 2.0}, {"low_freq_factor", 1.0},
                                 {"high_freq_factor", 2.0}, {"original_max_position_embeddings", 64}};
          }).rope_scaling.factor == 2.0);
    CHECK(!parse_edited(base, [](nlohmann::json& j) { j["rope_scaling"] = {{"rope_type", "default"}}; })
               .rope_scaling.enabled());
    // Written back and read again, the scaling survives (config.json and gsq's own JSON).
    CHECK(parse_edited(c, [](nlohmann::json&) {}).rope_scaling == c.rope_scaling);
    CHECK(gsq::llama_config_from_json(gsq::llama_config_json(c), {"x", 0}).rope_scaling == c.rope_scaling);

    // Every variant as a generated model: loads streamed and runs.
    for (const bool tied : {false, true})
      for (const std::int64_t kv : {1, 2, 4}) {
        CAPTURE(tied);
        CAPTURE(kv);
        gsq::LlamaConfig v = small_config(tied);
        v.n_kv_heads = kv;
        v.rope_theta = 500000.0f;
        v.norm_eps = 1e-6f;
        v.rope_scaling = {4.0, 1.0, 4.0, 16};
        TempDir dir;
        gsq::RandomCheckpointOptions o;
        o.shard_bytes = 40000;
        gsq::write_random_checkpoint(dir.path(), v, o);
        gsq::LlamaSource s = gsq::open_llama(dir.path());
        CHECK(s.config.n_kv_heads == kv);
        CHECK(s.config.tied_embeddings == tied);
        CHECK(s.config.rope_scaling == v.rope_scaling);
        gsq::Llama m(s.config, *s.source, gsq::LlamaOptions::uniform(gsq::Bits::fp32(), gsq::WeightFormat::kNf4));
        const gsq::Tensor<float> logits = logits_of(m);
        bool finite = true;
        for (float x : logits) finite = finite && std::isfinite(x);
        CHECK(finite);
      }
  }

  TEST_CASE("rope: llama3 frequency scaling matches HF's formula and changes the model") {
    // Llama 3.1 8B: theta 500000, head 128, factor 8, low 1, high 4, context 8192 — pairs
    // of every regime (unchanged, smoothed, divided by the factor).
    const gsq::RopeScaling sc{8.0, 1.0, 4.0, 8192};
    const gsq::Rope rope(128, 8192, 500000.0f, gsq::RopeStyle::kHalf, sc);
    int unchanged = 0, scaled = 0, smoothed = 0;
    for (std::int64_t i = 0; i < 64; ++i) {
      const double f = llama3_reference_freq(500000.0, 128, i, 8.0, 1.0, 4.0, 8192.0);
      const double plain = 1.0 / std::pow(500000.0, static_cast<double>(2 * i) / 128.0);
      unchanged += f == plain;
      scaled += std::fabs(f - plain / 8.0) <= 1e-15 * plain;
      smoothed += f != plain && std::fabs(f - plain / 8.0) > 1e-15 * plain;
      for (std::int64_t p : {1, 17, 4095, 8191}) {
        CHECK(std::fabs(rope.cos_at(p, i) - std::cos(static_cast<double>(p) * f)) <= 1e-6);
        CHECK(std::fabs(rope.sin_at(p, i) - std::sin(static_cast<double>(p) * f)) <= 1e-6);
      }
    }
    CHECK(unchanged > 0);
    CHECK(scaled > 0);
    CHECK(smoothed > 0);
    CHECK_THROWS_AS(gsq::Rope(8, 4, 10000.0f, gsq::RopeStyle::kHalf, {0.5, 1.0, 4.0, 8}), gsq::Error);

    // Through a model: the same weights with and without scaling give different logits.
    gsq::LlamaConfig c = small_config(false);
    c.n_heads = 8;  // head 16: with a context of 16, pairs 0 / 1 / 2+ fall in the three regimes
    const gsq::LlamaTensors w = gsq::random_llama_weights(c, 4);
    auto copy = [&] {
      gsq::LlamaTensors t;
      for (const auto& [n, x] : w) t.emplace(n, x.clone());
      return t;
    };
    gsq::Llama plain(c, copy());
    c.rope_scaling = {4.0, 1.0, 4.0, 16};
    gsq::Llama scaled_model(c, copy());
    CHECK(!same_bits(logits_of(plain), logits_of(scaled_model)));
  }

  TEST_CASE("hf config: keys that change the math and are not implemented are refused by name") {
    const gsq::LlamaConfig base = small_config(false);
    const std::vector<std::pair<std::string, std::function<void(nlohmann::json&)>>> cases = {
        {"rope_scaling", [](nlohmann::json& j) { j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}}; }},
        {"rope_scaling", [](nlohmann::json& j) { j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}}; }},
        {"rope_scaling", [](nlohmann::json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; }},
        {"low_freq_factor", [](nlohmann::json& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; }},
        {"rope_scaling", [](nlohmann::json& j) {
           j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0},
                                {"high_freq_factor", 1.0}, {"original_max_position_embeddings", 8192}};
         }},
        {"attention_bias", [](nlohmann::json& j) { j["attention_bias"] = true; }},
        {"mlp_bias", [](nlohmann::json& j) { j["mlp_bias"] = true; }},
        {"hidden_act", [](nlohmann::json& j) { j["hidden_act"] = "gelu"; }},
        {"attention_dropout", [](nlohmann::json& j) { j["attention_dropout"] = 0.1; }},
        {"sliding_window", [](nlohmann::json& j) { j["sliding_window"] = 4096; }},
        {"model_type", [](nlohmann::json& j) { j["model_type"] = "mistral"; }},
        {"head_dim", [](nlohmann::json& j) { j["head_dim"] = 64; }},
    };
    for (const auto& entry : cases) {  // no structured binding: clang 14 cannot capture one
      const auto& key = entry.first;
      const auto& edit = entry.second;
      CAPTURE(key);
      const auto e = expect_io_error([&] { (void)parse_edited(base, edit); });
      REQUIRE(e);
      CHECK(std::string(e->what()).find(key) != std::string::npos);
    }
    CHECK(parse_edited(base, [](nlohmann::json& j) { j["attention_dropout"] = 0.0; }).dim == base.dim);
  }

  TEST_CASE("save base: the quantized base reloads without quantizing to the same model") {
    for (const bool tied : {false, true})
      for (const gsq::WeightFormat f : {gsq::WeightFormat::kNf4, gsq::WeightFormat::kGse, gsq::WeightFormat::kFp32})
        for (const bool dq : {false, true}) {
          if (dq && f != gsq::WeightFormat::kNf4) continue;
          CAPTURE(tied);
          CAPTURE(static_cast<int>(f));
          CAPTURE(dq);
          TempDir dir;
          gsq::RandomCheckpointOptions o;
          o.shard_bytes = 50000;
          gsq::write_random_checkpoint(dir / "model", small_config(tied), o);
          // An FP32 base under integer products is stored as GSE-INT by the layers: FP32 products.
          gsq::LlamaOptions opts =
              gsq::LlamaOptions::uniform(f == gsq::WeightFormat::kFp32 ? gsq::Bits::fp32() : gsq::Bits::w8a8g8(), f);
          opts.double_quant = dq;
          opts.adapter = gsq::ProjectionKind::kLora;
          gsq::LlamaSource s = gsq::open_llama(dir / "model");
          gsq::Llama m1(s.config, *s.source, opts);
          gsq::save_quantized_base(dir / "base.safetensors", m1, "tok.bin");
          CHECK(gsq::is_quantized_base_file(dir / "base.safetensors"));
          gsq::QuantizedBaseSource q(dir / "base.safetensors");
          CHECK(q.tokenizer() == "tok.bin");
          CHECK(q.config().tied_embeddings == tied);
          gsq::Llama m2(q.config(), q, opts);
          CHECK(m1.weight_bytes() == m2.weight_bytes());
          CHECK(same_bits(logits_of(m1), logits_of(m2)));
          // The random checkpoint is BF16: the frozen table stays BF16 through the saved base.
          CHECK(m1.embedding().weight().is_bf16());
          CHECK(m2.embedding().weight().is_bf16());
          CHECK(m1.embedding().weight().is_borrowed() == !tied);
          CHECK(m2.embedding().weight().is_borrowed() == !tied);
          CHECK(same_bits(m1.embedding().weight().widened(gsq::MemoryCategory::kScratch),
                          m2.embedding().weight().widened(gsq::MemoryCategory::kScratch)));
          // Asking for another stored form is an error that says what the file holds.
          gsq::LlamaOptions other = opts;
          other.base_format = f == gsq::WeightFormat::kNf4 ? gsq::WeightFormat::kFp32 : gsq::WeightFormat::kNf4;
          gsq::QuantizedBaseSource q2(dir / "base.safetensors");
          CHECK_THROWS_AS(gsq::Llama(q2.config(), q2, other), gsq::Error);
        }
  }

  TEST_CASE("streaming export: the merged model tensor by tensor equals the whole-model export") {
    for (const bool tied : {false, true}) {
      CAPTURE(tied);
      TempDir dir;
      gsq::RandomCheckpointOptions o;
      o.shard_bytes = 0;
      gsq::write_random_checkpoint(dir / "model", small_config(tied), o);
      gsq::LlamaOptions opts = gsq::LlamaOptions::uniform(gsq::Bits::fp32(), gsq::WeightFormat::kNf4);
      opts.adapter = gsq::ProjectionKind::kLora;
      gsq::LlamaSource s = gsq::open_llama(dir / "model");
      gsq::Llama m(s.config, *s.source, opts);
      perturb_adapters(m);
      // Untied: the embedding is borrowed from the mapped file, and every export below
      // drops its pages after writing it; the next export must read the same bytes back.
      CHECK(m.embedding().weight().is_borrowed() == !tied);
      const gsq::LlamaWeights whole = gsq::merged_llama_weights(m);
      gsq::write_hf_llama(dir / "old", whole);
      const auto files = gsq::write_merged_hf_llama(dir / "new", m);
      CHECK(files.size() == 2);
      CHECK(gsq::test::read_bytes(dir / "old" / "model.safetensors") ==
            gsq::test::read_bytes(dir / "new" / "model.safetensors"));
      CHECK(gsq::test::read_text(dir / "old" / "config.json") == gsq::test::read_text(dir / "new" / "config.json"));
      // Sharded, F32 and BF16: the same tensors (BF16: rounded) under an index.
      gsq::MergedHfOptions mo;
      mo.shard_bytes = 60000;
      gsq::write_merged_hf_llama(dir / "sharded", m, mo);
      CHECK(gsq::SafetensorsShards::open(dir / "sharded").shard_count() >= 3);
      const gsq::LlamaWeights back = gsq::read_hf_llama(dir / "sharded");
      for (const auto& entry : whole.tensors) {
        const std::string& name = entry.first;
        const gsq::Tensor<float>& t = entry.second;
        CAPTURE(name);
        CHECK(same_bits(t, back.at(name)));
      }
      mo.dtype = gsq::DType::kBF16;
      gsq::write_merged_hf_llama(dir / "bf16", m, mo);
      const gsq::LlamaWeights half = gsq::read_hf_llama(dir / "bf16");
      const gsq::Tensor<float>& q = whole.at("model.layers.1.self_attn.q_proj.weight");
      const gsq::Tensor<float>& qh = half.at("model.layers.1.self_attn.q_proj.weight");
      for (std::int64_t i = 0; i < q.numel(); ++i)
        REQUIRE(qh.data()[i] == gsq::bf16_to_float(gsq::float_to_bf16(q.data()[i])));
      // The BF16 tables are written as held (no rounding: they came from BF16).
      CHECK(same_bits(whole.at("model.embed_tokens.weight"), half.at("model.embed_tokens.weight")));
      if (!tied) CHECK(same_bits(whole.at("lm_head.weight"), half.at("lm_head.weight")));
    }
  }
}
