// gsq-finetune: LoRA or L4Q fine-tuning of a LLaMA-style model on a CPU, FP32 or GSE-INT.
//
//   gsq-finetune --model stories260K.bin --data alpaca_train.json --eval-data alpaca_dev.json
//                --precision w8a8g8 --rank 8 --steps 600 --out runs/w8
//
// Loads the base model (llama2.c .bin or Hugging Face directory) and its tokenizer, puts
// LoRA (or L4Q) adapters on the chosen projections, and trains them with every matrix
// product of forward and backward in the chosen precision. Writes into --out:
//   log.jsonl     one JSON object per step and evaluation (plus start/end records)
//   summary.json  settings, final losses, perplexities, time, memory
//   checkpoint/   on Ctrl-C (SIGINT/SIGTERM) or every --save-every steps; --resume continues
//   adapter/      the PEFT adapter
//   merged/       the merged model (Hugging Face directory + llama2.c model.bin); L4Q: the
//                 quantized model.l4q.safetensors with its FP32 twin
// Progress: a live line on a terminal, plain lines otherwise. Bad flags: gsq's ConfigError
// on stderr, exit 2; unreadable files: IoError, exit 1. An --out that already holds a run
// is refused unless --overwrite or --resume says what to do with it (support/outdir.hpp);
// sizes are checked against the model and a memory estimate before anything is allocated.
// Under mpirun (built with GSQ_WITH_MPI) it trains data-parallel: --batch stays the global
// batch, each rank computes its share of --micro-batches, and the adapter is byte for
// byte the one a single process writes with the same --micro-batches (README, "Several
// machines").
#include <gsq/core/isa.hpp>
#include <gsq/core/parallel.hpp>
#include <gsq/io/atomic_file.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "support/artifacts.hpp"
#include "support/cli.hpp"
#include "support/data.hpp"
#include "support/finetune.hpp"
#include "support/jsonl.hpp"
#include "support/outdir.hpp"
#include "support/model.hpp"
#include "support/progress.hpp"
#include "support/ptq.hpp"
#include "support/signals.hpp"

#ifdef GSQ_FINETUNE_MPI
#include <gsq/dist/mpi_reducer.hpp>
#endif

namespace {

namespace fs = std::filesystem;

/// Whether mpirun (Open MPI, MPICH / PMI, PMIx) started this process: only then is MPI
/// initialised, so a plain `gsq-finetune` never needs an MPI runtime.
[[maybe_unused]] bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (const char* e = std::getenv(v); e != nullptr && *e != '\0') return true;
  return false;
}

nlohmann::json eval_summary(const std::optional<gsq::EvalResult>& e) {
  if (!e) return nullptr;
  return {{"nll", e->mean_nll()}, {"ppl", e->perplexity()}, {"tokens", e->tokens}};
}

void write_summary(const fs::path& path, const nlohmann::json& j) {
  gsq::write_file_atomically(path, j.dump(2) + '\n');
}

/// LoRA + round-to-nearest of the merged weights at each of `bits` (L4Q's baseline).
nlohmann::json evaluate_ptq(const std::vector<int>& bits, const driver::FinetuneSettings& s,
                            const driver::AdapterSpec& spec, const driver::BaseModel& base, gsq::Llama& model,
                            const std::vector<gsq::data::Batch>& eval, driver::JsonlLog& log, std::int64_t step) {
  nlohmann::json out = nlohmann::json::object();
  const gsq::LlamaWeights full = base.streamed ? driver::load_model_files(base.model_path) : gsq::LlamaWeights{};
  const gsq::LlamaWeights& weights = base.streamed ? full : base.weights;  // FP32 (small models)
  for (int n : bits) {
    const gsq::EvalResult e = driver::evaluate_rtn(weights.config, driver::merged_lora_tensors(weights, model),
                                                   spec.targets, n, s.quant_group, eval);
    const std::string name = "lora+rtn-int" + std::to_string(n) + "/G" + std::to_string(s.quant_group);
    log.write({{"event", "eval"}, {"step", step}, {"forward", name}, {"nll", e.mean_nll()},
               {"ppl", e.perplexity()}, {"tokens", e.tokens}});
    std::printf("held-out: loss %.4f, perplexity %.3f (merged, then %d-bit round-to-nearest, group %d, FP32 forward)\n",
                e.mean_nll(), e.perplexity(), n, s.quant_group);
    out[name] = {{"nll", e.mean_nll()}, {"ppl", e.perplexity()}, {"tokens", e.tokens}};
  }
  return out;
}

