// gsq/model/llama.hpp — a LLaMA decoder composed from the explicit-backward nn layers.
//
//     x = embed(ids)
//     per block:  h = x + o_proj(attention(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))
//                 x = h + mlp(n2)           with n1 = rmsnorm(x), n2 = rmsnorm(h)
//     logits = rmsnorm(x) · Wᵀ              W = the embedding when the classifier is tied
//
// The model is built from a LlamaConfig plus FP32 tensors under the canonical names
// (model/config.hpp) — whatever loader produced them, or random_llama_weights. Each of
// the seven projections of a block (PEFT target_modules: q_proj, k_proj, v_proj, o_proj,
// gate_proj, up_proj, down_proj) becomes a frozen Linear, a LoraLinear or an L4qLinear
// (model/projection.hpp); frozen weights are stored once in FP32, NF4 or GSE-INT. Attention's
// score/value products run in FP32, BF16 or GSE-INT (`attention_bits`, `attention_bf16`),
// the float classifier in FP32 or BF16 (`classifier_bf16`). In integer mode a
// frozen classifier is a frozen Linear too (`integer_classifier`): logits = h·Wᵀ and
// dh = dlogits·W are GSE-INT GEMMs over a second, quantized copy of W, while the FP32 W
// stays for the embedding lookup and export.
//
// Training is forward → loss → backward with caller-owned caches, as for every layer:
//     Llama::Cache cache;
//     auto r = model.loss_and_backward(ids, targets, mask, batch, cache);
//     optimizer.step(model.parameters());
// backward runs the blocks in reverse by plain code, and the adapters (plus norms or
// the embedding if made trainable) accumulate their gradients. Generation keeps a KV
// cache (model/kv_cache.hpp) and decodes greedily or by temperature/top-p sampling.
//
// Context: the model runs in the gsq::Context it was built in (the current one unless
// given): its public entry points install it (core/context.hpp), so threads, ISA and
// memory accounting are that context's whichever thread calls.
//
// Memory: every buffer is counted by category (core/memory.hpp) — frozen weights and
// adapters as weights, the training cache as activations, reused per-model workspaces
// as scratch. Parameter pointers stay valid while the model is alive and not moved.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/float_matrix.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/gemm/f32.hpp"
#include "gsq/model/config.hpp"
#include "gsq/model/kv_cache.hpp"
#include "gsq/model/projection.hpp"
#include "gsq/model/sampling.hpp"
#include "gsq/model/weights.hpp"
#include "gsq/nn/attention.hpp"
#include "gsq/nn/bits.hpp"
#include "gsq/nn/classifier_loss.hpp"
#include "gsq/nn/embedding.hpp"
#include "gsq/nn/frozen_weight.hpp"
#include "gsq/nn/l4q_linear.hpp"
#include "gsq/nn/linear.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/nn/loss.hpp"
#include "gsq/nn/mlp.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/nn/rmsnorm.hpp"
#include "gsq/nn/rope.hpp"
#include "gsq/nn/workspace.hpp"

GSQ_NAMESPACE_BEGIN

/// The seven projections of a block, by their PEFT target_modules names.
inline constexpr std::array<std::string_view, 7> kLlamaProjections = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

namespace model::detail {
inline LoraConfig fp32_lora() {
  LoraConfig c;
  c.bits = Bits::fp32();
  return c;
}
/// Binds a temporary to a non-const reference for the length of a delegating call.
template <class T>
T& as_lvalue(T&& t) noexcept {
  return t;
}
inline std::uint64_t slot_seed(std::uint64_t seed, std::int64_t layer, std::size_t slot) {
  return seed + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(layer * 8 + static_cast<std::int64_t>(slot) + 1);
}
}  // namespace model::detail

/// How a Llama is assembled from its weights.
struct LlamaOptions {
  WeightFormat base_format = WeightFormat::kFp32;  // storage of every frozen projection weight
  bool double_quant = false;                       // NF4: quantize the block scales too
  Bits bits = Bits::fp32();            // products of the frozen (non-target) projections
  Bits attention_bits = Bits::fp32();  // attention's score and value products
  // With FP32 attention_bits: round attention's product operands to BF16 (FP32
  // accumulation and softmax; nn/attention.hpp). Needs an even head size.
  bool attention_bf16 = false;
  ProjectionKind adapter = ProjectionKind::kFrozen;  // what the target modules become
  std::vector<std::string> target_modules = {kLlamaProjections.begin(), kLlamaProjections.end()};
  // Rank, alpha, bits and seed of the LoRA or L4Q layers (the seed is varied per slot).
  LoraConfig lora = model::detail::fp32_lora();
  L4qConfig l4q;
  bool train_norms = false;
  bool train_embedding = false;  // also the classifier when tied
  // In integer mode (`bits` not FP32), run the frozen classifier (train_embedding false)
  // through the GSE-INT GEMM: h quantized with the activation spec, dlogits with the
  // gradient spec, W stored once more in GSE-INT with the weight bits (also over an NF4
  // base: an NF4 classifier costs loss). false keeps it FP32. No effect in FP32 mode.
  bool integer_classifier = true;
  // A classifier left in floating point (FP32 mode, or integer_classifier off) multiplies
  // with BF16 operands and FP32 accumulation (gemm_bf16) for logits = h·Wᵀ and
  // dh = dlogits·W; softmax and the loss stay FP32 and W is stored as before (rounded in
  // the GEMM's packing step). A trainable classifier's dW stays an FP32 product.
  bool classifier_bf16 = false;
  // Memory of a training step (DESIGN.md "caches hold the stored form"). Both keep the
  // gradients bit-identical: what is dropped is rebuilt in backward by the same code.
  // recompute_projections: q, k, v (LoRA slots) and the MLP's g, u are not cached in
  // FP32 but rebuilt from the projections' own caches (their quantized inputs) — five
  // extra projection products per block in backward, against 4·(dim + 2·kv_dim) +
  // 8·hidden bytes per token per block.
  bool recompute_projections = true;
  // recompute_blocks (activation checkpointing): keep only each block's input; backward
  // runs the block's forward again into one block's cache, then its backward. Cached
  // activations fall to layers·dim floats per token plus one block; costs one more
  // forward of every block.
  bool recompute_blocks = false;

