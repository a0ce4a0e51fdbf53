// PEFT adapter directories: PEFT key names and config fields, bitwise round trip into a
// fresh model, rejection of adapters that do not fit the model, corrupt files → IoError.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "gsq/core/error.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/adapter.hpp"
#include "gsq/io/json_file.hpp"
#include "gsq/io/safetensors.hpp"
#include "gsq/model/llama.hpp"
#include "io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

gsq::Llama tiny_model(gsq::ProjectionKind kind, std::vector<std::string> targets, std::uint64_t seed) {
  gsq::LlamaOptions o;
  o.adapter = kind;
  o.target_modules = std::move(targets);
  o.lora.rank = 4;
  o.lora.alpha = 8.0f;
  o.lora.seed = seed;
  o.l4q.rank = 4;
  o.l4q.alpha = 8.0f;
  o.l4q.quant_group = 16;
  o.l4q.seed = seed;
  const gsq::LlamaConfig c = gsq::test::tiny_llama_config();
  return gsq::Llama(c, gsq::random_llama_weights(c, 3), o);
}

void randomize(gsq::Llama& m, std::uint64_t seed) {
  std::uint64_t stream = 0;
  for (const gsq::Parameter& p : m.parameters()) {
    gsq::CounterRng rng(seed, stream++);
    for (float& v : *p.value) v += 0.05f * rng.next_normal();
  }
}

bool same_values(gsq::Llama& a, gsq::Llama& b) {
  const gsq::ParameterList pa = a.parameters(), pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (std::size_t i = 0; i < pa.size(); ++i)
    if (pa[i].name != pb[i].name ||
        !gsq::test::bitwise_equal(pa[i].value->data(), pb[i].value->data(), pa[i].value->numel()))
      return false;
  return true;
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("adapter: PEFT key names shapes and config fields") {
    gsq::test::TempDir dir;
    gsq::Llama m = tiny_model(gsq::ProjectionKind::kLora, {"q_proj", "v_proj", "gate_proj"}, 1);
    gsq::save_adapter(dir.path(), m, "stories260K");
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(dir / "adapter_model.safetensors");
    CHECK(st.entries().size() == 2u * 2u * 3u);
    const gsq::SafetensorsEntry* a = st.find("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
    const gsq::SafetensorsEntry* b = st.find("base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight");
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    CHECK(a->shape == std::vector<std::int64_t>{4, 32});
    CHECK(b->shape == std::vector<std::int64_t>{48, 4});
    CHECK(st.find("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight") == nullptr);
    const auto j = gsq::io::detail::read_json_file(dir / "adapter_config.json");
    CHECK(j["peft_type"] == "LORA");
    CHECK(j["task_type"] == "CAUSAL_LM");
    CHECK(j["r"] == 4);
    CHECK(j["lora_alpha"] == 8.0);
    CHECK(j["bias"] == "none");
    CHECK(j["fan_in_fan_out"] == false);
    CHECK(j["lora_dropout"] == 0.0);
    CHECK(j["base_model_name_or_path"] == "stories260K");
    CHECK(j["target_modules"] == std::vector<std::string>{"q_proj", "v_proj", "gate_proj"});
    const gsq::AdapterConfig c = gsq::read_adapter_config(dir.path());
    CHECK(c.method == "lora");
    CHECK(c.rank == 4);
    CHECK(c.target_modules.size() == 3);
  }

  TEST_CASE("adapter: LoRA and L4Q adapters load back bitwise into a fresh model") {
    for (gsq::ProjectionKind kind : {gsq::ProjectionKind::kLora, gsq::ProjectionKind::kL4q}) {
      CAPTURE(gsq::projection_kind_name(kind));
      gsq::test::TempDir dir;
      gsq::Llama trained = tiny_model(kind, {"q_proj", "k_proj", "down_proj"}, 1);
      randomize(trained, 7);
      gsq::save_adapter(dir.path(), trained);
      gsq::Llama fresh = tiny_model(kind, {"q_proj", "k_proj", "down_proj"}, 2);  // another init
      CHECK_FALSE(same_values(trained, fresh));
      gsq::load_adapter(dir.path(), fresh);
      CHECK(same_values(trained, fresh));
      // Same adapters, same forward.
      const std::vector<std::int32_t> ids = {1, 5, 9, 3, 7, 2};
      const gsq::Tensor<float> la = trained.forward(ids, 1), lb = fresh.forward(ids, 1);
      CHECK(gsq::test::bitwise_equal(la.data(), lb.data(), la.numel()));
    }
  }

  TEST_CASE("adapter: an adapter for other targets rank or method is rejected") {
    gsq::test::TempDir dir;
    gsq::Llama m = tiny_model(gsq::ProjectionKind::kLora, {"q_proj", "v_proj"}, 1);
    gsq::save_adapter(dir.path(), m);
    gsq::Llama other = tiny_model(gsq::ProjectionKind::kLora, {"q_proj"}, 1);
    CHECK_THROWS_AS(gsq::load_adapter(dir.path(), other), gsq::ConfigError);
    gsq::Llama l4q = tiny_model(gsq::ProjectionKind::kL4q, {"q_proj", "v_proj"}, 1);
    CHECK_THROWS_AS(gsq::load_adapter(dir.path(), l4q), gsq::ConfigError);
  }

  TEST_CASE("adapter: corrupt truncated or missing files are IoErrors naming the file") {
    gsq::test::TempDir dir;
    gsq::Llama m = tiny_model(gsq::ProjectionKind::kLora, {"q_proj"}, 1);
    gsq::save_adapter(dir.path(), m);
    const auto weights = gsq::test::read_bytes(dir / "adapter_model.safetensors");
    const auto config = gsq::test::read_text(dir / "adapter_config.json");
    gsq::Llama fresh = tiny_model(gsq::ProjectionKind::kLora, {"q_proj"}, 1);

    auto truncated = weights;
    truncated.resize(truncated.size() - 5);
    gsq::test::write_bytes(dir / "adapter_model.safetensors", truncated);
    auto e = gsq::test::expect_io_error([&] { gsq::load_adapter(dir.path(), fresh); });
    if (e) CHECK(std::string(e->what()).find("adapter_model.safetensors") != std::string::npos);

    gsq::test::write_bytes(dir / "adapter_model.safetensors", weights);
    gsq::test::write_text(dir / "adapter_config.json", config.substr(0, config.size() / 2));
    e = gsq::test::expect_io_error([&] { gsq::load_adapter(dir.path(), fresh); });
    if (e) CHECK(std::string(e->what()).find("adapter_config.json") != std::string::npos);

    std::filesystem::remove(dir / "adapter_config.json");
    gsq::test::expect_io_error([&] { gsq::load_adapter(dir.path(), fresh); });
  }
}
