// examples/support/finetune.hpp — one fine-tuning run, shared by gsq-finetune, gsq-sweep
// and gsq-quickstart.
//
// A run is: build a Llama with adapters from the FP32 base weights, train it with
// gsq::Trainer on batches from a seeded sampler, evaluate on held-out examples every
// --eval-every steps and at the end (with the forward it was trained with, and with an FP32
// forward separately — DESIGN.md's last note), and report time and memory. Memory is what
// gsq's accounting saw during training, above what was held before the run's model was
// built (so the FP32 source weights a sweep keeps do not count against every point).
// Checkpointing and exports go through support/artifacts.hpp; the run only decides when.
#pragma once

#include <gsq/core/isa.hpp>
#include <gsq/core/memory.hpp>
#include <gsq/core/parallel.hpp>
#include <gsq/io/dataset.hpp>
#include <gsq/model/evaluate.hpp>
#include <gsq/model/llama.hpp>
#include <gsq/model/trainer.hpp>
#include <gsq/nn/scratch.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "support/cli.hpp"
#include "support/data.hpp"
#include "support/jsonl.hpp"
#include "support/model.hpp"
#include "support/progress.hpp"
#include "support/signals.hpp"

namespace driver {

/// Every flag of gsq-finetune (gsq-sweep and gsq-quickstart reuse most of them).
struct FinetuneSettings {
  std::string model, tokenizer, data, eval_data, out;
  std::string method = "lora";
  std::string precision = "fp32";
  std::string base = "auto";
  std::string targets = "q,k,v,o,gate,up,down";
  int group = 32;
  std::int64_t rank = 8;
  float alpha = 16.0f;
  int quant_bits = 4;
  int quant_group = 128;
  std::int64_t l4q_warmup = 0;
  bool l4q_fp16_grid = false;
  std::string attention_precision = "fp32";
  std::string classifier_precision = "fp32";
  bool int_classifier = false;
  std::string grad_rounding = "nearest";
  std::int64_t steps = 600;
  std::int64_t batch = 8;
  std::int64_t grad_accum = 1;  // micro-batches of `batch` per optimizer step
  std::int64_t seq_len = 256;
  float lr = 2e-3f;
  std::int64_t warmup = -1;  // -1: steps / 20
  float min_lr = 0.0f;
  float weight_decay = 0.0f;
  double clip = 1.0;
  std::uint64_t seed = 0;
  int threads = 0;
  std::int64_t eval_every = 0;
  std::int64_t eval_max = 0;
  std::int64_t max_items = 0;
  std::int64_t save_every = 0;
  std::int64_t log_every = 10;
  std::string data_format = "auto";
  std::int64_t micro_batches = 0;  // 0: one per MPI rank (1 without MPI)
  bool resume = false;
  bool overwrite = false;
  bool fp32_eval = true;
  bool recompute_blocks = false;
  bool double_quant = false;

  std::int64_t warmup_steps() const {
    return warmup >= 0 ? warmup : std::min<std::int64_t>(steps / 20, 100);
  }

  AdapterSpec adapter_spec() const {
    AdapterSpec a;
    a.method = method;
    a.bits = parse_precision(precision, group);
    a.base = parse_base_format(base, a.bits);
    a.rank = rank;
    a.alpha = alpha;
    a.targets = parse_targets(targets);
    a.quant_bits = quant_bits;
    a.quant_group = quant_group;
    a.l4q_warmup = l4q_warmup;
    a.l4q_fp16_grid = l4q_fp16_grid;
    a.seed = seed;
    const IntegerScope scope = parse_integer_scope(attention_precision, classifier_precision, int_classifier, group);
    a.attention_bits = scope.attention_bits;
    a.attention_bf16 = scope.attention_bf16;
    a.integer_classifier = scope.integer_classifier;
    a.classifier_bf16 = scope.classifier_bf16;
    a.gradient_rounding = parse_gradient_rounding(grad_rounding);
    a.recompute_blocks = recompute_blocks;
    a.double_quant = double_quant;
    if (double_quant && a.base != gsq::WeightFormat::kNf4)
      config_error("--double-quant applies to an NF4 base (--base nf4, the default of integer runs), not " +
                   std::string(gsq::weight_format_name(a.base)));
    (void)a.options();  // validates method, rank, alpha, L4Q settings
    return a;
  }