  /// Every product in `bits` (projections, adapters, attention), frozen weights stored
  /// as `base_format`.
  static LlamaOptions uniform(const Bits& bits, WeightFormat base_format = WeightFormat::kFp32) {
    LlamaOptions o;
    o.base_format = base_format;
    o.bits = bits;
    o.attention_bits = bits;
    o.lora.bits = bits;
    o.l4q.bits = bits;
    return o;
  }
};

/// Next-token targets for a batch of sequences: target[t] = ids[t + 1] inside each
/// sequence; the last position of each sequence has nothing to predict (mask 0).
struct NextTokenTargets {
  std::vector<std::int32_t> targets;
  std::vector<std::uint8_t> mask;
};
inline NextTokenTargets next_token_targets(std::span<const std::int32_t> ids, std::int64_t batch) {
  GSQ_CHECK(batch > 0 && ids.size() % static_cast<std::size_t>(batch) == 0,
            ErrorCode::kShapeMismatch,
            "next_token_targets: " + std::to_string(ids.size()) +
                " ids are not whole sequences of a batch of " + std::to_string(batch));
  const std::size_t seq = ids.size() / static_cast<std::size_t>(batch);
  NextTokenTargets r{std::vector<std::int32_t>(ids.size(), 0),
                     std::vector<std::uint8_t>(ids.size(), 0)};
  for (std::size_t t = 0; t < ids.size(); ++t) {
    if ((t + 1) % seq == 0) continue;
    r.targets[t] = ids[t + 1];
    r.mask[t] = 1;
  }
  return r;
}

struct GenerateOptions {
  std::int64_t max_new_tokens = 64;
  SamplingOptions sampling;  // temperature 0: greedy
  bool stop_at_eos = true;
};

class Llama {
 public:
  /// One decoder block: norms, the seven projection slots.
  struct Block {
    RmsNorm attn_norm;  // input_layernorm
    Projection q_proj, k_proj, v_proj, o_proj;
    RmsNorm mlp_norm;  // post_attention_layernorm
    SwiGluMlp<Projection> mlp;
  };

  /// What backward needs from one block's forward.
  struct BlockCache {
    RmsNorm::Cache attn_norm;  // keeps the block input
    Projection::Cache q_proj, k_proj, v_proj, o_proj;
    SharedInput attn_in;  // attn_norm's output, stored once for q, k and v
    Tensor<float> q, k, v;  // after RoPE: [tokens, dim], [tokens, kv_dim] x 2; empty when
    bool qkv_recomputed = false;  // rebuilt in backward from q/k/v_proj's caches
    Tensor<float> input;  // recompute_blocks: the block's input, the only thing kept
    // The rerun's block input when someone else keeps it (recompute_blocks: the kept
    // `input`); attn_norm then keeps only 1/rms.
    const Tensor<float>* outer_input = nullptr;
    MatrixView<const float> block_input() const noexcept {
      return outer_input != nullptr ? outer_input->view() : attn_norm.x.view();
    }
    CausalAttention::Cache attention;
    RmsNorm::Cache mlp_norm;  // keeps the residual after attention (unless rebuilt)
    bool h_recomputed = false;  // that residual rebuilt in backward: x + o_proj(attention)
    SwiGluMlp<Projection>::Cache mlp;

    std::int64_t bytes() const noexcept {
      return attn_norm.bytes() + q_proj.bytes() + k_proj.bytes() + v_proj.bytes() +
             o_proj.bytes() + q.bytes() + k.bytes() + v.bytes() + attention.bytes() +
             mlp_norm.bytes() + mlp.gate.bytes() + mlp.up.bytes() + mlp.down.bytes() +
             mlp.g.bytes() + mlp.u.bytes() + attn_in.bytes() + mlp.in.bytes() + input.bytes();
    }
  };

  /// The training cache of a whole forward: filled by forward, consumed by backward.
  /// Reuse one across steps; its buffers are reallocated only when shapes change.
  struct Cache {
    std::vector<BlockCache> blocks;
    BlockCache work;              // recompute_blocks: the one block being (re)computed
    Tensor<float> block_input;    // recompute_blocks: the rerun's residual stream (scratch)
    RmsNorm::Cache final_norm;
    Tensor<float> hidden;  // final normed states, only when the classifier trains
    Linear::Cache classifier;  // the integer classifier's (frozen: holds nothing)
    std::vector<std::int32_t> ids;
    std::int64_t batch = 0;
    std::int64_t seq = 0;

    /// Bytes of the cached tensors.
    std::int64_t bytes() const noexcept {
      std::int64_t n = final_norm.bytes() + hidden.bytes() + classifier.bytes() + work.bytes();
      for (const BlockCache& b : blocks) n += b.bytes();
      return n;
    }
  };

