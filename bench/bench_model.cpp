// bench_model — whole-model throughput: forward, and a LoRA training step, FP32 vs integer.
//
// Names: <what>/<model>/<mode>, what = forward (no cache, logits for every token) or
// train_step (forward with cache, masked cross-entropy, backward, AdamW, zero_grad),
// batch 4 x seq 256 tokens per iteration. Modes, all with LoRA r16 (alpha 32) on all
// seven projections of every block:
//   fp32         FP32 frozen weights, FP32 products everywhere (the reference path)
//   int8_linear  NF4 frozen weights, W8A8G8 GSE-INT products in the projections and
//                adapters; attention and the classifier FP32 (GSQ-Tuning's scope and the
//                drivers' default)
//   int8         the same plus attention's products and the frozen classifier (a GSE-INT8
//                copy) in W8A8G8: every product integer
//   fp32_cached  fp32 with recompute_projections off: q/k/v, g/u and the MLP norm input
//                cached in FP32 (what a plain FP32 LoRA step keeps)
//   int4_linear  as int8_linear with W4A4G4 (memory falls with the bits)
//   int8_linear_ckpt  int8_linear with activation checkpointing (recompute_blocks)
// Models: stories260K (llama2.c .bin) and tinystories-656K (HF dir) from the shared data
// (env GSQ_DATA_DIR, else the build's GSQ_DATA_DIR; skipped when absent),
// and random LLaMA shapes d<dim>_h<hidden>_l<layers>
// with head size 64, no GQA, vocab 2048 (a 32k vocabulary would make the classifier
// dominate the small shapes).
// Counters: tokens_per_s, and peak bytes per memory category in MiB once the model is
// built (the FP32 tensors it was built from are gone by then): peak_<category>_MiB,
// peak_total_MiB; cached_KiB_per_token (what forward keeps for backward: Llama::Cache::bytes
// over batch·seq tokens); peak_rss_MiB, the process's peak resident set (getrusage) — a
// process-wide high-water mark, so run one benchmark per process (--benchmark_filter) to
// read it next to that benchmark's accounting; page_faults_per_step (train_step), the
// minor page faults per step after the warm-up step. Compare ratios within one run.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/io/load_llama.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/nn/scratch.hpp"
#include "gsq/optim/adamw.hpp"

namespace {

constexpr std::int64_t kBatch = 4;
constexpr std::int64_t kSeq = 256;

struct ModelSpec {
  std::string name;
  std::string checkpoint;  // relative to GSQ_DATA_DIR; empty: random weights of `config`
  gsq::LlamaConfig config;
};

gsq::LlamaConfig random_shape(std::int64_t dim, std::int64_t hidden, std::int64_t heads,
                              std::int64_t layers) {
  gsq::LlamaConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_heads = heads;
  c.n_kv_heads = heads;
  c.n_layers = layers;
  c.vocab_size = 2048;
  c.max_seq_len = kSeq;
  c.rope_style = gsq::RopeStyle::kHalf;
  return c;
}

gsq::LlamaConfig vocab_shape(gsq::LlamaConfig c, std::int64_t vocab) {
  c.vocab_size = vocab;  // a real vocabulary (LLaMA's 32000)
  return c;
}

std::vector<ModelSpec> model_specs() {
  return {{"stories260K", "models/stories260K/stories260K.bin", {}},
          {"tinystories656K", "models/tinystories-656K", {}},
          {"d512_h1408_l4", "", random_shape(512, 1408, 8, 4)},
          {"d1024_h2816_l2", "", random_shape(1024, 2816, 16, 2)},
          {"d2048_h5632_l1", "", random_shape(2048, 5632, 32, 1)},
          {"d2048_h5632_l2_v32000", "", vocab_shape(random_shape(2048, 5632, 32, 2), 32000)}};
}

enum class Mode { kFp32, kInt8Linear, kInt8, kInt4Linear, kInt8LinearCkpt, kFp32Cached };

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kFp32: return "fp32";
    case Mode::kInt8Linear: return "int8_linear";
    case Mode::kInt8: return "int8";
    case Mode::kInt4Linear: return "int4_linear";
    case Mode::kInt8LinearCkpt: return "int8_linear_ckpt";
    case Mode::kFp32Cached: return "fp32_cached";
  }
  return "?";
}

gsq::LlamaOptions mode_options(Mode mode) {
  const gsq::Bits bits = mode == Mode::kInt4Linear ? gsq::Bits{4, 4, 4, false, 32, 8} : gsq::Bits::w8a8g8();
  gsq::LlamaOptions o = mode == Mode::kFp32 || mode == Mode::kFp32Cached
                            ? gsq::LlamaOptions::uniform(gsq::Bits::fp32())
                            : gsq::LlamaOptions::uniform(bits, gsq::WeightFormat::kNf4);
  o.recompute_blocks = mode == Mode::kInt8LinearCkpt;
  o.recompute_projections = mode != Mode::kFp32Cached;
  if (mode == Mode::kInt8Linear || mode == Mode::kInt4Linear || mode == Mode::kInt8LinearCkpt) {
    o.attention_bits = gsq::Bits::fp32();
    o.integer_classifier = false;
  }
  o.adapter = gsq::ProjectionKind::kLora;
  o.lora.rank = 16;
  o.lora.alpha = 32.0f;
  return o;
}

std::filesystem::path data_dir() {
  if (const char* env = std::getenv("GSQ_DATA_DIR"); env != nullptr && *env != '\0') return env;
  return GSQ_DATA_DIR;  // the CMake cache variable of the build
}