  gsq::TrainerConfig trainer_config() const {
    gsq::TrainerConfig t;
    t.total_steps = steps;
    t.lr = lr;
    t.warmup_steps = warmup_steps();
    t.min_lr = min_lr;
    t.weight_decay = weight_decay;
    t.max_grad_norm = clip;
    t.micro_batches = std::max<std::int64_t>(micro_batches, 1);
    try {
      t.validate();
    } catch (const gsq::Error& e) {
      config_error(std::string("training settings: ") + e.what());
    }
    return t;
  }

  /// Checks every value that can be checked without reading files.
  void validate() const {
    if (steps < 1) config_error("--steps must be >= 1, got " + std::to_string(steps));
    if (batch < 1) config_error("--batch must be >= 1, got " + std::to_string(batch));
    if (grad_accum < 1) config_error("--grad-accum must be >= 1, got " + std::to_string(grad_accum));
    if (seq_len < 2) config_error("--seq-len must be >= 2, got " + std::to_string(seq_len));
    if (threads < 0) config_error("--threads must be >= 0, got " + std::to_string(threads));
    if (threads > 4096) config_error("--threads must be at most 4096, got " + std::to_string(threads));
    if (eval_every < 0 || save_every < 0 || eval_max < 0 || max_items < 0 || log_every < 1)
      config_error("--eval-every, --save-every, --eval-max and --max-items must be >= 0, --log-every >= 1");
    if (!(clip >= 0.0) || !std::isfinite(clip))
      config_error("--clip must be a finite norm >= 0 (0 turns clipping off), got " + std::to_string(clip));
    if (rank < 1) config_error("--rank must be >= 1, got " + std::to_string(rank));
    if (micro_batches < 0 || micro_batches > batch)
      config_error("--micro-batches must be in 0..--batch (" + std::to_string(batch) + "), got " +
                   std::to_string(micro_batches));
    (void)parse_data_format(data_format);
    (void)adapter_spec();
    (void)trainer_config();
  }

