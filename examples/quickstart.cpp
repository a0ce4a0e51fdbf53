// gsq-quickstart: integer LoRA fine-tuning, end to end, in about two minutes — no arguments.
//
// What it shows: fine-tuning a LLaMA with every matrix product of forward and backward in
// 8-bit GSE-INT (GSQ-Tuning's W8A8G8, frozen base in NF4) learns as well as FP32 LoRA,
// with less memory. Steps:
//   1. a base model: the real stories260K (TinyStories) when the shared data directory
//      exists ($GSQ_DATA_DIR, or the build's ../shared/data) or --model is given; otherwise
//      a tiny LLaMA pre-trained right here on generated stories with a word tokenizer
//      (nothing to download);
//   2. an instruction task generated from a fixed seed: "Write a story about a brave fox
//      named Leo who likes to fly a kite and goes to the beach." → a story that uses every
//      detail. Held-out prompts are combinations never seen in fine-tuning, so the adapter
//      must learn to follow the instruction, not memorise answers;
//   3. two LoRA runs from the same start, data and seed: FP32, and W8A8G8 with an NF4 base;
//   4. a table (held-out loss and perplexity on the responses, time, peak memory from gsq's
//      accounting, by category) and a generated sample before and after fine-tuning.
// Deterministic: the same binary prints the same losses and samples on any thread count.
// Flags (all optional): --model/--tokenizer (another base), --builtin (ignore shared
// data), --steps, --threads, --out DIR (writes quickstart.json).
#include <gsq/core/isa.hpp>
#include <gsq/core/memory.hpp>
#include <gsq/core/parallel.hpp>
#include <gsq/core/rng.hpp>
#include <gsq/io/atomic_file.hpp>
#include <gsq/io/dataset.hpp>
#include <gsq/model/evaluate.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/model/trainer.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/cli.hpp"
#include "support/data.hpp"
#include "support/finetune.hpp"
#include "support/model.hpp"
#include "support/progress.hpp"
#include "support/word_tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string model, tokenizer, out;
  bool builtin = false;
  std::int64_t steps = 60;
  std::int64_t pretrain_steps = 80;
  int threads = 0;
  std::uint64_t seed = 0;
};

// ---- the generated instruction task --------------------------------------------------

const std::vector<std::string> kAnimals = {"cat", "dog", "bird", "frog", "bunny", "bear", "duck", "fox", "mouse", "pig"};
const std::vector<std::string> kAdjectives = {"little", "big", "happy", "kind", "brave", "funny"};
const std::vector<std::string> kNames = {"Tim", "Lily", "Sam", "Anna", "Ben", "Mia", "Max", "Lucy",
                                         "Tom", "Sue", "Jack", "Emma", "Leo", "Zoe", "Kate", "Bob"};
const std::vector<std::string> kLikes = {"to play with a ball", "to eat apples",    "to sing songs",
                                         "to read books",       "to swim in the pond", "to dig in the sand",
                                         "to fly a kite",       "to jump high"};
const std::vector<std::string> kPlaces = {"park", "forest", "beach", "garden", "farm", "lake"};
const std::vector<std::string> kFriends = {"a friendly dog", "a small bird", "an old turtle",
                                           "a funny frog",   "a big bear",   "a little girl"};
const std::vector<std::string> kTogether = {"played", "laughed", "sang", "ran", "danced"};

struct Story {
  std::string adjective, animal, name, like, place, friend_, together;
  std::string instruction() const {
    return "Write a story about a " + adjective + " " + animal + " named " + name + " who likes " + like +
           " and goes to the " + place + ".";
  }
  std::string text() const {
    return "Once upon a time, there was a " + adjective + " " + animal + " named " + name + ". " + name + " liked " +
           like + ". One day, " + name + " went to the " + place + " and met " + friend_ + ". They " + together +
           " together all day. " + name + " was very happy.";
  }
};

/// The prompt format of the task: Alpaca's section headers without its preamble (40
/// tokens the tiny model would spend time on in every example).
std::string task_prompt(const gsq::data::InstructionItem& item) {
  return "### Instruction:\n" + item.instruction + "\n\n### Response:\n";
}

/// Prompt + response (+ EOS), loss on the response only — as gsq::data does for Alpaca.
std::vector<gsq::data::Example> task_examples(const std::vector<gsq::data::InstructionItem>& items,
                                              const gsq::Tokenizer& tok, std::int64_t max_tokens) {
  std::vector<gsq::data::Example> out;
  for (const auto& item : items) {
    gsq::data::Example ex;
    ex.ids = tok.encode(task_prompt(item), /*bos=*/true, /*eos=*/false);
    ex.loss_mask.assign(ex.ids.size(), 0);
    for (std::int32_t id : tok.encode(item.output, /*bos=*/false, /*eos=*/true)) {
      ex.ids.push_back(id);
      ex.loss_mask.push_back(1);
    }
    if (static_cast<std::int64_t>(ex.ids.size()) <= max_tokens) out.push_back(std::move(ex));
  }
  return out;
}

