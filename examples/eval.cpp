// gsq-eval: how good a model is — perplexity, multiple-choice accuracy, a generated sample.
//
//   gsq-eval --model stories260K.bin --data alpaca_dev.json                 perplexity
//   gsq-eval --model stories260K.bin --adapter runs/w8/adapter --precision w8a8g8
//            --task all --also-fp32                                         commonsense accuracy
//   gsq-eval --model stories260K.bin --generate "Once upon a time"          a sample
//
// The model is a base model (llama2.c .bin or Hugging Face directory), a merged or
// quantized export of a fine-tuning run, or a base model plus a PEFT adapter (--adapter).
// --precision chooses the forward: evaluate an adapter with the forward it was trained
// with; --also-fp32 repeats every measurement with an FP32 forward of the same adapter
// (reported separately, as DESIGN.md asks).
//   --data FILE   perplexity: of the responses of an Alpaca-style JSON file, or of every
//                 token of a plain-text file
//   --task T      multiple choice (LLM-Adapters commonsense JSON): T is a task name under
//                 <data>/commonsense/ (boolq, piqa, social_i_qa, winogrande, ARC-Easy,
//                 ARC-Challenge, openbookqa), "all", or a path to a dev.json-style file.
//                 Each candidate "the correct answer is <label>" (labels from the item's
//                 "Answer format:" line) is scored by its log-likelihood after the Alpaca
//                 prompt; the best one is the prediction.
// Results print as a table; --json FILE writes them as JSON as well.
#include <gsq/core/isa.hpp>
#include <gsq/core/parallel.hpp>
#include <gsq/io/atomic_file.hpp>
#include <gsq/io/dataset.hpp>
#include <gsq/model/evaluate.hpp>
#include <gsq/model/llama.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "support/artifacts.hpp"
#include "support/cli.hpp"
#include "support/data.hpp"
#include "support/model.hpp"
#include "support/progress.hpp"

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string model, tokenizer, adapter, precision = "fp32", base = "auto", data, task, generate, json;
  std::string attention_precision = "fp32";
  std::string classifier_precision = "fp32";
  bool int_classifier = false;
  int group = 32;
  std::int64_t seq_len = 256;
  std::int64_t batch = 8;
  std::int64_t max_items = 0;
  std::int64_t max_new_tokens = 128;
  float temperature = 0.0f;
  float top_p = 0.9f;
  std::uint64_t seed = 0;
  int threads = 0;
  bool alpaca = false;
  bool also_fp32 = false;
};

const std::vector<std::string> kCommonsenseTasks = {"boolq",      "piqa",          "social_i_qa", "winogrande",
                                                    "ARC-Easy",   "ARC-Challenge", "openbookqa"};

/// The candidate labels of an LLM-Adapters item: its "Answer format: a/b/c" line.
std::vector<std::string> answer_labels(const gsq::data::InstructionItem& item, std::size_t index,
                                       const std::string& file) {
  const std::string key = "Answer format:";
  const std::size_t at = item.instruction.rfind(key);
  if (at == std::string::npos)
    gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt,
                                "item " + std::to_string(index) + " has no \"Answer format:\" line",
                                file, -1);
  std::string rest = item.instruction.substr(at + key.size());
  const std::size_t nl = rest.find('\n');
  if (nl != std::string::npos) rest.resize(nl);
  std::vector<std::string> labels;
  std::string cur;
  for (char ch : rest + "/") {
    if (ch == '/') {
      while (!cur.empty() && cur.front() == ' ') cur.erase(cur.begin());
      while (!cur.empty() && (cur.back() == ' ' || cur.back() == '\r')) cur.pop_back();
      if (!cur.empty()) labels.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (labels.size() < 2)
    gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt,
                                "item " + std::to_string(index) + ": fewer than two answer labels in \"" +
                                    rest + "\"",
                                file, -1);
  return labels;
}

struct ChoiceResult {
  std::string task;
  std::int64_t items = 0;
  std::int64_t correct = 0;
  std::int64_t truncated = 0;  // prompts cut from the left to fit the context
  double accuracy() const { return items > 0 ? static_cast<double>(correct) / static_cast<double>(items) : 0.0; }
};