  nlohmann::json to_json() const {
    return {{"model", model},        {"tokenizer", tokenizer},   {"data", data},
            {"eval_data", eval_data}, {"method", method},         {"precision", precision},
            {"base", base},          {"targets", targets},       {"group", group},
            {"rank", rank},          {"alpha", alpha},           {"quant_bits", quant_bits},
            {"quant_group", quant_group}, {"l4q_warmup", l4q_warmup},
            {"attention_precision", attention_precision},
            {"classifier_precision", int_classifier ? std::string("same") : classifier_precision},
            {"grad_rounding", grad_rounding}, {"steps", steps},
            {"batch", batch},        {"grad_accum", grad_accum}, {"seq_len", seq_len},       {"lr", lr},
            {"warmup", warmup_steps()}, {"min_lr", min_lr},      {"weight_decay", weight_decay},
            {"clip", clip},          {"seed", seed},             {"max_items", max_items},
            {"data_format", data_format}, {"micro_batches", std::max<std::int64_t>(micro_batches, 1)},
            {"recompute_blocks", recompute_blocks}, {"double_quant", double_quant}};
  }
};

/// Registers the model, data, adapter and training flags on `app`.
inline void add_model_flags(CLI::App& app, FinetuneSettings& s) {
  app.add_option("--model", s.model, "base model: llama2.c .bin or Hugging Face directory")->required();
  app.add_option("--tokenizer", s.tokenizer,
                 "tokenizer file (default: the one next to the model or inside its directory)");
}

inline void add_adapter_flags(CLI::App& app, FinetuneSettings& s, bool with_precision_and_rank) {
  app.add_option("--method", s.method, "lora: LoRA adapters over a frozen base (GSQ-Tuning); "
                                       "l4q: quantization-aware LoRA with one quantized merged weight")
      ->capture_default_str();
  if (with_precision_and_rank) {
    app.add_option("--precision", s.precision,
                   "products of forward and backward: fp32, or GSE-INT widths "
                   "w<weight>a<activation>g<gradient> such as w8a8g8, w6a6g6, w5a5g5, w4a8g8")
        ->capture_default_str();
    app.add_option("--rank", s.rank, "adapter rank r")->capture_default_str();
  }
  app.add_option("--group", s.group, "GSE-INT group size G (values sharing one exponent)")->capture_default_str();
  app.add_option("--alpha", s.alpha, "adapter scale numerator (scale = alpha / rank)")->capture_default_str();
  app.add_option("--targets", s.targets,
                 "projections that get adapters: q,k,v,o,gate,up,down (or all, attn, mlp)")
      ->capture_default_str();
  app.add_option("--base", s.base,
                 "storage of the frozen base weights: auto (fp32 for --precision fp32, nf4 "
                 "otherwise), fp32, nf4 or gse")
      ->capture_default_str();
  app.add_option("--quant-bits", s.quant_bits, "L4Q: bits of the quantized merged weight")->capture_default_str();
  app.add_option("--quant-group", s.quant_group, "L4Q: weights per step/offset pair")->capture_default_str();
  app.add_flag("--l4q-fp16-grid", s.l4q_fp16_grid,
               "L4Q: keep steps and minimums on the FP16 grid, so gsq-export's GGUF Q4_1 (with --quant-group 32) is exact");
  app.add_option("--l4q-warmup", s.l4q_warmup, "L4Q: LoRA-only steps before quantization starts")
      ->capture_default_str();
  add_integer_scope_flags(app, s.attention_precision, s.classifier_precision, s.int_classifier);
  app.add_option("--grad-rounding", s.grad_rounding,
                 "integer runs: rounding of the quantized gradients dY, dH: nearest (half to even) or "
                 "stochastic (unbiased; Philox keyed by seed, step and tensor)")
      ->capture_default_str();
}

inline void add_training_flags(CLI::App& app, FinetuneSettings& s) {
  app.add_option("--data", s.data,
                 "training data: Alpaca-style JSON array or JSON Lines (loss on the response only) or plain text")
      ->required();
  app.add_option("--eval-data", s.eval_data, "held-out data for evaluation (same formats)");
  app.add_option("--data-format", s.data_format,
                 "format of --data and --eval-data: alpaca (JSON array of instruction objects), jsonl (one "
                 "instruction or {\"text\"} object per line), text, or auto (decided from the content when "
                 "unambiguous)")
      ->capture_default_str();
  app.add_option("--steps", s.steps, "optimizer steps")->capture_default_str();
  app.add_option("--batch", s.batch, "sequences per micro-batch (per step without --grad-accum)")->capture_default_str();
  app.add_option("--grad-accum", s.grad_accum,
                 "micro-batches whose gradients add up before each optimizer step (loss normalised by "
                 "the response tokens of all of them)")
      ->capture_default_str();
  app.add_option("--seq-len", s.seq_len, "tokens per sequence (longer examples are cut)")->capture_default_str();
  app.add_option("--lr", s.lr, "peak learning rate (AdamW)")->capture_default_str();
  app.add_option("--warmup", s.warmup, "linear warm-up steps before the cosine decay (default steps/20, at most 100)");
  app.add_option("--min-lr", s.min_lr, "learning rate at the end of the cosine decay")->capture_default_str();
  app.add_option("--weight-decay", s.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  app.add_option("--clip", s.clip, "global gradient-norm clipping (0: off)")->capture_default_str();
  app.add_option("--seed", s.seed, "seed of adapter initialisation and data order")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) {
            return v.find('-') != std::string::npos ? "--seed must be >= 0, got " + v : std::string();
          },
          "SEED >= 0"));
  app.add_option("--threads", s.threads, "threads (0: all cores or OMP_NUM_THREADS)")->capture_default_str();
  app.add_option("--micro-batches", s.micro_batches,
                 "cut each batch into N parts whose gradients are summed in order (data parallelism under "
                 "mpirun; the same N gives the same bits on any number of ranks; 0: one per rank)")
      ->capture_default_str();
  app.add_option("--eval-every", s.eval_every, "evaluate on --eval-data every N steps (0: only at the end)")
      ->capture_default_str();
  app.add_option("--eval-max", s.eval_max, "use at most N held-out items (0: all)")->capture_default_str();
  app.add_option("--max-items", s.max_items, "use at most N training items (0: all)")->capture_default_str();
}

