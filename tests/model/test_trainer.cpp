// Trainer: one step is exactly forward → masked CE → backward → clip → AdamW at the
// scheduled rate; resuming from (parameters, optimizer state, sampler cursor) continues bit
// for bit; evaluation and multiple-choice scoring agree with hand-computed values.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/dataset.hpp"
#include "gsq/model/evaluate.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/trainer.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/optim/clip.hpp"
#include "support/test_support.hpp"

namespace {

gsq::LlamaConfig small_config() {
  gsq::LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 50;
  c.max_seq_len = 48;
  return c;
}

gsq::LlamaOptions lora_options(const gsq::Bits& bits, gsq::ProjectionKind kind = gsq::ProjectionKind::kLora) {
  gsq::LlamaOptions o = gsq::LlamaOptions::uniform(bits);
  o.adapter = kind;
  o.lora.rank = 4;
  o.lora.alpha = 8.0f;
  o.l4q.rank = 4;
  o.l4q.alpha = 8.0f;
  o.l4q.quant_group = 32;
  o.train_norms = true;  // a second optimizer group (no weight decay)
  return o;
}

gsq::Llama make_model(const gsq::Bits& bits, gsq::ProjectionKind kind = gsq::ProjectionKind::kLora) {
  const gsq::LlamaConfig c = small_config();
  return gsq::Llama(c, gsq::random_llama_weights(c, 11), lora_options(bits, kind));
}

/// Random examples of varying length; the first half of each is "prompt" (not counted).
std::vector<gsq::data::Example> random_examples(int n, std::uint64_t seed) {
  gsq::CounterRng rng(seed, 1);
  std::vector<gsq::data::Example> out;
  for (int i = 0; i < n; ++i) {
    gsq::data::Example ex;
    const int len = 12 + static_cast<int>(rng.next_u32() % 20);
    for (int t = 0; t < len; ++t) {
      ex.ids.push_back(static_cast<std::int32_t>(rng.next_u32() % 50));
      ex.loss_mask.push_back(t >= len / 2 ? 1 : 0);
    }
    out.push_back(std::move(ex));
  }
  return out;
}

/// A batch with no padding: every position predicts the next token and counts.
gsq::OwnedBatch dense_batch(std::int64_t rows, std::int64_t seq, std::uint64_t seed) {
  gsq::CounterRng rng(seed, 2);
  gsq::OwnedBatch b;
  b.rows = rows;
  for (std::int64_t i = 0; i < rows * seq; ++i) {
    b.inputs.push_back(static_cast<std::int32_t>(rng.next_u32() % 50));
    b.targets.push_back(static_cast<std::int32_t>(rng.next_u32() % 50));
    b.mask.push_back(1);
  }
  return b;
}

bool same_parameters(const gsq::ParameterList& a, const gsq::ParameterList& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value->numel() != b[i].value->numel()) return false;
    if (!gsq::test::bitwise_equal(a[i].value->data(), b[i].value->data(), a[i].value->numel()))
      return false;
  }
  return true;
}

