// gsq/core/isa.hpp — which SIMD path runs: a bitmask of paths, chosen at run time.
//
// As in ruy, each path is one bit; the reference path is always compiled and always
// enabled, so there is always something to run. The path used is the best one in
// (compiled ∩ supported by this CPU ∩ enabled), where "enabled" comes from, in order:
//   1. the program: set_isa_mask(), or a ScopedIsa in tests — a choice of the current
//      gsq::Context (core/context.hpp), so two contexts may run different paths;
//   2. the environment: GSQ_ISA=reference|avx2|avx512 (read once);
//   3. CPUID: everything this CPU supports.
// Forcing a path the CPU or build lacks throws UnsupportedIsa; a bad GSQ_ISA value
// throws ConfigError. Every path produces bit-identical results, so the choice only
// changes speed.
#pragma once

#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>

#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
#include "gsq/core/cpu.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN

enum class Isa : unsigned {
  kReference = 1u << 0,   // portable scalar C++, the definition of every result
  kAvx2 = 1u << 1,        // AVX2 + FMA (uses AVX-VNNI where the CPU has it)
  kAvx512Vnni = 1u << 2,  // AVX-512 F/BW/VL/DQ/CD + VNNI
};

using IsaMask = unsigned;

constexpr IsaMask operator|(Isa a, Isa b) noexcept {
  return static_cast<IsaMask>(a) | static_cast<IsaMask>(b);
}
constexpr IsaMask operator|(IsaMask a, Isa b) noexcept { return a | static_cast<IsaMask>(b); }
constexpr bool has_isa(IsaMask mask, Isa isa) noexcept {
  return (mask & static_cast<IsaMask>(isa)) != 0;
}

/// Paths compiled into this build.
#if GSQ_HAVE_X86_SIMD
inline constexpr IsaMask kCompiledIsas = Isa::kReference | Isa::kAvx2 | Isa::kAvx512Vnni;
#else
inline constexpr IsaMask kCompiledIsas = static_cast<IsaMask>(Isa::kReference);
#endif
inline constexpr Isa kAllIsas[] = {Isa::kReference, Isa::kAvx2, Isa::kAvx512Vnni};

constexpr std::string_view isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::kReference: return "reference";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512Vnni: return "avx512";
  }
  return "unknown";
}

/// Parses a GSQ_ISA value; throws ConfigError naming the accepted values.
inline Isa parse_isa(std::string_view name, std::string_view source = "isa name") {
  for (Isa isa : kAllIsas)
    if (name == isa_name(isa)) return isa;
  detail::throw_error(ErrorCode::kBadEnvironment,
                      std::string(source) + " = '" + std::string(name) +
                          "' is not one of reference|avx2|avx512");
}

/// Paths that are compiled and that this CPU can run (always includes kReference).
inline IsaMask supported_isas() noexcept {
  IsaMask mask = static_cast<IsaMask>(Isa::kReference);
  const CpuFeatures& f = cpu_features();
  if (f.has_avx2_path()) mask |= static_cast<IsaMask>(Isa::kAvx2);
  if (f.has_avx512_path()) mask |= static_cast<IsaMask>(Isa::kAvx512Vnni);
  return mask & kCompiledIsas;
}

namespace detail {

/// The program's choice in `context`; 0 = no choice.
inline std::atomic<IsaMask>& program_isa_mask(Context& context) noexcept {
  return ContextAccess::isa_mask(context);
}

inline void require_supported(IsaMask mask, std::string_view source) {
  const IsaMask missing = mask & ~supported_isas();
  if (missing == 0) return;
  for (Isa isa : kAllIsas) {
    if (has_isa(missing, isa))
      throw_error(ErrorCode::kUnsupportedIsa,
                  std::string(source) + " asks for the " + std::string(isa_name(isa)) +
                      " path, which this " +
                      (has_isa(kCompiledIsas, isa) ? "CPU does not support (CPU has: " +
                                                         cpu_features().to_string() + ")"
                                                   : std::string("build does not include")));
  }
}

/// The mask from GSQ_ISA, read once; 0 when the variable is unset or empty.
inline IsaMask environment_isa_mask() {
  static const IsaMask mask = [] {
    const char* value = std::getenv("GSQ_ISA");
    if (value == nullptr || *value == '\0') return IsaMask{0};
    const IsaMask m = static_cast<IsaMask>(parse_isa(value, "environment variable GSQ_ISA"));
    require_supported(m, "environment variable GSQ_ISA");
    return m | Isa::kReference;
  }();
  return mask;
}

}  // namespace detail

/// The program's choice of enabled paths in `context`; 0 returns to automatic (GSQ_ISA,
/// then CPUID). kReference is always added. Throws UnsupportedIsa if a path cannot run here.
inline void set_isa_mask(Context& context, IsaMask mask) {
  if (mask != 0) {
    detail::require_supported(mask, "set_isa_mask");
    mask |= static_cast<IsaMask>(Isa::kReference);
  }
  detail::program_isa_mask(context).store(mask, std::memory_order_relaxed);
}
/// The same for the current context.
inline void set_isa_mask(IsaMask mask) { set_isa_mask(current_context(), mask); }

/// Paths currently enabled (program choice, else GSQ_ISA, else all supported).
inline IsaMask enabled_isas() {
  const IsaMask program = detail::program_isa_mask(current_context()).load(std::memory_order_relaxed);
  if (program != 0) return program;
  const IsaMask env = detail::environment_isa_mask();
  return env != 0 ? env : supported_isas();
}

/// The best enabled path: the one every dispatching function runs.
inline Isa selected_isa() {
  const IsaMask mask = enabled_isas();
  if (has_isa(mask, Isa::kAvx512Vnni)) return Isa::kAvx512Vnni;
  if (has_isa(mask, Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kReference;
}

/// Forces one path in a context (default: the current one) for the lifetime of the
/// object (tests, benchmarks), then restores the previous program choice. Throws
/// UnsupportedIsa if the path cannot run here; use `is_isa_supported` first to skip
/// visibly instead.
class ScopedIsa {
 public:
  explicit ScopedIsa(Isa isa) : ScopedIsa(current_context(), isa) {}
  ScopedIsa(Context& context, Isa isa)
      : context_(&context), previous_(detail::program_isa_mask(context).load()) {
    set_isa_mask(context, static_cast<IsaMask>(isa));
  }
  ~ScopedIsa() { detail::program_isa_mask(*context_).store(previous_); }
  ScopedIsa(const ScopedIsa&) = delete;
  ScopedIsa& operator=(const ScopedIsa&) = delete;

 private:
  Context* context_;
  IsaMask previous_;
};

inline bool is_isa_supported(Isa isa) noexcept { return has_isa(supported_isas(), isa); }

GSQ_NAMESPACE_END