  Llama(const LlamaConfig& config, LlamaTensors weights, const LlamaOptions& options = {},
        Context& context = current_context())
      : Llama(config, model::detail::as_lvalue(TensorMapSource(std::move(weights))), options,
              context) {}

  /// Builds the model from `source`, taking each tensor once (frozen projections in
  /// their stored form, so a streaming source never materialises an FP32 model).
  Llama(const LlamaConfig& config, LlamaWeightSource& source, const LlamaOptions& options = {},
        Context& context = current_context())
      : config_(config), options_(options), context_(&context) {
    ContextScope in_context(context);
    config_.validate("Llama");
    options_.bits.validate();
    options_.attention_bits.validate();
    for (const std::string& m : options_.target_modules)
      GSQ_CHECK(std::find(kLlamaProjections.begin(), kLlamaProjections.end(), m) !=
                    kLlamaProjections.end(),
                ErrorCode::kInvalidArgument,
                "Llama: unknown target module '" + m +
                    "' (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj or down_proj)");
    auto take = [&](const std::string& name, std::vector<std::int64_t> shape) {
      return source.take(name, shape);
    };
    const std::int64_t d = config_.dim, kv = config_.kv_dim(), h = config_.hidden_dim;
    // Frozen tables stay in the checkpoint's dtype (BF16 for real models); a trainable
    // one is FP32.
    auto take_table = [&](const std::string& name) {
      return options_.train_embedding ? FloatMatrix(take(name, {config_.vocab_size, d}))
                                      : source.take_table(name, {config_.vocab_size, d});
    };
    embedding_ = Embedding(take_table("model.embed_tokens.weight"), options_.train_embedding);
    blocks_.reserve(static_cast<std::size_t>(config_.n_layers));
    for (std::int64_t l = 0; l < config_.n_layers; ++l) {
      using model::detail::layer_tensor;
      auto proj = [&](std::size_t slot, const char* suffix, std::int64_t out, std::int64_t in) {
        return make_projection(l, slot,
                               source.take_frozen(layer_tensor(l, suffix), {out, in}, frozen_format()));
      };
      RmsNorm attn_norm(take(layer_tensor(l, "input_layernorm.weight"), {d}), config_.norm_eps,
                        options_.train_norms);
      Projection q = proj(0, "self_attn.q_proj.weight", d, d);
      Projection k = proj(1, "self_attn.k_proj.weight", kv, d);
      Projection v = proj(2, "self_attn.v_proj.weight", kv, d);
      Projection o = proj(3, "self_attn.o_proj.weight", d, d);
      RmsNorm mlp_norm(take(layer_tensor(l, "post_attention_layernorm.weight"), {d}),
                       config_.norm_eps, options_.train_norms);
      Projection gate = proj(4, "mlp.gate_proj.weight", h, d);
      Projection up = proj(5, "mlp.up_proj.weight", h, d);
      Projection down = proj(6, "mlp.down_proj.weight", d, h);
      blocks_.push_back(Block{std::move(attn_norm), std::move(q), std::move(k), std::move(v),
                              std::move(o), std::move(mlp_norm),
                              SwiGluMlp<Projection>(std::move(gate), std::move(up), std::move(down))});
    }
    final_norm_ = RmsNorm(take("model.norm.weight", {d}), config_.norm_eps, options_.train_norms);
    if (!config_.tied_embeddings) {
      lm_head_ = take_table("lm_head.weight");
      if (options_.train_embedding)
        lm_head_grad_ = Tensor<float>({config_.vocab_size, d}, MemoryCategory::kGradients);
    }
    source.finish();
    rope_ = Rope(config_.head_size(), config_.max_seq_len, config_.rope_theta, config_.rope_style,
                 config_.rope_scaling);
    attention_ = CausalAttention(config_.n_heads, config_.n_kv_heads, config_.head_size(),
                                 options_.attention_bits, options_.attention_bf16);
    if (options_.integer_classifier && !options_.bits.is_fp32() && !classifier_trainable()) {
      LinearConfig lin;
      lin.bits = options_.bits;
      classifier_ = Linear(make_classifier_weight(classifier_weight().widened(MemoryCategory::kScratch)), lin);
    }
  }

  const LlamaConfig& config() const noexcept { return config_; }
  const LlamaOptions& options() const noexcept { return options_; }
  /// The context the model runs in.
  Context& context() const noexcept { return *context_; }
  std::int64_t n_layers() const noexcept { return config_.n_layers; }
  Block& block(std::int64_t l) { return blocks_.at(static_cast<std::size_t>(l)); }
  Embedding& embedding() noexcept { return embedding_; }
  RmsNorm& final_norm() noexcept { return final_norm_; }
  CausalAttention& attention() noexcept { return attention_; }
  /// The classifier weight [vocab, dim] (the embedding when tied), FP32 or BF16.
  const FloatMatrix& classifier_weight() const noexcept {
    return config_.tied_embeddings ? embedding_.weight() : lm_head_;
  }
  /// Whether logits and dh run through the GSE-INT GEMM (LlamaOptions::integer_classifier
  /// in integer mode with a frozen classifier).
  bool has_integer_classifier() const noexcept { return classifier_.has_value(); }
  /// The projection `name` (one of kLlamaProjections) of block `l`.
  Projection& projection(std::int64_t l, std::string_view name) {
    Block& b = block(l);
    if (name == "q_proj") return b.q_proj;
    if (name == "k_proj") return b.k_proj;
    if (name == "v_proj") return b.v_proj;
    if (name == "o_proj") return b.o_proj;
    if (name == "gate_proj") return b.mlp.gate();
    if (name == "up_proj") return b.mlp.up();
    if (name == "down_proj") return b.mlp.down();
    detail::throw_error(ErrorCode::kInvalidArgument,
                        "Llama::projection: unknown projection '" + std::string(name) + "'");
  }

