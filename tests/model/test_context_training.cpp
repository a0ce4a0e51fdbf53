// Two models trained at once on two user threads, each in its own gsq::Context, give the
// same bytes as each trained alone, and each context accounts for its own model only
// (issue 12: "an explicit context"). CI also runs this under ThreadSanitizer.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "gsq/core/context.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/load_llama.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/trainer.hpp"
#include "support/test_support.hpp"

namespace {

/// What a run produced: trained parameter bytes, the losses, and the context's
/// accounting after the run.
struct RunResult {
  std::vector<float> params;
  std::vector<double> losses;
  gsq::MemoryUsage memory;
};

/// A recipe for one model: how to build it (in the current context) and its batches.
struct Recipe {
  std::function<gsq::Llama()> build;
  std::int32_t vocab = 0;
  std::int64_t rows = 2, seq = 24;
  int steps = 3;
  std::uint64_t seed = 1;
};

gsq::OwnedBatch random_batch(const Recipe& r, int step) {
  gsq::CounterRng rng(r.seed, static_cast<std::uint64_t>(step));
  gsq::OwnedBatch b;
  b.rows = r.rows;
  for (std::int64_t i = 0; i < r.rows * r.seq; ++i) {
    b.inputs.push_back(static_cast<std::int32_t>(rng.next_u32() % static_cast<std::uint32_t>(r.vocab)));
    b.targets.push_back(static_cast<std::int32_t>(rng.next_u32() % static_cast<std::uint32_t>(r.vocab)));
    b.mask.push_back(i % 5 != 0 ? 1 : 0);
  }
  return b;
}

/// Builds and trains the recipe's model in `context` (the model and the trainer are
/// created and used only inside it), from the calling thread.
RunResult train(const Recipe& r, gsq::Context& context) {
  RunResult out;
  {
    gsq::ContextScope scope(context);
    gsq::Llama model = r.build();
    CHECK(&model.context() == &context);
    gsq::Trainer trainer(model, {.total_steps = r.steps, .lr = 1e-2f, .warmup_steps = 1});
    for (int s = 0; s < r.steps; ++s) out.losses.push_back(trainer.step(random_batch(r, s)).loss);
    for (const gsq::Parameter& p : model.parameters())
      out.params.insert(out.params.end(), p.value->begin(), p.value->end());
    out.memory = context.memory_usage();
  }
  return out;
}

gsq::LlamaOptions lora(const gsq::Bits& bits, gsq::ProjectionKind kind) {
  gsq::LlamaOptions o = gsq::LlamaOptions::uniform(bits);
  o.adapter = kind;
  o.lora.rank = 4;
  o.lora.alpha = 8.0f;
  o.l4q.rank = 4;
  o.l4q.alpha = 8.0f;
  o.l4q.quant_group = 32;
  return o;
}

/// A random tiny LLaMA (always available).
Recipe tiny_recipe() {
  Recipe r;
  r.build = [] {
    gsq::LlamaConfig c;
    c.dim = 64;
    c.hidden_dim = 96;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.vocab_size = 50;
    c.max_seq_len = 48;
    return gsq::Llama(c, gsq::random_llama_weights(c, 5),
                      lora(gsq::Bits::w6a6g6(), gsq::ProjectionKind::kL4q));
  };
  r.vocab = 50;
  r.seed = 7;
  return r;
}

void check_same(const RunResult& alone, const RunResult& together, const char* which) {
  CAPTURE(which);
  REQUIRE(alone.params.size() == together.params.size());
  CHECK(gsq::test::bitwise_equal(alone.params.data(), together.params.data(),
                                 static_cast<std::int64_t>(alone.params.size())));
  CHECK(alone.losses == together.losses);
  // Everything but scratch is allocated by the calling thread in program order, so the
  // accounting is the same to the byte. Scratch depends on which pool threads took part.
  for (gsq::MemoryCategory c : {gsq::MemoryCategory::kWeights, gsq::MemoryCategory::kActivations,
                                gsq::MemoryCategory::kGradients, gsq::MemoryCategory::kOptimizerState}) {
    CAPTURE(gsq::memory_category_name(c));
    CHECK(alone.memory.current_of(c) == together.memory.current_of(c));
    CHECK(alone.memory.peak_of(c) == together.memory.peak_of(c));
  }
  CHECK(together.memory.current_of(gsq::MemoryCategory::kWeights) > 0);
}

}  // namespace