ChoiceResult evaluate_choices(gsq::Llama& model, const gsq::Tokenizer& tok, const fs::path& file,
                              const std::string& task, std::int64_t max_items) {
  std::vector<gsq::data::InstructionItem> items = gsq::data::load_instruction_items(file);
  if (max_items > 0 && static_cast<std::int64_t>(items.size()) > max_items)
    items.resize(static_cast<std::size_t>(max_items));
  ChoiceResult r;
  r.task = task;
  const std::int64_t context = model.config().max_seq_len;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& item = items[i];
    if (item.answer.empty())
      gsq::detail::throw_io_error(gsq::ErrorCode::kCorrupt,
                                  "item " + std::to_string(i) + " has no \"answer\" field", file.string(), -1);
    const std::vector<std::string> labels = answer_labels(item, i, file.string());
    std::vector<std::vector<std::int32_t>> cands;
    std::size_t longest = 0;
    for (const std::string& label : labels) {
      cands.push_back(tok.encode("the correct answer is " + label, /*bos=*/false, /*eos=*/true));
      longest = std::max(longest, cands.back().size());
    }
    std::vector<std::int32_t> prompt = tok.encode(gsq::data::alpaca_prompt(item), /*bos=*/true, /*eos=*/false);
    const auto room = static_cast<std::size_t>(context) - longest + 1;
    if (prompt.size() > room) {  // keep BOS and the end of the prompt (the options and "### Response:")
      prompt.erase(prompt.begin() + 1, prompt.begin() + 1 + static_cast<std::ptrdiff_t>(prompt.size() - room));
      ++r.truncated;
    }
    const gsq::ChoiceScores s = gsq::score_continuations(model, prompt, cands);
    ++r.items;
    if (labels[static_cast<std::size_t>(s.best)] == item.answer) ++r.correct;
  }
  return r;
}

struct Measurements {
  std::string forward;
  std::optional<gsq::EvalResult> ppl;
  std::vector<ChoiceResult> choices;
};

gsq::Llama build_model(const driver::BaseModel& base, const std::optional<driver::AdapterSpec>& adapter,
                       const gsq::Bits& bits, gsq::WeightFormat format,
                       const driver::IntegerScope& scope, const Options& o) {
  // Without an adapter, a spec with no target modules: every projection frozen.
  driver::AdapterSpec spec = adapter.value_or(driver::AdapterSpec{});
  spec.bits = bits;
  spec.base = format;
  spec.attention_bits = scope.attention_bits;
  spec.attention_bf16 = scope.attention_bf16;
  spec.integer_classifier = scope.integer_classifier;
  spec.classifier_bf16 = scope.classifier_bf16;
  gsq::LlamaOptions lo = spec.options();
  if (!adapter) {
    lo.adapter = gsq::ProjectionKind::kFrozen;
    return gsq::Llama(base.weights.config, driver::copy_tensors(base.weights), lo);
  }
  lo.l4q.warmup_steps = 0;
  gsq::Llama m(base.weights.config, driver::copy_tensors(base.weights), lo);
  driver::load_adapter(o.adapter, m);
  return m;
}

Measurements measure(gsq::Llama& model, const driver::BaseModel& base, const Options& o,
                     const std::vector<gsq::data::Batch>& ppl_batches, const std::string& forward) {
  Measurements m;
  m.forward = forward;
  if (!ppl_batches.empty()) m.ppl = gsq::evaluate(model, ppl_batches);
  if (!o.task.empty()) {
    std::vector<std::pair<std::string, fs::path>> files;
    if (o.task == "all") {
      for (const std::string& t : kCommonsenseTasks)
        files.emplace_back(t, driver::data_dir() / "commonsense" / t / "dev.json");
    } else if (fs::exists(o.task)) {
      files.emplace_back(fs::path(o.task).parent_path().filename().string(), o.task);
    } else {
      files.emplace_back(o.task, driver::data_dir() / "commonsense" / o.task / "dev.json");
    }
    for (const auto& [name, file] : files) {
      if (!fs::exists(file))
        driver::config_error("--task " + o.task + ": " + file.string() +
                             " does not exist (a task name under <GSQ_DATA_DIR>/commonsense, all, or a file)");
      m.choices.push_back(evaluate_choices(model, *base.tokenizer, file, name, o.max_items));
    }
  }
  return m;
}

