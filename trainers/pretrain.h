// The training loop shared by pretraining and fine-tuning (`fam train`): data → forward (with the
// FAM training tricks) → loss → backward → gradient checks and clipping → optimizer step, with
// metrics, periodic validation, checkpoints (atomic, verified, bit-exact resume) and signal handling.
#pragma once

#include "absl/status/status.h"
#include "trainers/run_config.h"

namespace fam {

struct TrainResult {
  int64_t final_step = 0;
  double first_val_loss = -1, last_val_loss = -1;  // < 0: no validation ran
  double last_train_loss = 0;
  std::string run_dir, last_checkpoint;
  bool interrupted = false;  // stopped by SIGTERM/SIGINT after saving a checkpoint
};

absl::StatusOr<TrainResult> RunTraining(const RunConfig& config);

}  // namespace fam