  // ---- forward / backward ------------------------------------------------------------

  /// logits [batch·seq, vocab] for ids [batch·seq] (each sequence from position 0).
  /// With a cache, keeps what backward needs.
  void forward(std::span<const std::int32_t> ids, std::int64_t batch, MatrixView<float> logits,
               Cache* cache) {
    ContextScope in_context(*context_);
    check_shape(logits, static_cast<std::int64_t>(ids.size()), config_.vocab_size, "Llama::forward logits");
    const MatrixView<float> h = forward_hidden(ids, batch, cache);
    classify(h, logits, cache != nullptr ? &cache->classifier : nullptr);
  }

  /// The forward up to the classifier's input: the final norm's output [tokens, dim]
  /// (model scratch, or the cache when the classifier trains).
  MatrixView<float> forward_hidden(std::span<const std::int32_t> ids, std::int64_t batch, Cache* cache) {
    ContextScope in_context(*context_);
    const std::int64_t seq = check_batch(ids, batch, "Llama::forward");
    const auto tokens = static_cast<std::int64_t>(ids.size());
    MatrixView<float> x = scratch(ws_.x, tokens, config_.dim);
    embedding_.forward(ids, x);
    if (cache != nullptr) {
      cache->blocks.resize(blocks_.size());
      cache->ids.assign(ids.begin(), ids.end());
      cache->batch = batch;
      cache->seq = seq;
    }
    for (std::size_t l = 0; l < blocks_.size(); ++l) {
      if (cache != nullptr && options_.recompute_blocks) {
        // Keep the input only; the block runs with the one shared working cache (the
        // same code path as without checkpointing, so backward's rerun gives the same bits).
        BlockCache& kept = cache->blocks[l];
        copy_matrix(x, ensure_matrix(kept.input, tokens, config_.dim, MemoryCategory::kActivations));
        cache->work.outer_input = &kept.input;
        block_forward(blocks_[l], x, batch, seq, &cache->work);
      } else {
        block_forward(blocks_[l], x, batch, seq, cache != nullptr ? &cache->blocks[l] : nullptr);
      }
    }
    MatrixView<float> h = (cache != nullptr && classifier_trainable())
                              ? ensure_matrix(cache->hidden, tokens, config_.dim,
                                              MemoryCategory::kActivations)
                              : scratch(ws_.normed, tokens, config_.dim);
    final_norm_.forward(x, h, cache != nullptr ? &cache->final_norm : nullptr);
    return h;
  }
  Tensor<float> forward(std::span<const std::int32_t> ids, std::int64_t batch,
                        Cache* cache = nullptr) {
    Tensor<float> logits({static_cast<std::int64_t>(ids.size()), config_.vocab_size});
    forward(ids, batch, logits.view(), cache);
    return logits;
  }

  /// Called by backward when a group of parameters() (see there) has its final
  /// gradients: the final norm and lm_head first, then block n−1 … block 0, then the
  /// embedding. Data parallelism starts exchanging a group while the rest runs.
  using GroupDone = std::function<void(std::size_t group)>;

  /// Backward from dlogits [batch·seq, vocab] of the cached forward: accumulates the
  /// gradients of every trainable parameter.
  void backward(MatrixView<const float> dlogits, Cache& cache, const GroupDone& done = {}) {
    ContextScope in_context(*context_);
    GSQ_CHECK(cache.batch > 0 && cache.blocks.size() == blocks_.size(),
              ErrorCode::kInvalidArgument, "Llama::backward: the cache was not filled by forward");
    const auto tokens = static_cast<std::int64_t>(cache.ids.size());
    check_shape(dlogits, tokens, config_.vocab_size, "Llama::backward dlogits");
    MatrixView<float> dh = scratch(ws_.normed, tokens, config_.dim);
    if (classifier_) classifier_->backward(dlogits, cache.classifier, dh);  // dh = dlogits·W
    else classifier_weight().visit([&](auto w) {
      if (options_.classifier_bf16) gemm::gemm_bf16(dlogits, false, w, false, dh);
      else gemm::gemm_f32(dlogits, false, w, false, dh);
    });
    if (classifier_trainable()) {  // dW += dlogitsᵀ·h
      gemm::gemm_f32(dlogits, true, cache.hidden.view(), false, classifier_grad().view(),
                     {.alpha = 1.0f, .accumulate = true});
    }
    backward_hidden(dh, cache, done);
  }

  /// Backward from dh, the gradient of forward_hidden's output, through the final norm,
  /// the blocks and the embedding.
  void backward_hidden(MatrixView<const float> dh, Cache& cache, const GroupDone& done = {}) {
    ContextScope in_context(*context_);
    const auto tokens = static_cast<std::int64_t>(cache.ids.size());
    MatrixView<float> dx = scratch(ws_.x, tokens, config_.dim);
    final_norm_.backward(dh, dx, cache.final_norm);
    if (done) done(blocks_.size() + 1);
    for (std::size_t l = blocks_.size(); l-- > 0;) {
      BlockCache& kept = cache.blocks[l];
      if (kept.input.rank() == 2) {  // checkpointed: rerun the block's forward first
        MatrixView<float> x = ensure_matrix(cache.block_input, tokens, config_.dim,
                                            MemoryCategory::kScratch);
        copy_matrix(kept.input.view(), x);
        cache.work.outer_input = &kept.input;
        block_forward(blocks_[l], x, cache.batch, cache.seq, &cache.work);
        block_backward(blocks_[l], dx, cache.work);
      } else {
        block_backward(blocks_[l], dx, kept);
      }
      if (done) done(l + 1);
    }
    embedding_.backward(cache.ids, dx);
    if (done) done(0);
  }

