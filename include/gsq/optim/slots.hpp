// gsq/optim/slots.hpp — per-parameter state tensors of an optimizer, keyed by name.
//
// An optimizer keeps a few tensors per parameter ("slots": AdamW's two moments, SGD's
// momentum buffer). They are created lazily at a parameter's first step, stored under
// "<parameter>.<slot>" in a sorted map (so exported state has a stable order), counted
// under MemoryCategory::kOptimizerState, and round-trip exactly through OptimizerState.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/core/memory.hpp"
#include "gsq/core/parallel.hpp"
#include "gsq/core/tensor.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/optim/state.hpp"

GSQ_NAMESPACE_BEGIN
namespace optim::detail {

class SlotStore {
 public:
  struct Lookup {
    Tensor<float>& tensor;
    bool created;  // true when the slot was just made (zero-filled)
  };

  /// The slot `slot` of parameter `p`, created zero-filled on first use.
  Lookup get(const Parameter& p, std::string_view slot) {
    std::string key = p.name + "." + std::string(slot);
    auto it = slots_.find(key);
    if (it != slots_.end()) {
      GSQ_CHECK(it->second.numel() == p.value->numel(), ErrorCode::kShapeMismatch,
                "optimizer state '" + key + "' has " + std::to_string(it->second.numel()) +
                    " values but parameter '" + p.name + "' has " +
                    std::to_string(p.value->numel()));
      return {it->second, false};
    }
    auto [pos, inserted] = slots_.emplace(
        std::move(key), optim::detail::zeros_like(*p.value, MemoryCategory::kOptimizerState));
    return {pos->second, inserted};
  }

  std::vector<NamedTensor> export_tensors() const {
    std::vector<NamedTensor> out;
    out.reserve(slots_.size());
    for (const auto& [name, t] : slots_)
      out.push_back({name, copy_as(t, MemoryCategory::kOptimizerState)});
    return out;
  }

  void import_tensors(const std::vector<NamedTensor>& tensors) {
    std::map<std::string, Tensor<float>, std::less<>> fresh;
    for (const NamedTensor& t : tensors) {
      const bool inserted =
          fresh.emplace(t.name, copy_as(t.value, MemoryCategory::kOptimizerState)).second;
      GSQ_CHECK(inserted, ErrorCode::kInvalidArgument,
                "optimizer state: tensor '" + t.name + "' appears twice");
    }
    slots_ = std::move(fresh);
  }

  std::int64_t bytes() const noexcept {
    std::int64_t n = 0;
    for (const auto& kv : slots_) n += kv.second.bytes();
    return n;
  }

 private:
  std::map<std::string, Tensor<float>, std::less<>> slots_;
};

/// Calls body(begin, end) over [0, n) in fixed chunks: element-wise updates only, so the
/// result does not depend on the thread count.
template <class Body>
void for_each_chunk(std::int64_t n, Body&& body) {
  constexpr std::int64_t kGrain = 1 << 14;
  parallel_for_chunks(n, kGrain, std::forward<Body>(body));
}

}  // namespace optim::detail
GSQ_NAMESPACE_END
