// gsq/nn/rope.hpp — rotary position embedding (RoPE) on query and key heads.
//
// Inside each head of size hs, pair i (i < hs/2) is rotated by the angle pos·θ^(−2i/hs):
//     (a, b) ← (a·cos − b·sin, a·sin + b·cos).
// Which two dimensions form pair i is the only difference between checkpoint families
// (golden/README.md): llama2.c / Meta weights pair (2i, 2i+1) ("interleaved"), Hugging
// Face weights pair (i, i + hs/2) (`rotate_half`). Positions count from 0 within each
// sequence of a [batch·seq, heads·hs] activation, or from `start_pos` when decoding with
// a KV cache. cos/sin come from a table computed once in double precision.
//
// Llama 3.x checkpoints remap the frequencies (`rope_scaling` type "llama3", HF's
// `_compute_llama3_parameters`): with wavelength λ = 2π/f and the original context L,
// λ > L/low_freq_factor → f/factor; λ < L/high_freq_factor → f unchanged; in between
// f·((1 − s)/factor + s) with s = (L/λ − low_freq_factor)/(high_freq_factor − low_freq_factor).
// The tables are built once, per (positions, head size, theta, scaling), at construction.
//
// A rotation is orthogonal, so backward is the same rotation by −angle.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"

GSQ_NAMESPACE_BEGIN

/// Which dimensions RoPE rotates together inside a head of size hs.
enum class RopeStyle {
  kInterleaved,  // pairs (2i, 2i+1): llama2.c / Meta layout
  kHalf,         // pairs (i, i + hs/2): Hugging Face `rotate_half` layout
};

/// Frequency scaling of RoPE; `factor` 0 means none (the default).
struct RopeScaling {
  double factor = 0.0;  // "llama3" when > 0
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_positions = 8192;

  bool enabled() const noexcept { return factor > 0.0; }
  bool operator==(const RopeScaling&) const = default;

  /// Throws unless the parameters make sense (factor ≥ 1, low < high, context > 0).
  void validate() const {
    if (!enabled()) return;
    GSQ_CHECK(factor >= 1.0 && low_freq_factor > 0.0 && high_freq_factor > low_freq_factor &&
                  original_max_positions > 0,
              ErrorCode::kInvalidArgument,
              "RopeScaling: llama3 scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor "
              "and original_max_position_embeddings > 0 (got factor " + std::to_string(factor) +
                  ", low " + std::to_string(low_freq_factor) + ", high " +
                  std::to_string(high_freq_factor) + ", original " +
                  std::to_string(original_max_positions) + ")");
  }

  /// The frequency that replaces `freq` (radians per position), in double.
  double apply(double freq) const noexcept {
    if (!enabled()) return freq;
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    const double context = static_cast<double>(original_max_positions);
    const double wavelen = kTwoPi / freq;
    if (wavelen < context / high_freq_factor) return freq;  // high frequencies: unchanged
    if (wavelen > context / low_freq_factor) return freq / factor;  // low: slowed by factor
    const double smooth = (context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
    return (1.0 - smooth) * freq / factor + smooth * freq;
  }
};

class Rope {
 public:
  Rope() = default;
  /// Tables for positions [0, max_positions) and heads of `head_size` (even).
  Rope(std::int64_t head_size, std::int64_t max_positions, float theta, RopeStyle style,
       const RopeScaling& scaling = {})
      : head_size_(head_size), max_positions_(max_positions), style_(style) {
    scaling.validate();
    GSQ_CHECK(head_size > 0 && head_size % 2 == 0, ErrorCode::kInvalidArgument,
              "Rope: head size must be positive and even, got " + std::to_string(head_size));
    GSQ_CHECK(max_positions > 0, ErrorCode::kInvalidArgument,
              "Rope: max_positions must be positive, got " + std::to_string(max_positions));
    GSQ_CHECK(theta > 0.0f, ErrorCode::kInvalidArgument,
              "Rope: theta must be > 0, got " + std::to_string(theta));
    const std::int64_t half = head_size / 2;
    cos_ = Tensor<float>({max_positions, half}, MemoryCategory::kWeights);
    sin_ = Tensor<float>({max_positions, half}, MemoryCategory::kWeights);
    for (std::int64_t i = 0; i < half; ++i) {
      const double freq = scaling.apply(std::pow(
          static_cast<double>(theta), -2.0 * static_cast<double>(i) / static_cast<double>(head_size)));
      for (std::int64_t p = 0; p < max_positions; ++p) {
        const double angle = static_cast<double>(p) * freq;
        cos_(p, i) = static_cast<float>(std::cos(angle));
        sin_(p, i) = static_cast<float>(std::sin(angle));
      }
    }
  }

