// gsq/model/trainer.hpp — the training loop every driver shares.
//
// One step of LoRA / L4Q fine-tuning is always the same five things:
//     forward → masked cross-entropy → backward → global-norm clipping → AdamW
// with the learning rate from a linear warm-up + cosine schedule (optim/schedule.hpp).
// The fine-tuning driver, the Pareto sweep and the quickstart all run this class, so a
// change to the recipe happens in one place and the library user gets the same loop.
//
//     gsq::Trainer trainer(model, {.total_steps = 600, .lr = 2e-3f, .warmup_steps = 30});
//     while (trainer.steps_done() < 600) {
//       gsq::data::Batch b = sampler.next();           // any type with inputs/targets/mask/rows
//       gsq::TrainStep s = trainer.step(gsq::batch_view(b));
//     }
//
// The trainer's whole mutable state is the model's trainable parameters plus the
// optimizer state (moments and step count); the learning rate is a pure function of the
// step count. `state()` / `load_state()` move that state in and out as plain named
// tensors, so a checkpoint writer (io/) stores it without knowing the trainer, and a run
// resumed from it — with the data sampler's cursor — continues bit for bit.
//
// The trainer runs in its model's gsq::Context (Llama::context()): every step installs it.
//
// Batches are trimmed to the last position that counts in the loss before the forward
// (`trim_padding`): with causal attention nothing after it can change the loss, and
// instruction batches padded to --seq-len are often half padding.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/model/llama.hpp"
#include "gsq/nn/loss.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/optim/clip.hpp"
#include "gsq/optim/schedule.hpp"
#include "gsq/optim/state.hpp"

GSQ_NAMESPACE_BEGIN

/// A batch of `rows` sequences of equal length, flattened row-major: inputs[t] predicts
/// targets[t], which counts in the loss where mask[t] != 0. Non-owning.
struct BatchView {
  std::span<const std::int32_t> inputs;
  std::span<const std::int32_t> targets;
  std::span<const std::uint8_t> mask;
  std::int64_t rows = 0;

  std::int64_t seq_len() const noexcept {
    return rows > 0 ? static_cast<std::int64_t>(inputs.size()) / rows : 0;
  }
  std::int64_t counted() const noexcept {
    return static_cast<std::int64_t>(std::count_if(mask.begin(), mask.end(),
                                                   [](std::uint8_t m) { return m != 0; }));
  }
  /// Throws ShapeError unless the three arrays are `rows` whole sequences of one length.
  void validate(std::string_view where) const {
    GSQ_CHECK(rows > 0 && !inputs.empty() && inputs.size() % static_cast<std::size_t>(rows) == 0 &&
                  targets.size() == inputs.size() && mask.size() == inputs.size(),
              ErrorCode::kShapeMismatch,
              std::string(where) + ": a batch of " + std::to_string(rows) + " rows has " +
                  std::to_string(inputs.size()) + " inputs, " + std::to_string(targets.size()) +
                  " targets and " + std::to_string(mask.size()) + " mask entries");
  }
};

/// Anything shaped like a batch (gsq::data::Batch, a test's struct): vectors named
/// inputs, targets, mask and a row count.
template <class B>
concept TokenBatch = requires(const B& b) {
  { b.rows } -> std::convertible_to<std::int64_t>;
  { std::span<const std::int32_t>(b.inputs) };
  { std::span<const std::int32_t>(b.targets) };
  { std::span<const std::uint8_t>(b.mask) };
};

template <TokenBatch B>
BatchView batch_view(const B& b) {
  return {std::span<const std::int32_t>(b.inputs), std::span<const std::int32_t>(b.targets),
          std::span<const std::uint8_t>(b.mask), static_cast<std::int64_t>(b.rows)};
}

/// An owning batch (what trim_batch returns).
struct OwnedBatch {
  std::vector<std::int32_t> inputs;
  std::vector<std::int32_t> targets;
  std::vector<std::uint8_t> mask;
  std::int64_t rows = 0;
};

