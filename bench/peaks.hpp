// bench/peaks.hpp — the machine's peak rates, measured at start-up by micro-loops of
// independent 512-bit instructions (no loads): vpdpbusd (int8), vfmadd231ps (FP32) and
// vdpbf16ps (BF16). Benchmarks report their rates as a % of these, measured in the same
// run, because this VM's clock differs from day to day.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "gsq/core/cpu.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/target.hpp"

#if GSQ_HAVE_X86_SIMD
#include <immintrin.h>
#endif

namespace gsq_bench {

// ---- VNNI peak: independent vpdpbusd chains, no loads -------------------------------
#if GSQ_HAVE_X86_SIMD
// Sixteen named accumulators (more than latency × throughput) updated in place; an array
// would live in memory under GCC 12.
#define GSQ_BENCH_DP(x) __asm__("vpdpbusd %2, %1, %0" : "+v"(x) : "v"(a), "v"(b))
GSQ_TARGET_ATTR_AVX512 inline std::int64_t vnni_micro_loop(std::int64_t iterations) {
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
inline double measure_vnni_peak() {
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

// ---- FP32 FMA and BF16 vdpbf16ps peaks: independent chains, no loads -----------------
#if GSQ_HAVE_X86_SIMD
#define GSQ_BENCH_FMA(x) __asm__("vfmadd231ps %2, %1, %0" : "+v"(x) : "v"(a), "v"(b))
GSQ_TARGET_ATTR_AVX512 inline float fma_micro_loop(std::int64_t iterations) {
  const __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-8f);
  __m512 x0 = a, x1 = b, x2 = a, x3 = b, x4 = a, x5 = b, x6 = a, x7 = b;
  __m512 x8 = a, x9 = b, x10 = a, x11 = b, x12 = a, x13 = b, x14 = a, x15 = b;
  for (std::int64_t it = 0; it < iterations; ++it) {
    GSQ_BENCH_FMA(x0); GSQ_BENCH_FMA(x1); GSQ_BENCH_FMA(x2); GSQ_BENCH_FMA(x3);
    GSQ_BENCH_FMA(x4); GSQ_BENCH_FMA(x5); GSQ_BENCH_FMA(x6); GSQ_BENCH_FMA(x7);
    GSQ_BENCH_FMA(x8); GSQ_BENCH_FMA(x9); GSQ_BENCH_FMA(x10); GSQ_BENCH_FMA(x11);
    GSQ_BENCH_FMA(x12); GSQ_BENCH_FMA(x13); GSQ_BENCH_FMA(x14); GSQ_BENCH_FMA(x15);
  }
  const __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                    _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7))),
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)),
                    _mm512_add_ps(_mm512_add_ps(x12, x13), _mm512_add_ps(x14, x15))));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float sum = 0;
  for (int i = 0; i < 16; ++i) sum += lanes[i];
  return sum;
}
#undef GSQ_BENCH_FMA
#define GSQ_BENCH_DPBF16(x) __asm__("vdpbf16ps %2, %1, %0" : "+v"(x) : "v"(a), "v"(b))
GSQ_TARGET_ATTR_AVX512_BF16 inline float dpbf16_micro_loop(std::int64_t iterations) {
  const __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-8f);
  __m512 x0 = a, x1 = b, x2 = a, x3 = b, x4 = a, x5 = b, x6 = a, x7 = b;
  __m512 x8 = a, x9 = b, x10 = a, x11 = b, x12 = a, x13 = b, x14 = a, x15 = b;
  for (std::int64_t it = 0; it < iterations; ++it) {
    GSQ_BENCH_DPBF16(x0); GSQ_BENCH_DPBF16(x1); GSQ_BENCH_DPBF16(x2); GSQ_BENCH_DPBF16(x3);
    GSQ_BENCH_DPBF16(x4); GSQ_BENCH_DPBF16(x5); GSQ_BENCH_DPBF16(x6); GSQ_BENCH_DPBF16(x7);
    GSQ_BENCH_DPBF16(x8); GSQ_BENCH_DPBF16(x9); GSQ_BENCH_DPBF16(x10); GSQ_BENCH_DPBF16(x11);
    GSQ_BENCH_DPBF16(x12); GSQ_BENCH_DPBF16(x13); GSQ_BENCH_DPBF16(x14); GSQ_BENCH_DPBF16(x15);
  }
  const __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)),
                    _mm512_add_ps(_mm512_add_ps(x4, x5), _mm512_add_ps(x6, x7))),
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(x8, x9), _mm512_add_ps(x10, x11)),
                    _mm512_add_ps(_mm512_add_ps(x12, x13), _mm512_add_ps(x14, x15))));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float sum = 0;
  for (int i = 0; i < 16; ++i) sum += lanes[i];
  return sum;
}
#undef GSQ_BENCH_DPBF16
#endif

/// GFLOPS per core of 512-bit FMA (32 flops per instruction), or of vdpbf16ps (64), or 0.
inline double measure_float_peak(bool bf16) {
#if GSQ_HAVE_X86_SIMD
  if (!gsq::is_isa_supported(gsq::Isa::kAvx512Vnni)) return 0.0;
  if (bf16 && !gsq::cpu_features().avx512_bf16) return 0.0;
  const std::int64_t iterations = 1'000'000;
  double best = 1e30;
  for (int rep = 0; rep < 40; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(bf16 ? dpbf16_micro_loop(iterations) : fma_micro_loop(iterations));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, dt);
  }
  return static_cast<double>(iterations) * 16 * (bf16 ? 64 : 32) / best / 1e9;
#else
  (void)bf16;
  return 0.0;
#endif
}

}  // namespace gsq_bench
