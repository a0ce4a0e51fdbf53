#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "component_test_support.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/nn/attention.hpp"
#include "support/test_support.hpp"

namespace {

struct Shape {
  std::int64_t batch, nq, nk, heads, kv_heads, hs;
};

// Causal GQA attention in float64, written from the definition.
std::vector<double> reference_attention(const Shape& s, const gsq::Tensor<float>& q,
                                        const gsq::Tensor<float>& k, const gsq::Tensor<float>& v) {
  std::vector<double> out(static_cast<std::size_t>(s.batch * s.nq * s.heads * s.hs), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.hs));
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const std::int64_t g = h / (s.heads / s.kv_heads);
      for (std::int64_t i = 0; i < s.nq; ++i) {
        const std::int64_t visible = s.nk - s.nq + i + 1;
        std::vector<double> p(static_cast<std::size_t>(visible));
        double m = -1e300;
        for (std::int64_t j = 0; j < visible; ++j) {
          double dot = 0.0;
          for (std::int64_t d = 0; d < s.hs; ++d)
            dot += static_cast<double>(q(b * s.nq + i, h * s.hs + d)) * k(b * s.nk + j, g * s.hs + d);
          p[static_cast<std::size_t>(j)] = dot * scale;
          m = std::max(m, dot * scale);
        }
        double sum = 0.0;
        for (double& x : p) sum += (x = std::exp(x - m));
        for (std::int64_t d = 0; d < s.hs; ++d) {
          double o = 0.0;
          for (std::int64_t j = 0; j < visible; ++j)
            o += p[static_cast<std::size_t>(j)] / sum * v(b * s.nk + j, g * s.hs + d);
          out[static_cast<std::size_t>((b * s.nq + i) * s.heads * s.hs + h * s.hs + d)] = o;
        }
      }
    }
  return out;
}

struct Operands {
  gsq::Tensor<float> q, k, v;
};

