// gsq/core/cpu.hpp — what this CPU (and its OS) can run, read once from CPUID and XCR0.
//
// A feature counts only if the OS saves its register state: AVX/AVX2 need XCR0 bits 1-2
// (XMM, YMM), AVX-512 additionally bits 5-7 (opmask, ZMM hi256, hi16 ZMM). This is our own
// code rather than __builtin_cpu_supports, which needs libgcc's __cpu_model and differs
// between compilers.
#pragma once

#include <string>

#include "gsq/core/config.hpp"

#if GSQ_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

GSQ_NAMESPACE_BEGIN

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx_vnni = false;     // 256-bit VEX vpdpbusd (Alder Lake, Zen 5)
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512cd = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;

  /// Everything the AVX2 target region assumes.
  bool has_avx2_path() const noexcept { return avx2 && fma; }
  /// Everything the AVX-512 target region assumes.
  bool has_avx512_path() const noexcept {
    return has_avx2_path() && avx512f && avx512bw && avx512vl && avx512dq && avx512cd &&
           avx512_vnni;
  }
  std::string to_string() const {
    std::string s;
    auto add = [&](bool on, const char* name) {
      if (!on) return;
      if (!s.empty()) s += ' ';
      s += name;
    };
    add(avx2, "avx2");
    add(fma, "fma");
    add(avx_vnni, "avx_vnni");
    add(avx512f, "avx512f");
    add(avx512bw, "avx512bw");
    add(avx512vl, "avx512vl");
    add(avx512dq, "avx512dq");
    add(avx512cd, "avx512cd");
    add(avx512_vnni, "avx512_vnni");
    add(avx512_bf16, "avx512_bf16");
    return s.empty() ? "none" : s;
  }
};

namespace detail {

#if GSQ_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__))
inline unsigned long long read_xcr0() noexcept {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

inline CpuFeatures detect_cpu_features() noexcept {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return f;
  const unsigned max_leaf = eax;
  if (max_leaf < 7) return f;

  __cpuid_count(1, 0, eax, ebx, ecx, edx);
  const bool osxsave = (ecx >> 27) & 1;
  const bool fma = (ecx >> 12) & 1;
  if (!osxsave) return f;
  const unsigned long long xcr0 = read_xcr0();
  const bool os_avx = (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;
  if (!os_avx) return f;

  unsigned l7_ebx = 0, l7_ecx = 0, l7_edx = 0, l7_eax = 0;
  __cpuid_count(7, 0, l7_eax, l7_ebx, l7_ecx, l7_edx);
  unsigned l71_eax = 0, l71_ebx = 0, l71_ecx = 0, l71_edx = 0;
  if (l7_eax >= 1) __cpuid_count(7, 1, l71_eax, l71_ebx, l71_ecx, l71_edx);

  f.fma = fma;
  f.avx2 = (l7_ebx >> 5) & 1;
  f.avx_vnni = (l71_eax >> 4) & 1;
  if (os_avx512) {
    f.avx512f = (l7_ebx >> 16) & 1;
    f.avx512dq = (l7_ebx >> 17) & 1;
    f.avx512cd = (l7_ebx >> 28) & 1;
    f.avx512bw = (l7_ebx >> 30) & 1;
    f.avx512vl = (l7_ebx >> 31) & 1;
    f.avx512_vnni = (l7_ecx >> 11) & 1;
    f.avx512_bf16 = (l71_eax >> 5) & 1;
  }
  return f;
}
#else
inline CpuFeatures detect_cpu_features() noexcept { return {}; }
#endif

}  // namespace detail

/// The features of the CPU this process runs on, detected on first call.
inline const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures features = detail::detect_cpu_features();
  return features;
}

GSQ_NAMESPACE_END
