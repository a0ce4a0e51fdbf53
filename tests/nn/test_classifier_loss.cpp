// The fused, vocabulary-chunked classifier + cross-entropy (nn/classifier_loss.hpp)
// against the unfused steps: logits = H·Wᵀ, cross_entropy_backward, dH = dlogits·W,
// dW += dlogitsᵀ·H. One chunk must give the same bits; several chunks the same values
// up to rounding, with bits that do not depend on the thread count.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "component_test_support.hpp"
#include "gsq/core/bf16.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/float_matrix.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/gemm/f32.hpp"
#include "gsq/nn/classifier_loss.hpp"
#include "gsq/nn/loss.hpp"
#include "support/test_support.hpp"

namespace {

struct Problem {
  gsq::Tensor<float> h, w;
  std::vector<std::int32_t> targets;
  std::vector<std::uint8_t> mask;
};

Problem problem(std::int64_t tokens, std::int64_t dim, std::int64_t vocab, std::uint64_t seed) {
  Problem p{gsq::test::normal_matrix(tokens, dim, seed), gsq::test::normal_matrix(vocab, dim, seed + 1, 0.5f), {}, {}};
  for (std::int64_t t = 0; t < tokens; ++t) {
    p.targets.push_back(static_cast<std::int32_t>((t * 7919 + 13) % vocab));
    p.mask.push_back(static_cast<std::uint8_t>(t % 5 != 2));
  }
  return p;
}

struct Result {
  gsq::CrossEntropyResult loss;
  gsq::Tensor<float> dh, dw;
};

/// The unfused reference: every step separately, as Llama did before the fusion.
Result unfused(const Problem& p, bool bf16, double normalizer) {
  const std::int64_t tokens = p.h.dim(0), dim = p.h.dim(1), vocab = p.w.dim(0);
  gsq::Tensor<float> logits({tokens, vocab});
  if (bf16) gsq::gemm::gemm_bf16(p.h.view(), false, p.w.view(), true, logits.view());
  else gsq::gemm::gemm_f32(p.h.view(), false, p.w.view(), true, logits.view());
  Result r{gsq::cross_entropy_backward(logits.view(), p.targets, p.mask, logits.view(), normalizer),
           gsq::Tensor<float>({tokens, dim}), gsq::Tensor<float>({vocab, dim})};
  if (bf16) gsq::gemm::gemm_bf16(logits.view(), false, p.w.view(), false, r.dh.view());
  else gsq::gemm::gemm_f32(logits.view(), false, p.w.view(), false, r.dh.view());
  gsq::gemm::gemm_f32(logits.view(), true, p.h.view(), false, r.dw.view(), {.alpha = 1.0f, .accumulate = true});
  return r;
}

Result fused(const Problem& p, const gsq::FloatMatrix& w, bool bf16, double normalizer, std::int64_t chunk) {
  const std::int64_t tokens = p.h.dim(0), dim = p.h.dim(1), vocab = p.w.dim(0);
  Result r{{}, gsq::Tensor<float>({tokens, dim}), gsq::Tensor<float>({vocab, dim})};
  r.loss = gsq::classifier_cross_entropy(p.h.view(), w, p.targets, p.mask, r.dh.view(), &r.dw,
                                         {.bf16 = bf16, .chunk = chunk, .normalizer = normalizer});
  return r;
}

bool same(const gsq::Tensor<float>& a, const gsq::Tensor<float>& b) {
  return gsq::test::bitwise_equal(a.data(), b.data(), a.numel());
}

double max_rel_diff(const gsq::Tensor<float>& a, const gsq::Tensor<float>& b) {
  double scale = 0.0, diff = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(a.data()[i])));
    diff = std::max(diff, static_cast<double>(std::fabs(a.data()[i] - b.data()[i])));
  }
  return diff / std::max(scale, 1e-30);
}

}  // namespace