const std::string& pick(const std::vector<std::string>& v, gsq::CounterRng& rng) {
  return v[rng.next_u32() % v.size()];
}

Story random_story(const std::vector<std::string>& names, gsq::CounterRng& rng) {
  Story s;
  s.adjective = pick(kAdjectives, rng);
  s.animal = pick(kAnimals, rng);
  s.name = pick(names, rng);
  s.like = pick(kLikes, rng);
  s.place = pick(kPlaces, rng);
  s.friend_ = pick(kFriends, rng);
  s.together = pick(kTogether, rng);
  return s;
}

/// `n` items from random stream `stream`, none whose instruction is in `exclude`.
std::vector<gsq::data::InstructionItem> story_items(int n, std::uint64_t stream,
                                                    const std::vector<gsq::data::InstructionItem>& exclude = {}) {
  gsq::CounterRng rng(2024, stream);
  std::vector<gsq::data::InstructionItem> items;
  while (static_cast<int>(items.size()) < n) {
    const Story s = random_story(kNames, rng);
    gsq::data::InstructionItem item{s.instruction(), "", s.text(), ""};
    bool seen = false;
    for (const auto& e : exclude) seen = seen || e.instruction == item.instruction;
    if (!seen) items.push_back(std::move(item));
  }
  return items;
}

// ---- the built-in base model ---------------------------------------------------------

/// Pre-trains a tiny LLaMA (every weight trainable, FP32) on generated stories — the same
/// world as the task, but plain text without instructions.
driver::BaseModel builtin_base_model(const Options& o) {
  gsq::CounterRng rng(7, 1);
  std::string corpus;
  for (int i = 0; i < 3000; ++i) corpus += random_story(kNames, rng).text() + "\n\n";
  // The vocabulary also covers the instruction prompts the task will use.
  std::vector<std::string> vocab_text = {corpus};
  for (const auto& item : story_items(200, 9))
    vocab_text.push_back(task_prompt(item));
  auto tok = std::make_unique<driver::WordTokenizer>(vocab_text);

  gsq::LlamaConfig c;
  c.dim = 64;
  c.hidden_dim = 160;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = tok->vocab_size();
  c.max_seq_len = 160;
  gsq::LlamaTensors init = gsq::random_llama_weights(c, 3);
  gsq::LlamaOptions lo;  // FP32 everywhere; projections replaced by trainable ones below
  lo.train_norms = true;
  lo.train_embedding = true;
  gsq::LlamaTensors copy;
  for (const auto& [name, t] : init) copy.emplace(name, t.clone());
  gsq::Llama model(c, std::move(copy), lo);
  for (std::int64_t l = 0; l < c.n_layers; ++l)
    for (std::string_view p : gsq::kLlamaProjections) {
      const bool mlp = p == "gate_proj" || p == "up_proj" || p == "down_proj";
      const std::string key =
          "model.layers." + std::to_string(l) + (mlp ? ".mlp." : ".self_attn.") + std::string(p) + ".weight";
      model.projection(l, p) = gsq::Projection(gsq::Linear::trainable(init.at(key).view(), {.bits = gsq::Bits::fp32()}));
    }

  const auto t0 = Clock::now();
  std::vector<gsq::data::Example> examples = gsq::data::text_examples(corpus, *tok, 96);
  gsq::data::BatchSampler sampler(examples, 16, 96, o.seed);
  gsq::Trainer trainer(model, {.total_steps = o.pretrain_steps, .lr = 1e-2f, .warmup_steps = o.pretrain_steps / 10});
  std::printf("pre-training a tiny LLaMA (dim %lld, %lld layers, %d-word vocabulary) on generated stories...\n",
              static_cast<long long>(c.dim), static_cast<long long>(c.n_layers), tok->vocab_size());
  driver::ProgressLine progress(o.pretrain_steps, o.pretrain_steps / 5);
  double seconds = 0.0;
  std::int64_t tokens = 0;
  gsq::TrainStep st;
  while (trainer.steps_done() < o.pretrain_steps) {
    st = trainer.step(sampler.next());
    seconds += st.seconds;
    tokens += st.tokens;
    progress.update(st.step, st.loss, st.lr, static_cast<double>(tokens) / seconds,
                    seconds / static_cast<double>(st.step) * static_cast<double>(o.pretrain_steps - st.step));
  }
  progress.finish();
  std::printf("pre-trained in %s, final loss %.3f\n\n",
              driver::format_duration(std::chrono::duration<double>(Clock::now() - t0).count()).c_str(), st.loss);

  driver::BaseModel b;
  b.model_path = "built-in";
  b.tokenizer_path = "built-in word tokenizer";
  b.weights.config = c;
  b.weights.source = "built-in";
  for (const gsq::Parameter& p : model.parameters()) b.weights.tensors.emplace(p.name, p.value->clone());
  b.tokenizer = std::move(tok);
  return b;
}

