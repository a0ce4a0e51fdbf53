// bench_lora — one LoRA / L4Q linear layer, forward + backward, integer vs FP32 in one run.
//
// Names: <impl>/<tokens>/<in>/<out>/<rank>/<threads>, one iteration = forward with a
// cache, zero_grad, backward with dX (the layer's whole training work; no optimizer):
//   lora_fp32        FP32 W0, FP32 products (the reference path, gemm_f32 on Eigen)
//   lora_w8a8g8_nf4  NF4 W0, all eight products GSE-INT W8A8G8 (GSQ-Tuning)
//   lora_w4a8g8_nf4  NF4 W0, weights regrouped to INT4
//   l4q_fp32         L4Q (4-bit codes, G128) over an FP32 W0, FP32 products
//   l4q_w8a8g8_nf4   L4Q over an NF4 W0, the three large products GSE-INT W8A8G8
// Counters: cache_bytes (what forward keeps for backward), tokens_per_s, GOPS (the
// layer's multiply-adds ×2 / s: 4·T·in·out + 10·T·r·(in+out)/… see layer_ops), and, for
// a benchmark whose reference ran earlier in the same run with the same threads:
//   speedup_vs_fp32 / cache_ratio_vs_fp32   (LoRA rows against lora_fp32)
//   time_vs_lora                            (L4Q rows against the LoRA row of the same mode)
// Targets (issue 5): integer LoRA >= 2.5x faster than FP32 with a >= 3.5x smaller cache;
// L4Q <= 1.5x the LoRA time. The machine is shared while developing: compare ratios
// within one run.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "bench_support.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/nn/l4q_linear.hpp"
#include "gsq/nn/lora_linear.hpp"

