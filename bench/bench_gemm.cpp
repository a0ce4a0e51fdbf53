// bench_gemm — gsq's integer and float GEMMs against Eigen and oneDNN (f32, bf16, s8) in one run.
//
// Names: <impl>/<M>/<N>/<K>/<threads>; counters GOPS (2·M·N·K / wall s / 1e9), GOPS_cpu
// (the same over process CPU seconds / threads: excludes preemption on a shared machine)
// and pct_peak (GOPS against the VNNI peak measured at start-up by a micro-loop of
// independent vpdpbusd, times the thread count). C = A·Bᵀ with A [M, K] activations and B [N, K]
// weights throughout:
//   gse8_g32, gse8_g128   A, B GSE-INT8 (G32 / G128); B packed inside every call
//   gse8_g32_prepacked    the same with B packed once (gemm::pack_b), like oneDNN's weights
//   gse_a8w4_g32          A INT8, B INT4 (G32)
//   qcd8_g32              A fp32, quantized to INT8/G32 inside the call (QCD), B INT8
//   nf4_a8_g32            B stored NF4 [N, K], decoded and regrouped in packing, nothing prepacked
//   nf4t_a8_g32           the same kind of NF4 weight stored [K, N] and used transposed
//                         (dX = dY·W): B = Wᵀ regrouped along W's rows
//   onednn_s8 (u8·s8 → s32)   weights prepacked (format any)
// Float rows (C = op(A)·op(B); the layout suffix says which operands are transposed as
// stored: none = A·Bᵀ (X·Wᵀ, logits), _nn = A·B (dX = dY·W), _tn = Aᵀ·B (dW = dYᵀ·X)),
// pct_peak against the FP32 FMA or BF16 vdpbf16ps peak measured at start-up:
//   f32                   gsq::gemm::gemm_f32 (gsq's kernels, both operands packed per call)
//   bf16                  gsq::gemm::gemm_bf16 (FP32 operands rounded to bf16 in packing)
//   eigen_f32             Eigen compiled with -mavx512f -mfma in its own TU (eigen_baseline.cpp)
//   onednn_f32 / onednn_bf16   oneDNN matmul, weights prepacked (format any): its best case
// The machine is shared while developing: compare ratios within one run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "peaks.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/target.hpp"
#include "eigen_baseline.hpp"
#include "gsq/gemm/f32.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/nf4.hpp"

#if defined(GSQ_BENCH_HAVE_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using gsq::GseSpec;
using gsq::Tensor;

struct Shape {
  std::int64_t m, n, k;
};
const Shape kShapes[] = {{512, 2048, 2048}, {2048, 2048, 2048}, {512, 5632, 2048},
                         {512, 2048, 5632}, {512, 16, 2048},    {512, 2048, 16},
                         {2048, 2048, 512}};

using gsq_bench::random_tensor;
using gsq_bench::set_threads;

using gsq_bench::measure_float_peak;
using gsq_bench::measure_vnni_peak;

double g_vnni_peak = 0.0;  // GOPS per core
double g_f32_peak = 0.0;   // GFLOPS per core
double g_bf16_peak = 0.0;  // GFLOPS per core

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

/// Runs `body` in the timing loop and reports GOPS and pct_peak.
void run_timed(benchmark::State& state, const Shape& s, int threads,
               const std::function<void()>& body, double peak_per_core = g_vnni_peak) {
  body();  // warm-up: workspaces, first-touch
  const double c0 = process_cpu_seconds();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body();
    benchmark::ClobberMemory();
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = process_cpu_seconds() - c0;
  const double ops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k) *
                     static_cast<double>(state.iterations());
  const double gops = ops / dt / 1e9;
  state.counters["GOPS"] = gops;
  // Busy-time rate: process CPU seconds shared by the threads. On a loaded machine this
  // leaves out time the threads were preempted (wall time does not).
  state.counters["GOPS_cpu"] = ops / (cpu / threads) / 1e9;
  if (peak_per_core > 0) state.counters["pct_peak"] = 100.0 * gops / (peak_per_core * threads);
}

// ---- gsq -----------------------------------------------------------------------------
enum class Impl { kGse8G32, kGse8G32Prepacked, kGse8G128, kGseA8W4G32, kQcd8G32, kNf4, kNf4T };