// ---- runs and report -----------------------------------------------------------------

struct RunReport {
  std::string name;
  driver::FinetuneResult result;
  std::string sample;
};

std::string generate(gsq::Llama& model, const gsq::Tokenizer& tok, const std::string& prompt) {
  const std::vector<std::int32_t> ids = tok.encode(prompt, /*bos=*/true, /*eos=*/false);
  gsq::GenerateOptions g;
  g.max_new_tokens = 90;
  std::string text = driver::valid_utf8(tok.decode(model.generate(ids, g)));
  for (char& c : text)
    if (c == '\n') c = ' ';
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string mib(std::int64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return b;
}

int quickstart(const Options& o) {
  if (o.steps < 1 || o.pretrain_steps < 10 || o.threads < 0)
    driver::config_error("--steps >= 1, --pretrain-steps >= 10 and --threads >= 0 are required");
  if (o.threads > 0) gsq::set_num_threads(o.threads);
  const auto t_start = Clock::now();
  std::printf("gsq-quickstart — LoRA fine-tuning with integer (GSE-INT) arithmetic on this CPU\n");
  std::printf("%d threads, SIMD path %s\n\n", gsq::num_threads(), std::string(gsq::isa_name(gsq::selected_isa())).c_str());

  // 1. The base model.
  std::string model_path = o.model;
  std::string tokenizer_path = o.tokenizer;
  const fs::path shared = driver::data_dir() / "models" / "stories260K" / "stories260K.bin";
  if (model_path.empty() && !o.builtin && fs::exists(shared)) model_path = shared.string();
  driver::BaseModel base;
  if (!model_path.empty()) {
    base = driver::load_base_model(model_path, tokenizer_path);
    std::printf("base model: %s (dim %lld, %lld layers, %lld parameters)\n\n", model_path.c_str(),
                static_cast<long long>(base.weights.config.dim), static_cast<long long>(base.weights.config.n_layers),
                static_cast<long long>(base.weights.parameter_count()));
  } else {
    if (o.builtin) std::printf("--builtin: building a base model here\n");
    else std::printf("no shared models found (%s): building a base model here\n", shared.string().c_str());
    base = builtin_base_model(o);
  }

  // 2. The task.
  const std::int64_t seq_len = std::min<std::int64_t>(160, base.weights.config.max_seq_len);
  driver::Dataset train;
  train.kind = driver::DataKind::kInstruction;
  const std::vector<gsq::data::InstructionItem> train_items = story_items(320, 1);
  train.examples = task_examples(train_items, *base.tokenizer, seq_len + 1);
  const std::vector<gsq::data::InstructionItem> held_items = story_items(48, 2, train_items);
  const std::vector<gsq::data::Example> held = task_examples(held_items, *base.tokenizer, seq_len + 1);
  if (train.examples.empty() || held.empty())
    driver::config_error("the task's examples do not fit the model's context of " + std::to_string(seq_len));
  const std::vector<gsq::data::Batch> eval = driver::eval_batches(held, 16, seq_len);
  std::printf("task: %zu generated instructions like\n  \"%s\"\n", train.examples.size(),
              held_items.front().instruction.c_str());
  std::printf("held-out: %zu other instructions (new combinations of animal, name, hobby and place)\n\n",
              held.size());

  // The base model before fine-tuning (FP32 forward; LoRA's B = 0 would give the same).
  const std::string prompt = task_prompt(held_items.front());
  gsq::EvalResult before;
  std::string before_sample;
  {
    gsq::Llama plain(base.weights.config, driver::copy_tensors(base.weights), gsq::LlamaOptions{});
    before = gsq::evaluate(plain, eval);
    before_sample = generate(plain, *base.tokenizer, prompt);
  }

  // 3. Two fine-tuning runs.
  driver::FinetuneSettings s;
  s.steps = o.steps;
  s.batch = 8;
  s.seq_len = seq_len;
  s.lr = 5e-3f;
  s.warmup = o.steps / 10;
  s.rank = 8;
  s.alpha = 16.0f;
  s.seed = o.seed;
  s.log_every = std::max<std::int64_t>(1, o.steps / 4);
  s.fp32_eval = false;
  std::vector<RunReport> runs;
  for (const char* precision : {"fp32", "w8a8g8"}) {
    driver::FinetuneSettings rs = s;
    rs.precision = precision;
    driver::RunHooks hooks;
    hooks.label = "fine-tuning: " + rs.adapter_spec().describe();
    std::optional<gsq::Llama> model;
    RunReport r{std::string(precision) == "fp32" ? "FP32 LoRA" : "W8A8G8 LoRA",
                driver::run_finetune(rs, base, train, eval, hooks, &model), ""};
    r.sample = generate(*model, *base.tokenizer, prompt);
    runs.push_back(std::move(r));
    std::printf("\n");
  }

  // 4. The report.
  std::printf("%-30s %9s %9s %8s %9s %10s %9s %9s %9s\n", "", "held-out", "perplex-", "train", "tokens/s",
              "peak MiB", "weights", "cached", "scratch");
  std::printf("%-30s %9s %9s %8s %9s %10s %9s %9s %9s\n", "", "loss", "ity", "time", "", "(total)", "MiB",
              "act. MiB", "MiB");
  std::printf("%-30s %9.4f %9.3f %8s %9s %10s %9s %9s %9s\n", "base model (no fine-tuning)", before.mean_nll(),
              before.perplexity(), "-", "-", "-", "-", "-", "-");
  for (const RunReport& r : runs) {
    const auto& x = r.result;
    const std::string label = r.name + (r.name.starts_with("W8") ? " (NF4 base)" : " (FP32 base)");
    std::printf("%-30s %9.4f %9.3f %8s %9.0f %10s %9s %9s %9s\n", label.c_str(), x.eval->mean_nll(),
                x.eval->perplexity(), driver::format_duration(x.seconds).c_str(), x.tokens_per_second(),
                mib(x.peak_bytes).c_str(), mib(x.peak_by_category[0]).c_str(), mib(x.peak_by_category[1]).c_str(),
                mib(x.peak_by_category[4]).c_str());
  }
  const double ratio = runs[1].result.eval->perplexity() / runs[0].result.eval->perplexity();
  std::printf("\nW8A8G8 / FP32 held-out perplexity: %.4f  (memory: total %.2fx, weights %.2fx, cached activations %.2fx)\n",
              ratio, static_cast<double>(runs[1].result.peak_bytes) / static_cast<double>(runs[0].result.peak_bytes),
              static_cast<double>(runs[1].result.peak_by_category[0]) / static_cast<double>(runs[0].result.peak_by_category[0]),
              static_cast<double>(runs[1].result.peak_by_category[1]) / static_cast<double>(runs[0].result.peak_by_category[1]));
  std::printf("(peak memory = gsq's accounting during training; weights = frozen base + adapters, "
              "cached act. = what forward keeps for backward, scratch = reused workspaces)\n");

  std::printf("\nheld-out instruction: %s\n", held_items.front().instruction.c_str());
  std::printf("  reference:   %s\n", held_items.front().output.c_str());
  std::printf("  before:      %s\n", before_sample.c_str());
  for (const RunReport& r : runs) std::printf("  %-12s %s\n", (r.name + ":").c_str(), r.sample.c_str());
  const double total = std::chrono::duration<double>(Clock::now() - t_start).count();
  std::printf("\ndone in %s. Next: gsq-finetune --help (your own model and data), gsq-sweep --help (the Pareto study).\n",
              driver::format_duration(total).c_str());

  if (!o.out.empty()) {
    fs::create_directories(o.out);
    nlohmann::json j = {{"base_model", base.model_path},
                        {"before", {{"nll", before.mean_nll()}, {"ppl", before.perplexity()}, {"sample", before_sample}}},
                        {"seconds", total},
                        {"runs", nlohmann::json::array()}};
    for (const RunReport& r : runs)
      j["runs"].push_back({{"name", r.name},
                           {"nll", r.result.eval->mean_nll()},
                           {"ppl", r.result.eval->perplexity()},
                           {"first_loss", r.result.first_loss},
                           {"final_train_loss", r.result.final_loss},
                           {"train_seconds", r.result.seconds},
                           {"peak_bytes", r.result.peak_bytes},
                           {"sample", r.sample}});
    gsq::write_file_atomically(fs::path(o.out) / "quickstart.json",
                                  j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + '\n');
  }
  return driver::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"gsq-quickstart: FP32 vs integer (W8A8G8) LoRA fine-tuning side by side, about two minutes"};
  app.add_option("--model", o.model, "base model instead of the shared stories260K / the built-in one");
  app.add_option("--tokenizer", o.tokenizer, "its tokenizer (default: next to the model)");
  app.add_flag("--builtin", o.builtin, "use the built-in model even when the shared data exists");
  app.add_option("--steps", o.steps, "fine-tuning steps per run")->capture_default_str();
  app.add_option("--pretrain-steps", o.pretrain_steps, "built-in model: pre-training steps")->capture_default_str();
  app.add_option("--threads", o.threads, "threads (0: all cores)")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of adapter initialisation and data order")->capture_default_str();
  app.add_option("--out", o.out, "also write quickstart.json with the numbers into this directory");
  return driver::run_driver("gsq-quickstart", app, argc, argv, [&] { return quickstart(o); });
}
