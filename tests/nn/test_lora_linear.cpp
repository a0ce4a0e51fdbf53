// LoraLinear: the PyTorch golden (FP32), finite-difference gradients, integer vs FP32
// twins on realistic activations, determinism, cache size and argument checks.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "gsq/core/parallel.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "nn/test_lora_support.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::Bits;
using gsq::FrozenWeight;
using gsq::LoraConfig;
using gsq::LoraLinear;
using gsq::Tensor;

Tensor<float> tensor_from_json(const nlohmann::json& j, const std::string& name) {
  const auto& shape = j.at("shapes").at(name);
  Tensor<float> t({shape.at(0).get<std::int64_t>(), shape.at(1).get<std::int64_t>()});
  const auto& values = j.at(name);
  REQUIRE(static_cast<std::int64_t>(values.size()) == t.numel());
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = values[static_cast<std::size_t>(i)].get<float>();
  return t;
}

// Everything one forward + backward produces.
struct Outputs {
  Tensor<float> y, dx, da, db;
  std::int64_t cache_bytes = 0;
};

Outputs run(LoraLinear& layer, const Tensor<float>& x, const Tensor<float>& dy) {
  LoraLinear::Cache cache;
  layer.zero_grad();
  Outputs o;
  o.y = layer.forward(x, cache);
  o.dx = layer.backward(dy, cache);
  o.da = layer.lora_a_grad().clone();
  o.db = layer.lora_b_grad().clone();
  o.cache_bytes = cache.bytes();
  return o;
}