Operands make_operands(const Shape& s, std::uint64_t seed) {
  return {gsq::test::normal_matrix(s.batch * s.nq, s.heads * s.hs, seed),
          gsq::test::normal_matrix(s.batch * s.nk, s.kv_heads * s.hs, seed + 1),
          gsq::test::normal_matrix(s.batch * s.nk, s.kv_heads * s.hs, seed + 2)};
}

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("attention: FP32 forward matches the float64 definition with GQA and a causal mask") {
    const Shape shapes[] = {{1, 1, 1, 1, 1, 2},  {2, 9, 9, 4, 2, 8},  {3, 17, 17, 6, 3, 16},
                            {1, 33, 33, 8, 8, 4}, {2, 3, 11, 4, 1, 8}, {1, 1, 40, 2, 2, 64}};
    for (const Shape& s : shapes) {
      CAPTURE(s.batch);
      CAPTURE(s.nq);
      CAPTURE(s.nk);
      CAPTURE(s.heads);
      CAPTURE(s.kv_heads);
      CAPTURE(s.hs);
      const Operands op = make_operands(s, 10);
      gsq::CausalAttention attn(s.heads, s.kv_heads, s.hs);
      gsq::Tensor<float> out({s.batch * s.nq, s.heads * s.hs});
      attn.forward(op.q, op.k, op.v, s.batch, out, nullptr);
      const auto ref = reference_attention(s, op.q, op.k, op.v);
      int bad = 0;
      for (std::int64_t i = 0; i < out.numel(); ++i)
        bad += std::fabs(out[i] - ref[static_cast<std::size_t>(i)]) > 2e-5;
      CHECK(bad == 0);
    }
  }

  TEST_CASE("attention: queries against a longer key cache equal the tail of the full sequence") {
    const Shape full{1, 20, 20, 4, 2, 8};
    const Operands op = make_operands(full, 20);
    gsq::CausalAttention attn(4, 2, 8);
    gsq::Tensor<float> out({20, 32});
    attn.forward(op.q, op.k, op.v, 1, out, nullptr);
    auto q_tail = gsq::Tensor<float>::copy_of(op.q.view().row_range(15, 5));
    gsq::Tensor<float> tail({5, 32});
    attn.forward(q_tail, op.k, op.v, 1, tail, nullptr);
    CHECK(gsq::test::bitwise_equal(tail.data(), out.view().row(15), 5 * 32));
  }

  TEST_CASE("attention: FP32 backward matches finite differences for q k and v") {
    const Shape shapes[] = {{2, 7, 7, 4, 2, 8}, {1, 3, 6, 2, 1, 4}};
    for (const Shape& s : shapes) {
      CAPTURE(s.nq);
      CAPTURE(s.nk);
      Operands op = make_operands(s, 30);
      const auto w = gsq::test::normal_matrix(s.batch * s.nq, s.heads * s.hs, 33);
      gsq::CausalAttention attn(s.heads, s.kv_heads, s.hs);
      gsq::CausalAttention::Cache cache;
      gsq::Tensor<float> out({s.batch * s.nq, s.heads * s.hs});
      attn.forward(op.q, op.k, op.v, s.batch, out, &cache);
      gsq::Tensor<float> dq({s.batch * s.nq, s.heads * s.hs});
      gsq::Tensor<float> dk({s.batch * s.nk, s.kv_heads * s.hs});
      gsq::Tensor<float> dv({s.batch * s.nk, s.kv_heads * s.hs});
      attn.backward(op.q, op.k, op.v, w, cache, dq, dk, dv);
      auto loss = [&] {
        gsq::Tensor<float> y({s.batch * s.nq, s.heads * s.hs});
        attn.forward(op.q, op.k, op.v, s.batch, y, nullptr);
        return gsq::test::weighted_sum(y, w);
      };
      CHECK(gsq::test::check_gradient(op.q.data(), dq.data(), dq.numel(), loss, "dq", 1e-2f) == 0);
      CHECK(gsq::test::check_gradient(op.k.data(), dk.data(), dk.numel(), loss, "dk", 1e-2f) == 0);
      CHECK(gsq::test::check_gradient(op.v.data(), dv.data(), dv.numel(), loss, "dv", 1e-2f) == 0);
    }
  }

  TEST_CASE("attention: GSE-INT8 products stay close to FP32 in forward and backward") {
    const Shape s{2, 24, 24, 4, 2, 32};
    const Operands op = make_operands(s, 40);
    const auto dout = gsq::test::normal_matrix(s.batch * s.nq, s.heads * s.hs, 44);
    struct Result {
      gsq::Tensor<float> out, dq, dk, dv;
    };
    auto run = [&](const gsq::Bits& bits) {
      gsq::CausalAttention attn(s.heads, s.kv_heads, s.hs, bits);
      gsq::CausalAttention::Cache cache;
      Result r{gsq::Tensor<float>({s.batch * s.nq, s.heads * s.hs}),
               gsq::Tensor<float>({s.batch * s.nq, s.heads * s.hs}),
               gsq::Tensor<float>({s.batch * s.nk, s.kv_heads * s.hs}),
               gsq::Tensor<float>({s.batch * s.nk, s.kv_heads * s.hs})};
      attn.forward(op.q, op.k, op.v, s.batch, r.out, &cache);
      attn.backward(op.q, op.k, op.v, dout, cache, r.dq, r.dk, r.dv);
      return r;
    };
    const Result ref = run(gsq::Bits::fp32());
    const Result q8 = run(gsq::Bits::w8a8g8());
    // Relative Frobenius error: INT8 mantissas carry ~1% error per operand.
    auto rel = [](const gsq::Tensor<float>& a, const gsq::Tensor<float>& b) {
      double num = 0.0, den = 0.0;
      for (std::int64_t i = 0; i < a.numel(); ++i) {
        num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
        den += static_cast<double>(b[i]) * b[i];
      }
      return std::sqrt(num / den);
    };
    CHECK(rel(q8.out, ref.out) < 0.02);
    CHECK(rel(q8.dq, ref.dq) < 0.05);
    CHECK(rel(q8.dk, ref.dk) < 0.05);
    CHECK(rel(q8.dv, ref.dv) < 0.05);
    CHECK(rel(q8.out, ref.out) > 0.0);  // the integer path really ran
    const Result q4 = run(gsq::Bits::parse("w4a4g4"));
    CHECK(rel(q4.out, ref.out) > rel(q8.out, ref.out));
  }

  TEST_CASE("attention: one thread and two threads give identical results on both paths") {
    const Shape s{3, 19, 19, 4, 2, 16};
    const Operands op = make_operands(s, 50);
    const auto dout = gsq::test::normal_matrix(s.batch * s.nq, s.heads * s.hs, 55);
    for (const gsq::Bits& bits : {gsq::Bits::fp32(), gsq::Bits::w8a8g8()}) {
      CAPTURE(bits.name());
      std::vector<float> results[2];
      for (int threads : {1, 2}) {
        gsq::set_num_threads(threads);
        gsq::CausalAttention attn(s.heads, s.kv_heads, s.hs, bits);
        gsq::CausalAttention::Cache cache;
        gsq::Tensor<float> out({s.batch * s.nq, s.heads * s.hs}), dq({s.batch * s.nq, s.heads * s.hs});
        gsq::Tensor<float> dk({s.batch * s.nk, s.kv_heads * s.hs}), dv({s.batch * s.nk, s.kv_heads * s.hs});
        attn.forward(op.q, op.k, op.v, s.batch, out, &cache);
        attn.backward(op.q, op.k, op.v, dout, cache, dq, dk, dv);
        for (const auto* t : {&out, &dq, &dk, &dv}) results[threads - 1].insert(results[threads - 1].end(), t->begin(), t->end());
      }
      gsq::set_num_threads(0);
      REQUIRE(results[0].size() == results[1].size());
      CHECK(gsq::test::bitwise_equal(results[0].data(), results[1].data(),
                                     static_cast<std::int64_t>(results[0].size())));
    }
  }

  TEST_CASE("attention: mismatched operands and an empty cache throw") {
    gsq::CausalAttention attn(4, 2, 8);
    gsq::Tensor<float> q({6, 32}), k({6, 16}), v({6, 16}), out({6, 32});
    CHECK_THROWS_AS(attn.forward(q, k, v, 4, out, nullptr), gsq::ShapeError);  // 6 rows, batch 4
    gsq::Tensor<float> k_wide({6, 32});
    CHECK_THROWS_AS(attn.forward(q, k_wide, v, 1, out, nullptr), gsq::ShapeError);
    gsq::Tensor<float> short_k({3, 16}), short_v({3, 16});
    CHECK_THROWS_AS(attn.forward(q, short_k, short_v, 1, out, nullptr), gsq::ShapeError);
    gsq::CausalAttention::Cache empty;
    CHECK_THROWS_AS(attn.backward(q, k, v, out, empty, out, k, v), gsq::ConfigError);
    CHECK_THROWS_AS(gsq::CausalAttention(6, 4, 8), gsq::ConfigError);
  }
}

