// Checkpoints: layout (step directories, manifest last, LATEST), resume equals an
// uninterrupted run bitwise, unfinished directories are skipped, damaged files are
// IoErrors naming the file, never crashes.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gsq/core/error.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/io/checkpoint.hpp"
#include "gsq/io/dataset.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/model/trainer.hpp"
#include "io_test_util.hpp"
#include "support/test_support.hpp"

namespace {

gsq::Llama tiny_model(gsq::ProjectionKind kind) {
  gsq::LlamaOptions o = gsq::LlamaOptions::uniform(gsq::Bits::w8a8g8());
  o.adapter = kind;
  o.lora.rank = 4;
  o.lora.alpha = 8.0f;
  o.l4q.rank = 4;
  o.l4q.alpha = 8.0f;
  o.l4q.quant_group = 16;
  o.train_norms = true;
  const gsq::LlamaConfig c = gsq::test::tiny_llama_config(24);
  return gsq::Llama(c, gsq::random_llama_weights(c, 3), o);
}

std::vector<gsq::data::Example> examples(int n) {
  gsq::CounterRng rng(4, 1);
  std::vector<gsq::data::Example> out;
  for (int i = 0; i < n; ++i) {
    gsq::data::Example ex;
    const int len = 8 + static_cast<int>(rng.next_u32() % 12);
    for (int t = 0; t < len; ++t) {
      ex.ids.push_back(static_cast<std::int32_t>(rng.next_u32() % 40));
      ex.loss_mask.push_back(t >= len / 2 ? 1 : 0);
    }
    out.push_back(std::move(ex));
  }
  return out;
}

gsq::TrainerConfig trainer_config() {
  gsq::TrainerConfig tc;
  tc.total_steps = 6;
  tc.lr = 3e-3f;
  tc.warmup_steps = 1;
  tc.weight_decay = 0.01f;
  return tc;
}

bool same_parameters(gsq::Llama& a, gsq::Llama& b) {
  const gsq::ParameterList pa = a.parameters(), pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (std::size_t i = 0; i < pa.size(); ++i)
    if (pa[i].name != pb[i].name ||
        !gsq::test::bitwise_equal(pa[i].value->data(), pb[i].value->data(), pa[i].value->numel()))
      return false;
  return true;
}

/// A checkpoint of a short run (3 steps) under `root`.
std::filesystem::path save_three_steps(const std::filesystem::path& root) {
  const auto data = examples(5);
  gsq::Llama m = tiny_model(gsq::ProjectionKind::kLora);
  gsq::Trainer t(m, trainer_config());
  gsq::data::BatchSampler s(data, 2, 20, 7);
  for (int i = 0; i < 3; ++i) t.step(s.next());
  return gsq::save_checkpoint(root, t, s, 7, {{"lr", 3e-3}});
}

}  // namespace