  /// Trainable parameters under their Hugging Face / PEFT names, e.g.
  /// "model.layers.0.self_attn.q_proj.lora_a". They come in n_layers + 2 contiguous
  /// groups: the embedding, block 0 … block n−1, then the final norm and lm_head;
  /// `groups`, when given, receives how many Parameters each group has (some may be 0).
  ParameterList parameters(std::vector<std::size_t>* groups = nullptr) {
    ParameterList out;
    std::size_t group_start = 0;
    auto end_group = [&] {
      if (groups != nullptr) groups->push_back(out.size() - group_start);
      group_start = out.size();
    };
    if (groups != nullptr) groups->clear();
    append_parameters(out, "model.embed_tokens.", embedding_.parameters());
    end_group();
    for (std::size_t l = 0; l < blocks_.size(); ++l) {
      Block& b = blocks_[l];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      append_parameters(out, p + "input_layernorm.", b.attn_norm.parameters());
      append_parameters(out, p + "self_attn.q_proj.", b.q_proj.parameters());
      append_parameters(out, p + "self_attn.k_proj.", b.k_proj.parameters());
      append_parameters(out, p + "self_attn.v_proj.", b.v_proj.parameters());
      append_parameters(out, p + "self_attn.o_proj.", b.o_proj.parameters());
      append_parameters(out, p + "post_attention_layernorm.", b.mlp_norm.parameters());
      append_parameters(out, p + "mlp.", b.mlp.parameters());
      end_group();
    }
    append_parameters(out, "model.norm.", final_norm_.parameters());
    if (lm_head_grad_.numel() > 0) out.push_back({"lm_head.weight", &lm_head_.f32(), &lm_head_grad_});
    end_group();
    return out;
  }
  void zero_grad() { zero_grads(parameters()); }

  // ---- loss helpers ------------------------------------------------------------------

  /// Mean masked cross-entropy of the model on ids against targets (forward only).
  CrossEntropyResult loss(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets,
                          std::span<const std::uint8_t> mask, std::int64_t batch) {
    ContextScope in_context(*context_);
    if (!classifier_)  // fused, chunked over the vocabulary (nn/classifier_loss.hpp)
      return classifier_cross_entropy(forward_hidden(ids, batch, nullptr), classifier_weight(), targets, mask,
                                      {}, nullptr, {.bf16 = options_.classifier_bf16});
    MatrixView<float> logits = scratch(ws_.logits, static_cast<std::int64_t>(ids.size()),
                                       config_.vocab_size);
    forward(ids, batch, logits, nullptr);
    return cross_entropy(logits, targets, mask);
  }

  /// Forward, masked cross-entropy and backward in one step; gradients accumulate into
  /// parameters(). normalizer > 0 divides the summed loss instead of the masked count
  /// (gradient accumulation over several batches).
  CrossEntropyResult loss_and_backward(std::span<const std::int32_t> ids,
                                       std::span<const std::int32_t> targets,
                                       std::span<const std::uint8_t> mask, std::int64_t batch,
                                       Cache& cache, double normalizer = 0.0,
                                       const GroupDone& done = {}) {
    ContextScope in_context(*context_);
    if (!classifier_) {  // the float classifier: fused with the loss, chunked over the vocabulary
      const MatrixView<const float> h = forward_hidden(ids, batch, &cache);
      MatrixView<float> dh = scratch(ws_.tmp, static_cast<std::int64_t>(ids.size()), config_.dim);
      const CrossEntropyResult r = classifier_cross_entropy(
          h, classifier_weight(), targets, mask, dh, classifier_trainable() ? &classifier_grad() : nullptr,
          {.bf16 = options_.classifier_bf16, .normalizer = normalizer});
      backward_hidden(dh, cache, done);
      return r;
    }
    MatrixView<float> logits = scratch(ws_.logits, static_cast<std::int64_t>(ids.size()),
                                       config_.vocab_size);
    forward(ids, batch, logits, &cache);
    const CrossEntropyResult r = cross_entropy_backward(logits, targets, mask, logits, normalizer);
    backward(logits, cache, done);
    return r;
  }

  // ---- generation --------------------------------------------------------------------

  /// A KV cache for one sequence of up to `capacity` positions (0: max_seq_len).
  KvCache make_kv_cache(std::int64_t capacity = 0) const {
    if (capacity <= 0 || capacity > config_.max_seq_len) capacity = config_.max_seq_len;
    return KvCache(config_.n_layers, capacity, config_.kv_dim());
  }