TEST_SUITE("nn") {
  TEST_CASE("classifier loss: one chunk gives the unfused loss, dH and dW bit for bit") {
    for (const bool bf16 : {false, true})
      for (const double normalizer : {0.0, 97.0})
        for (const std::int64_t vocab : {1, 17, 256, 300}) {
          CAPTURE(bf16);
          CAPTURE(normalizer);
          CAPTURE(vocab);
          const Problem p = problem(37, 33, vocab, 5);
          const Result a = unfused(p, bf16, normalizer);
          const Result b = fused(p, gsq::FloatMatrix(p.w.clone()), bf16, normalizer, 512);
          CHECK(a.loss.sum == b.loss.sum);
          CHECK(a.loss.count == b.loss.count);
          CHECK(same(a.dh, b.dh));
          CHECK(same(a.dw, b.dw));
          // Forward only (Llama::loss) gives the same loss.
          const gsq::CrossEntropyResult f = gsq::classifier_cross_entropy(
              p.h.view(), gsq::FloatMatrix(p.w.clone()), p.targets, p.mask, {}, nullptr, {.bf16 = bf16});
          CHECK(f.sum == a.loss.sum);
        }
  }

  TEST_CASE("classifier loss: several chunks agree with the unfused steps up to rounding") {
    for (const bool bf16 : {false, true})
      for (const std::int64_t vocab : {257, 1000, 1031}) {
        CAPTURE(bf16);
        CAPTURE(vocab);
        const Problem p = problem(31, 48, vocab, 9);
        const Result a = unfused(p, bf16, 0.0);
        const Result b = fused(p, gsq::FloatMatrix(p.w.clone()), bf16, 0.0, 256);
        CHECK(b.loss.count == a.loss.count);
        CHECK(b.loss.sum == doctest::Approx(a.loss.sum).epsilon(1e-6));
        CHECK(max_rel_diff(a.dh, b.dh) < 1e-5);
        CHECK(max_rel_diff(a.dw, b.dw) < 1e-5);
      }
  }

  TEST_CASE("classifier loss: a BF16 table gives the bits of its FP32 copy") {
    const Problem p = problem(19, 40, 700, 11);
    gsq::Tensor<gsq::bf16> half({700, 40}, gsq::MemoryCategory::kWeights);
    gsq::Tensor<float> wide({700, 40});
    for (std::int64_t i = 0; i < wide.numel(); ++i) {
      half.data()[i] = gsq::to_bf16(p.w.data()[i]);
      wide.data()[i] = half.data()[i].to_float();
    }
    for (const bool bf16 : {false, true}) {
      CAPTURE(bf16);
      const Result a = fused(p, gsq::FloatMatrix(wide.clone()), bf16, 0.0, 256);
      const Result b = fused(p, gsq::FloatMatrix(half.clone()), bf16, 0.0, 256);
      CHECK(a.loss.sum == b.loss.sum);
      CHECK(same(a.dh, b.dh));
    }
  }

  TEST_CASE("classifier loss: the same bits at 1, 2 and 3 threads") {
    const Problem p = problem(45, 64, 2000, 13);
    std::vector<Result> runs;
    for (const int threads : {1, 2, 3}) {
      gsq::set_num_threads(threads);
      runs.push_back(fused(p, gsq::FloatMatrix(p.w.clone()), false, 0.0, 512));
    }
    gsq::set_num_threads(0);
    for (std::size_t i = 1; i < runs.size(); ++i) {
      CHECK(runs[i].loss.sum == runs[0].loss.sum);
      CHECK(same(runs[i].dh, runs[0].dh));
      CHECK(same(runs[i].dw, runs[0].dw));
    }
  }

  TEST_CASE("classifier loss: bad chunk sizes and shapes are errors") {
    const Problem p = problem(4, 8, 10, 1);
    gsq::Tensor<float> dh({4, 8});
    CHECK_THROWS_AS(gsq::classifier_cross_entropy(p.h.view(), gsq::FloatMatrix(p.w.clone()), p.targets, p.mask,
                                                  dh.view(), nullptr, {.chunk = 100}),
                    gsq::Error);
    gsq::Tensor<float> wrong({4, 9});
    CHECK_THROWS_AS(gsq::classifier_cross_entropy(p.h.view(), gsq::FloatMatrix(p.w.clone()), p.targets, p.mask,
                                                  wrong.view(), nullptr),
                    gsq::Error);
  }
}
