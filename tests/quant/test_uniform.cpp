#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gsq/core/parallel.hpp"
#include "gsq/quant/uniform.hpp"
#include "support/test_support.hpp"

namespace {

using gsq::UniformSpec;

struct Params {
  gsq::Tensor<float> steps, offsets;
};

// Min/max-initialised steps and offsets, then perturbed so some values clamp low/high.
Params make_params(const gsq::Tensor<float>& w, const UniformSpec& spec, std::uint64_t seed) {
  const std::int64_t groups = (w.view().cols() + spec.group - 1) / spec.group;
  Params p{gsq::Tensor<float>({w.view().rows(), groups}),
           gsq::Tensor<float>({w.view().rows(), groups})};
  gsq::init_uniform_minmax(w, spec, p.steps, p.offsets);
  gsq::CounterRng rng(seed, 1);
  for (std::int64_t i = 0; i < p.steps.numel(); ++i) {
    p.steps[i] *= rng.next_uniform(0.5f, 1.2f);
    p.offsets[i] += p.steps[i] * rng.next_uniform(-3.0f, 3.0f);
  }
  return p;
}

}  // namespace

TEST_SUITE("quant") {
  TEST_CASE("uniform: fake quantization follows the formula on every ISA path") {
    for (int bits : {2, 3, 4, 8}) {
      for (int group : {1, 7, 32, 128}) {
        const UniformSpec spec{bits, group};
        for (std::int64_t cols :
             {std::int64_t{1}, std::int64_t{group - 1 > 0 ? group - 1 : 2}, std::int64_t{group},
              std::int64_t{group + 1}, std::int64_t{65}, std::int64_t{131}}) {
          CAPTURE(spec.name());
          CAPTURE(cols);
          const gsq::Tensor<float> w =
              gsq::test::random_matrix(6, cols, 50 + static_cast<std::uint64_t>(cols));
          const Params p = make_params(w, spec, 3);
          gsq::Tensor<float> ref({6, cols});
          gsq::fake_quantize_uniform_reference(w, spec, p.steps, p.offsets, ref);
          for (std::int64_t r = 0; r < 6; ++r)
            for (std::int64_t c = 0; c < cols; ++c) {
              const float s = std::max(p.steps(r, c / group), gsq::kUniformMinStep);
              const float b = p.offsets(r, c / group);
              const float q =
                  std::clamp(std::nearbyint((w(r, c) - b) / s), static_cast<float>(spec.qmin()),
                             static_cast<float>(spec.qmax()));
              REQUIRE(ref(r, c) == std::fma(q, s, b));
            }
          gsq::test::for_each_isa([&](gsq::Isa) {
            gsq::Tensor<float> out({6, cols});
            gsq::fake_quantize_uniform(w, spec, p.steps, p.offsets, out);
            REQUIRE(gsq::test::bitwise_equal(out.data(), ref.data(), out.numel()));
            gsq::Tensor<float> inplace = w.clone();
            gsq::fake_quantize_uniform(inplace, spec, p.steps, p.offsets, inplace);
            REQUIRE(gsq::test::bitwise_equal(inplace.data(), ref.data(), out.numel()));
          });
        }
      }
    }
  }

  TEST_CASE("uniform: exported codes decode to the fake-quantized weights") {
    for (int bits = 2; bits <= 8; ++bits) {
      const UniformSpec spec{bits, 32};
      const gsq::Tensor<float> w =
          gsq::test::random_matrix(5, 77, static_cast<std::uint64_t>(bits));
      const Params p = make_params(w, spec, 9);
      gsq::Tensor<float> fq({5, 77}), back({5, 77});
      gsq::fake_quantize_uniform(w, spec, p.steps, p.offsets, fq);
      const gsq::UniformMatrix q = gsq::quantize_uniform(w, spec, p.steps, p.offsets);
      gsq::dequantize_uniform(q, back);
      CAPTURE(bits);
      CHECK(gsq::test::bitwise_equal(fq.data(), back.data(), fq.numel()));
      for (std::int64_t r = 0; r < 5; ++r) {
        for (std::int64_t c = 0; c < q.padded_cols(); ++c) {
          REQUIRE(q.code(r, c) >= spec.qmin());
          REQUIRE(q.code(r, c) <= spec.qmax());
          if (c >= 77) REQUIRE(q.code(r, c) == 0);
        }
        for (std::int64_t g = 0; g < q.groups_per_row(); ++g) {
          CHECK(q.step(r, g) == p.steps(r, g));
          CHECK(q.offset(r, g) == p.offsets(r, g));
        }
      }
    }
  }

  TEST_CASE("uniform: min max initialisation spans each group within half a step") {
    for (int bits : {2, 4, 8}) {
      const UniformSpec spec{bits, 16};
      gsq::Tensor<float> w = gsq::test::random_matrix(4, 40, 21);
      for (std::int64_t c = 0; c < 40; ++c) w(3, c) = 0.25f;  // constant rows
      gsq::Tensor<float> s({4, 3}), b({4, 3}), fq({4, 40});
      gsq::init_uniform_minmax(w, spec, s, b);
      gsq::fake_quantize_uniform(w, spec, s, b, fq);
      for (std::int64_t r = 0; r < 4; ++r)
        for (std::int64_t c = 0; c < 40; ++c) {
          const float step = s(r, c / 16);
          CAPTURE(bits);
          CAPTURE(w(r, c));
          REQUIRE(step > 0.0f);
          REQUIRE(std::fabs(fq(r, c) - w(r, c)) <= 0.5f * step * (1 + 1e-4f) + 1e-6f);
        }
      CHECK(s(3, 0) == gsq::kUniformMinStep);
      CHECK(fq(3, 5) == 0.25f);
    }
  }

  TEST_CASE("uniform: LSQ+ step and offset gradients match central differences") {
    // L(s, b) = Σ g_i ŵ_i for fixed upstream g. On clamped elements ŵ = Qn·s + b or
    // Qp·s + b, which is differentiable: the true central difference must match. On
    // in-range elements LSQ+ differentiates the straight-through surrogate
    // ŵ = s·(v + c) + b with c = round(v) − v held fixed; its central difference must
    // match too (the true ŵ is piecewise constant in w there, so only the surrogate is
    // meaningful).
    const UniformSpec spec{4, 16};
    const std::int64_t cols = 16;
    gsq::Tensor<float> w({1, cols}), g({1, cols});
    gsq::CounterRng rng(5, 0);
    for (std::int64_t c = 0; c < cols; ++c) {
      // Scaled values v = (w - b)/s: far below Qn, inside, or far above Qp.
      const float v = c < 4 ? -20.0f - static_cast<float>(c)
                            : (c < 12 ? -7.6f + 1.9f * static_cast<float>(c - 4)
                                      : 15.0f + static_cast<float>(c));
      w(0, c) = 0.5f * v + 0.1f;  // s = 0.5, b = 0.1
      g(0, c) = rng.next_uniform(-1.0f, 1.0f);
    }
    gsq::Tensor<float> s({1, 1}), b({1, 1});
    s[0] = 0.5f;
    b[0] = 0.1f;
    gsq::Tensor<float> gs({1, 1}), gb({1, 1}), gw({1, cols});
    gsq::uniform_backward(w, spec, s, b, g, gw, gs, gb);

    const double qn = spec.qmin(), qp = spec.qmax();
    std::vector<double> frozen(cols);
    for (std::int64_t c = 0; c < cols; ++c) {
      const double v = (static_cast<double>(w(0, c)) - b[0]) / s[0];
      frozen[static_cast<std::size_t>(c)] = std::nearbyint(v) - v;
    }
    auto loss = [&](double ss, double bb) {
      double sum = 0;
      for (std::int64_t c = 0; c < cols; ++c) {
        const double v = (w(0, c) - bb) / ss;
        double what;
        if (v < qn)
          what = qn * ss + bb;
        else if (v > qp)
          what = qp * ss + bb;
        else
          what = ss * (v + frozen[static_cast<std::size_t>(c)]) + bb;
        sum += g(0, c) * what;
      }
      return sum;
    };
    const double h = 1e-4;
    const double fd_s = (loss(0.5 + h, 0.1) - loss(0.5 - h, 0.1)) / (2 * h);
    const double fd_b = (loss(0.5, 0.1 + h) - loss(0.5, 0.1 - h)) / (2 * h);
    CHECK(gs[0] == doctest::Approx(fd_s).epsilon(1e-4));
    CHECK(gb[0] == doctest::Approx(fd_b).epsilon(1e-4));
    // The clamped part alone is the true derivative (no surrogate needed).
    double clamped_s = 0, clamped_b = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      if (c >= 4 && c < 12) continue;
      clamped_s += g(0, c) * (c < 4 ? qn : qp);
      clamped_b += g(0, c);
    }
    CHECK(gb[0] == doctest::Approx(clamped_b).epsilon(1e-5));
    // STE mask: the weight gradient passes only where Qn <= v <= Qp.
    for (std::int64_t c = 0; c < cols; ++c) CHECK(gw(0, c) == (c >= 4 && c < 12 ? g(0, c) : 0.0f));
    // Gradients accumulate, and the LSQ scale divides by sqrt(N·Qp).
    gsq::UniformGradOptions scaled;
    scaled.lsq_grad_scale = true;
    gsq::Tensor<float> gs2 = gs.clone(), gb2 = gb.clone();
    gsq::uniform_backward(w, spec, s, b, g, gw, gs2, gb2, scaled);
    const double k = 1.0 / std::sqrt(16.0 * qp);
    CHECK(gs2[0] - gs[0] == doctest::Approx(gs[0] * k).epsilon(1e-4));
    CHECK(gb2[0] - gb[0] == doctest::Approx(gb[0] * k).epsilon(1e-4));
    (void)clamped_s;
  }

  TEST_CASE("uniform: backward matches finite differences of the true loss on clamped groups") {
    // Every element far outside the grid: ŵ is exactly linear in s and b.
    const UniformSpec spec{3, 8};
    gsq::Tensor<float> w({2, 13}), g({2, 13});
    for (std::int64_t r = 0; r < 2; ++r)
      for (std::int64_t c = 0; c < 13; ++c) {
        w(r, c) = (c % 2 ? 50.0f : -50.0f) * static_cast<float>(1 + r);
        g(r, c) = 0.1f * static_cast<float>(c - 6);
      }
    gsq::Tensor<float> s({2, 2}), b({2, 2}), gs({2, 2}), gb({2, 2}), gw({2, 13}), fq({2, 13});
    for (float& v : s) v = 0.75f;
    for (float& v : b) v = -0.5f;
    gsq::uniform_backward(w, spec, s, b, g, gw, gs, gb);
    auto loss = [&](std::int64_t r, std::int64_t grp, float ds, float db) {
      gsq::Tensor<float> s2 = s.clone(), b2 = b.clone();
      s2(r, grp) += ds;
      b2(r, grp) += db;
      gsq::fake_quantize_uniform(w, spec, s2, b2, fq);
      double sum = 0;
      for (std::int64_t c = 0; c < 13; ++c) sum += static_cast<double>(g(r, c)) * fq(r, c);
      return sum;
    };
    const float h = 1.0f / 64;  // exact in float, so the differences are exact
    for (std::int64_t r = 0; r < 2; ++r)
      for (std::int64_t grp = 0; grp < 2; ++grp) {
        const double fd_s = (loss(r, grp, h, 0) - loss(r, grp, -h, 0)) / (2 * h);
        const double fd_b = (loss(r, grp, 0, h) - loss(r, grp, 0, -h)) / (2 * h);
        CHECK(gs(r, grp) == doctest::Approx(fd_s).epsilon(1e-5));
        CHECK(gb(r, grp) == doctest::Approx(fd_b).epsilon(1e-5));
      }
    for (float v : gw) CHECK(v == 0.0f);
  }

  TEST_CASE("uniform: steps at the floor get no step gradient") {
    const UniformSpec spec{4, 4};
    gsq::Tensor<float> w({1, 4}), g({1, 4}), s({1, 1}), b({1, 1}), gs({1, 1}), gb({1, 1}),
        gw({1, 4});
    for (std::int64_t c = 0; c < 4; ++c) {
      w(0, c) = static_cast<float>(c);
      g(0, c) = 1.0f;
    }
    s[0] = -0.5f;  // an optimizer overshoot: used as kUniformMinStep
    gsq::uniform_backward(w, spec, s, b, g, gw, gs, gb);
    CHECK(gs[0] == 0.0f);
    CHECK(gb[0] == 3.0f);  // three values clamp high, w = 0 is in range
    gsq::Tensor<float> fq({1, 4});
    gsq::fake_quantize_uniform(w, spec, s, b, fq);
    CHECK(std::isfinite(fq(0, 3)));
  }

  TEST_CASE("uniform: non-finite inputs name the tensor and position") {
    gsq::Tensor<float> w = gsq::test::random_matrix(3, 20, 1);
    const Params p = make_params(w, UniformSpec{4, 8}, 1);
    w(1, 17) = std::numeric_limits<float>::infinity();
    gsq::Tensor<float> out({3, 20});
    try {
      gsq::fake_quantize_uniform(w, UniformSpec{4, 8}, p.steps, p.offsets, out, "layers.2.w2");
      FAIL("expected a FormatError");
    } catch (const gsq::FormatError& e) {
      CHECK(e.code() == gsq::ErrorCode::kNonFinite);
      const std::string what = e.what();
      CHECK(what.find("layers.2.w2") != std::string::npos);
      CHECK(what.find("row 1, column 17") != std::string::npos);
    }
    w(1, 17) = 0.0f;
    gsq::Tensor<float> bad_steps = p.steps.clone();
    bad_steps(2, 1) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(gsq::quantize_uniform(w, UniformSpec{4, 8}, bad_steps, p.offsets),
                    gsq::FormatError);
    gsq::Tensor<float> wrong({3, 2});
    CHECK_THROWS_AS(gsq::fake_quantize_uniform(w, UniformSpec{4, 8}, wrong, p.offsets, out),
                    gsq::ShapeError);
  }

  TEST_CASE("uniform: one thread and two threads give the same bits") {
    const UniformSpec spec{4, 128};
    const gsq::Tensor<float> w = gsq::test::random_matrix(300, 700, 2);
    const gsq::Tensor<float> g = gsq::test::random_matrix(300, 700, 3);
    const Params p = make_params(w, spec, 4);
    auto run = [&](int threads, gsq::Tensor<float>& fq, gsq::Tensor<float>& gw,
                   gsq::Tensor<float>& gs, gsq::Tensor<float>& gb) {
      gsq::set_num_threads(threads);
      gsq::fake_quantize_uniform(w, spec, p.steps, p.offsets, fq);
      gsq::uniform_backward(w, spec, p.steps, p.offsets, g, gw, gs, gb);
      gsq::set_num_threads(0);
    };
    gsq::Tensor<float> fq1({300, 700}), gw1({300, 700}), gs1({300, 6}), gb1({300, 6});
    gsq::Tensor<float> fq2({300, 700}), gw2({300, 700}), gs2({300, 6}), gb2({300, 6});
    run(1, fq1, gw1, gs1, gb1);
    run(2, fq2, gw2, gs2, gb2);
    CHECK(gsq::test::bitwise_equal(fq1.data(), fq2.data(), fq1.numel()));
    CHECK(gsq::test::bitwise_equal(gw1.data(), gw2.data(), gw1.numel()));
    CHECK(gsq::test::bitwise_equal(gs1.data(), gs2.data(), gs1.numel()));
    CHECK(gsq::test::bitwise_equal(gb1.data(), gb2.data(), gb1.numel()));
  }

  TEST_CASE("uniform: backward is bit-identical on every ISA path at edge sizes") {
    // Reference vs AVX2 vs AVX-512: masks, weight gradients and the per-group step and
    // offset sums (the lane order of kernels/uniform_reference.hpp), with the LSQ scale
    // off and on, groups that do and do not divide 16, and tails of every length.
    const std::vector<std::int64_t> sizes = {1, 2, 15, 16, 17, 31, 32, 33, 37, 64, 131};
    for (int bits : {2, 4, 8}) {
      for (int group : {1, 5, 16, 24, 33, 128}) {
        const UniformSpec spec{bits, group};
        for (std::int64_t rows : {std::int64_t{1}, std::int64_t{3}, std::int64_t{17}}) {
          for (std::int64_t cols : sizes) {
            CAPTURE(spec.name());
            CAPTURE(rows);
            CAPTURE(cols);
            const std::uint64_t seed = static_cast<std::uint64_t>(rows * 1000 + cols + group);
            const gsq::Tensor<float> w = gsq::test::random_matrix(rows, cols, seed);
            const gsq::Tensor<float> g = gsq::test::random_matrix(rows, cols, seed + 7);
            const Params p = make_params(w, spec, seed);
            const std::int64_t groups = p.steps.view().cols();
            for (bool scale : {false, true}) {
              gsq::UniformGradOptions opt;
              opt.lsq_grad_scale = scale;
              gsq::Tensor<float> ref_w({rows, cols}), ref_s({rows, groups}),
                  ref_b({rows, groups});
              {
                gsq::ScopedIsa scalar(gsq::Isa::kReference);
                gsq::uniform_backward(w, spec, p.steps, p.offsets, g, ref_w, ref_s, ref_b, opt);
              }
              // The reference against an independent double-precision sum.
              for (std::int64_t r = 0; r < rows; ++r)
                for (std::int64_t grp = 0; grp < groups; ++grp) {
                  const float st = std::max(p.steps(r, grp), gsq::kUniformMinStep);
                  double ds = 0, db = 0;
                  const std::int64_t c1 = std::min(cols, (grp + 1) * group);
                  for (std::int64_t c = grp * group; c < c1; ++c) {
                    const float v = (w(r, c) - p.offsets(r, grp)) / st;
                    if (v < static_cast<float>(spec.qmin()) || v > static_cast<float>(spec.qmax())) {
                      ds += static_cast<double>(g(r, c)) *
                            (v < 0 ? spec.qmin() : spec.qmax());
                      db += g(r, c);
                      REQUIRE(ref_w(r, c) == 0.0f);
                    } else {
                      ds += static_cast<double>(g(r, c)) * (std::nearbyint(v) - v);
                      REQUIRE(ref_w(r, c) == g(r, c));
                    }
                  }
                  if (p.steps(r, grp) <= gsq::kUniformMinStep) ds = 0;  // no step gradient
                  if (scale) {
                    const double k = 1.0 / std::sqrt(static_cast<double>(c1 - grp * group) *
                                                     spec.qmax());
                    ds *= k;
                    db *= k;
                  }
                  REQUIRE(ref_s(r, grp) == doctest::Approx(ds).epsilon(1e-4).scale(1.0));
                  REQUIRE(ref_b(r, grp) == doctest::Approx(db).epsilon(1e-4).scale(1.0));
                }
              gsq::test::for_each_isa([&](gsq::Isa) {
                gsq::Tensor<float> gw({rows, cols}), gs({rows, groups}), gb({rows, groups});
                gsq::uniform_backward(w, spec, p.steps, p.offsets, g, gw, gs, gb, opt);
                REQUIRE(gsq::test::bitwise_equal(gw.data(), ref_w.data(), gw.numel()));
                REQUIRE(gsq::test::bitwise_equal(gs.data(), ref_s.data(), gs.numel()));
                REQUIRE(gsq::test::bitwise_equal(gb.data(), ref_b.data(), gb.numel()));
                // In place over the upstream gradient, accumulating onto earlier values.
                gsq::Tensor<float> inplace = g.clone(), gs2 = ref_s.clone(), gb2 = ref_b.clone();
                gsq::uniform_backward(w, spec, p.steps, p.offsets, inplace, inplace, gs2, gb2,
                                      opt);
                REQUIRE(gsq::test::bitwise_equal(inplace.data(), ref_w.data(), gw.numel()));
                for (std::int64_t i = 0; i < gs2.numel(); ++i) {
                  REQUIRE(gs2[i] == ref_s[i] + ref_s[i]);
                  REQUIRE(gb2[i] == ref_b[i] + ref_b[i]);
                }
              });
            }
          }
        }
      }
    }
  }

  TEST_CASE("uniform: backward and fake quantization reject non-finite weights on every ISA path") {
    gsq::Tensor<float> w = gsq::test::random_matrix(4, 37, 2);
    const gsq::Tensor<float> g = gsq::test::random_matrix(4, 37, 3);
    const UniformSpec spec{4, 16};
    const Params p = make_params(w, spec, 2);
    gsq::test::for_each_isa([&](gsq::Isa) {
      for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                        std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()}) {
        for (std::int64_t col : {std::int64_t{0}, std::int64_t{20}, std::int64_t{36}}) {
          gsq::Tensor<float> wb = w.clone();
          wb(2, col) = bad;
          gsq::Tensor<float> gw({4, 37}), gs({4, 3}), gb({4, 3});
          try {
            gsq::uniform_backward(wb, spec, p.steps, p.offsets, g, gw, gs, gb, {}, "blk.w");
            FAIL("expected a FormatError");
          } catch (const gsq::FormatError& e) {
            CHECK(e.code() == gsq::ErrorCode::kNonFinite);
            const std::string what = e.what();
            CHECK(what.find("blk.w") != std::string::npos);
            CHECK(what.find("row 2, column " + std::to_string(col)) != std::string::npos);
          }
        }
      }
      // Fake quantization, also in place (the row holding the bad value is left unread
      // and unwritten, so its position is still reported), over many chunks.
      const gsq::Tensor<float> big = gsq::test::random_matrix(300, 33, 5);
      const Params pb = make_params(big, spec, 5);
      for (std::int64_t row : {std::int64_t{0}, std::int64_t{150}, std::int64_t{299}}) {
        gsq::Tensor<float> wb = big.clone();
        wb(row, 32) = std::numeric_limits<float>::quiet_NaN();
        wb(299, 1) = std::numeric_limits<float>::infinity();  // a later one is not reported
        for (bool in_place : {false, true}) {
          gsq::Tensor<float> out({300, 33});
          try {
            gsq::fake_quantize_uniform(wb, spec, pb.steps, pb.offsets, in_place ? wb : out,
                                       "blk.w");
            FAIL("expected a FormatError");
          } catch (const gsq::FormatError& e) {
            CHECK(e.code() == gsq::ErrorCode::kNonFinite);
            const std::string what = e.what();
            CHECK(what.find("blk.w") != std::string::npos);
            const std::int64_t col = row == 299 ? 1 : 32;
            CHECK(what.find("row " + std::to_string(row) + ", column " + std::to_string(col)) !=
                  std::string::npos);
          }
        }
      }
      gsq::Tensor<float> bad_offsets = p.offsets.clone();
      bad_offsets(1, 2) = std::numeric_limits<float>::quiet_NaN();
      gsq::Tensor<float> gw({4, 37}), gs({4, 3}), gb({4, 3});
      CHECK_THROWS_AS(gsq::uniform_backward(w, spec, p.steps, bad_offsets, g, gw, gs, gb),
                      gsq::FormatError);
      for (float v : gs) CHECK(v == 0.0f);  // rejected before anything was written
    });
  }
}