// A layer over a shared frozen weight with given adapters.
LoraLinear make_layer(const FrozenWeight& w0, const Bits& bits, const Tensor<float>& a,
                      const Tensor<float>& b, std::int64_t rank, float alpha) {
  LoraLinear layer(w0, {.rank = rank, .alpha = alpha, .bits = bits, .seed = 3});
  gsq::test::copy_into(a, layer.lora_a());
  gsq::test::copy_into(b, layer.lora_b());
  return layer;
}

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("lora: FP32 forward and backward match the PyTorch golden") {
    const auto path = gsq::test::data_file("golden/lora_linear.json");
    if (!path) return;
    std::ifstream in(*path);
    const nlohmann::json j = nlohmann::json::parse(in);
    const Tensor<float> x = tensor_from_json(j, "X"), w = tensor_from_json(j, "W"),
                        a = tensor_from_json(j, "A"), b = tensor_from_json(j, "B"),
                        dy = tensor_from_json(j, "dY");
    const auto rank = j.at("r").get<std::int64_t>();
    const auto alpha = j.at("alpha").get<float>();
    LoraLinear layer = make_layer(FrozenWeight::fp32(w), Bits::fp32(), a, b, rank, alpha);
    CHECK(layer.scale() == doctest::Approx(j.at("scale").get<double>()));
    const Outputs o = run(layer, x, dy);
    for (const char* name : {"Y", "dX", "dA", "dB"}) {
      const Tensor<float> want = tensor_from_json(j, name);
      const Tensor<float>& got = std::string(name) == "Y"    ? o.y
                                 : std::string(name) == "dX" ? o.dx
                                 : std::string(name) == "dA" ? o.da
                                                             : o.db;
      const gsq::test::Diff d = gsq::test::diff(got.data(), want.data(), want.numel());
      CAPTURE(name);
      CHECK(d.rel <= 1e-5);
      CHECK(d.max_abs <= 1e-4);
    }
  }

  TEST_CASE("lora: FP32 gradients match finite differences") {
    const std::int64_t t = 5, in = 24, out = 12, r = 3;
    const Tensor<float> x = gsq::test::random_matrix(t, in, 11, 0.5f);
    const Tensor<float> w = gsq::test::random_matrix(out, in, 12, 0.2f);
    const Tensor<float> probe_r = gsq::test::random_matrix(t, out, 13);
    LoraLinear layer(FrozenWeight::fp32(w), {.rank = r, .alpha = 6.0f, .bits = Bits::fp32(), .seed = 1});
    gsq::CounterRng rng(14, 0);
    for (float& v : layer.lora_b()) v = rng.next_normal() * 0.3f;  // non-zero so dA is too
    Tensor<float> xv = x.clone();
    auto loss = [&] {
      Tensor<float> y({t, out});
      layer.forward(xv, y.view());
      return gsq::test::probe(y, probe_r);
    };
    LoraLinear::Cache cache;
    (void)layer.forward(xv, cache);
    const Tensor<float> dx = layer.backward(probe_r, cache);
    // The layer is linear in each of A, B and X, so a wide step has no truncation error
    // and keeps the FP32 rounding of the loss small against the difference.
    gsq::test::check_gradient(layer.lora_a(), layer.lora_a_grad(), loss, 0.25f, 1e-3);
    gsq::test::check_gradient(layer.lora_b(), layer.lora_b_grad(), loss, 0.25f, 1e-3);
    gsq::test::check_gradient(xv, dx, loss, 0.25f, 1e-3);
  }

  TEST_CASE("lora: a new layer reproduces its base and starts with B zero") {
    const Tensor<float> w = gsq::test::random_matrix(40, 70, 21, 0.05f);
    const Tensor<float> x = gsq::test::random_matrix(9, 70, 22);
    for (const Bits& bits : {Bits::fp32(), Bits::w8a8g8(), Bits::w4a8g8()}) {
      CAPTURE(bits.name());
      const FrozenWeight w0 = FrozenWeight::nf4(w);
      LoraLinear lora(w0, {.rank = 4, .alpha = 8.0f, .bits = bits});
      gsq::Linear base(w0, {.bits = bits});
      for (float v : lora.lora_b()) REQUIRE(v == 0.0f);
      // A is Kaiming-uniform within ±1/√in and not all zero.
      const float bound = 1.0f / std::sqrt(70.0f);
      float amax = 0;
      for (float v : lora.lora_a()) amax = std::max(amax, std::fabs(v));
      CHECK(amax <= bound);
      CHECK(amax > 0.5f * bound);
      LoraLinear::Cache c1;
      gsq::Linear::Cache c2;
      const Tensor<float> y1 = lora.forward(x, c1), y2 = base.forward(x, c2);
      for (std::int64_t i = 0; i < y1.numel(); ++i) REQUIRE(y1[i] == y2[i]);
    }
  }

  TEST_CASE("lora: the same seed gives the same A and different seeds differ") {
    const FrozenWeight w0 = FrozenWeight::fp32(gsq::test::random_matrix(8, 16, 1));
    LoraLinear a(w0, {.rank = 2, .seed = 5}), b(w0, {.rank = 2, .seed = 5}), c(w0, {.rank = 2, .seed = 6});
    CHECK(gsq::test::bitwise_equal(a.lora_a().data(), b.lora_a().data(), a.lora_a().numel()));
    CHECK_FALSE(gsq::test::bitwise_equal(a.lora_a().data(), c.lora_a().data(), a.lora_a().numel()));
  }

  TEST_CASE("lora: integer paths track their FP32 twin on realistic activations") {
    // Heavy-tailed activations with outliers, an NF4 base shared by all twins, non-zero B.
    const std::int64_t t = 96, in = 256, out = 160, r = 16;
    const Tensor<float> x = gsq::test::random_matrix(t, in, 31);
    const Tensor<float> dy = gsq::test::random_matrix(t, out, 32, 1e-3f);
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(out, in, 33, 0.02f));
    LoraLinear init(w0, {.rank = r, .alpha = 32.0f, .bits = Bits::fp32(), .seed = 34});
    Tensor<float> b({out, r});
    gsq::CounterRng rng(35, 0);
    for (float& v : b) v = rng.next_normal() * 0.02f;
    const Tensor<float> a = init.lora_a().clone();

    LoraLinear ref_layer = make_layer(w0, Bits::fp32(), a, b, r, 32.0f);
    const Outputs ref = run(ref_layer, x, dy);
    struct Case {
      Bits bits;
      double min_cos;
    };
    const Case cases[] = {{Bits::w8a8g8(), 0.999}, {Bits::w6a6g6(), 0.99}, {Bits::w5a5g5(), 0.0},
                          {Bits::w4a8g8(), 0.0}};
    MESSAGE("fp32: reference, cache " << ref.cache_bytes << " bytes");
    for (const Case& c : cases) {
      LoraLinear layer = make_layer(w0, c.bits, a, b, r, 32.0f);
      const Outputs o = run(layer, x, dy);
      const double cy = gsq::test::cosine(o.y, ref.y), cdx = gsq::test::cosine(o.dx, ref.dx),
                   cda = gsq::test::cosine(o.da, ref.da), cdb = gsq::test::cosine(o.db, ref.db);
      MESSAGE(c.bits.name() << ": cos Y " << cy << "  dX " << cdx << "  dA " << cda << "  dB "
                            << cdb << "  cache " << o.cache_bytes << " bytes");
      CAPTURE(c.bits.name());
      CHECK(cy >= c.min_cos);
      CHECK(cdx >= c.min_cos);
      CHECK(cda >= c.min_cos);
      CHECK(cdb >= c.min_cos);
      CHECK(cy > 0.9);  // every config must still be the same function
      CHECK(o.cache_bytes * 3 < ref.cache_bytes);
    }
  }

  TEST_CASE("lora: integer results are identical for every ISA and thread count") {
    const std::int64_t t = 33, in = 96, out = 65, r = 5;
    const Tensor<float> x = gsq::test::random_matrix(t, in, 41);
    const Tensor<float> dy = gsq::test::random_matrix(t, out, 42, 0.1f);
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(out, in, 43, 0.05f));
    Tensor<float> b({out, r});
    gsq::CounterRng rng(44, 0);
    for (float& v : b) v = rng.next_normal() * 0.1f;
    for (gsq::Rounding rounding : {gsq::Rounding::kNearestEven, gsq::Rounding::kStochastic}) {
      CAPTURE(static_cast<int>(rounding));
      auto once = [&] {
        LoraLinear layer(w0, {.rank = r, .alpha = 10.0f, .bits = Bits::w6a6g6(), .seed = 45,
                              .gradient_rounding = rounding});
        gsq::test::copy_into(b, layer.lora_b());
        return run(layer, x, dy);
      };
      gsq::set_num_threads(1);
      const Outputs one = once();
      gsq::set_num_threads(2);
      const Outputs two = once();
      gsq::set_num_threads(0);
      for (const auto& [p, q] : {std::pair{&one.y, &two.y}, std::pair{&one.dx, &two.dx},
                                 std::pair{&one.da, &two.da}, std::pair{&one.db, &two.db}})
        CHECK(gsq::test::bitwise_equal(p->data(), q->data(), p->numel()));
      gsq::test::for_each_isa([&](gsq::Isa) {
        const Outputs o = once();
        CHECK(gsq::test::bitwise_equal(o.y.data(), one.y.data(), o.y.numel()));
        CHECK(gsq::test::bitwise_equal(o.dx.data(), one.dx.data(), o.dx.numel()));
        CHECK(gsq::test::bitwise_equal(o.da.data(), one.da.data(), o.da.numel()));
        CHECK(gsq::test::bitwise_equal(o.db.data(), one.db.data(), o.db.numel()));
      });
    }
  }

  TEST_CASE("lora: stochastic gradient rounding is unbiased on average") {
    // Averaged over many backward calls (each with its own random stream), stochastic
    // rounding of dY and dH gets closer to the FP32 gradient than a single call does.
    const std::int64_t t = 32, in = 64, out = 32, r = 4;
    const Tensor<float> x = gsq::test::random_matrix(t, in, 51);
    const Tensor<float> dy = gsq::test::random_matrix(t, out, 52, 0.1f);
    const FrozenWeight w0 = FrozenWeight::fp32(gsq::test::random_matrix(out, in, 53, 0.1f));
    Tensor<float> b({out, r});
    gsq::CounterRng rng(54, 0);
    for (float& v : b) v = rng.next_normal() * 0.1f;
    LoraLinear init(w0, {.rank = r, .bits = Bits::fp32()});
    const Tensor<float> a = init.lora_a().clone();
    LoraLinear ref = make_layer(w0, Bits::fp32(), a, b, r, 16.0f);
    const Outputs want = run(ref, x, dy);
    LoraLinear sr(w0, {.rank = r, .alpha = 16.0f, .bits = {.weight = 8, .activation = 8, .gradient = 4},
                       .seed = 55, .gradient_rounding = gsq::Rounding::kStochastic});
    gsq::test::copy_into(a, sr.lora_a());
    gsq::test::copy_into(b, sr.lora_b());
    LoraLinear::Cache cache;
    (void)sr.forward(x, cache);
    const int calls = 64;
    Tensor<float> first;
    for (int i = 0; i < calls; ++i) {
      (void)sr.backward(dy, cache);
      if (i == 0) first = sr.lora_b_grad().clone();
    }
    Tensor<float> mean = sr.lora_b_grad().clone();
    for (float& v : mean) v /= static_cast<float>(calls);
    const double err_one = gsq::test::diff(first.data(), want.db.data(), first.numel()).rel;
    const double err_mean = gsq::test::diff(mean.data(), want.db.data(), mean.numel()).rel;
    MESSAGE("stochastic G4 dB: one call rel err " << err_one << ", mean of " << calls << " " << err_mean);
    CHECK(err_mean < 0.5 * err_one);
  }

  TEST_CASE("lora: the integer cache holds only quantized X and H") {
    const std::int64_t t = 64, in = 512, out = 128, r = 16;
    const Tensor<float> x = gsq::test::random_matrix(t, in, 61);
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(out, in, 62, 0.05f));
    LoraLinear layer(w0, {.rank = r, .bits = Bits::w8a8g8()});
    LoraLinear twin(w0, {.rank = r, .bits = Bits::fp32()});
    LoraLinear::Cache cache, twin_cache;
    const std::int64_t before = gsq::memory_usage().current_of(gsq::MemoryCategory::kActivations);
    (void)layer.forward(x, cache);
    const std::int64_t held =
        gsq::memory_usage().current_of(gsq::MemoryCategory::kActivations) - before;
    (void)twin.forward(x, twin_cache);
    CHECK(cache.x.numel() == 0);
    CHECK(cache.h.numel() == 0);
    // Exactly: Xq = t·in mantissas + t·in/32 exponents; Hq = t rows of one padded group.
    CHECK(cache.bytes() == t * in + t * in / 32 + t * 32 + t);
    CHECK(held == cache.bytes());
    CHECK(twin_cache.bytes() == 4 * (t * in + t * r));
    MESSAGE("cache bytes: integer " << cache.bytes() << ", fp32 " << twin_cache.bytes() << " ("
                                    << double(twin_cache.bytes()) / double(cache.bytes()) << "x)");
    CHECK(twin_cache.bytes() >= 3.5 * cache.bytes());
    // Reused across steps: a second forward allocates nothing.
    const std::int64_t mid = gsq::memory_usage().current_of(gsq::MemoryCategory::kActivations);
    (void)layer.forward(x, cache);
    CHECK(gsq::memory_usage().current_of(gsq::MemoryCategory::kActivations) == mid);
  }

  TEST_CASE("lora: forward without a cache gives the same output and keeps nothing") {
    const Tensor<float> x = gsq::test::random_matrix(20, 96, 81);
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(40, 96, 82, 0.05f));
    for (const Bits& bits : {Bits::fp32(), Bits::w8a8g8()}) {
      CAPTURE(bits.name());
      LoraLinear layer(w0, {.rank = 4, .bits = bits, .seed = 83});
      gsq::CounterRng rng(84, 0);
      for (float& v : layer.lora_b()) v = rng.next_normal() * 0.1f;
      LoraLinear::Cache cache;
      const Tensor<float> y1 = layer.forward(x, cache);
      Tensor<float> y2({20, 40});
      (void)layer.forward(x, y2.view());  // warm the shared scratch
      const std::int64_t before = gsq::memory_usage().current_of(gsq::MemoryCategory::kActivations);
      layer.forward(x, y2.view());
      CHECK(gsq::memory_usage().current_of(gsq::MemoryCategory::kActivations) == before);
      CHECK(gsq::test::bitwise_equal(y1.data(), y2.data(), y1.numel()));
    }
  }

  TEST_CASE("lora: wrong shapes and a missing forward are reported") {
    const FrozenWeight w0 = FrozenWeight::fp32(gsq::test::random_matrix(8, 16, 1));
    LoraLinear layer(w0, {.rank = 2, .bits = Bits::fp32()});
    LoraLinear::Cache cache;
    const Tensor<float> x = gsq::test::random_matrix(3, 15, 2);
    CHECK_THROWS_AS((void)layer.forward(x, cache), gsq::ShapeError);
    const Tensor<float> dy = gsq::test::random_matrix(3, 8, 2);
    CHECK_THROWS_AS((void)layer.backward(dy, cache), gsq::ConfigError);
    const Tensor<float> good = gsq::test::random_matrix(4, 16, 2);
    (void)layer.forward(good, cache);
    CHECK_THROWS_AS((void)layer.backward(dy, cache), gsq::ShapeError);  // 3 tokens, not 4
    CHECK_THROWS_AS(LoraLinear(w0, {.rank = 0}), gsq::ConfigError);
    CHECK_THROWS_AS(LoraLinear(w0, {.rank = 2, .alpha = -1.0f}), gsq::ConfigError);
  }

  TEST_CASE("lora: merged weight equals W0 plus scaled B times A") {
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(12, 64, 71, 0.1f));
    LoraLinear layer(w0, {.rank = 3, .alpha = 6.0f, .bits = Bits::fp32(), .seed = 72});
    gsq::CounterRng rng(73, 0);
    for (float& v : layer.lora_b()) v = rng.next_normal();
    const Tensor<float> merged = layer.merged_weight();
    const Tensor<float> base = w0.dequantized();
    // y = x·mergedᵀ equals the layer's FP32 forward.
    const Tensor<float> x = gsq::test::random_matrix(4, 64, 74);
    Tensor<float> y1({4, 12}), y2({4, 12});
    layer.forward(x, y1.view());
    gsq::gemm::gemm_f32(x, false, merged, true, y2.view());
    CHECK(gsq::test::diff(y1.data(), y2.data(), y1.numel()).rel < 1e-6);
    CHECK(gsq::test::diff(merged.data(), base.data(), merged.numel()).rel > 1e-3);
  }
}
