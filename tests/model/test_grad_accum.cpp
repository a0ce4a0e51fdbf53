// Gradient accumulation: one optimizer step over N micro-batches of b rows is one step
// over a batch of N·b rows, up to the float order of the gradient sums; a single
// micro-batch is the plain step bit for bit.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "gsq/core/rng.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/trainer.hpp"
#include "gsq/model/weights.hpp"

namespace {

gsq::LlamaConfig accum_config() {
  gsq::LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 50;
  c.max_seq_len = 32;
  return c;
}

gsq::Llama accum_model() {
  const gsq::LlamaConfig c = accum_config();
  gsq::LlamaOptions o;
  o.adapter = gsq::ProjectionKind::kLora;
  o.lora.rank = 4;
  o.lora.alpha = 8.0f;
  return gsq::Llama(c, gsq::random_llama_weights(c, 5), o);
}

/// `rows` sequences of `seq` tokens; the second half of each counts, plus a few random holes.
gsq::OwnedBatch random_batch(std::int64_t rows, std::int64_t seq, std::uint64_t seed) {
  gsq::CounterRng rng(seed, 2);
  gsq::OwnedBatch b;
  b.rows = rows;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t t = 0; t < seq; ++t) {
      b.inputs.push_back(static_cast<std::int32_t>(rng.next_u32() % 50));
      b.targets.push_back(static_cast<std::int32_t>(rng.next_u32() % 50));
      b.mask.push_back(t >= seq / 2 && rng.next_u32() % 5 != 0 ? 1 : 0);
    }
  b.mask[static_cast<std::size_t>(seq - 1)] = 1;  // every batch's last column counts: no trimming
  b.mask[static_cast<std::size_t>(rows * seq - 1)] = 1;
  return b;
}

gsq::OwnedBatch concat(const gsq::OwnedBatch& a, const gsq::OwnedBatch& b) {
  gsq::OwnedBatch c = a;
  c.inputs.insert(c.inputs.end(), b.inputs.begin(), b.inputs.end());
  c.targets.insert(c.targets.end(), b.targets.begin(), b.targets.end());
  c.mask.insert(c.mask.end(), b.mask.begin(), b.mask.end());
  c.rows += b.rows;
  return c;
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("grad accum: two micro-batches of b rows equal one batch of 2b rows") {
    const gsq::OwnedBatch b1 = random_batch(2, 16, 1), b2 = random_batch(2, 16, 2);
    const gsq::OwnedBatch both = concat(b1, b2);
    gsq::TrainerConfig tc;
    tc.total_steps = 4;
    tc.lr = 1e-2f;
    gsq::Llama ma = accum_model(), mb = accum_model();
    gsq::Trainer ta(ma, tc), tb(mb, tc);
    for (int step = 0; step < 2; ++step) {
      const gsq::BatchView micro[2] = {gsq::batch_view(b1), gsq::batch_view(b2)};
      const gsq::TrainStep sa = ta.step(std::span<const gsq::BatchView>(micro, 2));
      const gsq::TrainStep sb = tb.step(gsq::batch_view(both));
      // Exact: the positions counted and run. At the first step the per-position losses
      // are the same bits (each row's forward is independent of the others), so only the
      // order of the double sum differs.
      CHECK(sa.counted == sb.counted);
      CHECK(sa.tokens == sb.tokens);
      // From the second step on, the parameters differ by the gradients' rounding.
      CHECK(sa.loss == doctest::Approx(sb.loss).epsilon(step == 0 ? 1e-12 : 1e-6));
      // Gradients: the weight gradients add the two halves' sums instead of one sum over
      // all tokens — equal up to float rounding.
      CHECK(sa.grad_norm == doctest::Approx(sb.grad_norm).epsilon(1e-5));
    }
    const gsq::ParameterList pa = ma.parameters(), pb = mb.parameters();
    REQUIRE(pa.size() == pb.size());
    double max_diff = 0, max_abs = 0;
    for (std::size_t i = 0; i < pa.size(); ++i)
      for (std::int64_t j = 0; j < pa[i].value->numel(); ++j) {
        max_diff = std::max(max_diff, static_cast<double>(std::fabs(pa[i].value->data()[j] - pb[i].value->data()[j])));
        max_abs = std::max(max_abs, static_cast<double>(std::fabs(pb[i].value->data()[j])));
      }
    CHECK(max_abs > 0.0);
    CHECK(max_diff <= 1e-5 * max_abs);
  }

  TEST_CASE("grad accum: one micro-batch is the plain step bit for bit") {
    const gsq::OwnedBatch b = random_batch(3, 12, 9);
    gsq::TrainerConfig tc;
    tc.total_steps = 3;
    gsq::Llama ma = accum_model(), mb = accum_model();
    gsq::Trainer ta(ma, tc), tb(mb, tc);
    const gsq::BatchView one[1] = {gsq::batch_view(b)};
    const gsq::TrainStep sa = ta.step(std::span<const gsq::BatchView>(one, 1));
    const gsq::TrainStep sb = tb.step(gsq::batch_view(b));
    CHECK(sa.loss == sb.loss);
    CHECK(sa.grad_norm == sb.grad_norm);
    const gsq::ParameterList pa = ma.parameters(), pb = mb.parameters();
    for (std::size_t i = 0; i < pa.size(); ++i)
      for (std::int64_t j = 0; j < pa[i].value->numel(); ++j) REQUIRE(pa[i].value->data()[j] == pb[i].value->data()[j]);
    CHECK_THROWS_AS(ta.step(std::span<const gsq::BatchView>()), gsq::Error);
  }
}
