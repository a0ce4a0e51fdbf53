// bench_gemm — gsq's integer GEMM against FP32 Eigen and oneDNN (f32, bf16, s8) in one run.
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
//   eigen_f32             gsq::gemm::gemm_f32 (Eigen)
//   onednn_f32 / onednn_bf16 / onednn_s8 (u8·s8 → s32)   weights prepacked (format any)
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
#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/target.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/nf4.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>
#endif

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

// ---- VNNI peak: independent vpdpbusd chains, no loads -------------------------------
#if GSQ_HAVE_X86_SIMD
// Sixteen named accumulators (more than latency × throughput) updated in place; an array
// would live in memory under GCC 12.
#define GSQ_BENCH_DP(x) __asm__("vpdpbusd %2, %1, %0" : "+v"(x) : "v"(a), "v"(b))
GSQ_TARGET_ATTR_AVX512 std::int64_t vnni_micro_loop(std::int64_t iterations) {
  const __m512i a = _mm512_set1_epi32(0x03030303), b = _mm512_set1_epi32(0x05050505);
  __m512i x0 = a, x1 = b, x2 = a, x3 = b, x4 = a, x5 = b, x6 = a, x7 = b;
  __m512i x8 = a, x9 = b, x10 = a, x11 = b, x12 = a, x13 = b, x14 = a, x15 = b;
  for (std::int64_t it = 0; it < iterations; ++it) {
    GSQ_BENCH_DP(x0); GSQ_BENCH_DP(x1); GSQ_BENCH_DP(x2); GSQ_BENCH_DP(x3);
    GSQ_BENCH_DP(x4); GSQ_BENCH_DP(x5); GSQ_BENCH_DP(x6); GSQ_BENCH_DP(x7);
    GSQ_BENCH_DP(x8); GSQ_BENCH_DP(x9); GSQ_BENCH_DP(x10); GSQ_BENCH_DP(x11);
    GSQ_BENCH_DP(x12); GSQ_BENCH_DP(x13); GSQ_BENCH_DP(x14); GSQ_BENCH_DP(x15);
  }
  const __m512i s = _mm512_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(x0, x1), _mm512_add_epi32(x2, x3)),
                       _mm512_add_epi32(_mm512_add_epi32(x4, x5), _mm512_add_epi32(x6, x7))),
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(x8, x9), _mm512_add_epi32(x10, x11)),
                       _mm512_add_epi32(_mm512_add_epi32(x12, x13), _mm512_add_epi32(x14, x15))));
  alignas(64) std::int32_t lanes[16];
  _mm512_store_si512(reinterpret_cast<void*>(lanes), s);
  std::int64_t sum = 0;
  for (int i = 0; i < 16; ++i) sum += lanes[i];
  return sum;
}
#undef GSQ_BENCH_DP
#endif

/// GOPS of vpdpbusd per core (512-bit: 64 MACs = 128 ops), or 0 without AVX-512 VNNI.
double measure_vnni_peak() {
#if GSQ_HAVE_X86_SIMD
  if (!gsq::is_isa_supported(gsq::Isa::kAvx512Vnni)) return 0.0;
  const std::int64_t iterations = 1'000'000;
  double best = 1e30;
  for (int rep = 0; rep < 40; ++rep) {  // best of many short runs: the machine may be shared
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(vnni_micro_loop(iterations));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, dt);
  }
  return static_cast<double>(iterations) * 16 * 128 / best / 1e9;
#else
  return 0.0;
#endif
}

double g_vnni_peak = 0.0;  // GOPS per core

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

/// Runs `body` in the timing loop and reports GOPS and pct_peak.
void run_timed(benchmark::State& state, const Shape& s, int threads,
               const std::function<void()>& body) {
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
  if (g_vnni_peak > 0) state.counters["pct_peak"] = 100.0 * gops / (g_vnni_peak * threads);
}

// ---- gsq -----------------------------------------------------------------------------
enum class Impl { kGse8G32, kGse8G32Prepacked, kGse8G128, kGseA8W4G32, kQcd8G32, kNf4, kNf4T, kEigen };

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
    case Impl::kEigen: {
      static Tensor<float> wf;
      wf = random_tensor(s.n, s.k, 2, 0.02f);
      body = [&] { gsq::gemm::gemm_f32(x.view(), false, wf.view(), true, c.view()); };
      break;
    }
  }
  run_timed(state, s, threads, body);
  if (impl != Impl::kEigen)
    state.SetLabel(std::string(gsq::isa_name(gsq::gemm::active_isa())));
  set_threads(0);
}

// ---- oneDNN --------------------------------------------------------------------------
#if defined(GSQ_BENCH_HAVE_ONEDNN)
enum class DnnlKind { kF32, kBf16, kS8 };

void bench_onednn(benchmark::State& state, DnnlKind kind, Shape s, int threads) {
  using dnnl::memory;
  set_threads(threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const memory::data_type src_dt = kind == DnnlKind::kF32 ? memory::data_type::f32
                            : kind == DnnlKind::kBf16 ? memory::data_type::bf16 : memory::data_type::u8;
  const memory::data_type wei_dt = kind == DnnlKind::kF32 ? memory::data_type::f32
                            : kind == DnnlKind::kBf16 ? memory::data_type::bf16 : memory::data_type::s8;
  const memory::data_type dst_dt = kind == DnnlKind::kS8 ? memory::data_type::s32 : memory::data_type::f32;
  const memory::desc src_md({s.m, s.k}, src_dt, memory::format_tag::ab);
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
  run_timed(state, s, threads, [&] {
    mm.execute(strm, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei_packed}, {DNNL_ARG_DST, dst}});
    strm.wait();
  });
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
                               {"nf4_a8_g32", Impl::kNf4},          {"nf4t_a8_g32", Impl::kNf4T},
                               {"eigen_f32", Impl::kEigen}};
  for (const Shape& s : kShapes) {
    for (int threads : {1, 2}) {
      auto name = [&](const char* impl) {
        return std::string(impl) + "/" + std::to_string(s.m) + "/" + std::to_string(s.n) + "/" +
               std::to_string(s.k) + "/" + std::to_string(threads);
      };
      for (const GsqImpl& g : gsq_impls)
        add_statistics(benchmark::RegisterBenchmark(name(g.name).c_str(), bench_gsq, g.impl, s, threads));
#if defined(GSQ_BENCH_HAVE_ONEDNN)
      const std::pair<const char*, DnnlKind> dnnl_impls[] = {
          {"onednn_f32", DnnlKind::kF32}, {"onednn_bf16", DnnlKind::kBf16}, {"onednn_s8", DnnlKind::kS8}};
      for (const auto& [n, k] : dnnl_impls)
        add_statistics(benchmark::RegisterBenchmark(name(n).c_str(), bench_onednn, k, s, threads));
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
  benchmark::AddCustomContext("cpu_features", gsq::cpu_features().to_string());
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