  /// Runs ids (new tokens of one sequence, at positions kv.length...) through the model,
  /// appending their keys and values to `kv`; logits [ids.size(), vocab].
  void forward_step(std::span<const std::int32_t> ids, KvCache& kv, MatrixView<float> logits) {
    ContextScope in_context(*context_);
    const auto n = static_cast<std::int64_t>(ids.size());
    const std::int64_t pos = kv.length;
    GSQ_CHECK(n >= 1, ErrorCode::kInvalidExtent, "Llama::forward_step: no tokens");
    GSQ_CHECK(static_cast<std::int64_t>(kv.k.size()) == config_.n_layers &&
                  kv.k.front().dim(1) == config_.kv_dim(),
              ErrorCode::kShapeMismatch, "Llama::forward_step: the KV cache is for another model");
    GSQ_CHECK(pos + n <= kv.capacity(), ErrorCode::kIndexOutOfRange,
              "Llama::forward_step: positions up to " + std::to_string(pos + n) +
                  " exceed the KV cache capacity " + std::to_string(kv.capacity()));
    check_shape(logits, n, config_.vocab_size, "Llama::forward_step logits");
    const std::int64_t d = config_.dim;
    MatrixView<float> x = scratch(ws_.x, n, d);
    MatrixView<float> normed = scratch(ws_.normed, n, d);
    MatrixView<float> q = scratch(ws_.q, n, d);
    MatrixView<float> attn = scratch(ws_.attn, n, d);
    MatrixView<float> tmp = scratch(ws_.tmp, n, d);
    embedding_.forward(ids, x);
    for (std::size_t l = 0; l < blocks_.size(); ++l) {
      Block& b = blocks_[l];
      MatrixView<float> k_all = kv.k[l].view().row_range(0, pos + n);
      MatrixView<float> v_all = kv.v[l].view().row_range(0, pos + n);
      MatrixView<float> k_new = k_all.row_range(pos, n);
      b.attn_norm.forward(x, normed, nullptr);
      b.q_proj.forward(normed, q);
      b.k_proj.forward(normed, k_new);
      b.v_proj.forward(normed, v_all.row_range(pos, n));
      rope_.forward(q, n, pos);
      rope_.forward(k_new, n, pos);
      attention_.forward(q, k_all, v_all, 1, attn, nullptr);
      b.o_proj.forward(attn, tmp);
      add_into(x, tmp);
      b.mlp_norm.forward(x, normed, nullptr);
      b.mlp.forward(normed, tmp, nullptr);
      add_into(x, tmp);
    }
    final_norm_.forward(x, normed, nullptr);
    classify(normed, logits, nullptr);  // the same classifier as forward
    kv.length = pos + n;
  }

