// Hugging Face LLaMA directories: config.json parsing, tied embeddings, shape checks.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gsq/io/hf_llama.hpp"
#include "gsq/io/load_llama.hpp"
#include "io/io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::test::expect_io_error;

const char* kTinyConfig = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
  "max_position_embeddings": 16, "rms_norm_eps": 1e-06, "rope_theta": 500000.0,
  "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": [2, 3],
  "rope_scaling": null, "attention_bias": false
})";

gsq::LlamaConfig parse_config(const std::string& text) {
  return gsq::parse_hf_config(gsq::MappedFile::from_bytes(
      std::vector<std::uint8_t>(text.begin(), text.end()), "config.json"));
}

// A random model for `config`, as canonical name → tensor.
std::map<std::string, gsq::Tensor<float>> random_tensors(const gsq::LlamaConfig& c) {
  std::map<std::string, gsq::Tensor<float>> t;
  std::uint64_t seed = 10;
  for (const gsq::LlamaTensorSpec& s : gsq::llama_tensor_specs(c)) {
    gsq::Tensor<float> x = gsq::make_tensor<float>(s.shape, gsq::MemoryCategory::kWeights, s.name);
    const gsq::Tensor<float> r = gsq::test::random_matrix(1, x.numel(), seed++);
    std::copy(r.begin(), r.end(), x.begin());
    t.emplace(s.name, std::move(x));
  }
  return t;
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("hf config: fields defaults and RoPE style") {
    const gsq::LlamaConfig c = parse_config(kTinyConfig);
    CHECK(c.dim == 8);
    CHECK(c.hidden_dim == 12);
    CHECK(c.n_layers == 1);
    CHECK(c.n_heads == 2);
    CHECK(c.n_kv_heads == 1);
    CHECK(c.vocab_size == 10);
    CHECK(c.max_seq_len == 16);
    CHECK(c.norm_eps == 1e-6f);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.rope_style == gsq::RopeStyle::kHalf);
    CHECK_FALSE(c.tied_embeddings);
    CHECK(c.eos_id == 2);
    // Absent optional fields take Hugging Face's defaults.
    const gsq::LlamaConfig d = parse_config(
        R"({"hidden_size": 8, "intermediate_size": 4, "num_hidden_layers": 1, "num_attention_heads": 4,
            "vocab_size": 5, "max_position_embeddings": 3})");
    CHECK(d.n_kv_heads == 4);
    CHECK(d.norm_eps == 1e-6f);
    CHECK(d.rope_theta == 10000.0f);
    CHECK_FALSE(d.tied_embeddings);
  }

  TEST_CASE("hf config: bad and unsupported configs are IoErrors naming the field") {
    nlohmann::json base = nlohmann::json::parse(kTinyConfig);
    struct Case {
      const char* key;
      nlohmann::json value;
      const char* expect;  // part of the message
    };
    const std::vector<Case> cases = {
        {"hidden_size", nullptr, "hidden_size"},
        {"hidden_size", "8", "hidden_size"},
        {"hidden_size", 8.5, "hidden_size"},
        {"hidden_size", -8, "hidden_size"},
        {"hidden_size", 4294967296LL, "hidden_size"},
        {"num_key_value_heads", 3, "n_kv_heads"},
        {"num_attention_heads", 3, "multiple"},
        {"rms_norm_eps", 0, "rms_norm_eps"},
        {"rope_theta", "big", "rope_theta"},
        {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}, "rope_scaling"},
        {"attention_bias", true, "attention_bias"},
        {"hidden_act", "gelu", "hidden_act"},
        {"model_type", "gpt2", "model_type"},
        {"head_dim", 8, "head_dim"},
        {"eos_token_id", 99, "eos_token_id"},
        {"tie_word_embeddings", "yes", "tie_word_embeddings"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.key);
      nlohmann::json j = base;
      if (c.value.is_null()) {
        j.erase(c.key);
      } else {
        j[c.key] = c.value;
      }
      const auto e = expect_io_error([&] { (void)parse_config(j.dump()); });
      REQUIRE(e.has_value());
      CHECK(e->file() == "config.json");
      const std::string what = e->what();
      CAPTURE(what);
      CHECK((what.find(c.expect) != std::string::npos || (std::string(c.expect) == "n_kv_heads" &&
                                                          what.find("multiple") != std::string::npos)));
    }
    for (const std::string text : {"", "[]", "{", "{\"hidden_size\": 8,}", "\xff"}) {
      CAPTURE(text);
      CHECK(expect_io_error([&] { (void)parse_config(text); }).has_value());
    }
  }

  TEST_CASE("hf llama: tinystories-656K loads with tied embeddings from lm_head") {
    const auto dir = gsq::test::data_file("models/tinystories-656K");
    const auto golden_path = gsq::test::data_file("golden/tinystories-656K.json");
    if (!dir || !golden_path) return;
    const gsq::LlamaWeights w = gsq::load_llama(*dir);
    const gsq::LlamaConfig& c = w.config;
    const nlohmann::json g = nlohmann::json::parse(std::ifstream(*golden_path))["config"];
    gsq::test::check_config_matches_golden(c, g);
    CHECK(g["rope_style"] == "half");
    CHECK(c.rope_style == gsq::RopeStyle::kHalf);
    CHECK(c.bos_id == 1);
    CHECK(c.eos_id == 2);
    CHECK(w.tensors.size() == 20);
    CHECK(w.tensors.count("lm_head.weight") == 0);
    CHECK(w.parameter_count() == 656000);
    // The embedding is the stored lm_head, value for value.
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(*dir / "model.safetensors");
    const gsq::Tensor<float> head = st.to_float("lm_head.weight");
    const gsq::Tensor<float>& emb = w.at("model.embed_tokens.weight");
    CHECK(gsq::tensor_shape(emb) == std::vector<std::int64_t>{2048, 128});
    CHECK(gsq::test::bitwise_equal(emb.data(), head.data(), head.numel()));
    // q/k rows as stored (no permutation).
    const gsq::Tensor<float> q = st.to_float("model.layers.1.self_attn.q_proj.weight");
    CHECK(gsq::test::bitwise_equal(w.at("model.layers.1.self_attn.q_proj.weight").data(), q.data(), q.numel()));
    // The same through the file paths load_llama accepts.
    CHECK(gsq::load_llama(*dir / "config.json").tensors.size() == 20);
    CHECK(gsq::load_llama(*dir / "model.safetensors").parameter_count() == 656000);
  }

  TEST_CASE("hf llama: a written directory reads back bitwise untied and as BF16") {
    gsq::test::TempDir dir;
    gsq::test::write_text(dir / "config.json", kTinyConfig);
    const gsq::LlamaConfig c = parse_config(kTinyConfig);
    const auto tensors = random_tensors(c);
    gsq::write_safetensors(dir / "model.safetensors", tensors);
    const gsq::LlamaWeights w = gsq::load_llama(dir.path());
    CHECK(w.tensors.size() == tensors.size());
    CHECK(w.tensors.count("lm_head.weight") == 1);
    for (const auto& kv : tensors) {
      const std::string& name = kv.first;  // a plain reference: CAPTURE captures it (clang 14)
      const gsq::Tensor<float>& t = kv.second;
      CAPTURE(name);
      CHECK(gsq::test::bitwise_equal(w.at(name).data(), t.data(), t.numel()));
    }
    // Old checkpoints' rotary buffers are ignored; any other extra tensor is an error.
    auto extra = random_tensors(c);
    extra.emplace("model.layers.0.self_attn.rotary_emb.inv_freq", gsq::Tensor<float>({2}));
    gsq::write_safetensors(dir / "model.safetensors", extra);
    CHECK(gsq::load_llama(dir.path()).tensors.size() == tensors.size());
    extra.emplace("model.layers.0.self_attn.q_proj.bias", gsq::Tensor<float>({8}));
    gsq::write_safetensors(dir / "model.safetensors", extra);
    const auto e = expect_io_error([&] { (void)gsq::load_llama(dir.path()); });
    REQUIRE(e.has_value());
    CHECK(std::string(e->what()).find("q_proj.bias") != std::string::npos);
  }

  TEST_CASE("hf llama: a misshapen or missing tensor names the tensor and the file") {
    gsq::test::TempDir dir;
    gsq::test::write_text(dir / "config.json", kTinyConfig);
    const gsq::LlamaConfig c = parse_config(kTinyConfig);
    auto tensors = random_tensors(c);
    tensors.erase("model.layers.0.mlp.up_proj.weight");
    tensors.emplace("model.layers.0.mlp.up_proj.weight", gsq::Tensor<float>({8, 12}));  // transposed
    gsq::write_safetensors(dir / "model.safetensors", tensors);
    try {
      (void)gsq::load_llama(dir.path());
      FAIL("no throw");
    } catch (const gsq::ShapeError& e) {
      const std::string what = e.what();
      CHECK(what.find("up_proj") != std::string::npos);
      CHECK(what.find("model.safetensors") != std::string::npos);
      CHECK(what.find("[8, 12]") != std::string::npos);
    }
    tensors.erase("model.layers.0.mlp.up_proj.weight");
    gsq::write_safetensors(dir / "model.safetensors", tensors);
    const auto e = expect_io_error([&] { (void)gsq::load_llama(dir.path()); });
    REQUIRE(e.has_value());
    CHECK(std::string(e->what()).find("up_proj") != std::string::npos);
    CHECK(e->file().find("model.safetensors") != std::string::npos);
  }

  TEST_CASE("hf llama: tied embeddings resolve through metadata or lm_head") {
    nlohmann::json tied_json = nlohmann::json::parse(kTinyConfig);
    tied_json["tie_word_embeddings"] = true;
    const std::string tied_config = tied_json.dump();
    gsq::test::TempDir dir;
    gsq::test::write_text(dir / "config.json", tied_config);
    const gsq::LlamaConfig c = parse_config(tied_config);
    auto tensors = random_tensors(c);
    const gsq::Tensor<float> emb = tensors.at("model.embed_tokens.weight").clone();
    // 1) only lm_head stored, with the alias in __metadata__ (the tinystories-656K layout)
    auto only_head = random_tensors(c);
    only_head.erase("model.embed_tokens.weight");
    only_head.emplace("lm_head.weight", emb.clone());
    gsq::write_safetensors(dir / "model.safetensors", only_head, {{"model.embed_tokens.weight", "lm_head.weight"}});
    gsq::LlamaWeights w = gsq::load_llama(dir.path());
    CHECK(w.tensors.count("lm_head.weight") == 0);
    CHECK(gsq::test::bitwise_equal(w.at("model.embed_tokens.weight").data(), emb.data(), emb.numel()));
    // 2) both stored: the embedding wins, lm_head is not exposed
    tensors.emplace("lm_head.weight", gsq::Tensor<float>({10, 8}));
    gsq::write_safetensors(dir / "model.safetensors", tensors);
    w = gsq::load_llama(dir.path());
    CHECK(w.tensors.count("lm_head.weight") == 0);
    CHECK(gsq::test::bitwise_equal(w.at("model.embed_tokens.weight").data(), emb.data(), emb.numel()));
  }
}