void bench_gsq(benchmark::State& state, Impl impl, Shape s, int threads) {
  set_threads(threads);
  const Tensor<float> x = random_tensor(s.m, s.k, 1, 1.0f);
  Tensor<float> c({s.m, s.n}, gsq::MemoryCategory::kScratch);
  const int group = impl == Impl::kGse8G128 ? 128 : 32;
  const GseSpec a_spec{8, group, 8};
  const GseSpec b_spec{impl == Impl::kGseA8W4G32 ? 4 : 8, group, 8};
  const gsq::GseMatrix a = gsq::quantize_gse(x.view(), a_spec, false);
  std::function<void()> body;
  gsq::GseMatrix b;
  gsq::gemm::PackedB packed;
  gsq::Nf4Matrix w;
  switch (impl) {
    case Impl::kGse8G32Prepacked: {  // B packed once, as oneDNN's weights are
      const Tensor<float> wf = random_tensor(s.n, s.k, 2, 0.02f);
      b = gsq::quantize_gse(wf.view(), b_spec, false, {}, gsq::MemoryCategory::kWeights);
      packed = gsq::gemm::pack_b(gsq::gemm::BOperand::gse(b), gsq::MemoryCategory::kWeights);
      body = [&] { gsq::gemm::gemm_nt(a, gsq::gemm::BOperand::packed(packed), c.view()); };
      break;
    }
    case Impl::kGse8G32:
    case Impl::kGse8G128:
    case Impl::kGseA8W4G32:
    case Impl::kQcd8G32: {
      const Tensor<float> wf = random_tensor(s.n, s.k, 2, 0.02f);
      b = gsq::quantize_gse(wf.view(), b_spec, false, {}, gsq::MemoryCategory::kWeights);
      if (impl == Impl::kQcd8G32)
        body = [&] { gsq::gemm::qcd_gemm_nt(x.view(), false, a_spec, gsq::gemm::BOperand::gse(b), c.view()); };
      else
        body = [&] { gsq::gemm::gemm_nt(a, gsq::gemm::BOperand::gse(b), c.view()); };
      break;
    }
    case Impl::kNf4: {
      const Tensor<float> wf = random_tensor(s.n, s.k, 2, 0.02f);
      w = gsq::quantize_nf4(wf.view());
      body = [&] { gsq::gemm::gemm_nt(a, gsq::gemm::BOperand::nf4(w, b_spec), c.view()); };
      break;
    }
    case Impl::kNf4T: {
      const Tensor<float> wf = random_tensor(s.k, s.n, 2, 0.02f);  // W [out = K, in = N]
      w = gsq::quantize_nf4(wf.view());
      body = [&] { gsq::gemm::gemm_nt(a, gsq::gemm::BOperand::nf4_transposed(w, b_spec), c.view()); };
      break;
    }
  }
  run_timed(state, s, threads, body);
  state.SetLabel(std::string(gsq::isa_name(gsq::gemm::active_isa())));
  set_threads(0);
}

// ---- float products ------------------------------------------------------------------
struct FloatShape {
  std::int64_t m, n, k;
  bool ta, tb;  // A stored [k, m] / B stored [n, k]
};
// 512×2048×2048 and the shapes of a d2048 LoRA step (1024 tokens, rank 16, vocab 32000).
const FloatShape kFloatShapes[] = {
    {512, 2048, 2048, false, true},    // X·Wᵀ
    {512, 2048, 2048, false, false},   // dX = dY·W
    {2048, 2048, 512, true, false},    // dW = dYᵀ·X
    {1024, 16, 2048, false, true},     // LoRA X·Aᵀ
    {1024, 2048, 16, false, true},     // LoRA H·Bᵀ
    {1024, 16, 2048, false, false},    // LoRA dY·B
    {16, 2048, 1024, true, false},     // LoRA dHᵀ·X
    {2048, 16, 1024, true, false},     // LoRA dYᵀ·H
    {512, 32000, 2048, false, true},   // classifier logits H·Wᵀ
    {512, 2048, 32000, false, false},  // classifier dH = dlogits·W
    {32000, 2048, 512, true, false},   // classifier dW = dlogitsᵀ·H
};

