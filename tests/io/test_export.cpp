// Merged and quantized exports: HF and llama2.c merged models reload through gsq's
// loaders and give the base+adapter logits; the L4Q quantized file round-trips codes,
// steps and offsets bitwise and its FP32 twin is the forward's W_q; bad files → IoError.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gsq/core/error.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/export.hpp"
#include "gsq/io/hf_llama.hpp"
#include "gsq/io/llama2c.hpp"
#include "gsq/model/llama.hpp"
#include "io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

gsq::LlamaConfig tiny_config(bool tied) {
  gsq::LlamaConfig c = gsq::test::tiny_llama_config();
  c.tied_embeddings = tied;
  return c;
}

gsq::LlamaOptions adapter_options(gsq::ProjectionKind kind) {
  gsq::LlamaOptions o;
  o.adapter = kind;
  o.target_modules = {"q_proj", "k_proj", "o_proj", "up_proj", "down_proj"};
  o.lora.rank = 4;
  o.lora.alpha = 8.0f;
  o.l4q.rank = 4;
  o.l4q.alpha = 8.0f;
  o.l4q.quant_group = 16;
  return o;
}

void randomize(gsq::Llama& m, std::uint64_t seed) {
  std::uint64_t stream = 0;
  for (const gsq::Parameter& p : m.parameters()) {
    gsq::CounterRng rng(seed, stream++);
    for (float& v : *p.value) v += 0.1f * rng.next_normal();
  }
}

/// max |a - b| / max |b|.
double relative_error(const gsq::Tensor<float>& a, const gsq::Tensor<float>& b) {
  double num = 0.0, den = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a.data()[i]) - b.data()[i]));
    den = std::max(den, std::fabs(static_cast<double>(b.data()[i])));
  }
  return num / den;
}

const std::vector<std::int32_t> kIds = {1, 5, 9, 3, 7, 2, 11, 30};

}  // namespace

gsq::LlamaTensors clone_tensors(const gsq::LlamaWeights& w) {
  gsq::LlamaTensors t;
  for (const auto& [name, v] : w.tensors) t.emplace(name, v.clone());
  return t;
}