nlohmann::json to_json(const Measurements& m) {
  nlohmann::json j = {{"forward", m.forward}};
  if (m.ppl) j["perplexity"] = {{"nll", m.ppl->mean_nll()}, {"ppl", m.ppl->perplexity()}, {"tokens", m.ppl->tokens}};
  if (!m.choices.empty()) {
    nlohmann::json tasks = nlohmann::json::object();
    double sum = 0.0;
    for (const ChoiceResult& c : m.choices) {
      tasks[c.task] = {{"accuracy", c.accuracy()}, {"correct", c.correct}, {"items", c.items}, {"truncated", c.truncated}};
      sum += c.accuracy();
    }
    j["multiple_choice"] = tasks;
    j["multiple_choice_mean_accuracy"] = sum / static_cast<double>(m.choices.size());
  }
  return j;
}

void print(const Measurements& m) {
  if (m.ppl)
    std::printf("perplexity (%s forward): %.4f  (mean NLL %.4f over %lld tokens)\n", m.forward.c_str(),
                m.ppl->perplexity(), m.ppl->mean_nll(), static_cast<long long>(m.ppl->tokens));
  if (!m.choices.empty()) {
    std::printf("multiple choice (%s forward):\n  %-14s %8s %8s %9s\n", m.forward.c_str(), "task", "items",
                "correct", "accuracy");
    double sum = 0.0;
    for (const ChoiceResult& c : m.choices) {
      std::printf("  %-14s %8lld %8lld %8.1f%%%s\n", c.task.c_str(), static_cast<long long>(c.items),
                  static_cast<long long>(c.correct), 100.0 * c.accuracy(),
                  c.truncated > 0 ? (" (" + std::to_string(c.truncated) + " prompts cut to fit)").c_str() : "");
      sum += c.accuracy();
    }
    if (m.choices.size() > 1)
      std::printf("  %-14s %8s %8s %8.1f%%\n", "mean", "", "", 100.0 * sum / static_cast<double>(m.choices.size()));
  }
}