/// The batch cut after the last column in which any row counts (at least one column):
/// the loss and every gradient are unchanged under causal attention. Returns the batch
/// unchanged when nothing can be cut.
inline OwnedBatch trim_batch(const BatchView& b) {
  b.validate("trim_batch");
  const std::int64_t seq = b.seq_len();
  std::int64_t keep = 1;
  for (std::int64_t r = 0; r < b.rows; ++r)
    for (std::int64_t t = seq; t-- > keep;)
      if (b.mask[static_cast<std::size_t>(r * seq + t)] != 0) {
        keep = t + 1;
        break;
      }
  OwnedBatch out;
  out.rows = b.rows;
  const auto n = static_cast<std::size_t>(b.rows * keep);
  out.inputs.resize(n);
  out.targets.resize(n);
  out.mask.resize(n);
  for (std::int64_t r = 0; r < b.rows; ++r) {
    const auto src = static_cast<std::size_t>(r * seq), dst = static_cast<std::size_t>(r * keep);
    const auto len = static_cast<std::ptrdiff_t>(keep);
    std::copy_n(b.inputs.begin() + static_cast<std::ptrdiff_t>(src), len, out.inputs.begin() + static_cast<std::ptrdiff_t>(dst));
    std::copy_n(b.targets.begin() + static_cast<std::ptrdiff_t>(src), len, out.targets.begin() + static_cast<std::ptrdiff_t>(dst));
    std::copy_n(b.mask.begin() + static_cast<std::ptrdiff_t>(src), len, out.mask.begin() + static_cast<std::ptrdiff_t>(dst));
  }
  return out;
}

struct TrainerConfig {
  std::int64_t total_steps = 100;  // the schedule's length (cosine reaches min_lr here)
  float lr = 1e-3f;                // peak learning rate
  std::int64_t warmup_steps = 0;   // linear warm-up to lr
  float min_lr = 0.0f;             // end of the cosine decay
  float weight_decay = 0.0f;       // AdamW decoupled decay (never on norms or L4Q step/offset)
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  double max_grad_norm = 1.0;      // global-norm clipping; <= 0 disables it
  bool trim_padding = true;        // cut batches after their last counted position
  // Micro-batches per step (data parallelism, GradientReducer): the batch's rows are cut
  // into this many contiguous parts, each part's gradient is computed on its own (every
  // loss normalised by the whole batch's token count) and the parts are summed in index
  // order. The same value gives the same bits on any number of processes; 1 is one pass.
  std::int64_t micro_batches = 1;

  void validate() const {
    GSQ_CHECK(total_steps >= 1, ErrorCode::kInvalidArgument,
              "TrainerConfig: total_steps must be >= 1, got " + std::to_string(total_steps));
    GSQ_CHECK(warmup_steps >= 0 && warmup_steps < total_steps, ErrorCode::kInvalidArgument,
              "TrainerConfig: need 0 <= warmup_steps < total_steps, got warmup_steps=" +
                  std::to_string(warmup_steps) + " total_steps=" + std::to_string(total_steps));
    GSQ_CHECK(std::isfinite(lr) && lr > 0.0f, ErrorCode::kInvalidArgument,
              "TrainerConfig: lr must be finite and > 0, got " + std::to_string(lr));
    GSQ_CHECK(std::isfinite(max_grad_norm), ErrorCode::kInvalidArgument,
              "TrainerConfig: max_grad_norm must be finite");
    GSQ_CHECK(micro_batches >= 1, ErrorCode::kInvalidArgument,
              "TrainerConfig: micro_batches must be >= 1, got " + std::to_string(micro_batches));
    adamw().validate();
    (void)schedule();
  }
  optim::AdamWConfig adamw() const {
    return {.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps, .weight_decay = weight_decay};
  }
  optim::Schedule schedule() const {
    return optim::Schedule::warmup_cosine(lr, warmup_steps, total_steps, min_lr);
  }
};