/// What a run of `s` on a model of `c` is expected to need at its peak, by part.
struct MemoryEstimate {
  std::int64_t weights = 0;      // the base as stored (+ its FP32 copy where not streamed), adapters, AdamW
  std::int64_t rope = 0;         // RoPE tables for the model's whole context
  std::int64_t activations = 0;  // kept for backward + one layer's working set: batch × seq-len tokens
  std::int64_t total() const { return weights + rope + activations; }
};

namespace detail {
inline std::int64_t saturating_mul(std::int64_t a, std::int64_t b) {
  constexpr std::int64_t kMax = std::int64_t{1} << 62;
  if (a <= 0 || b <= 0) return 0;
  return a > kMax / b ? kMax : a * b;
}
inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  constexpr std::int64_t kMax = std::int64_t{1} << 62;
  return a > kMax - b ? kMax : a + b;
}
}  // namespace detail

/// An upper-side estimate. Weights: the frozen projections in their stored form (NF4
/// 4.5 bits per weight with its scales, GSE-INT b bits plus an exponent per group, FP32
/// 32 bits; L4Q counted as FP32), the embedding and classifier as FP32 (BF16 checkpoints
/// keep them at half that), adapters with gradient and AdamW moments, and an FP32 copy of
/// the whole base when the model is not streamed from its file. Activations: what the
/// blocks keep for backward and one layer's working set, per token (below; within ~15%
/// of bench_model's cached activations plus scratch at d2048, README "Training
/// memory"). This is the bound a run is refused by, so where unsure it errs high.
/// Saturates instead of overflowing.
inline MemoryEstimate estimate_training_memory(const gsq::LlamaConfig& c, const AdapterSpec& spec, bool streamed,
                                               std::int64_t batch, std::int64_t seq_len) {
  using detail::saturating_add;
  using detail::saturating_mul;
  MemoryEstimate m;
  const std::int64_t kv = c.n_kv_heads * c.head_size();
  const std::int64_t per_block = saturating_add(saturating_mul(2 * c.dim, c.dim + kv), saturating_mul(3 * c.dim, c.hidden_dim));
  const std::int64_t projections = saturating_mul(c.n_layers, per_block);
  const std::int64_t tables = saturating_mul(2 * c.vocab_size, c.dim);
  // Stored bits per projection weight, ×64 to stay in integers.
  std::int64_t bits64 = 32 * 64;
  if (spec.method == "lora" && spec.base == gsq::WeightFormat::kNf4)
    bits64 = 4 * 64 + (spec.double_quant ? 9 : 32);  // + the absmax per 64: FP32, or 8-bit codes + scales
  if (spec.method == "lora" && spec.base == gsq::WeightFormat::kGse)
    bits64 = spec.bits.weight * 64 + 8 * 64 / std::max(1, spec.bits.group);
  const std::int64_t stored = saturating_add(saturating_mul(projections, bits64) / (8 * 64), saturating_mul(tables, 4));
  const std::int64_t adapter_params = saturating_mul(
      saturating_mul(c.n_layers, spec.rank), saturating_add(saturating_mul(6, c.dim), saturating_add(2 * kv, 3 * c.hidden_dim)));
  m.weights = saturating_add(stored, saturating_mul(adapter_params, 4 * 4));  // value, gradient, two moments
  if (!streamed) m.weights = saturating_add(m.weights, saturating_mul(saturating_add(projections, tables), 4));
  m.rope = saturating_mul(saturating_mul(c.max_seq_len, c.head_size()), 4 * 2);
  // Per token, as the model stores it (README, "Training memory"): each block keeps its
  // FP32 input and attention output (8·dim bytes) and the codes of the four inputs its
  // projections quantize (3·dim + hidden values: packed 4, 6 or 8 bits plus one exponent
  // byte per group, or FP32); with --recompute-blocks only the input of every block and
  // one block's cache. Then the final norm's input, and the working set of one layer,
  // shared by all (the MLP's three hidden-size buffers; ~16 dim-size ones: the block's
  // workspace, attention's packed K and V, quantized gradients, GEMM workspaces; one
  // chunk of at most 8192 logits). Attention keeps only its output and log-sum-exp.
  const bool fp32 = spec.bits.is_fp32();
  const int a = spec.bits.activation;
  const std::int64_t code_bits64 =
      fp32 ? 32 * 64 : (a <= 4 ? 4 : a <= 6 ? 6 : 8) * 64 + 8 * 64 / std::max(1, spec.bits.group);
  const std::int64_t block = saturating_add(
      saturating_add(8 * c.dim, 8 * c.n_heads),
      saturating_mul(saturating_add(3 * c.dim, c.hidden_dim), code_bits64) / (8 * 64));
  const std::int64_t kept = spec.recompute_blocks
                                ? saturating_add(saturating_mul(c.n_layers, 4 * c.dim), block)
                                : saturating_mul(c.n_layers, block);
  const std::int64_t working_set =
      saturating_mul(saturating_add(saturating_add(3 * c.hidden_dim, 16 * c.dim), std::min<std::int64_t>(c.vocab_size, 8192)), 4);
  const std::int64_t per_token = saturating_add(saturating_add(kept, 4 * c.dim), working_set);
  m.activations = saturating_mul(saturating_mul(batch, seq_len), per_token);
  return m;
}

