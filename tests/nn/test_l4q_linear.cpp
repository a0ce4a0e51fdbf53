// L4qLinear and its uniform quantizer: LSQ+ gradients against finite differences, the
// layer's chain rule against a straight-through surrogate, exact merge, warm-up,
// integer vs FP32 twin and determinism.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gsq/core/parallel.hpp"
#include "gsq/nn/l4q_linear.hpp"
#include "gsq/nn/lora_merge.hpp"
#include "nn/test_lora_support.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::Bits;
using gsq::FrozenWeight;
using gsq::L4qLinear;
using gsq::Tensor;

// The straight-through surrogate of one quantized weight, with the rounding residual
// and the in-range decision frozen at a base point: its exact derivatives are LSQ+'s.
struct Surrogate {
  double residual = 0;  // round(v0) − v0
  int region = 0;       // −1 below, 0 in range, +1 above
  static Surrogate at(double w, double s, double b, double qmin, double qmax) {
    const double v = (w - b) / s;
    Surrogate p;
    p.region = v < qmin ? -1 : v > qmax ? 1 : 0;
    p.residual = std::nearbyint(v) - v;
    return p;
  }
  double value(double w, double s, double b, double qmin, double qmax) const {
    if (region < 0) return qmin * s + b;
    if (region > 0) return qmax * s + b;
    return w + s * residual;  // s·(v + residual) + b
  }
};

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("l4q: quantizer rounds to the grid and clamps to the code range") {
    const gsq::UniformSpec spec{3, 8};  // codes −4..3
    Tensor<float> w({1, 8}), out({1, 8}), s({1, 1}), b({1, 1});
    const float values[] = {0.25f, 0.5f, 0.75f, 1.0f, -10.0f, 10.0f, 0.0f, 1.4f};
    std::copy(values, values + 8, w.begin());
    s[0] = 0.5f;
    b[0] = 0.25f;
    gsq::fake_quantize_uniform(w, spec, s, b, out.view());
    const gsq::UniformMatrix q = gsq::quantize_uniform(w, spec, s, b);
    // v = (w − b)/s = 0, 0.5, 1, 1.5, −20.5, 19.5, −0.5, 2.3 → half-even, then clamp.
    const int want[] = {0, 0, 1, 2, -4, 3, 0, 2};
    for (int i = 0; i < 8; ++i) {
      CAPTURE(i);
      CHECK(q.code(0, i) == want[i]);
      CHECK(out[i] == want[i] * 0.5f + 0.25f);
      CHECK(q.value(0, i) == out[i]);
    }
  }

  TEST_CASE("l4q: LSQ+ step and offset gradients match finite differences where differentiable") {
    // Clamped weights: ŵ = Qn·s + b or Qp·s + b is smooth in s and b, so the true
    // function's central differences must equal LSQ+ exactly. In range, the true
    // function is piecewise constant in s, b; there LSQ+ is the derivative of the
    // straight-through surrogate, checked the same way.
    const gsq::UniformSpec spec{4, 64};
    const double qmin = spec.qmin(), qmax = spec.qmax();
    const std::int64_t n = 64;
    const Tensor<float> w = gsq::test::random_matrix(1, n, 7);
    const Tensor<float> g = gsq::test::random_matrix(1, n, 8);
    Tensor<float> s({1, 1}), b({1, 1}), ds({1, 1}), db({1, 1}), dw({1, n});
    s[0] = 0.3f;  // the outliers (×30) land outside [−8, 7]·s + b
    b[0] = 0.1f;
    gsq::uniform_backward(w, spec, s, b, g, dw.view(), ds.view(), db.view());
    auto qhat = [&](std::int64_t i, float ss, float bb) {
      Tensor<float> wi({1, 1}), si({1, 1}), bi({1, 1}), out({1, 1});
      wi[0] = w[i];
      si[0] = ss;
      bi[0] = bb;
      gsq::fake_quantize_uniform(wi, spec, si, bi, out.view());
      return double{out[0]};
    };
    int clamped = 0;
    double want_ds = 0, want_db = 0;
    const double eps = 1e-3;
    for (std::int64_t i = 0; i < n; ++i) {
      const Surrogate p = Surrogate::at(w[i], s[0], b[0], qmin, qmax);
      if (p.region != 0) {
        ++clamped;
        const float h = 1e-2f;
        const double fd_s = (qhat(i, s[0] + h, b[0]) - qhat(i, s[0] - h, b[0])) / (2 * double{h});
        const double fd_b = (qhat(i, s[0], b[0] + h) - qhat(i, s[0], b[0] - h)) / (2 * double{h});
        CHECK(fd_s == doctest::Approx(p.region < 0 ? qmin : qmax).epsilon(1e-3));
        CHECK(fd_b == doctest::Approx(1.0).epsilon(1e-3));
        CHECK(dw[i] == 0.0f);
      } else {
        CHECK(dw[i] == g[i]);  // straight through
      }
      const double up_s = p.value(w[i], s[0] + eps, b[0], qmin, qmax);
      const double dn_s = p.value(w[i], s[0] - eps, b[0], qmin, qmax);
      const double up_b = p.value(w[i], s[0], b[0] + eps, qmin, qmax);
      const double dn_b = p.value(w[i], s[0], b[0] - eps, qmin, qmax);
      want_ds += g[i] * (up_s - dn_s) / (2 * eps);
      want_db += g[i] * (up_b - dn_b) / (2 * eps);
    }
    CHECK(clamped >= 2);
    CHECK(clamped <= n / 4);
    CHECK(ds[0] == doctest::Approx(want_ds).epsilon(1e-4));
    CHECK(db[0] == doctest::Approx(want_db).epsilon(1e-4));
  }

  TEST_CASE("l4q: layer gradients match finite differences of the straight-through surrogate") {
    const std::int64_t t = 4, in = 24, out = 6, r = 2;
    const Tensor<float> w0 = gsq::test::random_matrix(out, in, 21, 0.2f);
    const Tensor<float> probe_r = gsq::test::random_matrix(t, out, 22);
    Tensor<float> x = gsq::test::random_matrix(t, in, 23, 0.5f);
    L4qLinear layer(FrozenWeight::fp32(w0), {.rank = r, .alpha = 4.0f, .quant_bits = 3,
                                             .quant_group = 8, .bits = Bits::fp32(), .seed = 24});
    gsq::CounterRng rng(25, 0);
    for (float& v : layer.lora_b()) v = rng.next_normal() * 0.2f;
    // Shrink some steps so that a few weights clamp.
    for (std::int64_t i = 0; i < layer.quant_step().numel(); i += 2) layer.quant_step()[i] *= 0.6f;
    L4qLinear::Cache cache;
    (void)layer.forward(x, cache);
    const Tensor<float> dx = layer.backward(probe_r, cache);

    // Base point of the surrogate.
    const double c = layer.scale();
    const gsq::UniformSpec grid{3, 8};
    auto merged = [&](std::int64_t o, std::int64_t k) {
      double v = w0(o, k);
      for (std::int64_t j = 0; j < r; ++j) v += c * double{layer.lora_b()(o, j)} * layer.lora_a()(j, k);
      return v;
    };
    std::vector<Surrogate> base(static_cast<std::size_t>(out * in));
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t k = 0; k < in; ++k)
        base[static_cast<std::size_t>(o * in + k)] =
            Surrogate::at(merged(o, k), layer.quant_step()(o, k / 8), layer.quant_offset()(o, k / 8),
                          grid.qmin(), grid.qmax());
    auto surrogate_loss = [&] {
      double loss = 0;
      for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t k = 0; k < in; ++k) {
          const double wq = base[static_cast<std::size_t>(o * in + k)].value(
              merged(o, k), layer.quant_step()(o, k / 8), layer.quant_offset()(o, k / 8),
              grid.qmin(), grid.qmax());
          for (std::int64_t i = 0; i < t; ++i) loss += probe_r(i, o) * x(i, k) * wq;
        }
      return loss;
    };
    int clamped = 0;
    for (const Surrogate& p : base) clamped += p.region != 0;
    MESSAGE("clamped weights at the base point: " << clamped << " of " << out * in);
    CHECK(clamped > 0);
    // The surrogate is linear in each parameter.
    gsq::test::check_gradient(layer.lora_a(), layer.lora_a_grad(), surrogate_loss, 0.05f, 1e-3);
    gsq::test::check_gradient(layer.lora_b(), layer.lora_b_grad(), surrogate_loss, 0.05f, 1e-3);
    gsq::test::check_gradient(layer.quant_step(), layer.quant_step_grad(), surrogate_loss, 0.01f, 1e-3);
    gsq::test::check_gradient(layer.quant_offset(), layer.quant_offset_grad(), surrogate_loss, 0.05f, 1e-3);
    // X enters linearly in the true layer: plain finite differences.
    auto true_loss = [&] {
      Tensor<float> y({t, out});
      layer.forward(x, y.view());
      return gsq::test::probe(y, probe_r);
    };
    gsq::test::check_gradient(x, dx, true_loss, 0.25f, 1e-3);
  }

  TEST_CASE("l4q: merge reproduces the forward output exactly") {
    const std::int64_t t = 16, in = 200, out = 24;
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(out, in, 31, 0.05f));
    const Tensor<float> x = gsq::test::random_matrix(t, in, 32);
    for (const Bits& bits : {Bits::fp32(), Bits::w8a8g8(), Bits::w4a8g8()}) {
      CAPTURE(bits.name());
      L4qLinear layer(w0, {.rank = 4, .quant_bits = 4, .quant_group = 64, .bits = bits, .seed = 33});
      gsq::CounterRng rng(34, 0);
      for (float& v : layer.lora_b()) v = rng.next_normal() * 0.05f;
      L4qLinear::Cache cache;
      const Tensor<float> y = layer.forward(x, cache);
      const gsq::L4qMerged m = layer.merge();
      const gsq::UniformMatrix& q = m.quantized;
      REQUIRE(q.rows() == out);
      REQUIRE(q.cols() == in);
      CHECK(q.spec() == gsq::UniformSpec{4, 64});
      CHECK(q.groups_per_row() == 4);  // ceil(200 / 64)
      for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t k = 0; k < in; ++k) {
          REQUIRE(q.code(o, k) >= -8);
          REQUIRE(q.code(o, k) <= 7);
          REQUIRE(m.weight(o, k) == q.value(o, k));  // the export decodes to the same bits
        }
      Tensor<float> y2({t, out});
      if (bits.is_fp32()) {
        gsq::gemm::gemm_f32(x, false, m.weight, true, y2.view());
      } else {
        const gsq::GseMatrix xq = gsq::quantize_gse(x, bits.activation_spec(), false);
        const gsq::GseMatrix wq = gsq::quantize_gse(m.weight, bits.weight_spec(), false);
        gsq::gemm::gemm_nt(xq, wq, y2.view());
      }
      CHECK(gsq::test::bitwise_equal(y.data(), y2.data(), y.numel()));
      CHECK(q.bytes() == out * 256 / 2 + 2 * 4 * out * 4);  // 4-bit codes, padded groups
    }
  }

  TEST_CASE("l4q: warm-up trains A and B only and then initialises s and b from the merged weight") {
    const std::int64_t t = 8, in = 64, out = 16;
    const Tensor<float> w0 = gsq::test::random_matrix(out, in, 41, 0.1f);
    const Tensor<float> x = gsq::test::random_matrix(t, in, 42);
    const Tensor<float> dy = gsq::test::random_matrix(t, out, 43);
    L4qLinear layer(FrozenWeight::fp32(w0), {.rank = 2, .quant_bits = 4, .quant_group = 32,
                                             .warmup_steps = 2, .bits = Bits::fp32()});
    CHECK_THROWS_AS(layer.merge(), gsq::ConfigError);
    L4qLinear::Cache cache;
    for (int step = 0; step < 2; ++step) {
      layer.zero_grad();
      const Tensor<float> y = layer.forward(x, cache);
      CHECK_FALSE(layer.quantizing());
      (void)layer.backward(dy, cache);
      for (float g : layer.quant_step_grad()) CHECK(g == 0.0f);
      for (float g : layer.quant_offset_grad()) CHECK(g == 0.0f);
      double da = 0, db = 0;
      for (float g : layer.lora_a_grad()) da += std::fabs(g);
      for (float g : layer.lora_b_grad()) db += std::fabs(g);
      CHECK(db > 0.0);
      if (step == 0) CHECK(da == 0.0);  // B = 0, so no gradient reaches A yet
      for (float& v : layer.lora_b()) v += 0.01f;  // as an optimizer step would
    }
    (void)layer.forward(x, cache);
    CHECK(layer.quantizing());
    CHECK(layer.training_steps() == 3);
    // s, b span [min, max] of each group of W0 + c·B·A.
    Tensor<float> w = w0.clone();
    gsq::gemm::gemm_f32(layer.lora_b(), false, layer.lora_a(), false, w.view(), {layer.scale(), true});
    for (std::int64_t o = 0; o < out; ++o)
      for (std::int64_t j = 0; j < 2; ++j) {
        float lo = w(o, 32 * j), hi = lo;
        for (std::int64_t k = 32 * j; k < 32 * (j + 1); ++k) {
          lo = std::min(lo, w(o, k));
          hi = std::max(hi, w(o, k));
        }
        CHECK(layer.quant_step()(o, j) == doctest::Approx((hi - lo) / 15.0f).epsilon(1e-5));
        CHECK(layer.quant_offset()(o, j) == doctest::Approx(lo + 8.0f * layer.quant_step()(o, j)).epsilon(1e-5));
      }
    layer.zero_grad();
    (void)layer.backward(dy, cache);
    double ds = 0;
    for (float g : layer.quant_step_grad()) ds += std::fabs(g);
    CHECK(ds > 0.0);
  }

  TEST_CASE("l4q: integer path tracks the FP32 twin and is deterministic") {
    const std::int64_t t = 64, in = 256, out = 64;
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(out, in, 51, 0.05f));
    const Tensor<float> x = gsq::test::random_matrix(t, in, 52);
    const Tensor<float> dy = gsq::test::random_matrix(t, out, 53, 0.01f);
    auto run = [&](const Bits& bits, std::vector<Tensor<float>>& outs) {
      L4qLinear layer(w0, {.rank = 8, .quant_bits = 4, .bits = bits, .seed = 54});
      gsq::CounterRng rng(55, 0);
      for (float& v : layer.lora_b()) v = rng.next_normal() * 0.02f;
      L4qLinear::Cache cache;
      outs.clear();
      outs.push_back(layer.forward(x, cache));
      outs.push_back(layer.backward(dy, cache));
      outs.push_back(layer.lora_a_grad().clone());
      outs.push_back(layer.lora_b_grad().clone());
      outs.push_back(layer.quant_step_grad().clone());
      outs.push_back(layer.quant_offset_grad().clone());
    };
    std::vector<Tensor<float>> ref, got, again;
    run(Bits::fp32(), ref);
    run(Bits::w8a8g8(), got);
    const std::string names[] = {"Y", "dX", "dA", "dB", "ds", "db"};
    for (std::size_t i = 0; i < ref.size(); ++i) {
      const double c = gsq::test::cosine(got[i], ref[i]);
      MESSAGE("L4Q w8a8g8 vs fp32: cos " << names[i] << " " << c);
      CAPTURE(names[i]);
      CHECK(c >= (i < 2 ? 0.999 : 0.99));
    }
    gsq::set_num_threads(1);
    run(Bits::w8a8g8(), again);
    gsq::set_num_threads(0);
    for (std::size_t i = 0; i < got.size(); ++i)
      CHECK(gsq::test::bitwise_equal(got[i].data(), again[i].data(), got[i].numel()));
  }

  TEST_CASE("l4q: the merge kernels are bit-identical to the reference on every ISA") {
    for (std::int64_t cols : gsq::test::kEdgeSizes)
      for (std::int64_t rank : {1, 5, 16, 70})
        for (std::int64_t rows : {1, 3, 17}) {
          CAPTURE(cols);
          CAPTURE(rank);
          CAPTURE(rows);
          const Tensor<float> w = gsq::test::random_matrix(rows, cols, 81);
          const Tensor<float> coef = gsq::test::random_matrix(rows, rank, 82, 0.1f);
          const Tensor<float> a = gsq::test::random_matrix(rank, cols, 83);
          Tensor<float> want = w.clone();
          gsq::detail::lora_merge_rows(want.view(), coef, a, gsq::Isa::kReference);
          // The definition, element by element: an fma chain in ascending rank order.
          for (std::int64_t r = 0; r < rows; ++r)
            for (std::int64_t k = 0; k < cols; ++k) {
              float acc = w(r, k);
              for (std::int64_t j = 0; j < rank; ++j) acc = std::fma(coef(r, j), a(j, k), acc);
              REQUIRE(want(r, k) == acc);
            }
          gsq::test::for_each_isa([&](gsq::Isa isa) {
            Tensor<float> got = w.clone();
            gsq::detail::lora_merge_rows(got.view(), coef, a, isa);
            CHECK(gsq::test::bitwise_equal(got.data(), want.data(), got.numel()));
          });
        }
  }

  TEST_CASE("l4q: forward and backward are identical on every ISA") {
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(33, 130, 91, 0.05f));
    const Tensor<float> x = gsq::test::random_matrix(9, 130, 92);
    const Tensor<float> dy = gsq::test::random_matrix(9, 33, 93, 0.1f);
    for (const Bits& bits : {Bits::fp32(), Bits::w8a8g8()}) {
      CAPTURE(bits.name());
      auto once = [&] {
        L4qLinear layer(w0, {.rank = 5, .quant_bits = 3, .quant_group = 32, .bits = bits, .seed = 94});
        gsq::CounterRng rng(95, 0);
        for (float& v : layer.lora_b()) v = rng.next_normal() * 0.05f;
        L4qLinear::Cache cache;
        std::vector<Tensor<float>> outs;
        outs.push_back(layer.forward(x, cache));
        outs.push_back(layer.backward(dy, cache));
        outs.push_back(layer.lora_a_grad().clone());
        outs.push_back(layer.lora_b_grad().clone());
        outs.push_back(layer.quant_step_grad().clone());
        outs.push_back(layer.quant_offset_grad().clone());
        return outs;
      };
      std::vector<Tensor<float>> ref;
      {
        gsq::ScopedIsa scope(gsq::Isa::kReference);
        ref = once();
      }
      gsq::test::for_each_isa([&](gsq::Isa) {
        const std::vector<Tensor<float>> got = once();
        for (std::size_t i = 0; i < got.size(); ++i)
          CHECK(gsq::test::bitwise_equal(got[i].data(), ref[i].data(), got[i].numel()));
      });
    }
  }

  TEST_CASE("l4q: a non-finite merged weight is rejected in forward and backward") {
    const FrozenWeight w0 = FrozenWeight::nf4(gsq::test::random_matrix(20, 70, 96, 0.05f));
    const Tensor<float> x = gsq::test::random_matrix(5, 70, 97);
    const Tensor<float> dy = gsq::test::random_matrix(5, 20, 98, 0.1f);
    for (const Bits& bits : {Bits::fp32(), Bits::w8a8g8()}) {
      for (bool want_dx : {true, false}) {
        CAPTURE(bits.name());
        CAPTURE(want_dx);
        L4qLinear layer(w0, {.rank = 4, .quant_bits = 4, .quant_group = 32, .bits = bits});
        L4qLinear::Cache cache;
        (void)layer.forward(x, cache);
        layer.lora_b()(7, 2) = std::numeric_limits<float>::quiet_NaN();  // row 7 of W is NaN
        Tensor<float> dx({5, 70});
        auto check = [](const gsq::FormatError& e) {
          CHECK(e.code() == gsq::ErrorCode::kNonFinite);
          CHECK(std::string(e.what()).find("L4Q merged weight") != std::string::npos);
        };
        try {
          layer.backward(dy, cache, want_dx ? dx.view() : gsq::MatrixView<float>());
          FAIL("expected a FormatError");
        } catch (const gsq::FormatError& e) {
          check(e);
        }
        Tensor<float> y({5, 20});
        try {
          layer.forward(x, y.view());
          FAIL("expected a FormatError");
        } catch (const gsq::FormatError& e) {
          check(e);
        }
      }
    }
  }

  TEST_CASE("l4q: bad configurations are rejected") {
    const FrozenWeight w0 = FrozenWeight::fp32(gsq::test::random_matrix(8, 16, 1));
    CHECK_THROWS_AS(L4qLinear(w0, {.quant_bits = 1}), gsq::ConfigError);
    CHECK_THROWS_AS(L4qLinear(w0, {.quant_bits = 9}), gsq::ConfigError);
    CHECK_THROWS_AS(L4qLinear(w0, {.quant_group = 0}), gsq::ConfigError);
    CHECK_THROWS_AS(L4qLinear(w0, {.warmup_steps = -1}), gsq::ConfigError);
  }
}
