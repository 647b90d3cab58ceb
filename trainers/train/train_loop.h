// The training loop shared by pretraining and fine-tuning (`fam train`): next batch → forward
// options (the FAM training tricks, models/fam/training_tricks.h) → forward/loss/backward per
// micro-batch → gradient sync (framework/dist/gradient_sync.h) → skip policy → clip → optimizer
// step (trainers/train/train_step.cc), with metrics, periodic validation, checkpoints (atomic,
// verified, bit-exact resume) and signal handling. What differs between pretraining and
// fine-tuning is a ModelSetup policy (trainers/train/model_setup.h) handed to the loop.
//
// Data parallel (docs/distributed.md): under mpirun/srun every rank runs this loop on its own slice
// of each global batch; gradients are reduced in buckets during the last micro-batch's backward
// (framework/dist/grad_reducer.h), optionally with ZeRO-1 optimizer-state sharding
// (distributed.zero: zero1). Loss, gradient norm, non-finite checks, the stop signal and the
// kept FAM state are agreed by all ranks each step, so every rank takes the same decisions. Only
// rank 0 writes metrics, config.yaml and checkpoints (the optimizer state gathered, unsharded), and
// prints: std::cout is silenced on the other ranks for the rest of the process. A run resumes
// with any world size that divides the global batch. An error on one rank during training ends
// the whole job (MPI_Abort) with a message naming the rank.
#pragma once

#include "absl/status/status.h"
#include "trainers/train/run_config.h"

namespace fam {

struct TrainResult {
  int64_t final_step = 0;
  double first_val_loss = -1, last_val_loss = -1;  // < 0: no validation ran
  double last_train_loss = -1;  // < 0: no step applied (nor recorded in the resumed checkpoint)
  std::string run_dir, last_checkpoint;
  bool interrupted = false;       // stopped by SIGTERM/SIGINT after saving a checkpoint
  int rank = 0, world_size = 1;   // this process in a data-parallel job
  Device device = Device::CPU();  // where this rank's model ran
};

class ModelSetup;  // trainers/train/model_setup.h

// Trains with `setup` deciding how the model is built, what trains and what checkpoints hold.
absl::StatusOr<TrainResult> RunTraining(const RunConfig& config, ModelSetup& setup);
// The same with MakeModelSetup(config): pretraining or fine-tuning by trainer.type.
absl::StatusOr<TrainResult> RunTraining(const RunConfig& config);

}  // namespace fam