std::string float_layout(const FloatShape& s) {
  if (!s.ta && s.tb) return "";
  return std::string("_") + (s.ta ? "t" : "n") + (s.tb ? "t" : "n");
}

enum class FloatImpl { kF32, kBf16, kEigen };

void bench_float(benchmark::State& state, FloatImpl impl, FloatShape s, int threads) {
  if (impl == FloatImpl::kEigen && !gsq::cpu_features().has_avx512_path()) {
    state.SkipWithError("eigen_f32 is built for AVX-512, which this CPU lacks");
    return;
  }
  set_threads(threads);
  const Tensor<float> a = s.ta ? random_tensor(s.k, s.m, 1, 1.0f) : random_tensor(s.m, s.k, 1, 1.0f);
  const Tensor<float> b = s.tb ? random_tensor(s.n, s.k, 2, 0.02f) : random_tensor(s.k, s.n, 2, 0.02f);
  Tensor<float> c({s.m, s.n}, gsq::MemoryCategory::kScratch);
  std::function<void()> body;
  switch (impl) {
    case FloatImpl::kF32:
      body = [&] { gsq::gemm::gemm_f32(a.view(), s.ta, b.view(), s.tb, c.view()); };
      break;
    case FloatImpl::kBf16:
      body = [&] { gsq::gemm::gemm_bf16(a.view(), s.ta, b.view(), s.tb, c.view()); };
      break;
    case FloatImpl::kEigen:
      body = [&] {
        gsq_bench::eigen_gemm_f32(a.data(), s.ta, b.data(), s.tb, c.data(), s.m, s.n, s.k, threads);
      };
      break;
  }
  const bool bf16_peak = impl == FloatImpl::kBf16 && gsq::cpu_features().avx512_bf16;
  run_timed(state, {s.m, s.n, s.k}, threads, body, bf16_peak ? g_bf16_peak : g_f32_peak);
  if (impl != FloatImpl::kEigen) state.SetLabel(gsq::gemm::active_float_path());
  set_threads(0);
}

// ---- oneDNN --------------------------------------------------------------------------
#if defined(GSQ_BENCH_HAVE_ONEDNN)
enum class DnnlKind { kF32, kBf16, kS8 };

void bench_onednn(benchmark::State& state, DnnlKind kind, Shape s, int threads,
                  bool transpose_a = false) {
  using dnnl::memory;
  set_threads(threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const memory::data_type src_dt = kind == DnnlKind::kF32 ? memory::data_type::f32
                            : kind == DnnlKind::kBf16 ? memory::data_type::bf16 : memory::data_type::u8;
  const memory::data_type wei_dt = kind == DnnlKind::kF32 ? memory::data_type::f32
                            : kind == DnnlKind::kBf16 ? memory::data_type::bf16 : memory::data_type::s8;
  const memory::data_type dst_dt = kind == DnnlKind::kS8 ? memory::data_type::s32 : memory::data_type::f32;
  const memory::desc src_md({s.m, s.k}, src_dt,
                            transpose_a ? memory::format_tag::ba : memory::format_tag::ab);
  const memory::desc wei_any({s.k, s.n}, wei_dt, memory::format_tag::any);
  const memory::desc wei_user({s.k, s.n}, wei_dt, memory::format_tag::ba);  // stored [N, K]
  const memory::desc dst_md({s.m, s.n}, dst_dt, memory::format_tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, wei_any, dst_md), eng);
  memory src(src_md, eng), wei(wei_user, eng), dst(dst_md, eng), wei_packed(pd.weights_desc(), eng);
  // Fill with small values (exact in every type); content does not change the speed.
  auto fill = [](memory& mem, std::int64_t bytes) {
    auto* p = static_cast<std::uint8_t*>(mem.get_data_handle());
    for (std::int64_t i = 0; i < bytes; ++i) p[i] = static_cast<std::uint8_t>((i * 7) & 0x3F);
  };
  fill(src, static_cast<std::int64_t>(src_md.get_size()));
  fill(wei, static_cast<std::int64_t>(wei_user.get_size()));
  dnnl::reorder(wei, wei_packed).execute(strm, wei, wei_packed);
  strm.wait();
  dnnl::matmul mm(pd);
  const double peak = kind == DnnlKind::kS8 ? g_vnni_peak : kind == DnnlKind::kBf16 ? g_bf16_peak : g_f32_peak;
  run_timed(state, s, threads, [&] {
    mm.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei_packed}, {DNNL_ARG_DST, dst}});
    strm.wait();
  }, peak);
  set_threads(0);
}
#endif