/// The model, or nullopt (with the reason in `skip`) when its checkpoint is unavailable.
std::optional<gsq::Llama> build(const ModelSpec& spec, Mode mode, std::string& skip) {
  gsq::release_scratch();  // the previous benchmark's scratch would hide this one's
  if (spec.checkpoint.empty())
    return gsq::Llama(spec.config, gsq::random_llama_weights(spec.config, 1), mode_options(mode));
  const std::filesystem::path path = data_dir() / spec.checkpoint;
  if (!std::filesystem::exists(path)) {
    skip = "shared asset " + path.string() + " is absent";
    return std::nullopt;
  }
  gsq::LlamaWeights w = gsq::load_llama(path);
  return gsq::Llama(w.config, std::move(w.tensors), mode_options(mode));
}

std::vector<std::int32_t> random_ids(std::int64_t n, std::int64_t vocab) {
  gsq::CounterRng rng(7, 0);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng.next_u32() % static_cast<std::uint32_t>(vocab));
  return ids;
}

long minor_page_faults() {
  rusage ru{};
  return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_minflt : 0;
}

void report_memory(benchmark::State& state) {
  const gsq::MemoryUsage u = gsq::memory_usage();
  constexpr double kMiB = 1.0 / (1024.0 * 1024.0);
  for (int c = 0; c < gsq::kMemoryCategoryCount; ++c) {
    const auto category = static_cast<gsq::MemoryCategory>(c);
    state.counters["peak_" + std::string(gsq::memory_category_name(category)) + "_MiB"] =
        static_cast<double>(u.peak_of(category)) * kMiB;
  }
  state.counters["peak_total_MiB"] = static_cast<double>(u.total_peak) * kMiB;
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    state.counters["peak_rss_MiB"] = static_cast<double>(ru.ru_maxrss) * 1024.0 * kMiB;  // KiB on Linux
}

void bench_forward(benchmark::State& state, const ModelSpec& spec, Mode mode) {
  std::string skip;
  std::optional<gsq::Llama> model = build(spec, mode, skip);
  if (!model) {
    state.SkipWithError(skip.c_str());
    return;
  }
  gsq::reset_memory_peaks();
  const std::int64_t tokens = kBatch * kSeq;
  const auto ids = random_ids(tokens, model->config().vocab_size);
  gsq::Tensor<float> logits({tokens, model->config().vocab_size}, gsq::MemoryCategory::kScratch);
  model->forward(ids, kBatch, logits.view(), nullptr);  // warm-up: workspaces, packing
  for (auto _ : state) {
    model->forward(ids, kBatch, logits.view(), nullptr);
    benchmark::DoNotOptimize(logits.data());
  }
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  report_memory(state);
}

void bench_train_step(benchmark::State& state, const ModelSpec& spec, Mode mode) {
  std::string skip;
  std::optional<gsq::Llama> model = build(spec, mode, skip);
  if (!model) {
    state.SkipWithError(skip.c_str());
    return;
  }
  gsq::reset_memory_peaks();
  const std::int64_t tokens = kBatch * kSeq;
  const auto ids = random_ids(tokens, model->config().vocab_size);
  const gsq::NextTokenTargets tt = gsq::next_token_targets(ids, kBatch);
  gsq::optim::AdamWConfig adamw;
  adamw.lr = 1e-4f;
  gsq::optim::AdamW optimizer(adamw);
  gsq::Llama::Cache cache;
  const gsq::ParameterList params = model->parameters();
  auto step = [&] {
    const gsq::CrossEntropyResult r = model->loss_and_backward(ids, tt.targets, tt.mask, kBatch, cache);
    optimizer.step(params);
    gsq::zero_grads(params);
    return r.loss;
  };
  step();  // warm-up: caches, workspaces, optimizer state
  double loss = 0.0;
  const long faults_before = minor_page_faults();
  for (auto _ : state) loss = step();
  // A steady-state step reuses its buffers: pages faulted in per step after the warm-up
  // (0 when nothing is allocated fresh from the kernel).
  state.counters["page_faults_per_step"] =
      benchmark::Counter(static_cast<double>(minor_page_faults() - faults_before), benchmark::Counter::kAvgIterations);
  state.counters["tokens_per_s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["loss"] = loss;
  state.counters["trainable_params"] = static_cast<double>(gsq::parameter_count(params));
  state.counters["cached_KiB_per_token"] = static_cast<double>(cache.bytes()) / 1024.0 / static_cast<double>(tokens);
  report_memory(state);
}

const bool kRegistered = [] {
  static const std::vector<ModelSpec> specs = model_specs();
  for (const ModelSpec& spec : specs) {
    for (Mode mode : {Mode::kFp32, Mode::kInt8Linear, Mode::kInt8, Mode::kInt4Linear, Mode::kInt8LinearCkpt,
                      Mode::kFp32Cached}) {
      const std::string suffix = spec.name + "/" + mode_name(mode);
      if (mode == Mode::kFp32 || mode == Mode::kInt8Linear || mode == Mode::kInt8)  // the others: same forward
        benchmark::RegisterBenchmark(("forward/" + suffix).c_str(),
                                     [&spec, mode](benchmark::State& s) { bench_forward(s, spec, mode); })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      benchmark::RegisterBenchmark(("train_step/" + suffix).c_str(),
                                   [&spec, mode](benchmark::State& s) { bench_train_step(s, spec, mode); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
  return true;
}();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("gsq_threads", std::to_string(gsq::num_threads()));
  benchmark::AddCustomContext("gsq_isa", std::string(gsq::isa_name(gsq::selected_isa())));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
