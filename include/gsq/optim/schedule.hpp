// gsq/optim/schedule.hpp — learning-rate schedules: constant, linear warm-up + cosine decay.
//
// A schedule is a pure function of the step index (steps already taken, 0-based), so a
// resumed run gets the same rates from the saved step count alone; it carries no state
// to checkpoint. Warm-up rises linearly to the peak, reaching it at step `warmup`:
//     lr(s) = peak · (s + 1) / (warmup + 1)                               s <  warmup
//     lr(s) = min + (peak − min) · ½(1 + cos(π · (s − warmup) / (total − warmup)))
// with the cosine argument clamped to [0, 1], so steps past `total` stay at `min`.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "gsq/core/config.hpp"
#include "gsq/core/error.hpp"

GSQ_NAMESPACE_BEGIN
namespace optim {

class Schedule {
 public:
  enum class Kind { kConstant, kWarmupCosine };

  /// The same rate at every step.
  static Schedule constant(float lr) {
    check_lr(lr, "constant");
    Schedule s;
    s.kind_ = Kind::kConstant;
    s.peak_ = lr;
    s.min_ = lr;
    return s;
  }

  /// Linear warm-up over `warmup` steps to `peak`, then cosine decay to `min_lr` at `total`.
  static Schedule warmup_cosine(float peak, std::int64_t warmup, std::int64_t total,
                                float min_lr = 0.0f) {
    check_lr(peak, "warmup_cosine peak");
    check_lr(min_lr, "warmup_cosine min_lr");
    GSQ_CHECK(warmup >= 0 && total > warmup, ErrorCode::kInvalidArgument,
              "Schedule::warmup_cosine: need 0 <= warmup < total, got warmup=" +
                  std::to_string(warmup) + " total=" + std::to_string(total));
    GSQ_CHECK(min_lr <= peak, ErrorCode::kInvalidArgument,
              "Schedule::warmup_cosine: min_lr " + std::to_string(min_lr) + " exceeds peak " +
                  std::to_string(peak));
    Schedule s;
    s.kind_ = Kind::kWarmupCosine;
    s.peak_ = peak;
    s.min_ = min_lr;
    s.warmup_ = warmup;
    s.total_ = total;
    return s;
  }

  /// The learning rate for the step that follows `step` completed steps.
  float at(std::int64_t step) const noexcept {
    if (kind_ == Kind::kConstant) return peak_;
    step = std::max<std::int64_t>(step, 0);
    if (step < warmup_)
      return static_cast<float>(static_cast<double>(peak_) * static_cast<double>(step + 1) /
                                static_cast<double>(warmup_ + 1));
    const double progress = std::min(
        1.0, static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_));
    constexpr double kPi = 3.14159265358979323846;
    return static_cast<float>(min_ + (static_cast<double>(peak_) - min_) * 0.5 *
                                         (1.0 + std::cos(kPi * progress)));
  }
  float operator()(std::int64_t step) const noexcept { return at(step); }

  Kind kind() const noexcept { return kind_; }
  float peak() const noexcept { return peak_; }
  float min_lr() const noexcept { return min_; }
  std::int64_t warmup() const noexcept { return warmup_; }
  std::int64_t total() const noexcept { return total_; }
  std::string_view name() const noexcept {
    return kind_ == Kind::kConstant ? "constant" : "warmup_cosine";
  }

 private:
  static void check_lr(float lr, const char* what) {
    GSQ_CHECK(lr >= 0.0f && std::isfinite(lr), ErrorCode::kInvalidArgument,
              std::string("Schedule::") + what + ": learning rate must be finite and >= 0, got " +
                  std::to_string(lr));
  }

  Kind kind_ = Kind::kConstant;
  float peak_ = 0.0f;
  float min_ = 0.0f;
  std::int64_t warmup_ = 0;
  std::int64_t total_ = 1;
};

}  // namespace optim
GSQ_NAMESPACE_END
