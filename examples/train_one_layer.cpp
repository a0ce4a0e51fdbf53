// gsq-train-one-layer — the Layer API in one page: a LoRA layer over a frozen NF4 weight,
// trained with integer (GSE-INT W8A8G8) forward and backward and AdamW to imitate a
// slightly different "teacher" layer; prints the loss as it falls.
//
//   gsq-train-one-layer            (no arguments; runs in about a second)
#include <cstdio>

#include "gsq/gsq.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/optim/adamw.hpp"
#include "gsq/optim/clip.hpp"
#include "gsq/optim/schedule.hpp"

namespace {

gsq::Tensor<float> normal(std::int64_t rows, std::int64_t cols, std::uint64_t seed, float scale) {
  gsq::Tensor<float> t({rows, cols});
  gsq::CounterRng rng(seed, 0);
  for (float& v : t) v = rng.next_normal() * scale;
  return t;
}

}  // namespace

int main() {
  const std::int64_t in = 256, out = 256, tokens = 128, steps = 200;

  // A frozen base weight W0 [out, in], stored once in NF4, and a teacher W0 + U·V (a
  // rank-4 change the adapter can learn).
  const gsq::FrozenWeight w0 = gsq::FrozenWeight::nf4(normal(out, in, 1, 0.05f));
  gsq::Tensor<float> teacher = w0.dequantized();
  gsq::gemm::gemm_f32(normal(out, 4, 2, 0.1f), false, normal(4, in, 3, 0.1f), false,
                      teacher.view(), {1.0f, true});

  // The layer: Y = X·W0ᵀ + (alpha/rank)·(X·Aᵀ)·Bᵀ, every product a GSE-INT GEMM.
  gsq::LoraLinear layer(w0, {.rank = 8, .alpha = 16.0f, .bits = gsq::Bits::w8a8g8(), .seed = 42});
  gsq::LoraLinear::Cache cache;  // owned by the caller, reused every step
  gsq::optim::AdamW optimizer({.lr = 1e-2f});
  const auto schedule = gsq::optim::Schedule::warmup_cosine(1e-2f, 10, steps);

  gsq::Tensor<float> y({tokens, out}), target({tokens, out}), dy({tokens, out});
  for (std::int64_t step = 0; step < steps; ++step) {
    const gsq::Tensor<float> x = normal(tokens, in, 100 + static_cast<std::uint64_t>(step), 1.0f);
    gsq::gemm::gemm_f32(x, false, teacher, true, target.view());

    layer.forward(x, y.view(), cache);  // keeps only the quantized X and H
    double loss = 0;                    // mean squared error and its gradient
    for (std::int64_t i = 0; i < y.numel(); ++i) {
      const float d = y[i] - target[i];
      loss += static_cast<double>(d) * d;
      dy[i] = 2.0f * d / static_cast<float>(y.numel());
    }
    loss /= static_cast<double>(y.numel());

    layer.zero_grad();
    layer.backward(dy, cache, gsq::MatrixView<float>());  // no dX needed: first layer
    const gsq::ParameterList params = layer.parameters();  // lora_a, lora_b
    gsq::optim::clip_grad_norm(params, 1.0);
    optimizer.set_lr(schedule.at(step));
    optimizer.step(params);

    if (step % 40 == 0 || step == steps - 1)
      std::printf("step %3lld  loss %.6f\n", static_cast<long long>(step), loss);
  }
  std::printf("cache %lld bytes (integer X and H), optimizer state %lld bytes, GEMM path %s\n",
              static_cast<long long>(cache.bytes()),
              static_cast<long long>(optimizer.state_bytes()),
              std::string(gsq::isa_name(gsq::gemm::active_isa())).c_str());
  return 0;
}
