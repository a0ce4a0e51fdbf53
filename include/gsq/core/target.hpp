// gsq/core/target.hpp — the only place where gsq talks to the compiler about ISAs.
//
// gsq is header-only and must run on any x86-64 without `-march` flags, so SIMD code is
// compiled inside target regions and chosen at run time (see isa.hpp). Rules, learnt the
// hard way (STYLE.md §5):
//   * include every header *before* GSQ_TARGET_BEGIN_*; a standard header pulled into a
//     region gets zmm code that the linker may then hand to every caller;
//   * open regions at file scope, and put each ISA's code in its own namespace
//     (`...::avx2`, `...::avx512`) so inline copies never collide (ODR);
//   * lambdas do not inherit a region: don't write them inside one;
//   * entry points take pointers, integers and plain structs, never vector types, and
//     are not always_inline (baseline callers cannot inline them).
#pragma once

#include "gsq/core/config.hpp"

// AVX2 + FMA (Haswell and later). AVX-VNNI is probed separately at run time.
#define GSQ_TARGET_AVX2_STRING "avx2,fma,bmi,bmi2,lzcnt,popcnt,f16c"
// AVX-512 with VNNI (Ice Lake, Zen 4 and later): F, BW, VL, DQ, CD + VNNI.
#define GSQ_TARGET_AVX512_STRING \
  "avx2,fma,bmi,bmi2,lzcnt,popcnt,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx512vnni"
// The AVX-512 region plus AVX512_BF16 (vdpbf16ps; Cooper Lake, Sapphire Rapids, Zen 4);
// only code run after checking CpuFeatures::avx512_bf16 lives in it.
#define GSQ_TARGET_AVX512_BF16_STRING \
  "avx2,fma,bmi,bmi2,lzcnt,popcnt,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx512vnni,avx512bf16"

#if GSQ_HAVE_X86_SIMD
// Two levels so the target string macro is expanded before it is stringified.
#define GSQ_DETAIL_PRAGMA_STR(x) _Pragma(#x)
#define GSQ_DETAIL_PRAGMA(x) GSQ_DETAIL_PRAGMA_STR(x)
#if defined(__clang__)
#define GSQ_TARGET_BEGIN_AVX2 \
  GSQ_DETAIL_PRAGMA(clang attribute push(__attribute__((target(GSQ_TARGET_AVX2_STRING))), apply_to = function))
#define GSQ_TARGET_BEGIN_AVX512 \
  GSQ_DETAIL_PRAGMA(clang attribute push(__attribute__((target(GSQ_TARGET_AVX512_STRING))), apply_to = function))
#define GSQ_TARGET_BEGIN_AVX512_BF16 \
  GSQ_DETAIL_PRAGMA(clang attribute push(__attribute__((target(GSQ_TARGET_AVX512_BF16_STRING))), apply_to = function))
#define GSQ_TARGET_END _Pragma("clang attribute pop")
#else
// GCC 12.2 reports -W(maybe-)uninitialized inside its own AVX-512 intrinsics (their
// _mm512_undefined_* pass-through, GCC bug 105593, fixed in 12.3/13) wherever an
// unmasked intrinsic such as _mm512_srli_epi32 is used, so regions silence those two
// warnings; clang still checks kernel code for them.
#define GSQ_DETAIL_GCC_REGION_DIAGNOSTICS                       \
  _Pragma("GCC diagnostic push")                                \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")        \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define GSQ_TARGET_BEGIN_AVX2 \
  _Pragma("GCC push_options") GSQ_DETAIL_PRAGMA(GCC target(GSQ_TARGET_AVX2_STRING)) \
  GSQ_DETAIL_GCC_REGION_DIAGNOSTICS
#define GSQ_TARGET_BEGIN_AVX512 \
  _Pragma("GCC push_options") GSQ_DETAIL_PRAGMA(GCC target(GSQ_TARGET_AVX512_STRING)) \
  GSQ_DETAIL_GCC_REGION_DIAGNOSTICS
#define GSQ_TARGET_BEGIN_AVX512_BF16 \
  _Pragma("GCC push_options") GSQ_DETAIL_PRAGMA(GCC target(GSQ_TARGET_AVX512_BF16_STRING)) \
  GSQ_DETAIL_GCC_REGION_DIAGNOSTICS
#define GSQ_TARGET_END _Pragma("GCC diagnostic pop") _Pragma("GCC pop_options")
#endif
// For a single function or lambda outside a region.
#define GSQ_TARGET_ATTR_AVX2 __attribute__((target(GSQ_TARGET_AVX2_STRING)))
#define GSQ_TARGET_ATTR_AVX512 __attribute__((target(GSQ_TARGET_AVX512_STRING)))
#define GSQ_TARGET_ATTR_AVX512_BF16 __attribute__((target(GSQ_TARGET_AVX512_BF16_STRING)))
#endif
