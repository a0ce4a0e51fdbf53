// gsq/model/kv_cache.hpp — keys and values of the tokens generated so far, per layer.
//
// Autoregressive generation feeds one new token at a time; each layer's attention needs
// the keys and values (after RoPE) of every earlier position. They are computed once,
// appended here, and read back by every later step, so a step costs one token's
// projections instead of the whole sequence's. Rows [0, length) are filled; capacity is
// fixed when the cache is made (at most the model's max_seq_len), counted as activations.
#pragma once

#include <cstdint>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/tensor.hpp"

GSQ_NAMESPACE_BEGIN

struct KvCache {
  std::vector<Tensor<float>> k;  // per layer [capacity, kv_dim], keys after RoPE
  std::vector<Tensor<float>> v;  // per layer [capacity, kv_dim]
  std::int64_t length = 0;       // positions filled

  KvCache() = default;
  KvCache(std::int64_t layers, std::int64_t capacity, std::int64_t kv_dim) {
    for (std::int64_t l = 0; l < layers; ++l) {
      k.emplace_back(Tensor<float>({capacity, kv_dim}, MemoryCategory::kActivations));
      v.emplace_back(Tensor<float>({capacity, kv_dim}, MemoryCategory::kActivations));
    }
  }

  std::int64_t capacity() const noexcept { return k.empty() ? 0 : k.front().dim(0); }
  /// Forgets every position (the buffers stay allocated for the next sequence).
  void clear() noexcept { length = 0; }
  std::int64_t bytes() const noexcept {
    std::int64_t n = 0;
    for (const auto& t : k) n += t.bytes();
    for (const auto& t : v) n += t.bytes();
    return n;
  }
};

GSQ_NAMESPACE_END