  /// Continues `prompt` (non-empty, usually starting with BOS) by up to max_new_tokens
  /// tokens; returns the new tokens only. Stops early at EOS (if asked) or when the
  /// context is full.
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt,
                                     const GenerateOptions& options = {}) {
    ContextScope in_context(*context_);
    GSQ_CHECK(!prompt.empty(), ErrorCode::kInvalidArgument, "Llama::generate: empty prompt");
    options.sampling.validate();
    const auto n = static_cast<std::int64_t>(prompt.size());
    KvCache kv = make_kv_cache(std::min(config_.max_seq_len, n + options.max_new_tokens));
    Tensor<float> logits({n, config_.vocab_size}, MemoryCategory::kScratch);
    forward_step(prompt, kv, logits.view());
    std::span<const float> last(logits.view().row(n - 1), static_cast<std::size_t>(config_.vocab_size));
    std::vector<std::int32_t> out;
    for (std::int64_t step = 0; step < options.max_new_tokens; ++step) {
      const std::int32_t token = sample_token(last, options.sampling, static_cast<std::uint64_t>(step));
      out.push_back(token);
      if (options.stop_at_eos && token == config_.eos_id) break;
      if (step + 1 == options.max_new_tokens || kv.length == kv.capacity()) break;
      const std::int32_t next[1] = {token};
      forward_step(next, kv, logits.view().row_range(0, 1));
      last = std::span<const float>(logits.view().row(0), static_cast<std::size_t>(config_.vocab_size));
    }
    return out;
  }

  // ---- memory ------------------------------------------------------------------------

  /// Bytes of the stored weights: embedding, norms, the untied classifier, the integer
  /// classifier's quantized copy, every projection's frozen weight (in its stored
  /// format) and adapter masters.
  std::int64_t weight_bytes() {
    std::int64_t n = embedding_.weight().bytes() + final_norm_.weight().bytes() + lm_head_.bytes();
    if (classifier_) n += classifier_->frozen_weight().bytes();
    for (Block& b : blocks_) {
      n += b.attn_norm.weight().bytes() + b.mlp_norm.weight().bytes();
      for (Projection* p : {&b.q_proj, &b.k_proj, &b.v_proj, &b.o_proj, &b.mlp.gate(),
                            &b.mlp.up(), &b.mlp.down()}) {
        n += p->frozen_weight_bytes();
        for (const Parameter& param : p->parameters()) n += param.value->bytes();
      }
    }
    return n;
  }

 private:
  struct Workspace {  // reused between calls (kScratch)
    Tensor<float> x, normed, q, k, v, attn, tmp, dq, dk, dv, logits;
    Linear::Cache classifier;  // the integer classifier's, for cache-free forwards
  };

  static MatrixView<float> scratch(Tensor<float>& t, std::int64_t rows, std::int64_t cols) {
    return ensure_matrix(t, rows, cols, MemoryCategory::kScratch);
  }

  std::int64_t check_batch(std::span<const std::int32_t> ids, std::int64_t batch,
                           const char* what) const {
    GSQ_CHECK(batch > 0 && !ids.empty() && ids.size() % static_cast<std::size_t>(batch) == 0,
              ErrorCode::kShapeMismatch,
              std::string(what) + ": " + std::to_string(ids.size()) +
                  " ids are not whole sequences of a batch of " + std::to_string(batch));
    const auto seq = static_cast<std::int64_t>(ids.size()) / batch;
    GSQ_CHECK(seq <= config_.max_seq_len, ErrorCode::kInvalidExtent,
              std::string(what) + ": sequences of " + std::to_string(seq) +
                  " tokens exceed max_seq_len " + std::to_string(config_.max_seq_len));
    return seq;
  }

  bool classifier_trainable() const noexcept { return options_.train_embedding; }
  Tensor<float>& classifier_grad() noexcept {
    return config_.tied_embeddings ? embedding_.grad() : lm_head_grad_;
  }

  bool is_target(std::size_t slot) const {
    return options_.adapter != ProjectionKind::kFrozen &&
           std::find(options_.target_modules.begin(), options_.target_modules.end(),
                     kLlamaProjections[slot]) != options_.target_modules.end();
  }

  /// The stored form of every frozen projection weight.
  FrozenFormat frozen_format() const {
    FrozenFormat f;
    f.format = options_.base_format;
    f.double_quant = options_.double_quant;
    f.gse = (options_.bits.is_fp32() ? Bits::w8a8g8() : options_.bits).weight_spec();
    return f;
  }

  /// The integer classifier's copy of W [vocab, dim] (the FP32 W stays for the lookup
  /// and export): GSE-INT with the weight bits, whatever base_format the projections
  /// use. For an FP32 or GSE base that is the projections' own choice (a frozen integer
  /// Linear quantizes an FP32 weight to exactly this). For an NF4 base it is a
  /// deliberate exception: an NF4 classifier visibly hurts the loss (stories260K,
  /// 256 tokens, W8A8G8 over an NF4 base: NLL 1.548 with an NF4 classifier, 1.509 with
  /// the FP32 one, +2.6%; GSE-INT8 stays within 0.1%), since the logits feed the
  /// softmax directly and NF4's 16 levels per block of 64 are too coarse for them. With
  /// W8 the copy costs vocab·dim bytes plus one exponent per group.
  FrozenWeight make_classifier_weight(const Tensor<float>& w) const {
    return FrozenWeight::gse(w.view(), options_.bits.weight_spec());
  }

  /// logits = h·Wᵀ through the integer classifier or in FP32; `cache` (training) keeps
  /// what backward needs.
  void classify(MatrixView<const float> h, MatrixView<float> logits, Linear::Cache* cache) {
    if (classifier_) classifier_->forward(h, logits, cache != nullptr ? *cache : ws_.classifier);
    else classifier_weight().visit([&](auto w) {
      if (options_.classifier_bf16) gemm::gemm_bf16(h, false, w, true, logits);
      else gemm::gemm_f32(h, false, w, true, logits);
    });
  }

  Projection make_projection(std::int64_t layer, std::size_t slot, FrozenWeight w) const {
    // Adapters get a different, reproducible initialisation of A in every slot.
    if (is_target(slot) && options_.adapter == ProjectionKind::kLora) {
      LoraConfig lc = options_.lora;
      lc.seed = model::detail::slot_seed(lc.seed, layer, slot);
      return Projection(LoraLinear(std::move(w), lc));
    }
    if (is_target(slot) && options_.adapter == ProjectionKind::kL4q) {
      L4qConfig lc = options_.l4q;
      lc.seed = model::detail::slot_seed(lc.seed, layer, slot);
      return Projection(L4qLinear(std::move(w), lc));
    }
    LinearConfig lin;
    lin.bits = options_.bits;
    return Projection(Linear(std::move(w), lin));
  }

  static void copy_matrix(MatrixView<const float> src, MatrixView<float> dst) {
    parallel_for(src.rows(), [&](std::int64_t t) {
      std::copy(src.row(t), src.row(t) + src.cols(), dst.row(t));
    }, 16);
  }

  /// Can backward rebuild q, k and v from the projections' caches (LoRA slots)?
  bool rebuilds_qkv(const Block& b) const noexcept {
    return options_.recompute_projections && b.q_proj.kind() == ProjectionKind::kLora &&
           b.k_proj.kind() == ProjectionKind::kLora && b.v_proj.kind() == ProjectionKind::kLora;
  }

  static void add_into(MatrixView<float> x, MatrixView<const float> y) {
    parallel_for(x.rows(), [&](std::int64_t t) {
      float* xr = x.row(t);
      const float* yr = y.row(t);
      for (std::int64_t c = 0; c < x.cols(); ++c) xr[c] += yr[c];
    }, 16);
  }

  /// x (the residual stream [tokens, dim]) ← block(x).
  void block_forward(Block& b, MatrixView<float> x, std::int64_t batch, std::int64_t seq,
                     BlockCache* c) {
    const std::int64_t tokens = x.rows(), d = config_.dim, kv = config_.kv_dim();
    // q, k, v are cached in FP32 unless backward rebuilds them (rebuilds_qkv).
    const bool keep_qkv = c != nullptr && !rebuilds_qkv(b);
    const MemoryCategory keep = keep_qkv ? MemoryCategory::kActivations : MemoryCategory::kScratch;
    if (c != nullptr) {
      c->qkv_recomputed = !keep_qkv;
      if (!keep_qkv) {
        c->q = Tensor<float>();
        c->k = Tensor<float>();
        c->v = Tensor<float>();
      }
    }
    MatrixView<float> normed = scratch(ws_.normed, tokens, d);
    MatrixView<float> q = ensure_matrix(keep_qkv ? c->q : ws_.q, tokens, d, keep);
    MatrixView<float> k = ensure_matrix(keep_qkv ? c->k : ws_.k, tokens, kv, keep);
    MatrixView<float> v = ensure_matrix(keep_qkv ? c->v : ws_.v, tokens, kv, keep);
    MatrixView<float> attn = scratch(ws_.attn, tokens, d);
    MatrixView<float> tmp = scratch(ws_.tmp, tokens, d);

    b.attn_norm.forward(x, normed, c != nullptr ? &c->attn_norm : nullptr,
                        /*keep_input=*/c == nullptr || c->outer_input == nullptr);
    SharedInput* attn_in = c != nullptr ? &c->attn_in : nullptr;
    if (attn_in != nullptr) attn_in->begin();
    project(b.q_proj, normed, q, c != nullptr ? &c->q_proj : nullptr, attn_in);
    project(b.k_proj, normed, k, c != nullptr ? &c->k_proj : nullptr, attn_in);
    project(b.v_proj, normed, v, c != nullptr ? &c->v_proj : nullptr, attn_in);
    rope_.forward(q, seq);
    rope_.forward(k, seq);
    attention_.forward(q, k, v, batch, attn, c != nullptr ? &c->attention : nullptr);
    project(b.o_proj, attn, tmp, c != nullptr ? &c->o_proj : nullptr);
    add_into(x, tmp);

    // The MLP norm's input h = x + o_proj(attention) is not kept when backward can
    // rebuild it from the block input (attn_norm keeps it) and o_proj's cache.
    const bool rebuild_h = c != nullptr && options_.recompute_projections &&
                           b.o_proj.kind() == ProjectionKind::kLora;
    if (c != nullptr) c->h_recomputed = rebuild_h;
    b.mlp_norm.forward(x, normed, c != nullptr ? &c->mlp_norm : nullptr, !rebuild_h);
    b.mlp.forward(normed, tmp, c != nullptr ? &c->mlp : nullptr);
    add_into(x, tmp);
  }

  static void project(Projection& p, MatrixView<const float> x, MatrixView<float> y,
                      Projection::Cache* cache, SharedInput* shared = nullptr) {
    if (cache != nullptr) p.forward(x, y, *cache, shared);
    else p.forward(x, y);
  }

  /// dx: in, the gradient of the block's output; out, of its input.
  void block_backward(Block& b, MatrixView<float> dx, BlockCache& c) {
    const std::int64_t tokens = dx.rows(), d = config_.dim, kv = config_.kv_dim();
    MatrixView<float> dnormed = scratch(ws_.normed, tokens, d);
    MatrixView<float> tmp = scratch(ws_.tmp, tokens, d);
    MatrixView<float> dattn = scratch(ws_.attn, tokens, d);
    MatrixView<float> dq = scratch(ws_.dq, tokens, d);
    MatrixView<float> dk = scratch(ws_.dk, tokens, kv);
    MatrixView<float> dv = scratch(ws_.dv, tokens, kv);

    // x_out = h + mlp(mlp_norm(h))
    b.mlp.backward(dx, dnormed, c.mlp);
    if (c.h_recomputed) {  // h = x + o_proj(attention), the forward's sum bit for bit
      MatrixView<float> o = scratch(ws_.attn, tokens, d);
      MatrixView<float> h = scratch(ws_.q, tokens, d);
      b.o_proj.recompute_forward(c.o_proj, o);
      copy_matrix(c.block_input(), h);
      add_into(h, o);
      b.mlp_norm.backward(dnormed, tmp, c.mlp_norm, h);
    } else {
      b.mlp_norm.backward(dnormed, tmp, c.mlp_norm);
    }
    add_into(dx, tmp);  // dx = ∂L/∂h

    // h = x + o_proj(attention(rope(q), rope(k), v)), q, k, v = projections of attn_norm(x)
    b.o_proj.backward(dx, c.o_proj, dattn);
    MatrixView<const float> q = c.q.view(), k = c.k.view(), v = c.v.view();
    if (c.qkv_recomputed) {  // the forward's q, k, v, bit for bit (same products, same RoPE)
      MatrixView<float> qs = scratch(ws_.q, tokens, d), ks = scratch(ws_.k, tokens, kv);
      MatrixView<float> vs = scratch(ws_.v, tokens, kv);
      b.q_proj.recompute_forward(c.q_proj, qs);
      b.k_proj.recompute_forward(c.k_proj, ks);
      b.v_proj.recompute_forward(c.v_proj, vs);
      rope_.forward(qs, c.attention.queries);
      rope_.forward(ks, c.attention.queries);
      q = qs;
      k = ks;
      v = vs;
    }
    attention_.backward(q, k, v, dattn, c.attention, dq, dk, dv);
    rope_.backward(dq, c.attention.queries);
    rope_.backward(dk, c.attention.keys);
    b.q_proj.backward(dq, c.q_proj, dnormed, /*accumulate_dx=*/false);
    b.k_proj.backward(dk, c.k_proj, dnormed, /*accumulate_dx=*/true);
    b.v_proj.backward(dv, c.v_proj, dnormed, /*accumulate_dx=*/true);
    b.attn_norm.backward(dnormed, tmp, c.attn_norm, c.block_input());
    add_into(dx, tmp);  // dx = ∂L/∂x
  }

  LlamaConfig config_;
  LlamaOptions options_;
  Context* context_;
  Embedding embedding_;
  std::vector<Block> blocks_;
  RmsNorm final_norm_;
  FloatMatrix lm_head_;         // untied classifier [vocab, dim], FP32 or BF16 (see take_table)
  Tensor<float> lm_head_grad_;  // when the classifier trains
  std::optional<Linear> classifier_;  // the integer classifier (integer_classifier)
  Rope rope_;
  CausalAttention attention_;
  Workspace ws_;
};

GSQ_NAMESPACE_END
