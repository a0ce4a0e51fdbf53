// Learning tests: small regressions against a random low-rank teacher.
//   * integer LoRA (W8A8G8, NF4 base) reaches the loss of FP32 LoRA within 1%;
//   * L4Q at 4 bits beats training LoRA in FP32 and quantizing the merged weight after.
// Each model is evaluated with the forward it was trained with (DESIGN.md).
//
// Inputs are correlated, as real activations are: x = 2·z·M + 0.1·e with z ~ N(0, I_16),
// M [16, in] and e ~ N(0, I_in), so a few directions carry most of the energy. (With
// isotropic inputs, rounding each weight to its nearest grid point is already the best a
// fixed grid allows, and quantization-aware training has nothing to exploit.)
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/nn/l4q_linear.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/optim/schedule.hpp"
#include "gsq/quant/uniform.hpp"
#include "nn/test_lora_support.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::Bits;
using gsq::FrozenWeight;
using gsq::Tensor;

constexpr std::int64_t kIn = 64, kOut = 32, kTokens = 64, kEvalTokens = 256;

Tensor<float> normal(std::int64_t rows, std::int64_t cols, std::uint64_t seed, float scale) {
  Tensor<float> t({rows, cols});
  gsq::CounterRng rng(seed, 7);
  for (float& v : t) v = rng.next_normal() * scale;
  return t;
}

// The task: y = x·W*ᵀ + noise with W* = W0 + U·V (rank 4).
struct Task {
  Tensor<float> w0 = normal(kOut, kIn, 1, 0.1f);
  Tensor<float> mix = normal(16, kIn, 4, 1.0f / 8.0f);
  Tensor<float> teacher;
  float noise;
  explicit Task(float noise_sd) : noise(noise_sd) {
    teacher = w0.clone();
    const Tensor<float> u = normal(kOut, 4, 2, 0.2f), v = normal(4, kIn, 3, 0.2f);
    gsq::gemm::gemm_f32(u, false, v, false, teacher.view(), {1.0f, true});
  }
  void batch(std::uint64_t step, std::int64_t tokens, Tensor<float>& x, Tensor<float>& y,
             bool with_noise) const {
    x = normal(tokens, kIn, 1000 + step, 0.1f);
    const Tensor<float> z = normal(tokens, 16, 2000 + step, 1.0f);
    gsq::gemm::gemm_f32(z, false, mix, false, x.view(), {2.0f, true});
    y = Tensor<float>({tokens, kOut});
    gsq::gemm::gemm_f32(x, false, teacher, true, y.view());
    if (!with_noise) return;
    gsq::CounterRng rng(5000 + step, 9);
    for (float& v : y) v += rng.next_normal() * noise;
  }
};

// Mean squared error, and its gradient with respect to y.
double mse(const Tensor<float>& y, const Tensor<float>& target, Tensor<float>* dy) {
  double s = 0;
  const double n = static_cast<double>(y.numel());
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    const double d = double{y[i]} - target[i];
    s += d * d;
    if (dy != nullptr) (*dy)[i] = static_cast<float>(2.0 * d / n);
  }
  return s / n;
}

struct Losses {
  double noisy = 0;  // held-out loss on noisy targets: what training minimises
  double clean = 0;  // held-out loss on the teacher's outputs: the excess over the noise
};