/// The seam of data-parallel training: compute gradients → reduce → apply the update.
/// The trainer exchanges the gradients of the micro-batches this process owns in
/// groups (Llama::parameters(): the final norm and lm_head, then each block, then the
/// embedding with the loss sums), in the order backward finishes them, so the exchange
/// of block i runs while block i−1's backward computes. Each exchange is an allgather:
/// every process receives every process's buffer unchanged, rank 0's first — which is
/// micro-batch order, because rank r owns micro-batches [r·M/R, (r+1)·M/R). The
/// trainer then adds the parts in micro-batch index order itself, so the sum never
/// depends on a library's reduction order or on the number of processes. Token counts
/// need no exchange: every process holds the whole global batch (same seeded sampler)
/// and normalises by its token count. The default is one process (a copy);
/// include/gsq/dist/mpi_reducer.hpp is the MPI implementation.
class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual int ranks() const noexcept { return 1; }
  virtual int rank() const noexcept { return 0; }
  /// Starts `all` ← every rank's `local`, rank 0 first; rank r contributes counts[r]
  /// floats (read during the call only). Every rank starts the same gathers in the same
  /// order; `local` and `all` stay untouched until wait_all(). An implementation may
  /// complete the gather at once.
  virtual void start_allgather(std::span<const float> local, std::span<const std::int64_t> counts,
                               std::span<float> all) {
    (void)counts;
    std::copy(local.begin(), local.end(), all.begin());
  }
  /// Called between blocks of backward: lets started gathers advance (MPI libraries
  /// without a progress thread move nonblocking collectives only inside MPI calls).
  virtual void progress() {}
  /// Completes every started gather.
  virtual void wait_all() {}
};

/// What one step did.
struct TrainStep {
  std::int64_t step = 0;        // steps done after this one (1-based)
  double loss = 0.0;            // mean masked cross-entropy of the batch (before the update)
  std::int64_t counted = 0;     // positions that counted in the loss
  std::int64_t tokens = 0;      // positions run through the model (rows × trimmed length)
  double grad_norm = 0.0;       // global gradient norm before clipping
  float lr = 0.0f;              // learning rate used by this update
  double seconds = 0.0;         // wall time of the step
  double comm_seconds = 0.0;    // of which waiting for the gradient exchange to complete
};

/// The trainer's whole mutable state, as plain data (see the file comment).
struct TrainerState {
  std::int64_t step = 0;
  std::vector<optim::NamedTensor> parameters;  // the trainable FP32 masters by name
  optim::OptimizerState optimizer;             // decayed and undecayed groups merged
};

namespace model::detail {
/// Norm weights and L4Q quantizer parameters are never weight-decayed (decaying a step
/// shrinks the quantization grid; decaying a norm weight shrinks the activations).
inline bool exempt_from_decay(std::string_view name) noexcept {
  auto ends_with = [&](std::string_view s) {
    return name.size() >= s.size() && name.substr(name.size() - s.size()) == s;
  };
  return ends_with("quant_step") || ends_with("quant_offset") || ends_with("norm.weight");
}
}  // namespace model::detail

/// Copies of the values of `params`, by name.
inline std::vector<optim::NamedTensor> snapshot_parameters(const ParameterList& params) {
  std::vector<optim::NamedTensor> out;
  out.reserve(params.size());
  for (const Parameter& p : params)
    out.push_back({p.name, optim::detail::copy_as(*p.value, MemoryCategory::kScratch)});
  return out;
}