/// Physical memory of this machine (0 when unknown).
inline std::int64_t physical_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<std::int64_t>(pages) * page : 0;
}

/// The checks that need the model: rank within every adapted projection, seq-len within
/// the context, and the memory estimate (printed) within this machine's memory.
inline MemoryEstimate check_against_model(const FinetuneSettings& s, const AdapterSpec& spec, const gsq::LlamaConfig& c,
                                          bool streamed, bool print = true) {
  const std::int64_t kv = c.n_kv_heads * c.head_size();
  for (const std::string& t : spec.targets) {
    const std::int64_t in = t == "down_proj" ? c.hidden_dim : c.dim;
    const std::int64_t out = t == "gate_proj" || t == "up_proj"     ? c.hidden_dim
                             : t == "k_proj" || t == "v_proj" ? kv
                                                              : c.dim;
    if (s.rank > std::min(in, out))
      config_error("--rank " + std::to_string(s.rank) + " exceeds " + t + "'s smaller side (" + std::to_string(in) +
                   " in, " + std::to_string(out) + " out): a rank-r update of that matrix needs r <= " +
                   std::to_string(std::min(in, out)));
  }
  if (s.seq_len > c.max_seq_len)
    config_error("--seq-len " + std::to_string(s.seq_len) + " exceeds the model's context of " +
                 std::to_string(c.max_seq_len) + " (max_position_embeddings)");
  const MemoryEstimate m = estimate_training_memory(c, spec, streamed, s.batch, s.seq_len);
  const std::int64_t have = physical_memory_bytes();
  if (print)
    std::printf("  memory estimate: %s (weights %s, RoPE tables %s, activations + scratch %s for %lld x %lld tokens)%s%s\n",
                format_bytes(m.total()).c_str(), format_bytes(m.weights).c_str(), format_bytes(m.rope).c_str(),
                format_bytes(m.activations).c_str(), static_cast<long long>(s.batch),
                static_cast<long long>(s.seq_len), have > 0 ? "; this machine has " : "",
                have > 0 ? format_bytes(have).c_str() : "");
  if (have > 0 && m.total() > have) {
    std::string why = "the run would need about " + format_bytes(m.total()) + " (weights " +
                      format_bytes(m.weights) + ", RoPE tables " + format_bytes(m.rope) + " for max_position_embeddings " +
                      std::to_string(c.max_seq_len) + ", activations + scratch " + format_bytes(m.activations) + " for --batch " +
                      std::to_string(s.batch) + " x --seq-len " + std::to_string(s.seq_len) + "), more than this machine's " +
                      format_bytes(have);
    gsq::detail::throw_error(gsq::ErrorCode::kOutOfMemory,
                             why + (m.rope > have / 2 ? "; the model's config declares an implausible context"
                                                      : "; lower --batch or --seq-len"));
  }
  return m;
}

