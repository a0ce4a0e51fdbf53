// The integer classifier (LlamaOptions::integer_classifier): in integer mode a frozen
// classifier runs logits = h·Wᵀ and dh = dlogits·W as GSE-INT GEMMs over a quantized
// copy of W. Checked against the FP32 classifier of the same model (forward and
// backward), switched off (bitwise the FP32 classifier), in generation, across threads
// and ISAs, in the memory accounting, and on the real stories260K when it is present.
// The BF16 float scope (classifier_bf16, attention_bf16) is checked against FP32 here too.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gsq/core/isa.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/model/llama.hpp"
#include "support/test_support.hpp"

#if __has_include("gsq/io/load_llama.hpp")
#include "gsq/io/load_llama.hpp"
#define GSQ_TEST_HAVE_LOADER 1
#else
#define GSQ_TEST_HAVE_LOADER 0
#endif

namespace {

// Wide enough that the classifier's k = dim spans several GSE groups of 32 and its
// backward k = vocab ends in a partial group.
gsq::LlamaConfig classifier_config(bool tied) {
  gsq::LlamaConfig c;
  c.dim = 96;
  c.hidden_dim = 160;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 203;
  c.max_seq_len = 32;
  c.tied_embeddings = tied;
  return c;
}

std::vector<std::int32_t> random_ids(std::int64_t n, std::int64_t vocab, std::uint64_t seed) {
  gsq::CounterRng rng(seed, 5);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng.next_u32() % static_cast<std::uint32_t>(vocab));
  return ids;
}

/// W8A8G8 everywhere, LoRA rank 4 on every projection with a random B (B = 0 would
/// leave the adapters' A without gradient).
gsq::LlamaOptions integer_options(bool integer_classifier,
                                  gsq::WeightFormat base = gsq::WeightFormat::kFp32) {
  gsq::LlamaOptions o = gsq::LlamaOptions::uniform(gsq::Bits::w8a8g8(), base);
  o.adapter = gsq::ProjectionKind::kLora;
  o.lora.rank = 4;
  o.train_norms = true;  // the final norm's gradient is Σ dh·x̂: dh shows in it
  o.integer_classifier = integer_classifier;
  return o;
}

void randomize_lora_b(gsq::Llama& model, std::uint64_t seed) {
  std::uint64_t stream = 0;
  for (const gsq::Parameter& p : model.parameters()) {
    if (p.name.find("lora_b") == std::string::npos) continue;
    gsq::CounterRng rng(seed, stream++);
    for (float& v : *p.value) v = 0.2f * rng.next_normal();
  }
}

double cosine(std::span<const float> a, std::span<const float> b) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}
std::span<const float> all_of(const gsq::Tensor<float>& t) {
  return {t.data(), static_cast<std::size_t>(t.numel())};
}