TEST_SUITE("io") {
  TEST_CASE("checkpoint: N steps equal N/2 steps then save load and N/2 more bitwise") {
    for (gsq::ProjectionKind kind : {gsq::ProjectionKind::kLora, gsq::ProjectionKind::kL4q}) {
      CAPTURE(gsq::projection_kind_name(kind));
      gsq::test::TempDir dir;
      const auto data = examples(5);  // not a multiple of the batch: the epoch wraps
      gsq::Llama full = tiny_model(kind);
      {
        gsq::Trainer t(full, trainer_config());
        gsq::data::BatchSampler s(data, 2, 20, 7);
        for (int i = 0; i < 6; ++i) t.step(s.next());
      }
      {
        gsq::Llama first = tiny_model(kind);
        gsq::Trainer t(first, trainer_config());
        gsq::data::BatchSampler s(data, 2, 20, 7);
        for (int i = 0; i < 3; ++i) t.step(s.next());
        const auto path = gsq::save_checkpoint(dir.path(), t, s, 7, {{"method", "x"}});
        CHECK(path.filename() == "step-000003");
      }
      gsq::Llama resumed = tiny_model(kind);
      gsq::Trainer t(resumed, trainer_config());
      gsq::data::BatchSampler s(data, 2, 20, 7);
      const gsq::Checkpoint ck = gsq::load_checkpoint(dir.path(), t, s);
      CHECK(ck.seed == 7);
      CHECK(ck.settings["method"] == "x");
      CHECK(t.steps_done() == 3);
      CHECK_FALSE(same_parameters(resumed, full));
      for (int i = 0; i < 3; ++i) t.step(s.next());
      CHECK(same_parameters(resumed, full));
    }
  }

  TEST_CASE("checkpoint: files manifest and LATEST are written and old steps pruned") {
    gsq::test::TempDir dir;
    const auto data = examples(5);
    gsq::Llama m = tiny_model(gsq::ProjectionKind::kLora);
    gsq::Trainer t(m, trainer_config());
    gsq::data::BatchSampler s(data, 2, 20, 7);
    for (int i = 0; i < 3; ++i) {
      t.step(s.next());
      gsq::save_checkpoint(dir.path(), t, s, 1, {}, {.keep_last = 2});
    }
    CHECK(gsq::test::read_text(dir / "LATEST") == "step-000003\n");
    CHECK_FALSE(std::filesystem::exists(dir / "step-000001"));
    CHECK(std::filesystem::exists(dir / "step-000002/manifest.json"));
    for (const char* f : {"parameters.safetensors", "optimizer.safetensors", "trainer_state.json", "manifest.json"})
      CHECK(std::filesystem::exists(dir.path() / "step-000003" / f));
    CHECK(dir.entries() == 3);  // two steps and LATEST: no temporary files left
    const gsq::SafetensorsFile opt = gsq::SafetensorsFile::open(dir / "step-000003/optimizer.safetensors");
    CHECK(opt.metadata().at("optimizer") == "adamw");
    CHECK(opt.metadata().at("step") == "3");
    CHECK(opt.find("model.layers.0.self_attn.q_proj.lora_a.exp_avg") != nullptr);
  }

  TEST_CASE("checkpoint: an unfinished newer directory is ignored in favour of the last complete one") {
    gsq::test::TempDir dir;
    save_three_steps(dir.path());
    // A crash while writing step 4: files but no manifest, LATEST not yet updated...
    std::filesystem::create_directories(dir / "step-000004");
    gsq::test::write_text(dir / "step-000004/trainer_state.json", "{\"step\": 4");
    CHECK(gsq::load_checkpoint(dir.path()).trainer.step == 3);
    // ...or LATEST lost entirely / pointing at the unfinished one.
    gsq::test::write_text(dir / "LATEST", "step-000004\n");
    CHECK(gsq::load_checkpoint(dir.path()).trainer.step == 3);
    std::filesystem::remove(dir / "LATEST");
    CHECK(gsq::load_checkpoint(dir.path()).path.filename() == "step-000003");
    std::filesystem::remove_all(dir / "step-000003");
    gsq::test::expect_io_error([&] { (void)gsq::load_checkpoint(dir.path()); });
  }

  TEST_CASE("checkpoint: changed or truncated files are IoErrors naming the file") {
    gsq::test::TempDir dir;
    const auto step = save_three_steps(dir.path());
    for (const char* f : {"parameters.safetensors", "optimizer.safetensors", "trainer_state.json", "manifest.json"}) {
      CAPTURE(f);
      const auto path = step / f;
      const auto original = gsq::test::read_bytes(path);
      for (int damage = 0; damage < 3; ++damage) {
        CAPTURE(damage);
        auto bytes = original;
        if (damage == 0) bytes[bytes.size() / 2] ^= 0x01;       // one flipped bit
        if (damage == 1) bytes.resize(bytes.size() - 3);         // truncated
        if (damage == 2) bytes.resize(0);                        // empty
        gsq::test::write_bytes(path, bytes);
        auto e = gsq::test::expect_io_error([&] { (void)gsq::load_checkpoint(dir.path()); });
        if (e) CHECK(std::string(e->what()).find(f) != std::string::npos);
      }
      gsq::test::write_bytes(path, original);
      CHECK(gsq::load_checkpoint(dir.path()).trainer.step == 3);
    }
  }
}
