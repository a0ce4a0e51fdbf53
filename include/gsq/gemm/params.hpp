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

/// One kernel call: `tiles` packed A tiles (MR rows each) times one packed B block (the
/// records of groups [g0, g1) of one NR-column panel), see gemm/pack.hpp for the layout.
/// The fp32 accumulators start from 0 (first) or from `acc`, and end in `acc` or, on
/// the last k-block, in C. Everything a kernel needs is here; kernels never throw.
///
/// A is read in one of two layouts. Packed (a_row_stride == 0): the tile layout of
/// gemm/pack.hpp, bytes a + 128. Direct (a_row_stride > 0, AVX-512 narrow kernel only):
/// the int8 mantissa rows of the GseMatrix itself (row r at a + r·a_row_stride, k
/// contiguous, G % 4 == 0) with float exponents [row][group]; the kernel adds the +128
/// offset itself. Thin-N products skip packing A this way.
struct KernelParams {
  const std::uint8_t* a = nullptr;   // tile 0, group g0
  const float* a_exp = nullptr;      // tile 0, group g0
  std::int64_t a_tile_stride = 0;    // bytes from one A tile to the next
  std::int64_t a_exp_stride = 0;     // floats from one tile's exponents to the next
  std::int64_t a_row_stride = 0;     // direct layout: bytes between rows (0 = packed)
  std::int64_t a_exp_row_stride = 0; // direct layout: floats between rows' exponents
  std::int64_t tiles = 0;
  const std::int8_t* b = nullptr;    // record of group g0
  std::int64_t b_record_bytes = 0;
  std::int64_t groups = 0;           // g1 − g0
  int quads = 0;                     // quads per group record
  int last_quads = 0;                // quads holding data in the block's last group
  int mr = 0;
  int nr = 0;
  float* acc = nullptr;              // tiles × mr × nr fp32 partial sums across k-blocks
  bool first = true;                 // k-block 0: accumulators start at +0
  bool last = true;                  // final k-block: write C
  float* c = nullptr;                // C at (tile 0 row 0, panel column 0)
  std::int64_t ldc = 0;
  std::int64_t m_valid = 0;          // rows of C from tile 0 that exist
  int n_valid = 0;                   // columns of C in this panel that exist (<= nr)
  float alpha = 1.0f;
  bool accumulate = false;
};

}  // namespace gemm
GSQ_NAMESPACE_END
