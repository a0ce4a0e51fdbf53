// The per-thread scratch shared by all layers (nn/scratch.hpp): layers of one model share
// it instead of owning copies, results do not depend on what it held before, and
// release_scratch() returns it (and the GEMM workspaces) to the memory accounting.
#include <doctest/doctest.h>

#include <vector>

#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/nn/scratch.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::Bits;
using gsq::FrozenWeight;
using gsq::LoraLinear;
using gsq::MemoryCategory;
using gsq::Tensor;

std::int64_t scratch_now() { return gsq::memory_usage().current_of(MemoryCategory::kScratch); }

// Forward + backward of `layer`; returns dX.
Tensor<float> step(LoraLinear& layer, const Tensor<float>& x, const Tensor<float>& dy) {
  LoraLinear::Cache cache;
  layer.forward(x, cache);
  return layer.backward(dy, cache);
}

}  // namespace

TEST_CASE("scratch: layers share it, results ignore its history, release_scratch frees it") {
  const std::int64_t tokens = 67, in = 96, out = 80, rank = 8;
  const Tensor<float> w = gsq::test::random_matrix(out, in, 1);
  const Tensor<float> x = gsq::test::random_matrix(tokens, in, 2);
  const Tensor<float> dy = gsq::test::random_matrix(tokens, out, 3);
  const FrozenWeight w0 = FrozenWeight::nf4(w.view());
  // One thread: the GEMM's workers allocate their workspaces when they first get work,
  // which with two threads may be any layer's call, not the first.
  gsq::set_num_threads(1);
  gsq::release_scratch();

  LoraLinear first(w0, {.rank = rank, .bits = Bits::w8a8g8(), .seed = 5});
  const Tensor<float> dx_fresh = step(first, x, dy);
  const std::int64_t after_one = scratch_now();
  CHECK(after_one > 0);

  // Seven more layers of the same shape run one after another: the activation- and
  // gradient-sized temporaries are not multiplied by the number of layers.
  std::vector<LoraLinear> more;
  for (int i = 0; i < 7; ++i) more.emplace_back(w0, gsq::LoraConfig{.rank = rank, .bits = Bits::w8a8g8(), .seed = 5});
  for (LoraLinear& l : more) step(l, x, dy);
  const std::int64_t per_layer_extra = (scratch_now() - after_one) / 7;
  // What each further layer may add: its own quantized A and B (both orientations).
  const std::int64_t adapters = 4 * rank * (in + out) * 2;
  MESSAGE("scratch after one layer " << after_one << " bytes, each further layer adds " << per_layer_extra);
  CHECK(per_layer_extra <= adapters);

  // A layer seeded like `first` gives the same bits whatever the scratch held before.
  LoraLinear again(w0, {.rank = rank, .bits = Bits::w8a8g8(), .seed = 5});
  const Tensor<float> dx_reused = step(again, x, dy);
  CHECK(gsq::test::bitwise_equal(dx_fresh.data(), dx_reused.data(), dx_fresh.numel()));

  // Released: the shared buffers and GEMM workspaces are gone from the accounting, and the
  // next call allocates them again and still gives the same bits.
  const std::int64_t before_release = scratch_now();
  gsq::release_scratch();
  const std::int64_t released = before_release - scratch_now();
  MESSAGE("release_scratch returned " << released << " bytes");
  CHECK(released > 0);
  CHECK(released >= after_one - adapters * 8);
  const Tensor<float> dx_after = step(again, x, dy);
  CHECK(gsq::test::bitwise_equal(dx_fresh.data(), dx_after.data(), dx_fresh.numel()));
  gsq::set_num_threads(0);
}