namespace {

using gsq::Bits;
using gsq::FrozenWeight;
using gsq::Tensor;

struct Shape {
  std::int64_t tokens, in, out, rank;
};
constexpr Shape kShape{512, 2048, 2048, 16};

enum class Impl { kLoraFp32, kLoraW8, kLoraW4, kL4qFp32, kL4qW8 };

const char* impl_name(Impl impl) {
  switch (impl) {
    case Impl::kLoraFp32: return "lora_fp32";
    case Impl::kLoraW8: return "lora_w8a8g8_nf4";
    case Impl::kLoraW4: return "lora_w4a8g8_nf4";
    case Impl::kL4qFp32: return "l4q_fp32";
    case Impl::kL4qW8: return "l4q_w8a8g8_nf4";
  }
  return "?";
}

using gsq_bench::random_tensor;
using gsq_bench::set_threads;

// Multiply-adds ×2 of one LoRA forward + backward: the two large products (Y = X·W0ᵀ,
// dX = dY·W0) and six thin ones. L4Q is counted the same way (its extra dŴ = dYᵀ·X is
// the price of its method, not more useful work).
double layer_ops(const Shape& s) {
  const double t = static_cast<double>(s.tokens), in = static_cast<double>(s.in),
               out = static_cast<double>(s.out), r = static_cast<double>(s.rank);
  return 2.0 * (2 * t * in * out + 3 * t * r * in + 3 * t * r * out);
}

// Seconds per iteration of earlier benchmarks, by (impl, threads), for the ratios.
std::map<std::pair<Impl, int>, std::pair<double, double>>& results() {
  static std::map<std::pair<Impl, int>, std::pair<double, double>> r;  // seconds, cache bytes
  return r;
}

template <class Layer>
void run_layer(benchmark::State& state, Layer& layer, Impl impl, int threads) {
  const Shape s = kShape;
  const Tensor<float> x = random_tensor(s.tokens, s.in, 11, 1.0f);
  const Tensor<float> dy = random_tensor(s.tokens, s.out, 12, 1e-3f);
  Tensor<float> y({s.tokens, s.out}, gsq::MemoryCategory::kScratch);
  Tensor<float> dx({s.tokens, s.in}, gsq::MemoryCategory::kScratch);
  typename Layer::Cache cache;
  auto step = [&] {
    layer.forward(x, y.view(), cache);
    layer.zero_grad();
    layer.backward(dy, cache, dx.view());
  };
  step();  // allocate caches and scratch outside the timing
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  const double per_iter = seconds / static_cast<double>(state.iterations());
  const double cache_bytes = static_cast<double>(cache.bytes());
  state.counters["cache_bytes"] = cache_bytes;
  state.counters["tokens_per_s"] = benchmark::Counter(
      static_cast<double>(s.tokens) * static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
  state.counters["GOPS"] = layer_ops(s) / per_iter / 1e9;
  results()[{impl, threads}] = {per_iter, cache_bytes};
  auto ref = [&](Impl other) -> const std::pair<double, double>* {
    auto it = results().find({other, threads});
    return it == results().end() ? nullptr : &it->second;
  };
  if (impl == Impl::kLoraW8 || impl == Impl::kLoraW4) {
    if (const auto* f = ref(Impl::kLoraFp32)) {
      state.counters["speedup_vs_fp32"] = f->first / per_iter;
      state.counters["cache_ratio_vs_fp32"] = f->second / cache_bytes;
    }
  }
  if (impl == Impl::kL4qFp32)
    if (const auto* l = ref(Impl::kLoraFp32)) state.counters["time_vs_lora"] = per_iter / l->first;
  if (impl == Impl::kL4qW8)
    if (const auto* l = ref(Impl::kLoraW8)) state.counters["time_vs_lora"] = per_iter / l->first;
  if (impl != Impl::kLoraFp32 && impl != Impl::kL4qFp32)
    state.SetLabel(std::string(gsq::isa_name(gsq::gemm::active_isa())));
}

void bench_layer(benchmark::State& state, Impl impl, int threads) {
  set_threads(threads);
  const Shape s = kShape;
  const Tensor<float> w = random_tensor(s.out, s.in, 1, 0.02f);
  const Tensor<float> b = random_tensor(s.out, s.rank, 2, 0.01f);  // non-zero B: real work
  auto init_b = [&](Tensor<float>& dst) { std::copy(b.begin(), b.end(), dst.begin()); };
  switch (impl) {
    case Impl::kLoraFp32:
    case Impl::kLoraW8:
    case Impl::kLoraW4: {
      const bool fp32 = impl == Impl::kLoraFp32;
      const Bits bits = fp32 ? Bits::fp32() : impl == Impl::kLoraW8 ? Bits::w8a8g8() : Bits::w4a8g8();
      gsq::LoraLinear layer(fp32 ? FrozenWeight::fp32(w) : FrozenWeight::nf4(w),
                            {.rank = s.rank, .alpha = 32.0f, .bits = bits, .seed = 3});
      init_b(layer.lora_b());
      run_layer(state, layer, impl, threads);
      break;
    }
    case Impl::kL4qFp32:
    case Impl::kL4qW8: {
      const bool fp32 = impl == Impl::kL4qFp32;
      gsq::L4qLinear layer(fp32 ? FrozenWeight::fp32(w) : FrozenWeight::nf4(w),
                           {.rank = s.rank, .alpha = 32.0f, .quant_bits = 4, .quant_group = 128,
                            .bits = fp32 ? Bits::fp32() : Bits::w8a8g8(), .seed = 3});
      init_b(layer.lora_b());
      run_layer(state, layer, impl, threads);
      break;
    }
  }
  set_threads(0);
}

void register_all() {
  const Shape s = kShape;
  for (int threads : {1, 2}) {
    for (Impl impl : {Impl::kLoraFp32, Impl::kLoraW8, Impl::kLoraW4, Impl::kL4qFp32, Impl::kL4qW8}) {
      const std::string name = std::string(impl_name(impl)) + "/" + std::to_string(s.tokens) +
                               "/" + std::to_string(s.in) + "/" + std::to_string(s.out) + "/" +
                               std::to_string(s.rank) + "/" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), bench_layer, impl, threads)
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("gsq_isa", std::string(gsq::isa_name(gsq::selected_isa())));
  benchmark::AddCustomContext("cpu_features", gsq::cpu_features().to_string());
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