TEST_SUITE("model") {
  TEST_CASE("context: two models trained at once in two contexts match each alone") {
    std::vector<Recipe> recipes = {tiny_recipe()};
    if (const auto ckpt = gsq::test::data_file("models/stories260K/stories260K.bin")) {
      Recipe r;
      const std::filesystem::path path = *ckpt;
      r.build = [path] {
        gsq::LlamaWeights w = gsq::load_llama(path);
        return gsq::Llama(w.config, std::move(w.tensors),
                          lora(gsq::Bits::w8a8g8(), gsq::ProjectionKind::kLora));
      };
      r.vocab = 512;
      r.seed = 3;
      recipes.push_back(std::move(r));
    } else {
      // A second random model in another precision and adapter stands in.
      Recipe r = tiny_recipe();
      r.build = [] {
        gsq::LlamaConfig c;
        c.dim = 32;
        c.hidden_dim = 80;
        c.n_layers = 1;
        c.n_heads = 2;
        c.n_kv_heads = 2;
        c.vocab_size = 40;
        c.max_seq_len = 32;
        return gsq::Llama(c, gsq::random_llama_weights(c, 9),
                          lora(gsq::Bits::w8a8g8(), gsq::ProjectionKind::kLora));
      };
      r.vocab = 40;
      recipes.push_back(std::move(r));
    }

    gsq::default_context().reset_memory_peaks();
    const std::int64_t default_weights_peak =
        gsq::default_context().memory_usage().peak_of(gsq::MemoryCategory::kWeights);
    // Alone: one after the other, each in a fresh one-thread context.
    std::vector<RunResult> alone;
    for (const Recipe& r : recipes) {
      gsq::Context solo(1);
      alone.push_back(train(r, solo));
    }
    // Together: two user threads, two-thread contexts, at the same time.
    gsq::Context ca(2), cb(2);
    RunResult ra, rb;
    std::exception_ptr error_a, error_b;
    std::thread ta([&] {
      try {
        ra = train(recipes[0], ca);
      } catch (...) {
        error_a = std::current_exception();
      }
    });
    std::thread tb([&] {
      try {
        rb = train(recipes[1], cb);
      } catch (...) {
        error_b = std::current_exception();
      }
    });
    ta.join();
    tb.join();
    if (error_a) std::rethrow_exception(error_a);
    if (error_b) std::rethrow_exception(error_b);
    check_same(alone[0], ra, "model A");
    check_same(alone[1], rb, "model B");
    // Separate accounting: each context saw its own model only (the snapshots above equal
    // the solo runs'), everything it allocated is freed again, and the default context
    // (this thread's, current throughout) was charged nothing.
    CHECK(ra.memory.current_of(gsq::MemoryCategory::kWeights) !=
          rb.memory.current_of(gsq::MemoryCategory::kWeights));
    for (gsq::Context* c : {&ca, &cb})
      for (gsq::MemoryCategory cat : {gsq::MemoryCategory::kWeights, gsq::MemoryCategory::kActivations,
                                      gsq::MemoryCategory::kGradients, gsq::MemoryCategory::kOptimizerState})
        CHECK(c->memory_usage().current_of(cat) == 0);
    CHECK(gsq::default_context().memory_usage().peak_of(gsq::MemoryCategory::kWeights) ==
          default_weights_peak);
    MESSAGE("weights bytes per context after training: A " << ra.memory.current_of(gsq::MemoryCategory::kWeights)
                                                           << ", B " << rb.memory.current_of(gsq::MemoryCategory::kWeights)
                                                           << "; scratch peaks A " << ra.memory.peak_of(gsq::MemoryCategory::kScratch)
                                                           << ", B " << rb.memory.peak_of(gsq::MemoryCategory::kScratch));
  }
}
