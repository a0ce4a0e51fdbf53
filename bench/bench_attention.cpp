// bench/bench_attention.cpp — forward + backward of fused causal attention (nn/attention.hpp).
//
// One sequence of `seq` tokens (batch 1), H query heads (H_kv = H / 4 kv heads, GQA as
// in LLaMA-style models; 1 when H < 4), head size 64 or 128, in FP32, BF16 (vdpbf16ps
// where the CPU has AVX512-BF16) and GSE-INT W8A8G8 products, on 1 and 2 threads.
// Counters:
//   GOPS         useful work per second: the 7 matrix products of forward + backward
//                (S, O; S again, dP, dV, dQ, dK) over the visible (unmasked) query–key
//                pairs only, 2 ops per multiply-add: 7·2·H·hs·pairs. Work the kernels
//                spend on recomputation (the second pass recomputes S and dP) and on the
//                masked part of diagonal blocks is not counted.
//   pct_bf16_peak  GOPS against the vdpbf16ps peak of the threads used, measured at
//                start-up (peaks.hpp; absent without AVX512-BF16).
// Target (issue 11): BF16 ≥ 50% of that peak at seq ≥ 1024. Run on an idle machine.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

#include "bench_support.hpp"
#include "peaks.hpp"
#include "gsq/core/cpu.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/nn/attention.hpp"

namespace {

using gsq::Tensor;
using gsq_bench::random_tensor;
using gsq_bench::set_threads;

enum class Precision { kFp32, kBf16, kGse };
const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: return "bf16";
    case Precision::kGse: return "w8a8g8";
  }
  return "?";
}

double g_bf16_peak = 0.0;  // GFLOPS per core, measured at start-up (peaks.hpp)

void bench_attention(benchmark::State& state, Precision precision, std::int64_t seq,
                     std::int64_t hs, std::int64_t heads, int threads) {
  set_threads(threads);
  const std::int64_t kv_heads = heads >= 4 ? heads / 4 : 1;
  gsq::CausalAttention attn(heads, kv_heads, hs,
                            precision == Precision::kGse ? gsq::Bits::w8a8g8() : gsq::Bits::fp32(),
                            precision == Precision::kBf16);
  const Tensor<float> q = random_tensor(seq, heads * hs, 1, 1.0f);
  const Tensor<float> k = random_tensor(seq, kv_heads * hs, 2, 1.0f);
  const Tensor<float> v = random_tensor(seq, kv_heads * hs, 3, 1.0f);
  const Tensor<float> dout = random_tensor(seq, heads * hs, 4, 1.0f);
  Tensor<float> out({seq, heads * hs}, gsq::MemoryCategory::kScratch);
  Tensor<float> dq({seq, heads * hs}, gsq::MemoryCategory::kScratch);
  Tensor<float> dk({seq, kv_heads * hs}, gsq::MemoryCategory::kScratch);
  Tensor<float> dv({seq, kv_heads * hs}, gsq::MemoryCategory::kScratch);
  gsq::CausalAttention::Cache cache;
  auto step = [&] {
    attn.forward(q, k, v, 1, out, &cache);
    attn.backward(q, k, v, dout, cache, dq, dk, dv);
  };
  step();  // warm-up: scratch and cache buffers
  for (auto _ : state) {
    step();
    benchmark::DoNotOptimize(dq.data());
    benchmark::ClobberMemory();
  }
  const double ops = 7.0 * 2.0 * static_cast<double>(heads * hs) *
                     static_cast<double>(attn.visible_pairs(seq, seq));
  state.counters["GOPS"] =
      benchmark::Counter(ops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (g_bf16_peak > 0.0)
    state.counters["pct_bf16_peak"] = benchmark::Counter(ops * 100.0 / (g_bf16_peak * 1e9 * threads),
                                                         benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(gsq::isa_name(gsq::selected_isa())) +
                 (precision == Precision::kBf16 && !gsq::cpu_features().avx512_bf16
                      ? " (no AVX512-BF16: reference kernels)"
                      : ""));
  set_threads(0);
}

void register_all() {
  for (int threads : {1, 2})
    for (Precision p : {Precision::kFp32, Precision::kBf16, Precision::kGse})
      for (std::int64_t seq : {256, 1024, 2048})
        for (std::int64_t hs : {64, 128})
          for (std::int64_t heads : {8, 32}) {
            const std::string name = std::string("attention/") + precision_name(p) + "/seq" +
                                     std::to_string(seq) + "/hs" + std::to_string(hs) + "/h" +
                                     std::to_string(heads) + "/" + std::to_string(threads);
            benchmark::RegisterBenchmark(name.c_str(), bench_attention, p, seq, hs, heads, threads)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
          }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("gsq_isa", std::string(gsq::isa_name(gsq::selected_isa())));
  benchmark::AddCustomContext("cpu_features", gsq::cpu_features().to_string());
  g_bf16_peak = gsq_bench::measure_float_peak(true);
  benchmark::AddCustomContext("bf16_dpbf16_peak_gflops_per_core", std::to_string(g_bf16_peak));
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