int finetune(driver::FinetuneSettings& s, const std::vector<int>& ptq_bits, const std::string& save_base,
             gsq::GradientReducer* reducer) {
  driver::install_stop_handlers();  // from here on, Ctrl-C ends the run after a step, with a checkpoint
  // Data parallel (mpirun): every rank trains on its share of every batch; rank 0 alone
  // prepares --out and writes the log, checkpoints, exports and summary.
  const int ranks = reducer != nullptr ? reducer->ranks() : 1;
  const bool writer = reducer == nullptr || reducer->rank() == 0;
  if (s.micro_batches == 0) s.micro_batches = ranks;
  if (s.micro_batches < ranks)
    driver::config_error("--micro-batches " + std::to_string(s.micro_batches) + " is fewer than the " +
                         std::to_string(ranks) + " ranks (every rank needs at least one micro-batch)");
  s.validate();
  if (s.out.empty()) driver::config_error("--out is required (the run's output directory)");
  driver::require_path(s.data, "--data");
  if (!s.eval_data.empty()) driver::require_path(s.eval_data, "--eval-data");
  const driver::AdapterSpec spec = s.adapter_spec();
  for (int n : ptq_bits)
    if (n < 2 || n > 8) driver::config_error("--ptq-bits: each width must be in 2..8, got " + std::to_string(n));
  if (!ptq_bits.empty() && (spec.method != "lora" || s.eval_data.empty()))
    driver::config_error("--ptq-bits needs --method lora and --eval-data");
  const fs::path out = s.out;
  const fs::path checkpoint_dir = out / "checkpoint";
  const int stale = writer ? driver::prepare_out_dir(out, s.overwrite, s.resume) : 0;
  if (s.threads > 0) gsq::set_num_threads(s.threads);

  driver::BaseModel base = [&] {
    driver::Activity a("loading the model " + s.model);
    return driver::load_base_model(s.model, s.tokenizer, /*stream=*/true);
  }();
  const auto& c = base.weights.config;
  const driver::MemoryEstimate need = driver::check_against_model(s, spec, c, base.streamed, /*print=*/false);
  const driver::DataFormat format = driver::parse_data_format(s.data_format);
  driver::Activity loading("loading the data " + s.data);
  const driver::Dataset train = driver::load_dataset(s.data, *base.tokenizer, s.seq_len, s.max_items, format);
  std::optional<driver::Dataset> held_out;
  std::vector<gsq::data::Batch> eval;
  if (!s.eval_data.empty()) {
    held_out = driver::load_dataset(s.eval_data, *base.tokenizer, s.seq_len, s.eval_max, format);
    eval = driver::eval_batches(held_out->examples, s.batch, s.seq_len);
  }
  driver::current_activity() = "preparing the run";

  std::printf("gsq-finetune: %s — dim %lld, %lld layers, vocab %lld\n", s.model.c_str(),
              static_cast<long long>(c.dim), static_cast<long long>(c.n_layers),
              static_cast<long long>(c.vocab_size));
  std::printf("  adapters: %s on %s\n", spec.describe().c_str(), driver::join(spec.targets).c_str());
  std::printf("  data: %s (%s, %s, %zu examples, %lld response tokens%s)\n", s.data.c_str(),
              driver::data_format_name(train.format), driver::data_kind_name(train.kind), train.examples.size(),
              static_cast<long long>(train.counted_tokens()),
              train.dropped > 0 ? (", " + std::to_string(train.dropped) + " too long, dropped").c_str() : "");
  if (held_out)
    std::printf("  held-out: %s (%zu examples)\n", s.eval_data.c_str(), held_out->examples.size());
  std::printf("  %lld steps x %lld sequences x %lld tokens, lr %.2e, warm-up %lld, %d threads, %s\n",
              static_cast<long long>(s.steps), static_cast<long long>(s.batch),
              static_cast<long long>(s.seq_len), static_cast<double>(s.lr),
              static_cast<long long>(s.warmup_steps()), gsq::num_threads(),
              std::string(gsq::isa_name(gsq::selected_isa())).c_str());
  if (reducer != nullptr)
    std::printf("  data parallel: %d ranks, %lld micro-batches per step (the same --micro-batches gives the same "
                "bits on any number of ranks)\n",
                ranks, static_cast<long long>(s.micro_batches));
  (void)driver::check_against_model(s, spec, c, base.streamed);  // prints the memory estimate
  if (stale > 0) std::printf("  removed %d stale temporary file(s) of an earlier, killed run\n", stale);
  std::fflush(stdout);

  driver::JsonlLog log = writer ? driver::JsonlLog(out / "log.jsonl", /*append=*/s.resume) : driver::JsonlLog();
  const nlohmann::json settings = s.to_json();
  driver::RunHooks hooks;
  hooks.log = &log;
  hooks.print = writer;
  hooks.reducer = reducer;
  if (writer && !save_base.empty())
    hooks.after_build = [&](gsq::Llama& m) {
      const auto t0 = std::chrono::steady_clock::now();
      gsq::save_quantized_base(save_base, m, fs::absolute(base.tokenizer_path).string());
      std::printf("saved the quantized base to %s (%.1f s)\n", save_base.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      log.write({{"event", "save_base"}, {"path", save_base}});
    };
  if (writer)
    hooks.checkpoint = [&](gsq::Trainer& trainer, const gsq::data::BatchSampler& sampler) {
    const driver::ArtifactResult a = driver::save_checkpoint(checkpoint_dir, trainer, sampler, settings);
    log.write({{"event", "checkpoint"}, {"step", trainer.steps_done()}, {"path", a.path},
               {"written", a.written}, {"note", a.note}});
    std::printf("checkpoint @ step %lld: %s%s\n", static_cast<long long>(trainer.steps_done()),
                a.path.c_str(), a.written ? "" : (" — " + a.note).c_str());
    std::fflush(stdout);
  };
  if (s.resume)
    hooks.restore = [&](gsq::Trainer& trainer, gsq::data::BatchSampler& sampler) {
      const std::int64_t step = driver::load_checkpoint(checkpoint_dir, trainer, sampler, settings);
      std::printf("resumed from %s at step %lld\n", checkpoint_dir.string().c_str(), static_cast<long long>(step));
    };

  std::optional<gsq::Llama> model;
  const driver::FinetuneResult r = [&] {
    driver::Activity a("training (estimated peak " + driver::format_bytes(need.total()) + ": activations + scratch " +
                       driver::format_bytes(need.activations) + " for --batch " + std::to_string(s.batch) +
                       " x --seq-len " + std::to_string(s.seq_len) + ")");
    return driver::run_finetune(s, base, train, eval, hooks, &model);
  }();

  nlohmann::json summary = {{"settings", settings},
                            {"adapter", spec.describe()},
                            {"steps_done", r.steps_done},
                            {"interrupted", r.interrupted},
                            {"first_loss", r.first_loss},
                            {"final_train_loss", r.final_loss},
                            {"eval", eval_summary(r.eval)},
                            {"eval_fp32_forward", eval_summary(r.eval_fp32)},
                            {"train_seconds", r.seconds},
                            {"load_seconds", r.load_seconds},
                            {"ranks", ranks},
                            {"micro_batches", s.micro_batches},
                            {"comm_seconds", r.comm_seconds},
                            {"tokens_per_s", r.tokens_per_second()},
                            {"trainable_params", r.trainable_params},
                            {"weight_bytes", r.weight_bytes},
                            {"peak_train_bytes", r.peak_bytes}};
  nlohmann::json by_category;
  for (int k = 0; k < gsq::kMemoryCategoryCount; ++k)
    by_category[std::string(gsq::memory_category_name(static_cast<gsq::MemoryCategory>(k)))] =
        r.peak_by_category[static_cast<std::size_t>(k)];
  summary["peak_train_bytes_by_category"] = by_category;
  // The process's own peak resident set (getrusage), next to gsq's accounting: it adds
  // what gsq does not count (the program, the C++ runtime, thread stacks, the tokenizer
  // and data set, allocator slack) and includes model loading and evaluation.
  const std::int64_t peak_rss = driver::peak_rss_bytes();
  summary["peak_rss_bytes"] = peak_rss;

  if (!writer) return driver::kExitOk;  // rank 0 reports and exports
  if (r.interrupted) {
    log.write({{"event", "interrupted"}, {"step", r.steps_done}, {"signal", driver::stop_requested()}});
    write_summary(out / "summary.json", summary);
    std::printf("interrupted after step %lld; continue with the same flags plus --resume\n",
                static_cast<long long>(r.steps_done));
    return driver::kExitOk;
  }

  std::printf("trained %lld steps in %s (%.0f tokens/s), peak training memory %s, training loss %.4f -> %.4f\n",
              static_cast<long long>(r.steps_done), driver::format_duration(r.seconds).c_str(),
              r.tokens_per_second(), driver::format_bytes(r.peak_bytes).c_str(), r.first_loss, r.final_loss);
  std::printf("memory: gsq accounting peak %s (", driver::format_bytes(r.peak_bytes).c_str());
  for (int k = 0; k < gsq::kMemoryCategoryCount; ++k)
    std::printf("%s%s %s", k > 0 ? ", " : "",
                std::string(gsq::memory_category_name(static_cast<gsq::MemoryCategory>(k))).c_str(),
                driver::format_bytes(r.peak_by_category[static_cast<std::size_t>(k)]).c_str());
  std::printf("); process peak RSS %s\n", driver::format_bytes(peak_rss).c_str());
  if (reducer != nullptr)
    std::printf("  %d ranks: %.3f s per step waiting on gradient exchange (%.1f%% of training time)\n", ranks,
                r.steps_done > 0 ? r.comm_seconds / static_cast<double>(r.steps_done) : 0.0,
                r.seconds > 0 ? 100.0 * r.comm_seconds / r.seconds : 0.0);
  if (r.eval)
    std::printf("held-out: loss %.4f, perplexity %.3f (%s forward)\n", r.eval->mean_nll(),
                r.eval->perplexity(), spec.bits.name().c_str());
  if (r.eval_fp32)
    std::printf("held-out: loss %.4f, perplexity %.3f (FP32 forward of the same adapters)\n",
                r.eval_fp32->mean_nll(), r.eval_fp32->perplexity());

  if (!ptq_bits.empty() && !eval.empty())
    summary["eval_lora_rtn"] = evaluate_ptq(ptq_bits, s, spec, base, *model, eval, log, r.steps_done);

  // Exports: a failure is reported (and makes the exit status 1) without losing the
  // summary of a finished run.
  nlohmann::json artifacts;
  bool export_failed = false;
  auto run_export = [&](const char* key, auto&& write) {
    driver::ArtifactResult a;
    try {
      a = write();
    } catch (const std::exception& e) {
      const std::string what = dynamic_cast<const gsq::Error*>(&e) != nullptr
                                   ? std::string(e.what())
                                   : gsq::Error(gsq::ErrorCode::kOpenFailed, e.what()).what();
      a.note = "failed: " + what;
      export_failed = true;
      std::fflush(stdout);
      std::fprintf(stderr, "gsq-finetune: %s export failed (nothing left half-written): %s\n", key, what.c_str());
    }
    artifacts[key] = {{"path", a.path}, {"written", a.written}, {"note", a.note}};
    std::printf("%s: %s%s\n", key, a.path.c_str(), a.note.empty() ? "" : (" (" + a.note + ")").c_str());
  };
  gsq::release_scratch();  // training's temporaries are not needed by the exports
  run_export("adapter", [&] { return driver::export_adapter(out / "adapter", *model, s.model); });
  run_export("merged", [&] { return driver::export_merged(out / "merged", *model, spec, base); });
  summary["artifacts"] = artifacts;
  log.write({{"event", "end"}, {"step", r.steps_done}, {"summary", summary}});
  write_summary(out / "summary.json", summary);
  return export_failed ? driver::kExitFailure : driver::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  driver::FinetuneSettings s;
  std::vector<int> ptq_bits;
  std::string save_base;
  CLI::App app{"gsq-finetune: LoRA / L4Q fine-tuning with FP32 or GSE-INT integer arithmetic"};
  app.set_help_all_flag("--help-all", "show every flag");
  driver::add_model_flags(app, s);
  driver::add_training_flags(app, s);
  driver::add_adapter_flags(app, s, /*with_precision_and_rank=*/true);
  app.add_option("--out", s.out, "output directory (log.jsonl, summary.json, checkpoint/, adapter/, merged/)")
      ->required();
  app.add_option("--save-base", save_base,
                 "also save the quantized frozen base (gsq-base safetensors) to FILE; --model FILE "
                 "later loads it without quantizing again");
  app.add_flag("--resume", s.resume, "continue the run in --out from its checkpoint");
  app.add_flag("--overwrite", s.overwrite, "replace a previous run in --out (refused without it)");
  app.add_option("--save-every", s.save_every, "also write a checkpoint every N steps (0: only on Ctrl-C)")
      ->capture_default_str();
  app.add_option("--log-every", s.log_every, "plain progress line every N steps when not on a terminal")
      ->capture_default_str();
  app.add_flag("!--no-fp32-eval", s.fp32_eval,
               "skip the extra FP32-forward evaluation of integer-trained adapters");
  app.add_flag("--recompute-blocks", s.recompute_blocks,
               "activation checkpointing: keep only each block's input and rerun the block in backward "
               "(less memory, one more forward; same adapter bits)");
  app.add_flag("--double-quant", s.double_quant,
               "NF4 base: store each block's absmax as 8-bit codes with FP32 scales (QLoRA's double "
               "quantization): about 0.37 fewer bits per frozen weight");
  app.add_option("--ptq-bits", ptq_bits,
                 "LoRA: also evaluate the merged weights rounded to these widths (e.g. 4,3; groups of "
                 "--quant-group) — the post-training baseline L4Q is compared with")
      ->delimiter(',');
#ifdef GSQ_FINETUNE_MPI
  // Under mpirun: MPI, one reducer, output from rank 0 only; a rank that fails stops all.
  std::optional<gsq::dist::MpiSession> mpi;
  std::optional<gsq::dist::MpiReducer> reducer;
  if (launched_by_mpirun()) {
    mpi.emplace(argc, argv);
    reducer.emplace();
    if (reducer->rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return driver::kExitFailure;
  }
  const int rc = driver::run_driver("gsq-finetune", app, argc, argv,
                                    [&] { return finetune(s, ptq_bits, save_base, reducer ? &*reducer : nullptr); });
  if (rc != driver::kExitOk && reducer && reducer->ranks() > 1)
    gsq::dist::abort_all("gsq-finetune failed on this rank (exit " + std::to_string(rc) + "); stopping every rank", rc);
  return rc;
#else
  return driver::run_driver("gsq-finetune", app, argc, argv, [&] { return finetune(s, ptq_bits, save_base, nullptr); });
#endif
}