/// Units, real time, and min / max over repetitions (with --benchmark_repetitions=N on a
/// shared machine, read the fastest run: `max` of GOPS, `min` of time).
void add_statistics(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
      ->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
}

void register_all() {
  struct GsqImpl {
    const char* name;
    Impl impl;
  };
  const GsqImpl gsq_impls[] = {{"gse8_g32", Impl::kGse8G32},       {"gse8_g32_prepacked", Impl::kGse8G32Prepacked},
                               {"gse8_g128", Impl::kGse8G128},
                               {"gse_a8w4_g32", Impl::kGseA8W4G32}, {"qcd8_g32", Impl::kQcd8G32},
                               {"nf4_a8_g32", Impl::kNf4},          {"nf4t_a8_g32", Impl::kNf4T}};
  for (const Shape& s : kShapes) {
    for (int threads : {1, 2}) {
      auto name = [&](const char* impl) {
        return std::string(impl) + "/" + std::to_string(s.m) + "/" + std::to_string(s.n) + "/" +
               std::to_string(s.k) + "/" + std::to_string(threads);
      };
      for (const GsqImpl& g : gsq_impls)
        add_statistics(benchmark::RegisterBenchmark(name(g.name).c_str(), bench_gsq, g.impl, s, threads));
#if defined(GSQ_BENCH_HAVE_ONEDNN)
      add_statistics(benchmark::RegisterBenchmark(name("onednn_s8").c_str(), bench_onednn,
                                                  DnnlKind::kS8, s, threads, false));
#endif
    }
  }
  for (const FloatShape& s : kFloatShapes) {
    for (int threads : {1, 2}) {
      auto name = [&](const char* impl) {
        return std::string(impl) + float_layout(s) + "/" + std::to_string(s.m) + "/" +
               std::to_string(s.n) + "/" + std::to_string(s.k) + "/" + std::to_string(threads);
      };
      const std::pair<const char*, FloatImpl> float_impls[] = {
          {"f32", FloatImpl::kF32}, {"bf16", FloatImpl::kBf16}, {"eigen_f32", FloatImpl::kEigen}};
      for (const auto& [n, impl] : float_impls)
        add_statistics(benchmark::RegisterBenchmark(name(n).c_str(), bench_float, impl, s, threads));
#if defined(GSQ_BENCH_HAVE_ONEDNN)
      // oneDNN's weights are B as stored [n, k] or [k, n]; prepacked either way.
      const std::pair<const char*, DnnlKind> dnnl_impls[] = {{"onednn_f32", DnnlKind::kF32},
                                                             {"onednn_bf16", DnnlKind::kBf16}};
      for (const auto& [n, k] : dnnl_impls)
        add_statistics(benchmark::RegisterBenchmark(name(n).c_str(), bench_onednn, k,
                                                    Shape{s.m, s.n, s.k}, threads, s.ta));
#endif
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::unsetenv("OPENBLAS_CORETYPE");  // OpenBLAS (if a baseline pulls it in) must detect the CPU
  g_vnni_peak = measure_vnni_peak();
  benchmark::AddCustomContext("gsq_gemm_isa", std::string(gsq::isa_name(gsq::selected_isa())));
  benchmark::AddCustomContext("vnni_peak_gops_per_core", std::to_string(g_vnni_peak));
  g_f32_peak = measure_float_peak(false);
  g_bf16_peak = measure_float_peak(true);
  benchmark::AddCustomContext("f32_fma_peak_gflops_per_core", std::to_string(g_f32_peak));
  benchmark::AddCustomContext("bf16_dpbf16_peak_gflops_per_core", std::to_string(g_bf16_peak));
  benchmark::AddCustomContext("eigen_baseline_simd", gsq_bench::eigen_simd_instruction_sets());
  benchmark::AddCustomContext("cpu_features", gsq::cpu_features().to_string());
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
