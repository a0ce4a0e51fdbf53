// What a training step keeps between forward and backward: q/k/v and the MLP's g/u
// rebuilt from the projections' caches (recompute_projections), whole blocks rerun from
// their inputs (recompute_blocks). Either must give the bits of the fully cached step —
// loss, every gradient — while the cache shrinks.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gsq/core/rng.hpp"
#include "gsq/model/llama.hpp"
#include "support/test_support.hpp"

namespace {

gsq::LlamaConfig memory_config() {
  gsq::LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 41;
  c.max_seq_len = 40;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_style = gsq::RopeStyle::kHalf;
  return c;
}

std::vector<std::int32_t> ids_of(std::int64_t n, std::int64_t vocab, std::uint64_t seed) {
  gsq::CounterRng rng(seed, 5);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng.next_u32() % static_cast<std::uint32_t>(vocab));
  return ids;
}

struct StepResult {
  double loss = 0;
  std::vector<float> grads;
  std::int64_t cache_bytes = 0;
  std::int64_t block_bytes = 0;  // one fully cached block (blocks[0] without checkpointing)
};

StepResult train_step(const gsq::Bits& bits, bool recompute_projections, bool recompute_blocks,
                      gsq::WeightFormat base, std::int64_t batch, std::int64_t seq) {
  const gsq::LlamaConfig config = memory_config();
  gsq::LlamaOptions options = gsq::LlamaOptions::uniform(bits, base);
  options.adapter = gsq::ProjectionKind::kLora;
  options.lora.rank = 4;
  options.recompute_projections = recompute_projections;
  options.recompute_blocks = recompute_blocks;
  gsq::Llama model(config, gsq::random_llama_weights(config, 7), options);
  std::uint64_t stream = 0;
  for (const gsq::Parameter& p : model.parameters()) {  // B ≠ 0, so every path matters
    if (p.name.find("lora_b") == std::string::npos) continue;
    gsq::CounterRng rng(8, stream++);
    for (float& v : *p.value) v = 0.2f * rng.next_normal();
  }
  const auto ids = ids_of(batch * seq, config.vocab_size, 9);
  const auto tt = gsq::next_token_targets(ids, batch);
  gsq::Llama::Cache cache;
  StepResult r;
  for (int step = 0; step < 2; ++step) {  // the second step reuses the cache
    model.zero_grad();
    r.loss = model.loss_and_backward(ids, tt.targets, tt.mask, batch, cache).loss;
  }
  for (const gsq::Parameter& p : model.parameters()) r.grads.insert(r.grads.end(), p.grad->begin(), p.grad->end());
  r.cache_bytes = cache.bytes();
  r.block_bytes = recompute_blocks ? cache.work.bytes() : cache.blocks[0].bytes();
  return r;
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("llama memory: recomputed projections and checkpointed blocks give the cached step's bits") {
    for (const gsq::Bits& bits : {gsq::Bits::w8a8g8(), gsq::Bits::w5a5g5(), gsq::Bits::fp32()}) {
      const gsq::WeightFormat base = bits.is_fp32() ? gsq::WeightFormat::kFp32 : gsq::WeightFormat::kNf4;
      for (std::int64_t seq : {1, 17, 33}) {
        CAPTURE(bits.name());
        CAPTURE(seq);
        const StepResult full = train_step(bits, false, false, base, 2, seq);
        const StepResult lean = train_step(bits, true, false, base, 2, seq);
        const StepResult ckpt = train_step(bits, true, true, base, 2, seq);
        const StepResult ckpt_full = train_step(bits, false, true, base, 2, seq);
        for (const StepResult* r : {&lean, &ckpt, &ckpt_full}) {
          CHECK(r->loss == full.loss);
          REQUIRE(r->grads.size() == full.grads.size());
          CHECK(gsq::test::bitwise_equal(r->grads.data(), full.grads.data(),
                                         static_cast<std::int64_t>(full.grads.size())));
        }
        // Dropping q, k, v, g and u shrinks every block's cache.
        CHECK(lean.cache_bytes < full.cache_bytes);
        CHECK(lean.block_bytes < full.block_bytes);
        // Checkpointing: at most the inputs (1/layers of a block's worth each, at most) plus
        // one working block.
        const std::int64_t layers = memory_config().n_layers;
        CHECK(ckpt.cache_bytes < lean.cache_bytes);
        CHECK(ckpt.cache_bytes <= full.cache_bytes / layers + ckpt.block_bytes);
      }
    }
  }
}
