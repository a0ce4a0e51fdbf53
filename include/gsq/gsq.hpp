// gsq/gsq.hpp — the umbrella header: everything public in gsq.
//
// Layers (each a folder; a lower one never includes a higher one):
//   core/   errors, tensors and views, memory accounting, threads and gsq::Context, CPU
//           features, ISA, RNG
//   format/ storage types: GSE-INT, NF4, uniform (L4Q)
//   quant/  quantize / dequantize / fake-quant with gradients
//   gemm/   integer GEMM (GSE-INT × GSE-INT/NF4, packed, dispatched) and its FP32 twin
#pragma once

#include "gsq/core/config.hpp"
#include "gsq/core/context.hpp"
#include "gsq/core/cpu.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/isa.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/rng.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/format/gse.hpp"
#include "gsq/format/mx.hpp"
#include "gsq/format/nf4.hpp"
#include "gsq/format/uniform.hpp"
#include "gsq/gemm/gemm.hpp"
#include "gsq/quant/gse.hpp"
#include "gsq/quant/mx.hpp"
#include "gsq/quant/nf4.hpp"
#include "gsq/quant/uniform.hpp"
