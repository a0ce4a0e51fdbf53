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

TEST_CASE("scratch: grow-only slots stop growing once the longest batch has been seen") {
  // The trainer trims each batch to its own length, so the token count changes every
  // step. Keyed by shape, the GSE-INT slots added buffers for every new length; grow-only
  // slots reuse the largest one.
  const std::int64_t in = 64, out = 48, rank = 8, longest = 160;
  const Tensor<float> w = gsq::test::random_matrix(out, in, 11);
  gsq::set_num_threads(1);
  gsq::release_scratch();
  LoraLinear layer(FrozenWeight::fp32(w.view()), {.rank = rank, .bits = Bits::w8a8g8(), .seed = 3});
  auto run = [&](std::int64_t tokens) {
    const Tensor<float> x = gsq::test::random_matrix(tokens, in, static_cast<std::uint64_t>(tokens));
    const Tensor<float> dy = gsq::test::random_matrix(tokens, out, static_cast<std::uint64_t>(tokens) + 1000);
    step(layer, x, dy);
  };
  run(longest);
  const std::int64_t after_longest = scratch_now();
  CHECK(after_longest > 0);
  // Every other length once, in an order that is neither ascending nor descending.
  std::int64_t peak = after_longest;
  for (std::int64_t i = 0; i < longest - 1; ++i) {
    run(1 + (i * 37) % (longest - 1));
    peak = std::max(peak, scratch_now());
  }
  MESSAGE("scratch after the longest batch " << after_longest << " bytes, peak over "
                                             << longest - 1 << " other lengths " << peak);
  CHECK(peak == after_longest);
  gsq::release_scratch();
  gsq::set_num_threads(0);
}

TEST_CASE("scratch: a GSE-INT slot reshapes in place and regrows past its largest size") {
  gsq::set_num_threads(1);
  gsq::release_scratch();
  const gsq::GseSpec spec = Bits::w8a8g8().activation_spec();
  using gsq::detail::ScratchSlot;
  gsq::GseMatrix& a = gsq::detail::shared_gse(ScratchSlot::kActivation, 40, 100, spec);
  CHECK(a.rows() == 40);
  CHECK(a.cols() == 100);
  const std::int64_t held = scratch_now();
  // 40 rows of 4 groups hold 100 rows of one group.
  gsq::GseMatrix& b = gsq::detail::shared_gse(ScratchSlot::kActivation, 100, 20, spec);
  CHECK(&a == &b);
  CHECK(b.rows() == 100);
  CHECK(b.cols() == 20);
  CHECK(b.groups_per_row() == 1);
  CHECK(scratch_now() == held);
  gsq::detail::shared_gse(ScratchSlot::kActivation, 400, 100, spec);
  CHECK(scratch_now() > held);
  gsq::release_scratch();
  gsq::set_num_threads(0);
}