  std::int64_t head_size() const noexcept { return head_size_; }
  std::int64_t max_positions() const noexcept { return max_positions_; }
  RopeStyle style() const noexcept { return style_; }
  /// cos and sin of position `pos`, pair `i` (what forward rotates by).
  float cos_at(std::int64_t pos, std::int64_t i) const { return cos_(pos, i); }
  float sin_at(std::int64_t pos, std::int64_t i) const { return sin_(pos, i); }

  /// Rotates x [batch·seq, heads·head_size] in place; row r is at position
  /// start_pos + r mod seq.
  void forward(MatrixView<float> x, std::int64_t seq, std::int64_t start_pos = 0) const {
    rotate(x, seq, start_pos, 1.0f);
  }
  /// The gradient through forward: rotates dx in place by the opposite angles.
  void backward(MatrixView<float> dx, std::int64_t seq, std::int64_t start_pos = 0) const {
    rotate(dx, seq, start_pos, -1.0f);
  }

 private:
  void rotate(MatrixView<float> x, std::int64_t seq, std::int64_t start_pos, float sign) const {
    GSQ_CHECK(head_size_ > 0, ErrorCode::kInvalidArgument, "Rope: used before construction");
    GSQ_CHECK(x.cols() % head_size_ == 0, ErrorCode::kShapeMismatch,
              "Rope: " + std::to_string(x.cols()) + " columns are not whole heads of " +
                  std::to_string(head_size_));
    GSQ_CHECK(seq > 0 && x.rows() % seq == 0, ErrorCode::kShapeMismatch,
              "Rope: " + std::to_string(x.rows()) + " rows are not whole sequences of " +
                  std::to_string(seq));
    GSQ_CHECK(start_pos >= 0 && start_pos + seq <= max_positions_, ErrorCode::kIndexOutOfRange,
              "Rope: positions [" + std::to_string(start_pos) + ", " +
                  std::to_string(start_pos + seq) + ") exceed the table of " +
                  std::to_string(max_positions_));
    const std::int64_t half = head_size_ / 2;
    const std::int64_t heads = x.cols() / head_size_;
    // Pair i is (i·step, i·step + offset): interleaved step 2 offset 1, half step 1 offset hs/2.
    const std::int64_t step = style_ == RopeStyle::kInterleaved ? 2 : 1;
    const std::int64_t offset = style_ == RopeStyle::kInterleaved ? 1 : half;
    parallel_for(x.rows(), [&](std::int64_t r) {
      const std::int64_t pos = start_pos + r % seq;
      const float* c = cos_.data() + pos * half;
      const float* s = sin_.data() + pos * half;
      float* row = x.row(r);
      for (std::int64_t h = 0; h < heads; ++h) {
        float* head = row + h * head_size_;
        for (std::int64_t i = 0; i < half; ++i) {
          float& a = head[i * step];
          float& b = head[i * step + offset];
          const float sn = sign * s[i];
          const float x0 = a;
          const float x1 = b;
          a = x0 * c[i] - x1 * sn;
          b = x0 * sn + x1 * c[i];
        }
      }
    }, 16);
  }

  Tensor<float> cos_;  // [max_positions, head_size/2]
  Tensor<float> sin_;
  std::int64_t head_size_ = 0;
  std::int64_t max_positions_ = 0;
  RopeStyle style_ = RopeStyle::kInterleaved;
};

GSQ_NAMESPACE_END