/// Writes `values` into the parameters of the same names. Every parameter must be
/// present with the same element count; extra names are an error too (a checkpoint of
/// another configuration).
inline void restore_parameters(const ParameterList& params,
                               const std::vector<optim::NamedTensor>& values) {
  GSQ_CHECK(values.size() == params.size(), ErrorCode::kInvalidArgument,
            "restore_parameters: " + std::to_string(values.size()) + " saved tensors for " +
                std::to_string(params.size()) + " trainable parameters");
  for (const Parameter& p : params) {
    auto it = std::find_if(values.begin(), values.end(),
                           [&](const optim::NamedTensor& t) { return t.name == p.name; });
    GSQ_CHECK(it != values.end(), ErrorCode::kInvalidArgument,
              "restore_parameters: no saved value for parameter '" + p.name + "'");
    GSQ_CHECK(it->value.numel() == p.value->numel(), ErrorCode::kShapeMismatch,
              "restore_parameters: '" + p.name + "' has " + std::to_string(p.value->numel()) +
                  " values, the saved tensor " + std::to_string(it->value.numel()));
    std::copy(it->value.begin(), it->value.end(), p.value->begin());
  }
}

class Trainer {
 public:
  Trainer(Llama& model, TrainerConfig config)
      : model_(&model), config_((config.validate(), config)), schedule_(config_.schedule()) {
    ContextScope in_context(model.context());
    std::vector<std::size_t> group_sizes;
    params_ = model_->parameters(&group_sizes);
    std::size_t at = 0;
    for (std::size_t n : group_sizes) {
      ExchangeGroup& g = groups_.emplace_back();
      g.first = at;
      g.last = at += n;
      for (std::size_t p = g.first; p < g.last; ++p) g.floats += params_[p].grad->numel();
      g.stride = g.floats;
    }
    groups_.front().stride += 2;  // the part's loss sum travels with the embedding's group
    GSQ_CHECK(!params_.empty(), ErrorCode::kInvalidArgument,
              "Trainer: the model has no trainable parameters (no adapter on any projection?)");
    check_parameters(params_, "Trainer");
    for (Parameter& p : params_)
      (config_.weight_decay > 0.0f && model::detail::exempt_from_decay(p.name) ? exempt_ : decayed_)
          .push_back(p);
    decayed_opt_ = std::make_unique<optim::AdamW>(config_.adamw());
    optim::AdamWConfig no_decay = config_.adamw();
    no_decay.weight_decay = 0.0f;
    exempt_opt_ = std::make_unique<optim::AdamW>(no_decay);
    zero_grads(params_);
  }

  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// One training step on `batch`; gradients are zero again afterwards.
  TrainStep step(const BatchView& batch) { return step(std::span<const BatchView>(&batch, 1)); }
  template <TokenBatch B>
  TrainStep step(const B& batch) {
    return step(batch_view(batch));
  }

  /// One optimizer step over several batches (gradient accumulation, --grad-accum), each
  /// cut into TrainerConfig::micro_batches row slices. The loss is the sum over all
  /// parts divided by the positions counted in all of them: the same loss and gradient
  /// as one batch of all their rows, up to the float order of the sums. Then one clip
  /// and one AdamW update; activation memory is that of one part.
  ///
  /// With more than one part, each part's gradient is computed from zero and the parts
  /// are added in part order — the same additions whether the parts ran here or on
  /// several ranks (GradientReducer), so the update has the same bits either way.
  TrainStep step(std::span<const BatchView> batches) {
    ContextScope in_context(model_->context());
    GSQ_CHECK(!batches.empty(), ErrorCode::kInvalidArgument, "Trainer::step: no batch");
    const auto t0 = std::chrono::steady_clock::now();
    const std::int64_t m = config_.micro_batches;
    std::vector<OwnedBatch> trimmed(batches.size());
    std::vector<BatchView> parts;
    TrainStep s;
    s.lr = schedule_(steps_);
    for (std::size_t i = 0; i < batches.size(); ++i) {
      batches[i].validate("Trainer::step");
      BatchView b = batches[i];
      if (config_.trim_padding) {
        trimmed[i] = trim_batch(b);
        b = batch_view(trimmed[i]);
      }
      GSQ_CHECK(b.rows >= m, ErrorCode::kInvalidArgument,
                "Trainer::step: a batch of " + std::to_string(b.rows) + " rows cannot be cut into " +
                    std::to_string(m) + " micro-batches (need batch >= micro-batches)");
      s.tokens += static_cast<std::int64_t>(b.inputs.size());
      s.counted += b.counted();
      for (std::int64_t j = 0; j < m; ++j) parts.push_back(row_slice(b, j * b.rows / m, (j + 1) * b.rows / m));
    }
    // The masked count of all parts (1 when none counts, as a lone batch does).
    const double normalizer = static_cast<double>(std::max<std::int64_t>(s.counted, 1));
    double loss_sum = 0.0;
    if (parts.size() == 1 && reducer_ == nullptr) {
      prepare_micro_batch(0, 1);
      const BatchView& b = parts.front();
      loss_sum = model_->loss_and_backward(b.inputs, b.targets, b.mask, b.rows, cache_, normalizer).sum;
    } else {
      loss_sum = reducer_ != nullptr ? run_parts_distributed(parts, normalizer, s) : run_parts_here(parts, normalizer);
    }
    s.loss = s.counted > 0 ? loss_sum / static_cast<double>(s.counted) : 0.0;
    GSQ_CHECK(std::isfinite(s.loss), ErrorCode::kNonFinite,
              "Trainer::step: the loss at step " + std::to_string(steps_ + 1) +
                  " is not finite (training diverged; lower --lr?)");
    return apply_update(s, t0);
  }