// ---- fused attention (FP32 / BF16): the float64 definition of forward and backward ------

namespace {

struct Grads {
  std::vector<double> out, lse, dq, dk, dv;
};

// Forward output, log-sum-exp and the gradients for dout, in float64 from the definition.
Grads reference_grads(const Shape& s, const gsq::Tensor<float>& q, const gsq::Tensor<float>& k,
                      const gsq::Tensor<float>& v, const gsq::Tensor<float>& dout) {
  const std::int64_t hs = s.hs, H = s.heads, G = s.kv_heads;
  Grads r;
  r.out.assign(static_cast<std::size_t>(s.batch * s.nq * H * hs), 0.0);
  r.dq = r.out;
  r.lse.assign(static_cast<std::size_t>(s.batch * H * s.nq), 0.0);
  r.dk.assign(static_cast<std::size_t>(s.batch * s.nk * G * hs), 0.0);
  r.dv = r.dk;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  for (std::int64_t b = 0; b < s.batch; ++b)
    for (std::int64_t h = 0; h < H; ++h) {
      const std::int64_t g = h / (H / G);
      for (std::int64_t i = 0; i < s.nq; ++i) {
        const std::int64_t n = s.nk - s.nq + i + 1;
        std::vector<double> p(static_cast<std::size_t>(n)), dp(static_cast<std::size_t>(n));
        double m = -1e300;
        for (std::int64_t j = 0; j < n; ++j) {
          double dot = 0.0;
          for (std::int64_t d = 0; d < hs; ++d)
            dot += static_cast<double>(q(b * s.nq + i, h * hs + d)) * k(b * s.nk + j, g * hs + d);
          p[static_cast<std::size_t>(j)] = dot * scale;
          m = std::max(m, dot * scale);
        }
        double sum = 0.0;
        for (double& x : p) sum += (x = std::exp(x - m));
        for (double& x : p) x /= sum;
        r.lse[static_cast<std::size_t>((b * H + h) * s.nq + i)] = m + std::log(sum);
        const auto row = static_cast<std::size_t>((b * s.nq + i) * H * hs + h * hs);
        for (std::int64_t d = 0; d < hs; ++d)
          for (std::int64_t j = 0; j < n; ++j)
            r.out[row + static_cast<std::size_t>(d)] += p[static_cast<std::size_t>(j)] * v(b * s.nk + j, g * hs + d);
        double rowdot = 0.0;
        for (std::int64_t j = 0; j < n; ++j) {
          double x = 0.0;
          for (std::int64_t d = 0; d < hs; ++d)
            x += static_cast<double>(dout(b * s.nq + i, h * hs + d)) * v(b * s.nk + j, g * hs + d);
          dp[static_cast<std::size_t>(j)] = x;
          rowdot += p[static_cast<std::size_t>(j)] * x;
        }
        for (std::int64_t j = 0; j < n; ++j) {
          const double pj = p[static_cast<std::size_t>(j)];
          const double ds = pj * (dp[static_cast<std::size_t>(j)] - rowdot) * scale;
          const auto krow = static_cast<std::size_t>((b * s.nk + j) * G * hs + g * hs);
          for (std::int64_t d = 0; d < hs; ++d) {
            const auto du = static_cast<std::size_t>(d);
            r.dq[row + du] += ds * k(b * s.nk + j, g * hs + d);
            r.dk[krow + du] += ds * q(b * s.nq + i, h * hs + d);
            r.dv[krow + du] += pj * dout(b * s.nq + i, h * hs + d);
          }
        }
      }
    }
  return r;
}

struct Fused {
  gsq::Tensor<float> out, lse, dq, dk, dv;
};

Fused run_fused(const Shape& s, const Operands& op, const gsq::Tensor<float>& dout, bool bf16) {
  gsq::CausalAttention attn(s.heads, s.kv_heads, s.hs, gsq::Bits::fp32(), bf16);
  gsq::CausalAttention::Cache cache;
  Fused f{gsq::Tensor<float>({s.batch * s.nq, s.heads * s.hs}), {},
          gsq::Tensor<float>({s.batch * s.nq, s.heads * s.hs}),
          gsq::Tensor<float>({s.batch * s.nk, s.kv_heads * s.hs}),
          gsq::Tensor<float>({s.batch * s.nk, s.kv_heads * s.hs})};
  attn.forward(op.q, op.k, op.v, s.batch, f.out, &cache);
  attn.backward(op.q, op.k, op.v, dout, cache, f.dq, f.dk, f.dv);
  f.lse = cache.lse.clone();
  return f;
}

// max |got − want| / max(max |want|, floor)
double relative_error(const gsq::Tensor<float>& got, const std::vector<double>& want,
                      double floor = 1e-3) {
  double err = 0.0, scale = floor;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(got.data()[i]) - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return err / scale;
}

bool same_bits(const Fused& a, const Fused& b) {
  auto eq = [](const gsq::Tensor<float>& x, const gsq::Tensor<float>& y) {
    return x.numel() == y.numel() && gsq::test::bitwise_equal(x.data(), y.data(), x.numel());
  };
  return eq(a.out, b.out) && eq(a.lse, b.lse) && eq(a.dq, b.dq) && eq(a.dk, b.dk) && eq(a.dv, b.dv);
}

const std::vector<Shape> kFusedShapes = {
    {1, 1, 1, 2, 1, 8},     {2, 15, 15, 4, 2, 8},   {1, 16, 16, 2, 2, 64},  {2, 17, 17, 4, 1, 64},
    {1, 33, 33, 2, 1, 128}, {1, 100, 100, 4, 2, 64}, {1, 65, 65, 1, 1, 16}, {2, 7, 70, 2, 1, 32},
    {1, 1, 100, 4, 4, 64},  {1, 130, 130, 2, 2, 8},  {1, 20, 20, 2, 1, 7},  // odd head size: FP32 only
};

}  // namespace

