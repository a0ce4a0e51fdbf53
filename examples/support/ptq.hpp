// examples/support/ptq.hpp — the baseline L4Q is measured against: LoRA, then round-to-nearest.
//
// L4Q's claim is that learning the quantization together with the adapter beats training
// LoRA and quantizing the merged weight afterwards. This evaluates the "afterwards" side
// in-process: W = W0 + (alpha/r)·B·A for every adapted projection (W0 the original FP32
// base), then each projection quantized exactly as L4Q initialises its grid — uniform
// asymmetric, n bits, min/max per group of G along in — by building a Llama whose slots
// are L4qLinear layers over the merged weights with B = 0 (so W_q = Q(W), untrained), and
// evaluating it with an FP32 forward. Nothing is written to disk.
#pragma once

#include <gsq/core/error.hpp>
#include <gsq/core/tensor.hpp>
#include <gsq/io/dataset.hpp>
#include <gsq/model/evaluate.hpp>
#include <gsq/model/llama.hpp>

#include <string>
#include <vector>

#include "support/model.hpp"

namespace driver {

/// The base tensors with every LoRA slot of `model` merged in: W0 + scale·B·A.
inline gsq::LlamaTensors merged_lora_tensors(const gsq::LlamaWeights& base, gsq::Llama& model) {
  gsq::LlamaTensors t = copy_tensors(base);
  for (std::int64_t l = 0; l < model.n_layers(); ++l) {
    for (std::string_view name : gsq::kLlamaProjections) {
      const gsq::LoraLinear* lora = model.projection(l, name).get_if<gsq::LoraLinear>();
      if (lora == nullptr) continue;
      const bool mlp = name == "gate_proj" || name == "up_proj" || name == "down_proj";
      const std::string key =
          "model.layers." + std::to_string(l) + (mlp ? ".mlp." : ".self_attn.") + std::string(name) + ".weight";
      gsq::MatrixView<float> w = t.at(key).view();
      const gsq::MatrixView<const float> a = lora->lora_a().view(), b = lora->lora_b().view();
      const float s = lora->scale();
      for (std::int64_t r = 0; r < w.rows(); ++r)
        for (std::int64_t j = 0; j < lora->rank(); ++j) {
          const float c = s * b(r, j);
          for (std::int64_t k = 0; k < w.cols(); ++k) w(r, k) += c * a(j, k);
        }
    }
  }
  return t;
}

/// Held-out NLL of `tensors` with the projections in `targets` quantized to `bits` bits
/// (min/max per group of `group`, round to nearest), FP32 forward.
inline gsq::EvalResult evaluate_rtn(const gsq::LlamaConfig& config, gsq::LlamaTensors tensors,
                                    const std::vector<std::string>& targets, int bits, int group,
                                    const std::vector<gsq::data::Batch>& batches) {
  gsq::LlamaOptions o;
  o.adapter = gsq::ProjectionKind::kL4q;
  o.target_modules = targets;
  o.l4q.quant_bits = bits;
  o.l4q.quant_group = group;
  o.l4q.warmup_steps = 0;  // quantize at construction, from the merged weight (B = 0)
  o.l4q.bits = gsq::Bits::fp32();
  gsq::Llama quantized(config, std::move(tensors), o);
  return gsq::evaluate(quantized, batches);
}

}  // namespace driver
