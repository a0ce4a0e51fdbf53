// The real checkpoints against the float64 PyTorch goldens (shared/data/golden/README.md):
// final-position logits, prompt cross-entropy, perplexity over 256-token windows, greedy
// generation, and the integer model's loss next to the FP32 one. Skips visibly without
// the shared data.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/model/llama.hpp"
#include "support/test_support.hpp"

#if !__has_include("gsq/io/load_llama.hpp")
TEST_SUITE("model") {
  TEST_CASE("llama golden: skipped without the checkpoint loader") {
    MESSAGE("SKIPPED: gsq/io/load_llama.hpp is not in this tree; the golden model tests need it");
  }
}
#else
#include "gsq/io/load_llama.hpp"

namespace {

struct RealModel {
  const char* name;
  const char* checkpoint;  // a llama2.c .bin or a Hugging Face directory
  const char* golden;
  const char* greedy;
};

constexpr RealModel kModels[] = {
    {"stories260K", "models/stories260K/stories260K.bin", "golden/stories260K.json",
     "models/stories260K/reference_greedy.json"},
    {"tinystories-656K", "models/tinystories-656K", "golden/tinystories-656K.json",
     "models/tinystories-656K/reference_greedy.json"},
};

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

gsq::Llama load_model(const std::filesystem::path& path, const gsq::LlamaOptions& options = {}) {
  gsq::LlamaWeights w = gsq::load_llama(path);
  return gsq::Llama(w.config, std::move(w.tensors), options);
}

/// Σ NLL and count over non-overlapping windows of `ctx` tokens, each from position 0:
/// window k feeds ids[ctx·k, ctx·k + ctx) and predicts the next id of each (README).
gsq::CrossEntropyResult windowed_nll(gsq::Llama& model, const std::vector<std::int32_t>& ids,
                                     std::size_t ctx, std::size_t max_windows = SIZE_MAX) {
  gsq::CrossEntropyResult total;
  for (std::size_t start = 0, w = 0; start + 1 < ids.size() && w < max_windows; start += ctx, ++w) {
    const std::size_t n = std::min(ctx, ids.size() - 1 - start);
    const std::span<const std::int32_t> input(ids.data() + start, n);
    const std::span<const std::int32_t> targets(ids.data() + start + 1, n);
    const gsq::CrossEntropyResult r = model.loss(input, targets, {}, 1);
    total.sum += r.sum;
    total.count += r.count;
  }
  total.loss = total.sum / static_cast<double>(total.count);
  return total;
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("llama golden: final logits and prompt cross-entropy match PyTorch float64") {
    for (const RealModel& m : kModels) {
      const std::string name = m.name;
      CAPTURE(name);
      const auto ckpt = gsq::test::data_file(m.checkpoint);
      const auto golden_path = gsq::test::data_file(m.golden);
      if (!ckpt || !golden_path) continue;
      const nlohmann::json golden = read_json(*golden_path);
      gsq::Llama model = load_model(*ckpt);
      for (const auto& prompt : golden["prompts"]) {
        const auto ids = prompt["ids"].get<std::vector<std::int32_t>>();
        const auto expected = prompt["last_logits"].get<std::vector<double>>();
        const gsq::Tensor<float> logits = model.forward(ids, 1);
        const std::int64_t last = static_cast<std::int64_t>(ids.size()) - 1;
        REQUIRE(expected.size() == static_cast<std::size_t>(model.config().vocab_size));
        double max_abs = 0.0, max_rel = 0.0, max_logit = 0.0;
        for (std::size_t v = 0; v < expected.size(); ++v) {
          const double diff = std::fabs(logits(last, static_cast<std::int64_t>(v)) - expected[v]);
          max_abs = std::max(max_abs, diff);
          max_rel = std::max(max_rel, diff / std::max(std::fabs(expected[v]), 1e-3));
          max_logit = std::max(max_logit, std::fabs(expected[v]));
        }
        const auto tt = gsq::next_token_targets(ids, 1);
        const double ce = gsq::cross_entropy(logits, tt.targets, tt.mask).loss;
        const double golden_ce = prompt["mean_ce"].get<double>();
        MESSAGE(name << " prompt of " << ids.size() << " tokens: max |dlogit| " << max_abs
                       << " (max |logit| " << max_logit << ", max rel " << max_rel << "), CE "
                       << ce << " vs " << golden_ce);
        // The bound: within 1e-4 relative to the logits' scale (element-wise
        // relative error is meaningless for logits near zero; it is printed above).
        CHECK(max_abs <= 1e-4 * max_logit);
        CHECK(std::fabs(ce - golden_ce) <= 1e-4);
        const std::span<const float> row(logits.view().row(last), expected.size());
        CHECK(gsq::argmax_token(row) == prompt["argmax_last"].get<std::int32_t>());
      }
    }
  }

  TEST_CASE("llama golden: perplexity over 256-token windows matches PyTorch float64") {
    for (const RealModel& m : kModels) {
      const std::string name = m.name;
      CAPTURE(name);
      const auto ckpt = gsq::test::data_file(m.checkpoint);
      const auto golden_path = gsq::test::data_file(m.golden);
      if (!ckpt || !golden_path) continue;
      const nlohmann::json golden = read_json(*golden_path);
      const nlohmann::json& ppl = golden["ppl_text"];
      const auto ids = ppl["ids"].get<std::vector<std::int32_t>>();
      gsq::Llama model = load_model(*ckpt);
      const gsq::CrossEntropyResult r = windowed_nll(model, ids, ppl["ctx"].get<std::size_t>());
      const double perplexity = std::exp(r.loss);
      MESSAGE(name << ": mean NLL " << r.loss << " vs " << ppl["mean_nll"].get<double>()
                     << ", perplexity " << perplexity << " vs " << ppl["ppl"].get<double>()
                     << " over " << r.count << " tokens");
      CHECK(r.count == ppl["n_predicted"].get<std::int64_t>());
      CHECK(std::fabs(r.loss - ppl["mean_nll"].get<double>()) <= 1e-4);
      CHECK(perplexity == doctest::Approx(ppl["ppl"].get<double>()).epsilon(1e-4));
    }
  }

  TEST_CASE("llama golden: greedy generation reproduces the reference ids") {
    for (const RealModel& m : kModels) {
      const std::string name = m.name;
      CAPTURE(name);
      const auto ckpt = gsq::test::data_file(m.checkpoint);
      const auto ref_path = gsq::test::data_file(m.greedy);
      if (!ckpt || !ref_path) continue;
      const nlohmann::json ref = read_json(*ref_path);
      gsq::Llama model = load_model(*ckpt);
      const std::vector<std::int32_t> prompt = {ref["bos"].get<std::int32_t>()};
      gsq::GenerateOptions options;
      options.max_new_tokens = ref["steps"].get<std::int64_t>();
      options.stop_at_eos = false;
      const auto ids = model.generate(prompt, options);
      CHECK(ids == ref["greedy_ids"].get<std::vector<std::int32_t>>());
      // Logits of the first two steps, through the KV cache.
      gsq::KvCache kv = model.make_kv_cache(2);
      gsq::Tensor<float> logits({1, model.config().vocab_size});
      double worst = 0.0;
      for (int step = 0; step < 2; ++step) {
        const std::int32_t token = step == 0 ? prompt[0] : ids[0];
        model.forward_step(std::span(&token, 1), kv, logits.view());
        const auto expected = ref[step == 0 ? "logits_step0" : "logits_step1"].get<std::vector<double>>();
        for (std::size_t v = 0; v < expected.size(); ++v)
          worst = std::max(worst, std::fabs(logits[static_cast<std::int64_t>(v)] - expected[v]));
      }
      MESSAGE(name << ": greedy step logits max |dlogit| " << worst);
      CHECK(worst <= 1e-3);
    }
  }

  TEST_CASE("llama golden: the integer model's loss on real text is within 1 percent of FP32") {
    for (const RealModel& m : kModels) {
      const std::string name = m.name;
      CAPTURE(name);
      const auto ckpt = gsq::test::data_file(m.checkpoint);
      const auto golden_path = gsq::test::data_file(m.golden);
      if (!ckpt || !golden_path) continue;
      const auto ids = read_json(*golden_path)["ppl_text"]["ids"].get<std::vector<std::int32_t>>();
      gsq::Llama fp32 = load_model(*ckpt);
      const double reference = windowed_nll(fp32, ids, 256, 8).loss;
      // W8A8G8 attention and LoRA layers (rank 16, B = 0) on every projection.
      gsq::LlamaOptions options = gsq::LlamaOptions::uniform(gsq::Bits::w8a8g8());
      options.adapter = gsq::ProjectionKind::kLora;
      options.lora.rank = 16;
      options.lora.alpha = 32.0f;
      gsq::Llama int8 = load_model(*ckpt, options);
      const double integer = windowed_nll(int8, ids, 256, 8).loss;
      // The same with the base weights stored in NF4 (a different model: for information).
      options.base_format = gsq::WeightFormat::kNf4;
      gsq::Llama nf4 = load_model(*ckpt, options);
      const double nf4_loss = windowed_nll(nf4, ids, 256, 8).loss;
      MESSAGE(name << ": mean NLL over 8 windows: FP32 " << reference << ", W8A8G8 " << integer
                     << " (" << 100.0 * (integer - reference) / reference << "%), NF4 base + W8A8G8 "
                     << nf4_loss << " (" << 100.0 * (nf4_loss - reference) / reference << "%)");
      CHECK(std::fabs(integer - reference) <= 0.01 * reference);
      CHECK(integer != reference);  // the integer path ran
    }
  }
}
#endif  // __has_include("gsq/io/load_llama.hpp")