/// Sums of a run.
struct FinetuneResult {
  std::int64_t steps_done = 0;
  std::int64_t first_step = 0;  // steps already done when this process started (resume)
  bool interrupted = false;
  double first_loss = 0.0;      // the first step this process ran
  double final_loss = 0.0;      // mean training loss over the last 10% of steps (>= 1)
  double comm_seconds = 0.0;    // of `seconds`, waiting on the gradient reducer (MPI)
  std::optional<gsq::EvalResult> eval;       // the trained forward
  std::optional<gsq::EvalResult> eval_fp32;  // an FP32 forward of the same adapters
  double seconds = 0.0;         // training only (no evaluation)
  double load_seconds = 0.0;    // building the model: reading the base, quantizing it
  std::int64_t tokens = 0;      // positions processed by this process
  std::int64_t trainable_params = 0;
  std::int64_t weight_bytes = 0;            // the built model's stored weights
  std::int64_t peak_bytes = 0;              // peak during training, above the start
  std::array<std::int64_t, gsq::kMemoryCategoryCount> peak_by_category{};
  double tokens_per_second() const { return seconds > 0.0 ? static_cast<double>(tokens) / seconds : 0.0; }
};

/// What happens around the loop: printing, logging, checkpoints (all optional).
struct RunHooks {
  bool print = true;
  JsonlLog* log = nullptr;
  /// Called to write a checkpoint (interrupt, --save-every).
  std::function<void(gsq::Trainer&, const gsq::data::BatchSampler&)> checkpoint;
  /// Called before the first step, e.g. to restore a checkpoint into the trainer.
  std::function<void(gsq::Trainer&, gsq::data::BatchSampler&)> restore;
  /// Called once the model is built, before the trainer (e.g. --save-base).
  std::function<void(gsq::Llama&)> after_build;
  /// A label printed before the progress line (sweeps).
  std::string label;
  /// Data parallelism: where gradients meet (include/gsq/dist/); nullptr: one process.
  gsq::GradientReducer* reducer = nullptr;
};

namespace detail {
inline nlohmann::json eval_json(const char* event, std::int64_t step, const gsq::EvalResult& r,
                                const std::string& forward) {
  return {{"event", event},   {"step", step},          {"forward", forward},
          {"nll", r.mean_nll()}, {"ppl", r.perplexity()}, {"tokens", r.tokens}};
}
}  // namespace detail

