// gsq/optim/clip.hpp — global-norm gradient clipping (as torch.nn.utils.clip_grad_norm_).
//
// The norm is the L2 norm of all gradients together, accumulated in double in a fixed
// order (parameter by parameter, element by element), so it is the same for any thread
// count. If it exceeds `max_norm`, every gradient is scaled by max_norm / (norm + 1e-6).
// A non-finite norm means training has diverged: it is reported as a FormatError naming
// the first parameter whose gradient is not finite, instead of silently scaling by NaN.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"
#include "gsq/nn/parameter.hpp"
#include "gsq/optim/slots.hpp"

GSQ_NAMESPACE_BEGIN
namespace optim {

/// The L2 norm of all gradients in `params` together.
inline double global_grad_norm(const ParameterList& params) {
  check_parameters(params, "global_grad_norm");
  double sum = 0.0;
  for (const Parameter& p : params)
    for (float g : *p.grad) sum += static_cast<double>(g) * static_cast<double>(g);
  return std::sqrt(sum);
}

/// Scales the gradients so that their global norm is at most `max_norm`; returns the norm
/// before clipping. Throws FormatError (kNonFinite) if a gradient is NaN or Inf.
inline double clip_grad_norm(const ParameterList& params, double max_norm) {
  GSQ_CHECK(max_norm > 0.0, ErrorCode::kInvalidArgument,
            "clip_grad_norm: max_norm must be > 0, got " + std::to_string(max_norm));
  const double norm = global_grad_norm(params);
  if (!std::isfinite(norm)) {
    for (const Parameter& p : params)
      for (std::int64_t i = 0; i < p.grad->numel(); ++i)
        GSQ_CHECK(std::isfinite((*p.grad)[i]), ErrorCode::kNonFinite,
                  "clip_grad_norm: gradient of '" + p.name + "' is not finite at element " +
                      std::to_string(i));
    GSQ_CHECK(false, ErrorCode::kNonFinite,
              "clip_grad_norm: the global gradient norm overflows a double");
  }
  if (norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (const Parameter& p : params) {
      float* g = p.grad->data();
      detail::for_each_chunk(p.grad->numel(), [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) g[i] *= scale;
      });
    }
  }
  return norm;
}

}  // namespace optim
GSQ_NAMESPACE_END
