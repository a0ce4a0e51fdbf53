// Linear (frozen or trainable) and FrozenWeight: FP32 against a double loop and finite
// differences, integer against its FP32 twin, storage formats and argument checks.
#include <doctest/doctest.h>

#include <cmath>

#include "gsq/core/parallel.hpp"
#include "gsq/nn/linear.hpp"
#include "nn/test_lora_support.hpp"
#include "support/test_support.hpp"

namespace {
using gsq::Bits;
using gsq::FrozenWeight;
using gsq::Linear;
using gsq::Tensor;
}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("linear: FP32 forward equals a double-precision loop for every storage") {
    const std::int64_t t = 7, in = 70, out = 33;
    const Tensor<float> x = gsq::test::random_matrix(t, in, 1);
    const Tensor<float> w = gsq::test::random_matrix(out, in, 2, 0.1f);
    for (const FrozenWeight& fw : {FrozenWeight::fp32(w), FrozenWeight::nf4(w),
                                   FrozenWeight::gse(w, {8, 32, 8})}) {
      CAPTURE(gsq::weight_format_name(fw.format()));
      const Tensor<float> wd = fw.dequantized();
      Linear layer(fw, {.bits = Bits::fp32()});
      Linear::Cache cache;
      const Tensor<float> y = layer.forward(x, cache);
      for (std::int64_t i = 0; i < t; ++i)
        for (std::int64_t o = 0; o < out; ++o) {
          double s = 0, magnitude = 0;  // FP32 error is bounded relative to Σ|x·w|
          for (std::int64_t k = 0; k < in; ++k) {
            s += double{x(i, k)} * wd(o, k);
            magnitude += std::fabs(double{x(i, k)} * wd(o, k));
          }
          CHECK(std::fabs(y(i, o) - s) <= 1e-5 * magnitude);
        }
      CHECK(cache.bytes() == 0);  // a frozen layer keeps nothing for backward
      CHECK(layer.parameters().empty());
    }
  }

  TEST_CASE("linear: FP32 gradients match finite differences") {
    const std::int64_t t = 4, in = 20, out = 9;
    const Tensor<float> w = gsq::test::random_matrix(out, in, 3, 0.3f);
    const Tensor<float> r = gsq::test::random_matrix(t, out, 4);
    Tensor<float> x = gsq::test::random_matrix(t, in, 5, 0.5f);
    for (bool trainable : {false, true}) {
      CAPTURE(trainable);
      Linear layer = trainable ? Linear::trainable(w, {.bits = Bits::fp32()})
                               : Linear(FrozenWeight::fp32(w), {.bits = Bits::fp32()});
      auto loss = [&] {
        Linear::Cache c;
        return gsq::test::probe(layer.forward(x, c), r);
      };
      Linear::Cache cache;
      (void)layer.forward(x, cache);
      const Tensor<float> dx = layer.backward(r, cache);
      // Linear in X and W: a wide step has no truncation error.
      gsq::test::check_gradient(x, dx, loss, 0.25f, 1e-3);
      if (trainable) {
        REQUIRE(layer.parameters().size() == 1);
        gsq::test::check_gradient(layer.weight(), layer.weight_grad(), loss, 0.25f, 1e-3);
      }
    }
  }

  TEST_CASE("linear: backward accumulates into dx and weight gradients on request") {
    const Tensor<float> w = gsq::test::random_matrix(6, 10, 6);
    const Tensor<float> x = gsq::test::random_matrix(3, 10, 7);
    const Tensor<float> dy = gsq::test::random_matrix(3, 6, 8);
    for (const Bits& bits : {Bits::fp32(), Bits::w8a8g8()}) {
      CAPTURE(bits.name());
      Linear layer = Linear::trainable(w, {.bits = bits});
      Linear::Cache cache;
      (void)layer.forward(x, cache);
      const Tensor<float> once = layer.backward(dy, cache);
      const Tensor<float> grad_once = layer.weight_grad().clone();
      Tensor<float> twice = once.clone();
      layer.backward(dy, cache, twice.view(), true);
      for (std::int64_t i = 0; i < once.numel(); ++i)
        CHECK(twice[i] == doctest::Approx(2.0 * once[i]));
      for (std::int64_t i = 0; i < grad_once.numel(); ++i)
        CHECK(layer.weight_grad()[i] == doctest::Approx(2.0 * grad_once[i]));
      // An empty dx skips the input gradient but still accumulates dW.
      layer.zero_grad();
      layer.backward(dy, cache, gsq::MatrixView<float>());
      CHECK(gsq::test::bitwise_equal(layer.weight_grad().data(), grad_once.data(),
                                     grad_once.numel()));
    }
  }

  TEST_CASE("linear: integer trainable layer tracks its FP32 twin") {
    const std::int64_t t = 64, in = 192, out = 96;
    const Tensor<float> x = gsq::test::random_matrix(t, in, 11);
    const Tensor<float> w = gsq::test::random_matrix(out, in, 12, 0.05f);
    const Tensor<float> dy = gsq::test::random_matrix(t, out, 13, 0.01f);
    auto run = [&](const Bits& bits, Tensor<float>& y, Tensor<float>& dx, Tensor<float>& dw) {
      Linear layer = Linear::trainable(w, {.bits = bits});
      Linear::Cache cache;
      y = layer.forward(x, cache);
      dx = layer.backward(dy, cache);
      dw = layer.weight_grad().clone();
    };
    Tensor<float> y0, dx0, dw0;
    run(Bits::fp32(), y0, dx0, dw0);
    for (const Bits& bits : {Bits::w8a8g8(), Bits::w6a6g6()}) {
      Tensor<float> y, dx, dw;
      run(bits, y, dx, dw);
      const double cy = gsq::test::cosine(y, y0), cdx = gsq::test::cosine(dx, dx0),
                   cdw = gsq::test::cosine(dw, dw0);
      MESSAGE("trainable Linear " << bits.name() << ": cos Y " << cy << " dX " << cdx << " dW " << cdw);
      const double floor = bits == Bits::w8a8g8() ? 0.999 : 0.99;
      CHECK(cy >= floor);
      CHECK(cdx >= floor);
      CHECK(cdw >= floor);
    }
  }

  TEST_CASE("linear: integer frozen layer is identical across thread counts and ISAs") {
    const Tensor<float> x = gsq::test::random_matrix(17, 65, 21);
    const Tensor<float> dy = gsq::test::random_matrix(17, 31, 22);
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(31, 65, 23, 0.1f));
    auto once = [&](Tensor<float>& y, Tensor<float>& dx) {
      Linear layer(w0, {.bits = Bits::w4a8g8()});
      Linear::Cache cache;
      y = layer.forward(x, cache);
      dx = layer.backward(dy, cache);
    };
    Tensor<float> y1, dx1, y2, dx2;
    gsq::set_num_threads(1);
    once(y1, dx1);
    gsq::set_num_threads(2);
    once(y2, dx2);
    gsq::set_num_threads(0);
    CHECK(gsq::test::bitwise_equal(y1.data(), y2.data(), y1.numel()));
    CHECK(gsq::test::bitwise_equal(dx1.data(), dx2.data(), dx1.numel()));
    gsq::test::for_each_isa([&](gsq::Isa) {
      Tensor<float> y, dx;
      once(y, dx);
      CHECK(gsq::test::bitwise_equal(y.data(), y1.data(), y.numel()));
      CHECK(gsq::test::bitwise_equal(dx.data(), dx1.data(), dx.numel()));
    });
  }

  TEST_CASE("linear: frozen weights are stored once in their compact form") {
    const std::int64_t out = 64, in = 256;
    const Tensor<float> w = gsq::test::random_matrix(out, in, 31, 0.1f);
    const FrozenWeight nf4 = FrozenWeight::nf4(w);
    CHECK(nf4.bytes() == out * in / 2 + out * (in / 64) * 4);  // 0.5625 bytes/parameter
    const FrozenWeight gse = FrozenWeight::gse(w, {8, 32, 8});
    CHECK(gse.bytes() == out * in + out * in / 32);
    // Copies share the storage.
    const FrozenWeight copy = nf4;
    CHECK(copy.nf4_matrix() == nf4.nf4_matrix());
    // An FP32 weight under integer bits becomes GSE-INT with the weight width.
    Linear layer(FrozenWeight::fp32(w), {.bits = Bits::w6a6g6()});
    REQUIRE(layer.frozen_weight().format() == gsq::WeightFormat::kGse);
    CHECK(layer.frozen_weight().gse_matrix()->spec() == gsq::GseSpec{6, 32, 8});
    // A GSE weight must share the layer's group size (the GEMM groups both operands alike).
    CHECK_THROWS_AS(Linear(FrozenWeight::gse(w, {8, 64, 8}), {.bits = Bits::w8a8g8()}),
                    gsq::ConfigError);
  }

  TEST_CASE("bits: names parse back and bad text throws") {
    for (const Bits& b : {Bits::fp32(), Bits::w8a8g8(), Bits::w6a6g6(), Bits::w5a5g5(),
                          Bits::w4a8g8(), Bits{.weight = 3, .activation = 8, .gradient = 6, .group = 64}})
      CHECK(Bits::parse(b.name()) == b);
    CHECK(Bits::parse("W4A8G8") == Bits::w4a8g8());
    for (const char* bad : {"", "w8", "w8a8g", "w9a8g8", "w8a8g8/G7", "int8", "w8a8g8x"}) {
      CAPTURE(bad);
      CHECK_THROWS_AS(Bits::parse(bad), gsq::ConfigError);
    }
  }
}
