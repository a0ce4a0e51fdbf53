// bench_quant — throughput of gsq's quantizers, one thread, per ISA path.
//
// Names: <op>/<isa>/<format>/<orientation>/<rounding>/<rows>/<cols>, e.g.
// gse_quantize/avx512/INT8_G32_E8/nt/rne/512/2048. Rates: items_per_second (elements)
// and Gelem/s. The path that was forced is part of the name; the path gsq would pick on
// its own is in the context (gsq_isa).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gsq/core/isa.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/nf4.hpp"
#include "gsq/quant/uniform.hpp"

namespace {

gsq::Tensor<float> random_input(std::int64_t rows, std::int64_t cols) {
  gsq::Tensor<float> t({rows, cols}, gsq::MemoryCategory::kScratch);
  gsq::CounterRng rng(42, 0);
  for (float& v : t) v = rng.next_normal();
  return t;
}

void set_rate(benchmark::State& state, std::int64_t elements) {
  state.SetItemsProcessed(state.iterations() * elements);
  state.counters["Gelem/s"] = benchmark::Counter(static_cast<double>(elements) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

struct GseCase {
  gsq::GseSpec spec;
  bool transpose;
  gsq::Rounding rounding;
};

void bm_gse_quantize(benchmark::State& state, gsq::Isa isa, GseCase c, std::int64_t rows,
                     std::int64_t cols) {
  gsq::ScopedIsa scope(isa);
  gsq::set_num_threads(1);
  const gsq::Tensor<float> x = random_input(rows, cols);
  gsq::GseMatrix q(c.transpose ? cols : rows, c.transpose ? rows : cols, c.spec);
  gsq::QuantizeOptions options;
  options.rounding = c.rounding;
  options.seed = 1;
  for (auto _ : state) {
    gsq::quantize_gse(x, c.transpose, q, options);
    benchmark::DoNotOptimize(q.mantissa_row(0));
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

void bm_gse_dequantize(benchmark::State& state, gsq::Isa isa, GseCase c, std::int64_t rows,
                       std::int64_t cols) {
  gsq::ScopedIsa scope(isa);
  gsq::set_num_threads(1);
  const gsq::Tensor<float> x = random_input(rows, cols);
  const gsq::GseMatrix q = gsq::quantize_gse(x, c.spec, c.transpose);
  gsq::Tensor<float> out({rows, cols}, gsq::MemoryCategory::kScratch);
  for (auto _ : state) {
    gsq::dequantize_gse(q, c.transpose, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

void bm_nf4_quantize(benchmark::State& state, gsq::Isa isa, bool double_quant, std::int64_t rows,
                     std::int64_t cols) {
  gsq::ScopedIsa scope(isa);
  gsq::set_num_threads(1);
  const gsq::Tensor<float> w = random_input(rows, cols);
  gsq::Nf4Matrix q(rows, cols, double_quant);  // reused: page faults are not the subject
  for (auto _ : state) {
    gsq::quantize_nf4(w, q);
    benchmark::DoNotOptimize(q.code_row(0));
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

void bm_nf4_dequantize(benchmark::State& state, gsq::Isa isa, bool double_quant, std::int64_t rows,
                       std::int64_t cols) {
  gsq::ScopedIsa scope(isa);
  gsq::set_num_threads(1);
  const gsq::Tensor<float> w = random_input(rows, cols);
  const gsq::Nf4Matrix q = gsq::quantize_nf4(w, double_quant);
  gsq::Tensor<float> out({rows, cols}, gsq::MemoryCategory::kScratch);
  for (auto _ : state) {
    gsq::dequantize_nf4(q, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

void bm_uniform_fake_quantize(benchmark::State& state, gsq::Isa isa, gsq::UniformSpec spec,
                              std::int64_t rows, std::int64_t cols) {
  gsq::ScopedIsa scope(isa);
  gsq::set_num_threads(1);
  const gsq::Tensor<float> w = random_input(rows, cols);
  const std::int64_t groups = (cols + spec.group - 1) / spec.group;
  gsq::Tensor<float> steps({rows, groups}, gsq::MemoryCategory::kScratch);
  gsq::Tensor<float> offsets({rows, groups}, gsq::MemoryCategory::kScratch);
  gsq::init_uniform_minmax(w, spec, steps, offsets);
  gsq::Tensor<float> out({rows, cols}, gsq::MemoryCategory::kScratch);
  for (auto _ : state) {
    gsq::fake_quantize_uniform(w, spec, steps, offsets, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

// L4Q's LSQ+ backward: the straight-through mask written in place over the upstream
// gradient, step and offset gradients accumulated per group.
void bm_uniform_backward(benchmark::State& state, gsq::Isa isa, gsq::UniformSpec spec,
                         std::int64_t rows, std::int64_t cols) {
  gsq::ScopedIsa scope(isa);
  gsq::set_num_threads(1);
  const gsq::Tensor<float> w = random_input(rows, cols);
  const gsq::Tensor<float> g = random_input(rows, cols);
  const std::int64_t groups = (cols + spec.group - 1) / spec.group;
  gsq::Tensor<float> steps({rows, groups}, gsq::MemoryCategory::kScratch);
  gsq::Tensor<float> offsets({rows, groups}, gsq::MemoryCategory::kScratch);
  gsq::init_uniform_minmax(w, spec, steps, offsets);
  for (float& s : steps) s *= 0.8f;  // some values clamp
  gsq::Tensor<float> gw({rows, cols}, gsq::MemoryCategory::kScratch);
  gsq::Tensor<float> gs({rows, groups}, gsq::MemoryCategory::kScratch);
  gsq::Tensor<float> gb({rows, groups}, gsq::MemoryCategory::kScratch);
  for (auto _ : state) {
    gsq::uniform_backward(w, spec, steps, offsets, g, gw, gs, gb);
    benchmark::DoNotOptimize(gw.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows * cols);
}

std::string format_name(const gsq::GseSpec& s) {
  return "INT" + std::to_string(s.bits) + "_G" + std::to_string(s.group) + "_E" +
         std::to_string(s.exp_bits);
}

std::string shape_name(std::int64_t rows, std::int64_t cols) {
  return std::to_string(rows) + "/" + std::to_string(cols);
}

void register_all() {
  // 512 tokens × 2048 features: a LoRA layer's activations (4 MiB of fp32: L3, not L2).
  // The headline case also runs at 64 × 2048 (512 KiB, L2-resident), which separates
  // the kernel's speed from the memory system's.
  struct Shape {
    std::int64_t rows, cols;
  };
  const Shape act{512, 2048}, l2{64, 2048};
  const struct {
    GseCase c;
    Shape shape;
  } gse_cases[] = {
      {{{8, 32, 8}, false, gsq::Rounding::kNearestEven}, l2},
      {{{8, 32, 8}, false, gsq::Rounding::kNearestEven}, act},
      {{{8, 128, 8}, false, gsq::Rounding::kNearestEven}, act},
      {{{4, 32, 8}, false, gsq::Rounding::kNearestEven}, act},
      {{{8, 32, 8}, true, gsq::Rounding::kNearestEven}, act},
      {{{8, 32, 8}, false, gsq::Rounding::kStochastic}, act},
      {{{4, 32, 8}, true, gsq::Rounding::kStochastic}, act},
  };
  for (gsq::Isa isa : gsq::kAllIsas) {
    if (!gsq::is_isa_supported(isa)) continue;
    const std::string isa_str(gsq::isa_name(isa));
    for (const auto& [c, shape] : gse_cases) {
      const std::string tail = isa_str + "/" + format_name(c.spec) + "/" +
                               (c.transpose ? "t" : "nt") + "/" +
                               (c.rounding == gsq::Rounding::kNearestEven ? "rne" : "sr") + "/" +
                               shape_name(shape.rows, shape.cols);
      benchmark::RegisterBenchmark(("gse_quantize/" + tail).c_str(), bm_gse_quantize, isa, c,
                                   shape.rows, shape.cols)
          ->Unit(benchmark::kMicrosecond);
      if (c.rounding == gsq::Rounding::kNearestEven)
        benchmark::RegisterBenchmark(("gse_dequantize/" + tail).c_str(), bm_gse_dequantize, isa, c,
                                     shape.rows, shape.cols)
            ->Unit(benchmark::kMicrosecond);
    }
    // L4Q's forward: fake quantization of a 2048 × 2048 weight, 4-bit codes, G = 128
    // (includes the finiteness check of weights, steps and offsets).
    benchmark::RegisterBenchmark(
        ("uniform_fake_quantize/" + isa_str + "/ASYM4_G128/" + shape_name(2048, 2048)).c_str(),
        bm_uniform_fake_quantize, isa, gsq::UniformSpec{4, 128}, 2048, 2048)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(
        ("uniform_backward/" + isa_str + "/ASYM4_G128/" + shape_name(2048, 2048)).c_str(),
        bm_uniform_backward, isa, gsq::UniformSpec{4, 128}, 2048, 2048)
        ->Unit(benchmark::kMicrosecond);
    // A 2048 × 2048 weight (16 MiB of fp32).
    for (bool dq : {false, true}) {
      const std::string tail = isa_str + (dq ? "/dq/" : "/fp32_absmax/") + shape_name(2048, 2048);
      benchmark::RegisterBenchmark(("nf4_quantize/" + tail).c_str(), bm_nf4_quantize, isa, dq, 2048,
                                   2048)
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("nf4_dequantize/" + tail).c_str(), bm_nf4_dequantize, isa, dq,
                                   2048, 2048)
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("gsq_isa", std::string(gsq::isa_name(gsq::selected_isa())));
  benchmark::AddCustomContext("gsq_cpu", gsq::cpu_features().to_string());
  benchmark::AddCustomContext("gsq_threads", "1");
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