/// Gives every LoRA B a random value (B starts at zero, which would make dA vanish).
void randomize_lora_b(gsq::Llama& model) {
  std::uint64_t stream = 0;
  for (const gsq::Parameter& p : model.parameters()) {
    if (p.name.find("lora_b") == std::string::npos) continue;
    gsq::CounterRng rng(5, stream++);
    for (float& v : *p.value) v = 0.05f * rng.next_normal();
  }
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("trainer: one step equals a hand-composed forward backward clip and AdamW") {
    for (const gsq::Bits& bits : {gsq::Bits::fp32(), gsq::Bits::w8a8g8()}) {
      CAPTURE(bits.name());
      gsq::Llama a = make_model(bits);
      gsq::Llama b = make_model(bits);
      randomize_lora_b(a);
      randomize_lora_b(b);
      gsq::TrainerConfig tc;
      tc.total_steps = 10;
      tc.lr = 3e-3f;
      tc.warmup_steps = 2;
      tc.weight_decay = 0.1f;
      tc.max_grad_norm = 0.05;  // small enough that clipping acts
      gsq::Trainer trainer(a, tc);
      const gsq::OwnedBatch batch = dense_batch(2, 16, 3);

      gsq::optim::AdamW opt_decayed({.lr = tc.lr, .weight_decay = tc.weight_decay});
      gsq::optim::AdamW opt_exempt({.lr = tc.lr, .weight_decay = 0.0f});

      // Two steps each way (the second uses the moments of the first).
      for (int s = 0; s < 2; ++s) {
        const gsq::TrainStep got = trainer.step(batch);

        gsq::Llama::Cache cache;
        const gsq::ParameterList params = b.parameters();
        const gsq::CrossEntropyResult ce =
            b.loss_and_backward(batch.inputs, batch.targets, batch.mask, batch.rows, cache);
        const double norm = gsq::optim::clip_grad_norm(params, tc.max_grad_norm);
        CHECK(norm > tc.max_grad_norm);
        const float lr = tc.schedule().at(s);
        gsq::ParameterList decayed, exempt;
        for (const gsq::Parameter& p : params)
          (p.name.find("norm") != std::string::npos ? exempt : decayed).push_back(p);
        REQUIRE(!exempt.empty());
        opt_decayed.set_lr(lr);
        opt_exempt.set_lr(lr);
        opt_decayed.step(decayed);
        opt_exempt.step(exempt);
        gsq::zero_grads(params);

        CHECK(got.step == s + 1);
        CHECK(got.loss == ce.loss);
        CHECK(got.counted == ce.count);
        CHECK(got.grad_norm == norm);
        CHECK(got.lr == lr);
        CHECK(same_parameters(a.parameters(), b.parameters()));
      }
    }
  }

  TEST_CASE("trainer: resuming from parameters optimizer state and cursor is bit-identical") {
    struct Case {
      gsq::ProjectionKind kind;
      std::int64_t l4q_warmup;  // L4Q: training forwards before quantization starts
      int stop_after;
    };
    // L4Q is interrupted inside its warm-up (2 of 3), on its last warm-up step (3 of 3) and
    // past it (5 of 3): the resumed layer must start quantizing at the same step.
    for (const Case c : {Case{gsq::ProjectionKind::kLora, 0, 5}, Case{gsq::ProjectionKind::kL4q, 0, 5},
                         Case{gsq::ProjectionKind::kL4q, 3, 2}, Case{gsq::ProjectionKind::kL4q, 3, 3},
                         Case{gsq::ProjectionKind::kL4q, 3, 5}}) {
      CAPTURE(gsq::projection_kind_name(c.kind));
      CAPTURE(c.l4q_warmup);
      CAPTURE(c.stop_after);
      const auto examples = random_examples(7, 9);  // not a multiple of the batch: epochs wrap
      gsq::TrainerConfig tc;
      tc.total_steps = 8;
      tc.lr = 2e-3f;
      tc.warmup_steps = 2;
      tc.weight_decay = 0.01f;
      auto model = [&] {
        const gsq::LlamaConfig cfg = small_config();
        gsq::LlamaOptions o = lora_options(gsq::Bits::w8a8g8(), c.kind);
        o.l4q.warmup_steps = c.l4q_warmup;
        return gsq::Llama(cfg, gsq::random_llama_weights(cfg, 11), o);
      };

      // Uninterrupted: 8 steps.
      gsq::Llama full = model();
      gsq::Trainer full_trainer(full, tc);
      gsq::data::BatchSampler full_sampler(examples, 3, 40, 4);
      for (int s = 0; s < 8; ++s) full_trainer.step(full_sampler.next());

      // Interrupted: keep the state and the cursor, drop everything else.
      gsq::TrainerState saved;
      gsq::data::BatchSampler::Cursor cursor;
      {
        gsq::Llama first = model();
        gsq::Trainer t(first, tc);
        gsq::data::BatchSampler sampler(examples, 3, 40, 4);
        for (int s = 0; s < c.stop_after; ++s) t.step(sampler.next());
        saved = t.state();
        cursor = sampler.cursor();
      }
      CHECK(saved.step == c.stop_after);
      gsq::Llama resumed = model();
      gsq::Trainer t(resumed, tc);
      t.load_state(saved);
      gsq::data::BatchSampler sampler(examples, 3, 40, 4);
      sampler.seek(cursor);
      gsq::TrainStep last;
      for (int s = c.stop_after; s < 8; ++s) last = t.step(sampler.next());
      CHECK(last.step == 8);
      CHECK(same_parameters(resumed.parameters(), full.parameters()));
      CHECK(t.state().optimizer.tensors.size() == full_trainer.state().optimizer.tensors.size());
    }
  }

  TEST_CASE("trainer: a step is bit-identical on 1 and 2 threads") {
    const gsq::OwnedBatch batch = dense_batch(2, 20, 8);
    std::vector<std::vector<float>> results;
    for (int threads : {1, 2}) {
      gsq::set_num_threads(threads);
      gsq::Llama m = make_model(gsq::Bits::w6a6g6());
      gsq::Trainer t(m, {.total_steps = 4, .lr = 1e-2f});
      t.step(batch);
      t.step(batch);
      std::vector<float> flat;
      for (const gsq::Parameter& p : m.parameters()) flat.insert(flat.end(), p.value->begin(), p.value->end());
      results.push_back(std::move(flat));
    }
    gsq::set_num_threads(0);
    REQUIRE(results[0].size() == results[1].size());
    CHECK(gsq::test::bitwise_equal(results[0].data(), results[1].data(),
                                   static_cast<std::int64_t>(results[0].size())));
  }

  TEST_CASE("trainer: trimming padding keeps the loss and cuts only uncounted columns") {
    const auto examples = random_examples(4, 21);
    std::vector<const gsq::data::Example*> ptrs;
    for (const auto& e : examples) ptrs.push_back(&e);
    const gsq::data::Batch padded = gsq::data::make_batch(ptrs, 40);
    const gsq::OwnedBatch trimmed = gsq::trim_batch(gsq::batch_view(padded));
    std::int64_t longest = 0;
    for (const auto& e : examples) longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(e.ids.size()) - 1);
    CHECK(trimmed.rows == 4);
    CHECK(static_cast<std::int64_t>(trimmed.inputs.size()) == 4 * longest);
    CHECK(gsq::batch_view(trimmed).counted() == padded.counted());

    gsq::Llama m = make_model(gsq::Bits::fp32());
    const gsq::CrossEntropyResult full = m.loss(padded.inputs, padded.targets, padded.mask, padded.rows);
    const gsq::EvalResult cut = gsq::evaluate_batch(m, gsq::batch_view(padded));
    CHECK(cut.tokens == full.count);
    CHECK(cut.nll_sum == doctest::Approx(full.sum).epsilon(1e-6));
  }

  TEST_CASE("trainer: the loss falls on a repeated batch and the rate follows the schedule") {
    gsq::Llama m = make_model(gsq::Bits::w8a8g8());
    gsq::TrainerConfig tc{.total_steps = 30, .lr = 1e-2f, .warmup_steps = 5};
    gsq::Trainer t(m, tc);
    const gsq::OwnedBatch batch = dense_batch(2, 24, 4);
    double first = 0.0, last = 0.0;
    for (int s = 0; s < 30; ++s) {
      const gsq::TrainStep r = t.step(batch);
      CHECK(r.lr == tc.schedule().at(s));
      CHECK(r.tokens == 48);
      if (s == 0) first = r.loss;
      last = r.loss;
    }
    CHECK(last < first - 0.1);
  }

  TEST_CASE("trainer: bad settings and batches are rejected with their error codes") {
    gsq::Llama m = make_model(gsq::Bits::fp32());
    CHECK_THROWS_AS(gsq::Trainer(m, {.total_steps = 0}), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::Trainer(m, {.total_steps = 10, .lr = -1.0f}), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::Trainer(m, {.total_steps = 10, .warmup_steps = 10}), gsq::ConfigError);
    gsq::Trainer t(m, {.total_steps = 10});
    gsq::OwnedBatch b = dense_batch(2, 8, 1);
    b.mask.pop_back();
    CHECK_THROWS_AS(t.step(b), gsq::ShapeError);
    const gsq::LlamaConfig c = small_config();
    gsq::Llama frozen(c, gsq::random_llama_weights(c, 1), gsq::LlamaOptions{});
    CHECK_THROWS_AS(gsq::Trainer(frozen, {.total_steps = 10}), gsq::ConfigError);
  }

  TEST_CASE("trainer: perplexity is the exponential of the mean masked NLL") {
    gsq::Llama m = make_model(gsq::Bits::w8a8g8());
    const auto examples = random_examples(5, 33);
    std::vector<gsq::data::Batch> batches;
    double sum = 0.0;
    std::int64_t count = 0;
    for (std::size_t i = 0; i < examples.size(); i += 2) {
      std::vector<const gsq::data::Example*> ptrs;
      for (std::size_t j = i; j < std::min(examples.size(), i + 2); ++j) ptrs.push_back(&examples[j]);
      batches.push_back(gsq::data::make_batch(ptrs, 40));
      const gsq::OwnedBatch tb = gsq::trim_batch(gsq::batch_view(batches.back()));
      const gsq::CrossEntropyResult ce = m.loss(tb.inputs, tb.targets, tb.mask, tb.rows);
      sum += ce.sum;
      count += ce.count;
    }
    const gsq::EvalResult r = gsq::evaluate(m, batches);
    CHECK(r.batches == 3);
    CHECK(r.tokens == count);
    CHECK(r.nll_sum == sum);
    CHECK(r.perplexity() == doctest::Approx(std::exp(sum / static_cast<double>(count))));
  }

  TEST_CASE("evaluate: continuation scores are sums of per-token log-probabilities") {
    gsq::Llama m = make_model(gsq::Bits::fp32());
    const std::vector<std::int32_t> prompt = {1, 7, 9, 3, 22};
    const std::vector<std::vector<std::int32_t>> cands = {{4, 5}, {6}, {8, 9, 10}};
    const gsq::ChoiceScores s = gsq::score_continuations(m, prompt, cands);
    REQUIRE(s.log_likelihood.size() == 3);
    std::vector<double> expected;
    for (std::size_t c = 0; c < cands.size(); ++c) {
      std::vector<std::int32_t> ids = prompt;
      ids.insert(ids.end(), cands[c].begin(), cands[c].end());
      const gsq::Tensor<float> logits = m.forward(ids, 1);
      double ll = 0.0;
      for (std::size_t j = 0; j < cands[c].size(); ++j) {
        const auto t = static_cast<std::int64_t>(prompt.size() - 1 + j);
        const float* row = logits.view().row(t);
        double z = 0.0;
        for (std::int64_t v = 0; v < logits.view().cols(); ++v) z += std::exp(static_cast<double>(row[v]));
        ll += static_cast<double>(row[cands[c][j]]) - std::log(z);
      }
      CHECK(s.log_likelihood[c] == doctest::Approx(ll).epsilon(1e-5));
      CHECK(s.tokens[c] == static_cast<std::int64_t>(cands[c].size()));
      expected.push_back(ll);
    }
    CHECK(s.best == std::max_element(expected.begin(), expected.end()) - expected.begin());
    CHECK_THROWS_AS(gsq::score_continuations(m, prompt, {{}}), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::score_continuations(m, prompt, {{99}}), gsq::ShapeError);
  }
}