/// Evaluates `model` on `batches`.
inline gsq::EvalResult evaluate_batches(gsq::Llama& model, const std::vector<gsq::data::Batch>& batches) {
  return gsq::evaluate(model, batches);
}

/// The same adapters under an FP32 forward: a twin model with FP32 products (same base
/// storage) holding copies of the trained parameters.
inline gsq::EvalResult evaluate_fp32_forward(const BaseModel& base, const AdapterSpec& spec,
                                             const gsq::ParameterList& trained,
                                             const std::vector<gsq::data::Batch>& batches) {
  gsq::LlamaOptions o = spec.options();
  o.bits = gsq::Bits::fp32();
  o.attention_bits = gsq::Bits::fp32();
  o.attention_bf16 = false;
  o.classifier_bf16 = false;
  o.lora.bits = gsq::Bits::fp32();
  o.l4q.bits = gsq::Bits::fp32();
  o.l4q.warmup_steps = 0;
  std::optional<gsq::Llama> twin;
  emplace_model(twin, base, o);
  gsq::restore_parameters(twin->parameters(), gsq::snapshot_parameters(trained));
  return gsq::evaluate(*twin, batches);
}

/// Trains one model. `eval` may be empty (no evaluation). `model_out`, when given,
/// receives the trained model (for exports and samples).
inline FinetuneResult run_finetune(const FinetuneSettings& s, const BaseModel& base,
                                   const Dataset& train, const std::vector<gsq::data::Batch>& eval,
                                   RunHooks hooks, std::optional<gsq::Llama>* model_out = nullptr) {
  const AdapterSpec spec = s.adapter_spec();
  const gsq::TrainerConfig tc = s.trainer_config();
  if (s.threads > 0) gsq::set_num_threads(s.threads);

  gsq::release_scratch();  // a previous run's (a sweep's) scratch must not hide this run's
  const gsq::MemoryUsage before = gsq::memory_usage();
  std::optional<gsq::Llama> holder;
  std::optional<gsq::Llama>& model = model_out != nullptr ? *model_out : holder;
  const auto load_start = std::chrono::steady_clock::now();
  emplace_model(model, base, spec.options());
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  if (hooks.print) std::printf("  model built in %.1f s (base read and stored as %s)\n", load_seconds,
                               std::string(gsq::weight_format_name(spec.base)).c_str());
  if (hooks.after_build) hooks.after_build(*model);
  gsq::Trainer trainer(*model, tc);
  trainer.set_reducer(hooks.reducer);
  const int ranks = hooks.reducer != nullptr ? hooks.reducer->ranks() : 1;
  gsq::data::BatchSampler sampler(train.examples, s.batch, s.seq_len, s.seed);
  if (hooks.restore) hooks.restore(trainer, sampler);

  FinetuneResult r;
  r.load_seconds = load_seconds;
  r.first_step = trainer.steps_done();
  r.trainable_params = gsq::parameter_count(trainer.parameters());
  r.weight_bytes = model->weight_bytes();
  const std::string forward = spec.bits.name();
  if (hooks.log != nullptr)
    hooks.log->write({{"event", r.first_step > 0 ? "resume" : "start"},
                      {"step", r.first_step},
                      {"settings", s.to_json()},
                      {"adapter", spec.describe()},
                      {"trainable_params", r.trainable_params},
                      {"weight_bytes", r.weight_bytes},
                      {"train_examples", train.examples.size()},
                      {"eval_batches", eval.size()},
                      {"threads", gsq::num_threads()},
                      {"ranks", ranks},
                      {"micro_batches", tc.micro_batches},
                      {"isa", std::string(gsq::isa_name(gsq::selected_isa()))}});
  if (hooks.print && !hooks.label.empty()) std::printf("%s\n", hooks.label.c_str());

  auto run_eval = [&](std::int64_t step) {
    const gsq::EvalResult e = evaluate_batches(*model, eval);
    if (hooks.log != nullptr) hooks.log->write(detail::eval_json("eval", step, e, forward));
    return e;
  };

  ProgressLine progress(s.steps, s.log_every, hooks.print && stdout_is_terminal());
  gsq::reset_memory_peaks();
  std::vector<double> losses;
  const std::int64_t tail = std::max<std::int64_t>(1, s.steps / 10);
  while (trainer.steps_done() < s.steps) {
    std::vector<gsq::data::Batch> micro;
    std::vector<gsq::BatchView> views;
    for (std::int64_t i = 0; i < s.grad_accum; ++i) micro.push_back(sampler.next());
    for (const gsq::data::Batch& b : micro) views.push_back(gsq::batch_view(b));
    const gsq::TrainStep st = trainer.step(std::span<const gsq::BatchView>(views));
    r.seconds += st.seconds;
    r.comm_seconds += st.comm_seconds;
    r.tokens += st.tokens;
    if (r.steps_done == 0 && st.step == r.first_step + 1) r.first_loss = st.loss;
    r.steps_done = st.step;
    losses.push_back(st.loss);
    const double rate = r.tokens_per_second();
    const double per_step = r.seconds / static_cast<double>(st.step - r.first_step);
    const double eta = per_step * static_cast<double>(s.steps - st.step);
    if (hooks.log != nullptr)
      hooks.log->write({{"event", "step"},          {"step", st.step},
                        {"loss", st.loss},          {"lr", st.lr},
                        {"grad_norm", st.grad_norm}, {"tokens", st.tokens},
                        {"counted", st.counted},    {"seconds", st.seconds},
                        {"comm_seconds", st.comm_seconds},
                        {"tokens_per_s", rate},     {"peak_bytes", gsq::memory_usage().total_peak - before.total_current}});
    if (hooks.print) progress.update(st.step, st.loss, st.lr, rate, eta);
    if (s.eval_every > 0 && !eval.empty() && st.step % s.eval_every == 0 && st.step < s.steps) {
      const gsq::EvalResult e = run_eval(st.step);
      if (hooks.print)
        progress.message("eval @ %lld: held-out loss %.4f, perplexity %.3f (%s forward)",
                         static_cast<long long>(st.step), e.mean_nll(), e.perplexity(), forward.c_str());
    }
    if (hooks.checkpoint && s.save_every > 0 && st.step % s.save_every == 0 && st.step < s.steps)
      hooks.checkpoint(trainer, sampler);
    if (stop_requested() != 0 && trainer.steps_done() < s.steps) {
      r.interrupted = true;
      break;
    }
  }
  progress.finish();
  const gsq::MemoryUsage after = gsq::memory_usage();
  r.peak_bytes = after.total_peak - before.total_current;
  for (int c = 0; c < gsq::kMemoryCategoryCount; ++c)
    r.peak_by_category[static_cast<std::size_t>(c)] = after.peak[static_cast<std::size_t>(c)] - before.current[static_cast<std::size_t>(c)];
  r.steps_done = trainer.steps_done();
  if (!losses.empty()) {
    const auto n = std::min<std::size_t>(losses.size(), static_cast<std::size_t>(tail));
    double sum = 0.0;
    for (std::size_t i = losses.size() - n; i < losses.size(); ++i) sum += losses[i];
    r.final_loss = sum / static_cast<double>(n);
  }
  if (r.interrupted) {
    if (hooks.checkpoint) hooks.checkpoint(trainer, sampler);
    return r;
  }
  if (!eval.empty()) {
    r.eval = run_eval(r.steps_done);
    if (s.fp32_eval && !spec.bits.is_fp32()) {
      r.eval_fp32 = evaluate_fp32_forward(base, spec, trainer.parameters(), eval);
      if (hooks.log != nullptr)
        hooks.log->write(detail::eval_json("eval", r.steps_done, *r.eval_fp32, "fp32"));
    }
  }
  return r;
}

}  // namespace driver