TEST_CASE("attention: fused FP32 and BF16 match the float64 definition (out, lse, dq, dk, dv)") {
  for (const Shape& s : kFusedShapes) {
    CAPTURE(s.batch);
    CAPTURE(s.nq);
    CAPTURE(s.nk);
    CAPTURE(s.heads);
    CAPTURE(s.kv_heads);
    CAPTURE(s.hs);
    const Operands op = make_operands(s, 70 + static_cast<std::uint64_t>(s.nq));
    const auto dout = gsq::test::normal_matrix(s.batch * s.nq, s.heads * s.hs, 80);
    const Grads want = reference_grads(s, op.q, op.k, op.v, dout);
    for (bool bf16 : {false, true}) {
      if (bf16 && s.hs % 2 != 0) {
        CHECK_THROWS_AS(gsq::CausalAttention(s.heads, s.kv_heads, s.hs, gsq::Bits::fp32(), true),
                        gsq::ConfigError);
        continue;
      }
      CAPTURE(bf16);
      const Fused got = run_fused(s, op, dout, bf16);
      // FP32: exp_approx and FP32 sums; BF16: operands carry 8 significant bits.
      const double tol = bf16 ? 3e-2 : 2e-5;
      CHECK(relative_error(got.out, want.out) < tol);
      CHECK(relative_error(got.lse, want.lse) < tol);
      // dQ and dK are measured against the size of the gradients (dV's): with one visible
      // key their exact value is 0 = dP − rowsum(dO ⊙ O), and what remains is rounding
      // of dP (BF16 operands) against D (from the FP32 output).
      double grad_scale = 1e-3;
      for (double x : want.dv) grad_scale = std::max(grad_scale, std::fabs(x));
      CHECK(relative_error(got.dq, want.dq, grad_scale) < tol);
      CHECK(relative_error(got.dk, want.dk, grad_scale) < tol);
      CHECK(relative_error(got.dv, want.dv) < tol);
    }
  }
}

