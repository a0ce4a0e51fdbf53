#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "component_test_support.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/nn/lora_linear.hpp"
#include "gsq/nn/mlp.hpp"
#include "support/test_support.hpp"

namespace {
using Mlp = gsq::SwiGluMlp<gsq::test::TestLinear>;
static_assert(gsq::LinearLayer<gsq::test::TestLinear>);

Mlp make_mlp(std::int64_t dim, std::int64_t hidden, std::uint64_t seed) {
  return Mlp(gsq::test::TestLinear(hidden, dim, seed), gsq::test::TestLinear(hidden, dim, seed + 1),
             gsq::test::TestLinear(dim, hidden, seed + 2));
}
}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("mlp: forward is down of silu gate times up") {
    const std::int64_t n = 5, dim = 12, hidden = 20;
    Mlp mlp = make_mlp(dim, hidden, 1);
    const auto x = gsq::test::normal_matrix(n, dim, 4);
    gsq::Tensor<float> y({n, dim});
    mlp.forward(x, y, nullptr);
    int bad = 0;
    for (std::int64_t t = 0; t < n; ++t) {
      std::vector<double> a(hidden);
      for (std::int64_t j = 0; j < hidden; ++j) {
        double g = 0.0, u = 0.0;
        for (std::int64_t i = 0; i < dim; ++i) {
          g += static_cast<double>(x(t, i)) * mlp.gate().weight()(j, i);
          u += static_cast<double>(x(t, i)) * mlp.up().weight()(j, i);
        }
        a[static_cast<std::size_t>(j)] = g / (1.0 + std::exp(-g)) * u;
      }
      for (std::int64_t o = 0; o < dim; ++o) {
        double s = 0.0;
        for (std::int64_t j = 0; j < hidden; ++j)
          s += a[static_cast<std::size_t>(j)] * mlp.down().weight()(o, j);
        bad += std::fabs(y(t, o) - s) > 1e-5 * (1.0 + std::fabs(s));
      }
    }
    CHECK(bad == 0);
  }

  TEST_CASE("mlp: backward matches finite differences for the input and all three projections") {
    const std::int64_t n = 4, dim = 10, hidden = 14;
    Mlp mlp = make_mlp(dim, hidden, 5);
    auto x = gsq::test::normal_matrix(n, dim, 8);
    const auto w = gsq::test::normal_matrix(n, dim, 9);
    Mlp::Cache cache;
    gsq::Tensor<float> y({n, dim}), dx({n, dim});
    mlp.forward(x, y, &cache);
    mlp.backward(w, dx, cache);
    auto loss = [&] {
      gsq::Tensor<float> out({n, dim});
      mlp.forward(x, out, nullptr);
      return gsq::test::weighted_sum(out, w);
    };
    CHECK(gsq::test::check_gradient(x.data(), dx.data(), x.numel(), loss, "dx", 1e-3f) == 0);
    const gsq::ParameterList params = mlp.parameters();
    REQUIRE(params.size() == 3);
    CHECK(params[0].name == "gate_proj.weight");
    CHECK(params[2].name == "down_proj.weight");
    for (const gsq::Parameter& p : params)
      CHECK(gsq::test::check_gradient(p.value->data(), p.grad->data(), p.value->numel(), loss,
                                      p.name.c_str(), 1e-3f) == 0);
  }

  TEST_CASE("mlp: recomputing g and u in backward gives the bits of caching them") {
    // LoRA gate/up rebuild their output from their caches (Xq, Hq); the MLP then keeps
    // no [tokens, hidden] FP32 tensor, and every output and gradient is unchanged.
    using LoraMlp = gsq::SwiGluMlp<gsq::LoraLinear>;
    const std::int64_t dim = 40, hidden = 72;
    auto make = [&](const gsq::Bits& bits) {
      auto lora = [&](std::int64_t out, std::int64_t in, std::uint64_t seed) {
        const auto w = gsq::test::normal_matrix(out, in, seed);
        gsq::LoraConfig c;
        c.rank = 4;
        c.alpha = 8.0f;
        c.bits = bits;
        c.seed = seed;
        gsq::LoraLinear l(bits.is_fp32() ? gsq::FrozenWeight::fp32(w) : gsq::FrozenWeight::nf4(w), c);
        const auto b = gsq::test::normal_matrix(out, 4, seed + 100);  // B ≠ 0: the adapter matters
        std::copy(b.data(), b.data() + b.numel(), l.lora_b().data());
        return l;
      };
      return LoraMlp(lora(hidden, dim, 1), lora(hidden, dim, 2), lora(dim, hidden, 3));
    };
    for (const gsq::Bits bits : {gsq::Bits::fp32(), gsq::Bits::w8a8g8(), gsq::Bits::w5a5g5()}) {
      for (std::int64_t n : {1, 17, 33}) {
        CAPTURE(bits.is_fp32());
        CAPTURE(bits.activation);
        CAPTURE(n);
        LoraMlp kept = make(bits), rebuilt = make(bits);
        kept.set_recompute_hidden(false);
        CHECK(rebuilt.recompute_hidden());
        const auto x = gsq::test::normal_matrix(n, dim, 7);
        const auto dy = gsq::test::normal_matrix(n, dim, 8);
        LoraMlp::Cache ck, cr;
        gsq::Tensor<float> yk({n, dim}), yr({n, dim}), dxk({n, dim}), dxr({n, dim});
        for (int step = 0; step < 2; ++step) {  // the second step reuses the caches
          kept.forward(x, yk, &ck);
          rebuilt.forward(x, yr, &cr);
          CHECK(ck.g.numel() == n * hidden);
          CHECK(cr.g.numel() == 0);
          CHECK(cr.u.numel() == 0);
          CHECK(cr.recompute);
          // Gate and up keep one copy of x between them.
          CHECK(cr.gate.bytes() + cr.up.bytes() + cr.in.bytes() <
                2 * (cr.gate.bytes() + cr.in.bytes()));
          CHECK((bits.is_fp32() ? cr.gate.shared_x != nullptr : cr.gate.shared_x_q != nullptr));
          CHECK((bits.is_fp32() ? cr.up.shared_x == cr.gate.shared_x
                                : cr.up.shared_x_q == cr.gate.shared_x_q));
          kept.backward(dy, dxk, ck);
          rebuilt.backward(dy, dxr, cr);
          CHECK(gsq::test::bitwise_equal(yk.data(), yr.data(), yk.numel()));
          CHECK(gsq::test::bitwise_equal(dxk.data(), dxr.data(), dxk.numel()));
          const gsq::ParameterList pk = kept.parameters(), pr = rebuilt.parameters();
          REQUIRE(pk.size() == pr.size());
          for (std::size_t i = 0; i < pk.size(); ++i)
            CHECK(gsq::test::bitwise_equal(pk[i].grad->data(), pr[i].grad->data(), pk[i].grad->numel()));
        }
      }
    }
  }

  TEST_CASE("mlp: mismatched projections throw") {
    CHECK_THROWS_AS(Mlp(gsq::test::TestLinear(8, 4, 1), gsq::test::TestLinear(8, 4, 2),
                        gsq::test::TestLinear(4, 6, 3)),
                    gsq::ShapeError);
    Mlp mlp = make_mlp(4, 8, 4);
    gsq::Tensor<float> x({2, 5}), y({2, 4});
    CHECK_THROWS_AS(mlp.forward(x, y, nullptr), gsq::ShapeError);
    Mlp::Cache empty;
    gsq::Tensor<float> dy({2, 4}), dx({2, 4});
    CHECK_THROWS_AS(mlp.backward(dy, dx, empty), gsq::ConfigError);
  }
}
