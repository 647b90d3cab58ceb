// Learning-rate schedules: linear warmup, then constant, cosine or linear decay to a floor.
// `step` counts updates from 0 (the first Step() uses LearningRate(options, 0)).
//   warmup (step < warmup_steps):  lr · (step + 1) / warmup_steps
//   constant:                      lr after warmup
//   cosine / linear:               from lr at step warmup_steps down to min_lr_ratio · lr at step
//                                  decay_steps (cosine: half a cosine wave; linear: a straight
//                                  line), then flat at min_lr_ratio · lr
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fam {

enum class ScheduleType { kConstant, kCosine, kLinear };

struct ScheduleOptions {
  ScheduleType type = ScheduleType::kConstant;
  double lr = 1e-3;  // peak learning rate
  int64_t warmup_steps = 0;
  int64_t decay_steps = 0;    // the step where decay ends (counted from 0, includes warmup)
  double min_lr_ratio = 0.0;  // floor as a fraction of lr
};

// "constant" | "cosine" | "linear".
absl::StatusOr<ScheduleType> ParseScheduleType(std::string_view name);
const char* ScheduleTypeName(ScheduleType type);

// OK, or InvalidArgument naming the field: lr < 0, warmup_steps < 0, min_lr_ratio outside [0, 1],
// or (cosine/linear) decay_steps < warmup_steps.
absl::Status ValidateSchedule(const ScheduleOptions& options);

// The learning rate for update number `step` (>= 0). Throws fam::Error for invalid options.
double LearningRate(const ScheduleOptions& options, int64_t step);

}  // namespace fam