TEST_CASE("attention: every ISA path gives the reference path's bits, FP32 and BF16") {
  for (const Shape& s : {Shape{2, 17, 17, 4, 2, 64}, Shape{1, 100, 100, 2, 1, 128},
                         Shape{1, 70, 90, 2, 2, 8}, Shape{1, 33, 33, 2, 1, 24}}) {
    CAPTURE(s.nq);
    CAPTURE(s.hs);
    const Operands op = make_operands(s, 90);
    const auto dout = gsq::test::normal_matrix(s.batch * s.nq, s.heads * s.hs, 91);
    for (bool bf16 : {false, true}) {
      CAPTURE(bf16);
      gsq::set_isa_mask(static_cast<gsq::IsaMask>(gsq::Isa::kReference));
      const Fused want = run_fused(s, op, dout, bf16);
      gsq::set_isa_mask(0);
      gsq::test::for_each_isa([&](gsq::Isa isa) {
        CAPTURE(gsq::isa_name(isa));
        CHECK(same_bits(run_fused(s, op, dout, bf16), want));
      });
    }
  }
}

TEST_CASE("attention: fused results are bit-identical on 1, 2 and 3 threads") {
  const Shape s{2, 150, 150, 4, 2, 32};  // 3 query blocks per head, 3 key blocks per kv head
  const Operands op = make_operands(s, 95);
  const auto dout = gsq::test::normal_matrix(s.batch * s.nq, s.heads * s.hs, 96);
  for (bool bf16 : {false, true}) {
    CAPTURE(bf16);
    gsq::set_num_threads(1);
    const Fused one = run_fused(s, op, dout, bf16);
    for (int threads : {2, 3}) {
      gsq::set_num_threads(threads);
      CHECK(same_bits(run_fused(s, op, dout, bf16), one));
    }
    gsq::set_num_threads(0);
  }
}
