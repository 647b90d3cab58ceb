// Learning-rate schedules: warmup, constant / cosine / linear decay, validation and parsing.
#include "framework/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "framework/core/error.h"

namespace fam {

absl::StatusOr<ScheduleType> ParseScheduleType(std::string_view name) {
  if (name == "constant") return ScheduleType::kConstant;
  if (name == "cosine") return ScheduleType::kCosine;
  if (name == "linear") return ScheduleType::kLinear;
  return absl::InvalidArgumentError(absl::StrCat("unknown schedule type '", std::string(name),
                                                 "' (expected constant, cosine or linear)"));
}

const char* ScheduleTypeName(ScheduleType type) {
  switch (type) {
    case ScheduleType::kConstant:
      return "constant";
    case ScheduleType::kCosine:
      return "cosine";
    case ScheduleType::kLinear:
      return "linear";
  }
  return "?";
}

absl::Status ValidateSchedule(const ScheduleOptions& options) {
  if (!(options.lr >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("schedule: lr = ", options.lr, " must be >= 0"));
  }
  if (options.warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("schedule: warmup_steps = ", options.warmup_steps, " must be >= 0"));
  }
  if (!(options.min_lr_ratio >= 0 && options.min_lr_ratio <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("schedule: min_lr_ratio = ", options.min_lr_ratio, " is outside [0, 1]"));
  }
  if (options.type != ScheduleType::kConstant && options.decay_steps < options.warmup_steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "schedule: decay_steps = ", options.decay_steps, " is less than warmup_steps = ",
        options.warmup_steps, " for a ", ScheduleTypeName(options.type), " schedule"));
  }
  return absl::OkStatus();
}

double LearningRate(const ScheduleOptions& options, int64_t step) {
  ThrowIfError(ValidateSchedule(options));
  FAM_CHECK(step >= 0, "schedule: step ", step, " must be >= 0");
  const double lr = options.lr;
  if (step < options.warmup_steps) {
    return lr * static_cast<double>(step + 1) / static_cast<double>(options.warmup_steps);
  }
  if (options.type == ScheduleType::kConstant) return lr;
  const double min_lr = options.min_lr_ratio * lr;
  const int64_t span = options.decay_steps - options.warmup_steps;
  if (step >= options.decay_steps || span <= 0) return min_lr;
  const double progress =
      static_cast<double>(step - options.warmup_steps) / static_cast<double>(span);
  if (options.type == ScheduleType::kLinear) return lr - (lr - min_lr) * progress;
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace fam