TEST_SUITE("io") {
  TEST_CASE("export: merged LoRA model reloads as HF and llama2.c with the adapter's logits") {
    for (bool tied : {true, false}) {
      CAPTURE(tied);
      gsq::test::TempDir dir;
      const gsq::LlamaConfig c = tiny_config(tied);
      gsq::Llama model(c, gsq::random_llama_weights(c, 5), adapter_options(gsq::ProjectionKind::kLora));
      randomize(model, 9);
      const gsq::Tensor<float> expected = model.forward(kIds, 2);
      gsq::Llama base(c, gsq::random_llama_weights(c, 5), {});
      const gsq::Tensor<float> base_logits = base.forward(kIds, 2);
      CHECK(relative_error(base_logits, expected) > 1e-3);  // the adapter changes the model

      const gsq::MergedExport r = gsq::export_merged(dir.path(), model);
      CHECK(r.files.size() == 3);
      const gsq::LlamaWeights hf = gsq::read_hf_llama(dir.path());
      CHECK(hf.config.rope_style == gsq::RopeStyle::kHalf);  // q/k rows permuted for HF
      CHECK(hf.config.tied_embeddings == tied);
      const gsq::LlamaWeights bin = gsq::read_llama2c(dir / "model.bin");
      for (const gsq::LlamaWeights* w : {&hf, &bin}) {
        CAPTURE(w->source);
        gsq::Llama merged(w->config, clone_tensors(*w), {});
        const gsq::Tensor<float> got = merged.forward(kIds, 2);
        CHECK(relative_error(got, expected) < 1e-5);
      }
      // The merged weight itself is W0 + (alpha/r)·B·A.
      const gsq::LlamaWeights mw = gsq::merged_llama_weights(model);
      const gsq::LoraLinear* q = model.projection(1, "q_proj").get_if<gsq::LoraLinear>();
      REQUIRE(q != nullptr);
      const gsq::Tensor<float> w = q->merged_weight();
      CHECK(gsq::test::bitwise_equal(w.data(), mw.at("model.layers.1.self_attn.q_proj.weight").data(), w.numel()));
    }
  }

  TEST_CASE("export: L4Q quantized file round-trips bitwise and its twin is the forward's weight") {
    gsq::test::TempDir dir;
    const gsq::LlamaConfig c = tiny_config(true);
    gsq::Llama model(c, gsq::random_llama_weights(c, 5), adapter_options(gsq::ProjectionKind::kL4q));
    randomize(model, 9);
    const gsq::Tensor<float> expected = model.forward(kIds, 2);
    const gsq::L4qQuantizedModel q = gsq::l4q_quantized_model(model);
    CHECK(q.quantized.size() == 2u * 5u);
    gsq::write_l4q_quantized(dir / "model.l4q.safetensors", q);
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(dir / "model.l4q.safetensors");
    CHECK(st.metadata().at("format") == "gsq-l4q");
    CHECK(st.metadata().at("bits") == "4");
    CHECK(st.metadata().at("group_size") == "16");
    CHECK(st.at("model.layers.0.mlp.down_proj.qweight").dtype == gsq::DType::kI8);
    CHECK(st.at("model.layers.0.mlp.down_proj.scales").shape == std::vector<std::int64_t>{32, 3});

    const gsq::L4qQuantizedModel back = gsq::read_l4q_quantized(dir / "model.l4q.safetensors");
    CHECK(back.spec == q.spec);
    CHECK(back.quantized.size() == q.quantized.size());
    bool codes_equal = true;
    for (const auto& [name, m] : q.quantized) {
      const gsq::UniformMatrix& b = back.quantized.at(name);
      for (std::int64_t r = 0; r < m.rows(); ++r) {
        for (std::int64_t k = 0; k < m.cols(); ++k) codes_equal = codes_equal && m.code(r, k) == b.code(r, k);
        codes_equal = codes_equal && gsq::test::bitwise_equal(m.step_row(r), b.step_row(r), m.groups_per_row()) &&
                      gsq::test::bitwise_equal(m.offset_row(r), b.offset_row(r), m.groups_per_row());
      }
    }
    CHECK(codes_equal);
    // The FP32 twin is exactly merge().weight, and runs as the model's forward did.
    const gsq::LlamaWeights twin = back.dequantized();
    const gsq::L4qLinear* p = model.projection(0, "up_proj").get_if<gsq::L4qLinear>();
    REQUIRE(p != nullptr);
    const gsq::L4qMerged merged = p->merge();
    CHECK(gsq::test::bitwise_equal(merged.weight.data(), twin.at("model.layers.0.mlp.up_proj.weight").data(),
                                   merged.weight.numel()));
    gsq::Llama deployed(c, clone_tensors(twin), {});
    CHECK(relative_error(deployed.forward(kIds, 2), expected) < 1e-5);

    // export_merged writes the quantized file plus the twin in both formats.
    const gsq::MergedExport r = gsq::export_merged(dir / "out", model);
    CHECK(r.files.size() == 4);
    const gsq::LlamaWeights hf = gsq::read_hf_llama(dir / "out");
    gsq::Llama from_hf(hf.config, clone_tensors(hf), {});
    CHECK(relative_error(from_hf.forward(kIds, 2), expected) < 1e-5);
  }

  TEST_CASE("export: damaged L4Q files are IoErrors") {
    gsq::test::TempDir dir;
    const gsq::LlamaConfig c = tiny_config(true);
    gsq::Llama model(c, gsq::random_llama_weights(c, 5), adapter_options(gsq::ProjectionKind::kL4q));
    const gsq::L4qQuantizedModel q = gsq::l4q_quantized_model(model);
    const auto path = dir / "m.safetensors";
    gsq::write_l4q_quantized(path, q);
    const auto bytes = gsq::test::read_bytes(path);
    const gsq::SafetensorsFile st = gsq::SafetensorsFile::open(path);
    const std::int64_t code_at = st.at("model.layers.1.self_attn.q_proj.qweight").begin;

    auto bad_code = bytes;
    bad_code[static_cast<std::size_t>(code_at)] = 0x7f;  // 127: outside 4 bits
    gsq::test::write_bytes(path, bad_code);
    gsq::test::expect_io_error([&] { (void)gsq::read_l4q_quantized(path); });

    auto truncated = bytes;
    truncated.resize(bytes.size() / 2);
    gsq::test::write_bytes(path, truncated);
    gsq::test::expect_io_error([&] { (void)gsq::read_l4q_quantized(path); });

    // A float safetensors file is not an L4Q model.
    gsq::write_safetensors(path, std::map<std::string, gsq::Tensor<float>>{});
    gsq::test::expect_io_error([&] { (void)gsq::read_l4q_quantized(path); });
  }
}