/// One training step's loss, logits and gradients (every parameter, in list order).
struct Step {
  double loss = 0.0;
  std::vector<float> logits;
  std::vector<float> grads;
  std::vector<float> norm_grad;  // model.norm.weight
};
Step train_step(gsq::Llama& model, std::span<const std::int32_t> ids, std::int64_t batch) {
  const auto tt = gsq::next_token_targets(ids, batch);
  gsq::Llama::Cache cache;
  Step s;
  const gsq::Tensor<float> logits = model.forward(ids, batch);
  s.logits.assign(logits.begin(), logits.end());
  s.loss = model.loss_and_backward(ids, tt.targets, tt.mask, batch, cache).loss;
  for (const gsq::Parameter& p : model.parameters()) {
    if (p.name == "model.norm.weight") s.norm_grad.assign(p.grad->begin(), p.grad->end());
    s.grads.insert(s.grads.end(), p.grad->begin(), p.grad->end());
  }
  return s;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         gsq::test::bitwise_equal(a.data(), b.data(), static_cast<std::int64_t>(a.size()));
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("llama classifier: integer logits and gradients track the FP32 classifier") {
    for (bool tied : {true, false}) {
      for (gsq::WeightFormat base : {gsq::WeightFormat::kFp32, gsq::WeightFormat::kNf4}) {
        CAPTURE(tied);
        CAPTURE(gsq::weight_format_name(base));
        const gsq::LlamaConfig config = classifier_config(tied);
        const std::int64_t batch = 2, seq = 13;
        const auto ids = random_ids(batch * seq, config.vocab_size, 11);
        gsq::Llama fp(config, gsq::random_llama_weights(config, 12), integer_options(false, base));
        gsq::Llama in(config, gsq::random_llama_weights(config, 12), integer_options(true, base));
        CHECK_FALSE(fp.has_integer_classifier());
        REQUIRE(in.has_integer_classifier());
        randomize_lora_b(fp, 13);
        randomize_lora_b(in, 13);
        const Step a = train_step(fp, ids, batch), b = train_step(in, ids, batch);
        // W8 weights and A8 activations in groups of 32 with a shared exponent: each
        // operand carries a relative error of at most 2^-7 of its group maximum, so the
        // logits' error is ~1e-2 of their scale and their cosine stays above 0.999
        // (1 - cos ≈ ½·relative error²). The backward product adds G8 dlogits, whose
        // small entries round to zero next to the group's largest; 0.99 leaves room for
        // that.
        const double logit_cos = cosine(a.logits, b.logits);
        const double grad_cos = cosine(a.grads, b.grads);
        const double norm_cos = cosine(a.norm_grad, b.norm_grad);
        MESSAGE("integer vs FP32 classifier: logits cosine " << logit_cos << ", d(final norm) cosine "
                                                             << norm_cos << ", all gradients cosine "
                                                             << grad_cos << ", loss " << b.loss
                                                             << " vs " << a.loss);
        CHECK(logit_cos >= 0.999);
        CHECK(norm_cos >= 0.99);
        CHECK(grad_cos >= 0.99);
        CHECK(b.loss == doctest::Approx(a.loss).epsilon(0.01));
        CHECK_FALSE(same_bits(a.logits, b.logits));  // the integer classifier really ran
      }
    }
  }

  TEST_CASE("llama classifier: switched off it is the FP32 classifier bitwise") {
    for (bool tied : {true, false}) {
      CAPTURE(tied);
      const gsq::LlamaConfig config = classifier_config(tied);
      const std::int64_t batch = 2, seq = 9;
      const auto ids = random_ids(batch * seq, config.vocab_size, 21);
      // A trainable classifier always runs in FP32 (the path from before the switch):
      // with the switch off the frozen one must give the same bits. The embedding's own
      // gradient is left out of the comparison (only the trainable model has one).
      gsq::LlamaOptions trainable = integer_options(true);
      trainable.train_embedding = true;
      gsq::Llama off(config, gsq::random_llama_weights(config, 22), integer_options(false));
      gsq::Llama ref(config, gsq::random_llama_weights(config, 22), trainable);
      CHECK_FALSE(off.has_integer_classifier());
      CHECK_FALSE(ref.has_integer_classifier());
      randomize_lora_b(off, 23);
      randomize_lora_b(ref, 23);
      const Step a = train_step(off, ids, batch);
      const Step b = train_step(ref, ids, batch);
      CHECK(a.loss == b.loss);
      CHECK(same_bits(a.logits, b.logits));
      CHECK(same_bits(a.norm_grad, b.norm_grad));
      std::vector<float> b_adapters;
      for (const gsq::Parameter& p : ref.parameters())
        if (p.name != "model.embed_tokens.weight" && p.name != "lm_head.weight")
          b_adapters.insert(b_adapters.end(), p.grad->begin(), p.grad->end());
      CHECK(same_bits(a.grads, b_adapters));
      // FP32 mode ignores the switch.
      gsq::LlamaOptions fp32 = gsq::LlamaOptions::uniform(gsq::Bits::fp32());
      gsq::Llama f(config, gsq::random_llama_weights(config, 22), fp32);
      CHECK_FALSE(f.has_integer_classifier());
    }
  }

  TEST_CASE("llama classifier: generation uses the integer classifier of forward") {
    const gsq::LlamaConfig config = classifier_config(true);
    gsq::Llama in(config, gsq::random_llama_weights(config, 31), integer_options(true));
    gsq::Llama fp(config, gsq::random_llama_weights(config, 31), integer_options(false));
    const auto ids = random_ids(10, config.vocab_size, 32);
    for (gsq::Llama* model : {&in, &fp}) {
      const gsq::Tensor<float> full = model->forward(ids, 1);
      // A prefill of the whole sequence runs the same products as the full forward.
      gsq::KvCache kv = model->make_kv_cache();
      gsq::Tensor<float> step({10, config.vocab_size});
      model->forward_step(ids, kv, step.view());
      CHECK(gsq::test::bitwise_equal(full.data(), step.data(), full.numel()));
    }
    const gsq::Tensor<float> a = in.forward(ids, 1), b = fp.forward(ids, 1);
    CHECK_FALSE(gsq::test::bitwise_equal(a.data(), b.data(), a.numel()));
  }

  TEST_CASE("llama classifier: one or two threads and every ISA give the same bits") {
    const gsq::LlamaConfig config = classifier_config(false);
    const std::int64_t batch = 3, seq = 11;
    const auto ids = random_ids(batch * seq, config.vocab_size, 41);
    for (gsq::WeightFormat base : {gsq::WeightFormat::kFp32, gsq::WeightFormat::kNf4}) {
      CAPTURE(gsq::weight_format_name(base));
      std::vector<Step> steps;
      gsq::test::for_each_isa([&](gsq::Isa) {
        for (int threads : {1, 2}) {
          gsq::set_num_threads(threads);
          gsq::Llama model(config, gsq::random_llama_weights(config, 42), integer_options(true, base));
          REQUIRE(model.has_integer_classifier());
          randomize_lora_b(model, 43);
          steps.push_back(train_step(model, ids, batch));
        }
      });
      gsq::set_num_threads(0);
      REQUIRE(!steps.empty());
      for (const Step& s : steps) {
        CHECK(s.loss == steps.front().loss);
        CHECK(same_bits(s.logits, steps.front().logits));
        CHECK(same_bits(s.grads, steps.front().grads));
      }
    }
  }

  TEST_CASE("llama classifier: the BF16 float scope tracks FP32 with the same bits at any thread count and ISA") {
    // classifier_bf16 and attention_bf16: BF16 operands, FP32 accumulation, softmax and
    // loss. Each operand carries a relative rounding error ≤ 2^-9, so the logits' error is
    // ~3e-3 of their scale (cosine > 0.9999) and the loss moves by far less than 1%. The
    // projections stay FP32 here: with GSE-INT ones the BF16 differences flip roundings of
    // the next quantization, which hides the products' own error.
    for (bool tied : {true, false}) {
      CAPTURE(tied);
      const gsq::LlamaConfig config = classifier_config(tied);
      const std::int64_t batch = 2, seq = 13;
      const auto ids = random_ids(batch * seq, config.vocab_size, 51);
      gsq::LlamaOptions fp32_scope = gsq::LlamaOptions::uniform(gsq::Bits::fp32());
      fp32_scope.adapter = gsq::ProjectionKind::kLora;
      fp32_scope.lora.rank = 4;
      fp32_scope.train_norms = true;
      gsq::LlamaOptions bf = fp32_scope;
      bf.classifier_bf16 = true;
      bf.attention_bf16 = true;
      gsq::Llama fp(config, gsq::random_llama_weights(config, 52), fp32_scope);
      randomize_lora_b(fp, 53);
      const Step a = train_step(fp, ids, batch);
      std::vector<Step> steps;
      gsq::test::for_each_isa([&](gsq::Isa) {
        for (int threads : {1, 2}) {
          gsq::set_num_threads(threads);
          gsq::Llama model(config, gsq::random_llama_weights(config, 52), bf);
          CHECK(model.attention().precision_name() == "bf16");
          randomize_lora_b(model, 53);
          steps.push_back(train_step(model, ids, batch));
        }
      });
      gsq::set_num_threads(0);
      REQUIRE(!steps.empty());
      const Step& b = steps.front();
      MESSAGE("BF16 vs FP32 classifier and attention: logits cosine " << cosine(a.logits, b.logits)
                                                                      << ", gradients cosine " << cosine(a.grads, b.grads)
                                                                      << ", loss " << b.loss << " vs " << a.loss);
      CHECK(cosine(a.logits, b.logits) >= 0.9999);
      CHECK(cosine(a.grads, b.grads) >= 0.999);
      CHECK(b.loss == doctest::Approx(a.loss).epsilon(0.002));
      CHECK_FALSE(same_bits(a.logits, b.logits));  // the BF16 products really ran
      for (const Step& s : steps) {
        CHECK(s.loss == b.loss);
        CHECK(same_bits(s.logits, b.logits));
        CHECK(same_bits(s.grads, b.grads));
      }
    }
  }

  TEST_CASE("llama classifier: its quantized copy is counted as weights") {
    const gsq::LlamaConfig config = classifier_config(true);
    const auto before = gsq::memory_usage();
    gsq::Llama in(config, gsq::random_llama_weights(config, 51), integer_options(true));
    const auto built = gsq::memory_usage();
    gsq::Llama fp(config, gsq::random_llama_weights(config, 51), integer_options(false));
    const std::int64_t extra = in.weight_bytes() - fp.weight_bytes();
    // W8 mantissas of vocab × dim plus one exponent per group: at least a byte each.
    CHECK(extra >= config.vocab_size * config.dim);
    CHECK(extra < config.vocab_size * config.dim * 4);  // smaller than the FP32 table
    CHECK(built.current_of(gsq::MemoryCategory::kWeights) -
              before.current_of(gsq::MemoryCategory::kWeights) >= in.weight_bytes());
    // Over an NF4 base the classifier's copy is still GSE-INT8 (NF4 costs loss there).
    gsq::Llama nf4_in(config, gsq::random_llama_weights(config, 51),
                      integer_options(true, gsq::WeightFormat::kNf4));
    gsq::Llama nf4_fp(config, gsq::random_llama_weights(config, 51),
                      integer_options(false, gsq::WeightFormat::kNf4));
    CHECK(nf4_in.weight_bytes() - nf4_fp.weight_bytes() == extra);
  }

  TEST_CASE("llama classifier: integer logits on stories260K track the FP32 classifier") {
#if GSQ_TEST_HAVE_LOADER
    const auto ckpt = gsq::test::data_file("models/stories260K/stories260K.bin");
    const auto golden = gsq::test::data_file("golden/stories260K.json");
    if (!ckpt || !golden) return;
    std::ifstream in(*golden);
    const auto text = nlohmann::json::parse(in)["ppl_text"]["ids"].get<std::vector<std::int32_t>>();
    REQUIRE(text.size() > 257);
    const std::vector<std::int32_t> ids(text.begin(), text.begin() + 256);
    const std::vector<std::int32_t> targets(text.begin() + 1, text.begin() + 257);
    for (gsq::WeightFormat base : {gsq::WeightFormat::kFp32, gsq::WeightFormat::kNf4}) {
      CAPTURE(gsq::weight_format_name(base));
      auto load = [&](bool integer_classifier) {
        gsq::LlamaWeights w = gsq::load_llama(*ckpt);
        gsq::LlamaOptions o = gsq::LlamaOptions::uniform(gsq::Bits::w8a8g8(), base);
        o.integer_classifier = integer_classifier;
        return gsq::Llama(w.config, std::move(w.tensors), o);
      };
      gsq::Llama fp = load(false), integer = load(true);
      // Over the NF4 base too the classifier copy is GSE-INT8: an NF4 one measured a
      // 2.6% higher NLL here (see Llama::make_classifier_weight).
      const gsq::Tensor<float> a = fp.forward(ids, 1), b = integer.forward(ids, 1);
      const double cos = cosine(all_of(a), all_of(b));
      const double la = gsq::cross_entropy(a, targets, {}).loss;
      const double lb = gsq::cross_entropy(b, targets, {}).loss;
      MESSAGE("stories260K, " << gsq::weight_format_name(base) << " base, 256 tokens: logits cosine "
                              << cos << ", loss " << lb << " (integer classifier) vs " << la
                              << " (FP32 classifier)");
      CHECK(cos >= 0.999);
      CHECK(std::fabs(lb - la) <= 0.005 * la);
    }
#else
    MESSAGE("SKIPPED: gsq/io/load_llama.hpp is not in this tree");
#endif
  }
}