  /// Data parallelism: gradients go through `reducer` (not owned; nullptr: one process).
  void set_reducer(GradientReducer* reducer) noexcept { reducer_ = reducer; }
  GradientReducer* reducer() const noexcept { return reducer_; }

 private:
  static BatchView row_slice(const BatchView& b, std::int64_t r0, std::int64_t r1) {
    const auto off = static_cast<std::size_t>(r0 * b.seq_len());
    const auto n = static_cast<std::size_t>((r1 - r0) * b.seq_len());
    return {b.inputs.subspan(off, n), b.targets.subspan(off, n), b.mask.subspan(off, n), r1 - r0};
  }

  /// Keys what a part's forward and backward may depend on besides the data to the step
  /// and the part index, never to how many passes ran before: L4Q's warm-up position,
  /// and the stochastic-rounding stream (step × parts + index).
  void prepare_micro_batch(std::int64_t index, std::int64_t parts) {
    const auto stream = static_cast<std::uint64_t>(steps_ * parts + index);
    for (std::int64_t l = 0; l < model_->n_layers(); ++l)
      for (std::string_view name : kLlamaProjections) {
        Projection& p = model_->projection(l, name);
        if (L4qLinear* q = p.get_if<L4qLinear>(); q != nullptr) {
          q->restore_training_steps(steps_);
          q->set_rounding_stream(stream);
        } else if (LoraLinear* a = p.get_if<LoraLinear>(); a != nullptr) {
          a->set_rounding_stream(stream);
        }
      }
  }

  /// Forward and backward of part `i` from zero gradients; returns its loss sum.
  /// `done` hears of each parameter group whose gradients are final (Llama::backward).
  double run_part(std::span<const BatchView> parts, std::size_t i, double normalizer,
                  const Llama::GroupDone& done = {}) {
    const BatchView& b = parts[i];
    prepare_micro_batch(static_cast<std::int64_t>(i), static_cast<std::int64_t>(parts.size()));
    zero_grads(params_);
    return model_->loss_and_backward(b.inputs, b.targets, b.mask, b.rows, cache_, normalizer, done).sum;
  }

