// gsq/core/config.hpp — version, namespace and compiler macros shared by every header.
//
// Everything public lives in `gsq::v0` (an inline namespace, so users write `gsq::`),
// which lets a future ABI-changing release coexist with this one in one program.
// Internals live in `gsq::detail`; nothing there is API.
#pragma once

#define GSQ_VERSION_MAJOR 0
#define GSQ_VERSION_MINOR 1
#define GSQ_VERSION_PATCH 0

#define GSQ_NAMESPACE_BEGIN \
  namespace gsq {           \
  inline namespace v0 {
#define GSQ_NAMESPACE_END \
  }                       \
  }

#if defined(__GNUC__) || defined(__clang__)
#define GSQ_NOINLINE __attribute__((noinline))
#define GSQ_COLD __attribute__((cold))
#define GSQ_ALWAYS_INLINE inline __attribute__((always_inline))
#define GSQ_RESTRICT __restrict__
#define GSQ_LIKELY(x) __builtin_expect(!!(x), 1)
#define GSQ_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define GSQ_NOINLINE
#define GSQ_COLD
#define GSQ_ALWAYS_INLINE inline
#define GSQ_RESTRICT
#define GSQ_LIKELY(x) (x)
#define GSQ_UNLIKELY(x) (x)
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define GSQ_ARCH_X86_64 1
#else
#define GSQ_ARCH_X86_64 0
#endif

// SIMD paths are compiled on x86-64 with GCC or clang unless the user opts out.
#if GSQ_ARCH_X86_64 && (defined(__GNUC__) || defined(__clang__)) && !defined(GSQ_NO_SIMD)
#define GSQ_HAVE_X86_SIMD 1
#else
#define GSQ_HAVE_X86_SIMD 0
#endif

// Internal invariants: checked in debug builds only. Argument checks at API boundaries
// always run and throw (see error.hpp).
#if !defined(NDEBUG) || defined(GSQ_ENABLE_ASSERTS)
#include <cstdio>
#include <cstdlib>
#define GSQ_ASSERT(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "gsq: internal assertion failed: %s (%s:%d)\n", #cond,      \
                   __FILE__, __LINE__);                                                \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)
#else
#define GSQ_ASSERT(cond) ((void)0)
#endif