int run(const Options& o) {
  if (o.data.empty() && o.task.empty() && o.generate.empty())
    driver::config_error("nothing to do: give --data (perplexity), --task (multiple choice) and/or --generate");
  if (o.threads < 0 || o.batch < 1 || o.seq_len < 2 || o.max_new_tokens < 1 || o.max_items < 0)
    driver::config_error("--threads >= 0, --batch >= 1, --seq-len >= 2, --max-new-tokens >= 1 and --max-items >= 0 are required");
  const gsq::Bits bits = driver::parse_precision(o.precision, o.group);
  const driver::IntegerScope scope =
      driver::parse_integer_scope(o.attention_precision, o.classifier_precision, o.int_classifier, o.group);
  if (!o.data.empty()) driver::require_path(o.data, "--data");
  if (!o.adapter.empty()) driver::require_path(o.adapter, "--adapter");
  const gsq::WeightFormat format = driver::parse_base_format(o.base, bits);
  gsq::SamplingOptions sampling{.temperature = o.temperature, .top_p = o.top_p, .seed = o.seed};
  try {
    sampling.validate();
  } catch (const gsq::Error& e) {
    driver::config_error(std::string("--temperature/--top-p: ") + e.what());
  }
  if (o.threads > 0) gsq::set_num_threads(o.threads);

  const driver::BaseModel base = driver::load_base_model(o.model, o.tokenizer);
  if (o.seq_len > base.weights.config.max_seq_len)
    driver::config_error("--seq-len " + std::to_string(o.seq_len) + " exceeds the model's context of " +
                         std::to_string(base.weights.config.max_seq_len));
  std::optional<driver::AdapterSpec> adapter;
  if (!o.adapter.empty()) adapter = driver::read_adapter_spec(o.adapter);

  std::vector<gsq::data::Batch> ppl_batches;
  if (!o.data.empty()) {
    const driver::Dataset d = driver::load_dataset(o.data, *base.tokenizer, o.seq_len, o.max_items);
    std::printf("data: %s (%s, %zu examples)\n", o.data.c_str(), driver::data_kind_name(d.kind), d.examples.size());
    ppl_batches = driver::eval_batches(d.examples, o.batch, o.seq_len);
  }
  std::printf("model: %s%s%s, %s forward (%s base), %d threads, %s\n", o.model.c_str(),
              adapter ? " + adapter " : "", adapter ? o.adapter.c_str() : "", bits.name().c_str(),
              std::string(gsq::weight_format_name(format)).c_str(), gsq::num_threads(),
              std::string(gsq::isa_name(gsq::selected_isa())).c_str());

  nlohmann::json out = {{"model", o.model}, {"adapter", o.adapter}, {"base", std::string(gsq::weight_format_name(format))}};
  const auto t0 = std::chrono::steady_clock::now();
  gsq::Llama model = build_model(base, adapter, bits, format, scope, o);
  const Measurements main = measure(model, base, o, ppl_batches, bits.name());
  print(main);
  out["results"] = nlohmann::json::array({to_json(main)});
  if (o.also_fp32 && !bits.is_fp32() && (!ppl_batches.empty() || !o.task.empty())) {
    gsq::Llama twin = build_model(base, adapter, gsq::Bits::fp32(), format, scope, o);
    const Measurements fp = measure(twin, base, o, ppl_batches, "fp32");
    print(fp);
    out["results"].push_back(to_json(fp));
  }
  if (!o.generate.empty()) {
    gsq::data::InstructionItem item{o.generate, "", "", ""};
    const std::string text = o.alpaca ? gsq::data::alpaca_prompt(item) : o.generate;
    const std::vector<std::int32_t> prompt = base.tokenizer->encode(text, /*bos=*/true, /*eos=*/false);
    gsq::GenerateOptions g;
    g.max_new_tokens = o.max_new_tokens;
    g.sampling = sampling;
    const std::vector<std::int32_t> ids = model.generate(prompt, g);
    const std::string sample = driver::valid_utf8(base.tokenizer->decode(ids));
    std::printf("--- prompt (%s forward) ---\n%s\n--- continuation ---\n%s\n---\n", bits.name().c_str(), text.c_str(),
                sample.c_str());
    out["generate"] = {{"prompt", text}, {"continuation", sample}, {"tokens", ids.size()}};
  }
  out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!o.json.empty()) {
    gsq::write_file_atomically(o.json, out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + '\n');
  }
  return driver::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"gsq-eval: perplexity, commonsense multiple-choice accuracy and samples of a model"};
  app.add_option("--model", o.model, "base, merged or quantized model: llama2.c .bin or Hugging Face directory")
      ->required();
  app.add_option("--tokenizer", o.tokenizer, "tokenizer file (default: the one next to the model)");
  app.add_option("--adapter", o.adapter, "a PEFT adapter directory (gsq-finetune's OUT/adapter) to apply");
  app.add_option("--precision", o.precision,
                 "forward precision: fp32 or w<b>a<b>g<b> (use the one the adapter was trained with)")
      ->capture_default_str();
  app.add_option("--group", o.group, "GSE-INT group size")->capture_default_str();
  app.add_option("--base", o.base, "storage of the base weights: auto, fp32, nf4 or gse")->capture_default_str();
  driver::add_integer_scope_flags(app, o.attention_precision, o.classifier_precision, o.int_classifier);
  app.add_flag("--also-fp32", o.also_fp32, "repeat the measurements with an FP32 forward");
  app.add_option("--data", o.data, "perplexity on an Alpaca-style JSON (responses) or a plain-text file");
  app.add_option("--task", o.task, "multiple choice: a commonsense task name, all, or a dev.json-style file");
  app.add_option("--max-items", o.max_items, "use at most N items of --data / each task (0: all)")->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "perplexity: tokens per sequence")->capture_default_str();
  app.add_option("--batch", o.batch, "perplexity: sequences per forward")->capture_default_str();
  app.add_option("--generate", o.generate, "continue this prompt and print the sample");
  app.add_flag("--alpaca", o.alpaca, "--generate: wrap the prompt as an Alpaca instruction");
  app.add_option("--max-new-tokens", o.max_new_tokens, "--generate: tokens to generate")->capture_default_str();
  app.add_option("--temperature", o.temperature, "--generate: 0 for greedy")->capture_default_str();
  app.add_option("--top-p", o.top_p, "--generate: nucleus mass")->capture_default_str();
  app.add_option("--seed", o.seed, "--generate: sampling seed")->capture_default_str();
  app.add_option("--threads", o.threads, "threads (0: all cores)")->capture_default_str();
  app.add_option("--json", o.json, "also write the results to this JSON file");
  return driver::run_driver("gsq-eval", app, argc, argv, [&] { return run(o); });
}