  /// All parts in this process: a running sum in part order (one extra gradient copy).
  double run_parts_here(std::span<const BatchView> parts, double normalizer) {
    std::vector<float> total;
    double loss_sum = 0.0;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      loss_sum += run_part(parts, i, normalizer);
      std::size_t at = 0;
      if (i == 0) total.resize(static_cast<std::size_t>(gradient_count()));
      for (const Parameter& p : params_) {
        float* t = total.data() + at;
        if (i == 0) {
          std::copy(p.grad->begin(), p.grad->end(), t);
        } else {
          const float* g = p.grad->data();
          for (std::int64_t k = 0; k < p.grad->numel(); ++k) t[k] += g[k];
        }
        at += static_cast<std::size_t>(p.grad->numel());
      }
    }
    std::size_t at = 0;
    for (const Parameter& p : params_) {
      std::copy_n(total.data() + at, p.grad->numel(), p.grad->data());
      at += static_cast<std::size_t>(p.grad->numel());
    }
    return loss_sum;
  }

  /// One exchanged group of parameters (see GradientReducer): params_[first, last),
  /// `floats` gradient values per part (plus the loss, as a double in two floats, in
  /// group 0), this rank's parts in `local`, every rank's in `all`.
  struct ExchangeGroup {
    std::size_t first = 0, last = 0;
    std::int64_t floats = 0, stride = 0;
    std::vector<float> local, all;
  };

  /// Rank r runs parts [first(r), first(r+1)). Each group of its last part is handed
  /// to the reducer as soon as backward finishes it (the other parts' groups are
  /// packed as they finish too), then every rank adds all parts in part order.
  double run_parts_distributed(std::span<const BatchView> parts, double normalizer, TrainStep& s) {
    const auto m = static_cast<std::int64_t>(parts.size());
    const int ranks = reducer_->ranks();
    const int me = reducer_->rank();
    GSQ_CHECK(m >= ranks, ErrorCode::kInvalidArgument,
              "Trainer::step: " + std::to_string(m) + " micro-batches for " + std::to_string(ranks) +
                  " ranks (every rank needs at least one)");
    auto first_of = [&](int r) { return static_cast<std::int64_t>(r) * m / ranks; };
    const std::int64_t first = first_of(me), last = first_of(me + 1);
    std::vector<std::int64_t> counts(static_cast<std::size_t>(ranks));
    for (ExchangeGroup& g : groups_) {
      g.local.resize(static_cast<std::size_t>((last - first) * g.stride));
      g.all.resize(static_cast<std::size_t>(m * g.stride));
    }
    auto start = [&](ExchangeGroup& g) {
      if (g.stride == 0) return;  // nothing trainable in it, on every rank alike
      for (int r = 0; r < ranks; ++r) counts[static_cast<std::size_t>(r)] = (first_of(r + 1) - first_of(r)) * g.stride;
      reducer_->start_allgather(g.local, counts, g.all);
    };
    for (std::int64_t i = first; i < last; ++i) {
      const bool exchange_now = i + 1 == last;
      auto pack = [&](std::size_t group) {
        ExchangeGroup& g = groups_[group];
        float* out = g.local.data() + (i - first) * g.stride;
        for (std::size_t p = g.first; p < g.last; ++p) out = std::copy(params_[p].grad->begin(), params_[p].grad->end(), out);
        if (exchange_now && group != 0) {
          start(g);
          reducer_->progress();
        }
      };
      const double sum = run_part(parts, static_cast<std::size_t>(i), normalizer, pack);
      std::memcpy(groups_[0].local.data() + (i - first) * groups_[0].stride + groups_[0].floats, &sum, sizeof(double));
    }
    start(groups_[0]);
    const auto c0 = std::chrono::steady_clock::now();
    reducer_->wait_all();
    s.comm_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    for (const ExchangeGroup& g : groups_) {
      std::int64_t at = 0;
      for (std::size_t p = g.first; p < g.last; ++p) {
        float* grad = params_[p].grad->data();
        const std::int64_t n = params_[p].grad->numel();
        for (std::int64_t i = 0; i < m; ++i) {
          const float* part = g.all.data() + i * g.stride + at;
          if (i == 0) {
            std::copy(part, part + n, grad);
          } else {
            for (std::int64_t k = 0; k < n; ++k) grad[k] += part[k];
          }
        }
        at += n;
      }
    }
    double loss_sum = 0.0;
    for (std::int64_t i = 0; i < m; ++i) {
      double part = 0.0;
      std::memcpy(&part, groups_[0].all.data() + i * groups_[0].stride + groups_[0].floats, sizeof(double));
      loss_sum += part;
    }
    return loss_sum;
  }

  std::int64_t gradient_count() const {
    std::int64_t n = 0;
    for (const Parameter& p : params_) n += p.grad->numel();
    return n;
  }

  /// Clipping and the optimizer on the gradients in params_; counts the step.
  TrainStep apply_update(TrainStep s, std::chrono::steady_clock::time_point t0) {
    s.grad_norm = config_.max_grad_norm > 0.0 ? optim::clip_grad_norm(params_, config_.max_grad_norm)
                                              : optim::global_grad_norm(params_);
    decayed_opt_->set_lr(s.lr);
    exempt_opt_->set_lr(s.lr);
    if (!decayed_.empty()) decayed_opt_->step(decayed_);
    if (!exempt_.empty()) exempt_opt_->step(exempt_);
    zero_grads(params_);
    s.step = ++steps_;
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return s;
  }

 public:
  std::int64_t steps_done() const noexcept { return steps_; }
  const TrainerConfig& config() const noexcept { return config_; }
  const optim::Schedule& schedule() const noexcept { return schedule_; }
  const ParameterList& parameters() const noexcept { return params_; }
  Llama& model() noexcept { return *model_; }
  /// Bytes of AdamW moments held.
  std::int64_t optimizer_bytes() const noexcept {
    return decayed_opt_->state_bytes() + exempt_opt_->state_bytes();
  }
  /// Bytes of the training cache (activations kept for backward) of the last step.
  std::int64_t cache_bytes() const noexcept { return cache_.bytes(); }

  /// A deep copy of everything a resumed run needs besides the data cursor.
  TrainerState state() const {
    TrainerState s;
    s.step = steps_;
    s.parameters = snapshot_parameters(params_);
    s.optimizer = decayed_opt_->state();
    for (optim::NamedTensor& t : exempt_opt_->state().tensors) s.optimizer.tensors.push_back(std::move(t));
    s.optimizer.step = steps_;
    return s;
  }

  /// Restores a state() of a trainer over the same model configuration.
  void load_state(const TrainerState& state) {
    ContextScope in_context(model_->context());
    GSQ_CHECK(state.step >= 0 && state.step == state.optimizer.step, ErrorCode::kInvalidArgument,
              "Trainer::load_state: step " + std::to_string(state.step) +
                  " does not match the optimizer's step " + std::to_string(state.optimizer.step));
    restore_parameters(params_, state.parameters);
    optim::OptimizerState d{state.optimizer.optimizer, state.step, {}};
    optim::OptimizerState e{state.optimizer.optimizer, state.step, {}};
    for (const optim::NamedTensor& t : state.optimizer.tensors) {
      const bool exempt = std::any_of(exempt_.begin(), exempt_.end(), [&](const Parameter& p) {
        return t.name.size() > p.name.size() && t.name.compare(0, p.name.size(), p.name) == 0 &&
               t.name[p.name.size()] == '.';
      });
      (exempt ? e : d).tensors.push_back({t.name, t.value.clone()});
    }
    decayed_opt_->load_state(d);
    exempt_opt_->load_state(e);
    steps_ = state.step;
    // Each step ran one training forward through every L4Q layer: that count decides
    // whether the layer is still in its warm-up.
    for (std::int64_t l = 0; l < model_->n_layers(); ++l)
      for (std::string_view name : kLlamaProjections)
        if (L4qLinear* p = model_->projection(l, name).get_if<L4qLinear>(); p != nullptr)
          p->restore_training_steps(state.step);
  }

 private:
  Llama* model_;
  TrainerConfig config_;
  optim::Schedule schedule_;
  ParameterList params_, decayed_, exempt_;
  std::unique_ptr<optim::AdamW> decayed_opt_, exempt_opt_;
  Llama::Cache cache_;
  std::int64_t steps_ = 0;
  GradientReducer* reducer_ = nullptr;
  std::vector<ExchangeGroup> groups_;  // data parallelism's exchange buffers, kept across steps
};

GSQ_NAMESPACE_END