// Trains `layer` for `steps` AdamW steps (warm-up + cosine) and returns the held-out
// losses of its own forward.
template <class Layer>
Losses train(Layer& layer, const Task& task, int steps, gsq::optim::AdamW& adapters,
             gsq::optim::AdamW* quantizer = nullptr) {
  typename Layer::Cache cache;
  Tensor<float> x, target, dy({kTokens, kOut});
  const auto schedule = gsq::optim::Schedule::warmup_cosine(1.0f, 10, steps);
  const float adapters_lr = adapters.lr(), quantizer_lr = quantizer ? quantizer->lr() : 0.0f;
  for (int step = 0; step < steps; ++step) {
    adapters.set_lr(adapters_lr * schedule.at(step));
    if (quantizer != nullptr) quantizer->set_lr(quantizer_lr * schedule.at(step));
    task.batch(static_cast<std::uint64_t>(step), kTokens, x, target, true);
    layer.zero_grad();
    const Tensor<float> y = layer.forward(x, cache);
    mse(y, target, &dy);
    layer.backward(dy, cache, gsq::MatrixView<float>());
    gsq::ParameterList lora, quant;
    for (const gsq::Parameter& p : layer.parameters())
      (p.name.rfind("lora_", 0) == 0 ? lora : quant).push_back(p);
    adapters.step(lora);
    if (quantizer != nullptr && !quant.empty()) quantizer->step(quant);
  }
  Losses out;
  Tensor<float> y({kEvalTokens, kOut});
  for (bool noisy : {true, false}) {
    task.batch(999999, kEvalTokens, x, target, noisy);
    layer.forward(x, y.view());
    (noisy ? out.noisy : out.clean) = mse(y, target, nullptr);
  }
  return out;
}

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("lora: integer LoRA learns a regression as well as FP32 LoRA") {
    const Task task(0.2f);
    const FrozenWeight w0 = FrozenWeight::nf4(task.w0);
    // The loss before training: the base alone.
    Tensor<float> x, target;
    task.batch(999999, kEvalTokens, x, target, false);
    gsq::LoraLinear untrained(w0, {.rank = 8, .bits = Bits::fp32()});
    Tensor<float> y0({kEvalTokens, kOut});
    untrained.forward(x, y0.view());
    const double initial = mse(y0, target, nullptr);

    auto run = [&](const Bits& bits) {
      gsq::LoraLinear layer(w0, {.rank = 8, .alpha = 16.0f, .bits = bits, .seed = 11});
      gsq::optim::AdamW opt({.lr = 1e-2f});
      return train(layer, task, 150, opt);
    };
    const Losses fp32 = run(Bits::fp32());
    const Losses int8 = run(Bits::w8a8g8());
    MESSAGE("regression held-out MSE (noise var " << task.noise * task.noise << "): untrained "
            << initial << ", fp32 LoRA " << fp32.noisy << ", w8a8g8 LoRA " << int8.noisy << " ("
            << 100.0 * (int8.noisy / fp32.noisy - 1.0) << "%); excess over the teacher: fp32 "
            << fp32.clean << ", w8a8g8 " << int8.clean << " ("
            << 100.0 * (int8.clean / fp32.clean - 1.0) << "%)");
    CHECK(fp32.clean < 0.05 * initial);  // it did learn
    CHECK(std::fabs(int8.noisy / fp32.noisy - 1.0) <= 0.01);
    CHECK(std::fabs(int8.clean / fp32.clean - 1.0) <= 0.05);
  }

  TEST_CASE("l4q: 4-bit L4Q beats LoRA followed by 4-bit quantization") {
    const Task task(0.02f);
    const FrozenWeight w0 = FrozenWeight::fp32(task.w0);
    const int steps = 200;
    const std::int64_t group = 32;

    // LoRA in FP32, then the merged weight quantized per group with min/max.
    gsq::LoraLinear lora(w0, {.rank = 8, .alpha = 16.0f, .bits = Bits::fp32(), .seed = 21});
    gsq::optim::AdamW lora_opt({.lr = 1e-2f});
    const double lora_fp32 = train(lora, task, steps, lora_opt).clean;
    Tensor<float> merged = lora.merged_weight();
    const gsq::UniformSpec spec{4, static_cast<int>(group)};
    Tensor<float> q_steps({kOut, kIn / group}), q_offsets({kOut, kIn / group});
    gsq::init_uniform_minmax(merged, spec, q_steps.view(), q_offsets.view());
    gsq::fake_quantize_uniform(merged, spec, q_steps, q_offsets, merged.view());
    Tensor<float> x, target;
    task.batch(999999, kEvalTokens, x, target, false);
    Tensor<float> y({kEvalTokens, kOut});
    gsq::gemm::gemm_f32(x, false, merged, true, y.view());
    const double lora_then_q = mse(y, target, nullptr);

    // L4Q: warm-up, then quantization-aware training of A, B, s and b.
    gsq::L4qLinear l4q(w0, {.rank = 8, .alpha = 16.0f, .quant_bits = 4, .quant_group = group,
                            .warmup_steps = 20, .bits = Bits::fp32(), .seed = 21});
    gsq::optim::AdamW adapters({.lr = 1e-2f}), quantizer({.lr = 1e-4f});
    const double l4q_loss = train(l4q, task, steps, adapters, &quantizer).clean;
    MESSAGE("held-out MSE against the teacher: LoRA fp32 " << lora_fp32 << ", LoRA then 4-bit "
            << lora_then_q << ", L4Q 4-bit " << l4q_loss);
    CHECK(l4q.quantizing());
    CHECK(l4q_loss < lora_then_q);
  }
}
