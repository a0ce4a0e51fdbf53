// gsq/gemm/params.hpp — what a GEMM call asks for beyond its operands, and the flat
// struct every kernel takes.
//
// GemmOptions is the public knob set (alpha, overwrite or accumulate). KernelParams is
// what the driver hands a kernel for one (packed A rows) × (one packed B block) product:
// plain pointers, extents and flags only, so it crosses the boundary into a target
// region unchanged (STYLE.md §5.4) and every ISA reads the same fields.
#pragma once

#include <cstdint>

#include "gsq/core/config.hpp"

GSQ_NAMESPACE_BEGIN
namespace gemm {

struct GemmOptions {
  float alpha = 1.0f;
  bool accumulate = false;  // C = fma(alpha, acc, C) instead of C = alpha·acc
};

}  // namespace gemm
GSQ_NAMESPACE_END
