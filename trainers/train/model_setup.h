// What a training run does with its model that differs between pretraining and fine-tuning, as one
// policy the training loop (trainers/train/trainer.h) is handed: how the model is built, which
// parameters train, the loader's loss weights, what checkpoints hold of the model, per-micro-batch
// and evaluation switches (LoRA dropout), and what is written beside the run at its end (the
// adapters). The loop knows nothing else about either kind of run.
//
//   pretraining   fresh weights from trainer.seed; every parameter trains; full checkpoints.
//   fine-tuning   base weights + LoRA adapters (trainers/train/finetune.h); adapter-only
//                 checkpoints carrying the base's fingerprint; adapters.safetensors at the end.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/data/weight_shard.h"
#include "framework/io/checkpoint.h"
#include "framework/optim/optimizer.h"
#include "models/fam/model.h"
#include "trainers/train/run_config.h"

namespace fam {

class ModelSetup {
 public:
  virtual ~ModelSetup() = default;

  // The run's model on the host, in trainer.precision; `notes` receives lines worth printing.
  virtual absl::StatusOr<std::unique_ptr<FamModel>> BuildModel(std::vector<std::string>* notes) = 0;
  // The parameters the optimizer holds, in registration order, with their weight-decay flags.
  virtual std::vector<NamedParameter> TrainableParameters(const FamModel& model) const = 0;
  // Loss weights of the loader's role classes; unset: the weight shards' own weights apply.
  virtual std::optional<data::RoleWeights> LoaderRoleWeights() const = 0;
  // Sets data->model (and what trainer_state records of it). Call after data->trainer_state is set.
  virtual void FillCheckpoint(const FamModel& model, io::CheckpointData* data) const = 0;
  // Restores the model part of a checkpoint (errors name the checkpoint).
  virtual absl::Status RestoreCheckpoint(FamModel& model,
                                         const io::LoadedCheckpoint& checkpoint) const = 0;
  // Before each training micro-batch: `first_sequence` numbers its first sequence in the step's
  // global batch, across steps (step * global_batch + index), so draws keyed by it do not depend
  // on the world size.
  virtual void BeforeTrainingMicroBatch(FamModel& model, uint64_t seed,
                                        uint64_t first_sequence) const = 0;
  // Before evaluating (no dropout).
  virtual void BeforeEvaluation(FamModel& model) const = 0;
  // Whether the run writes tensors beside its checkpoints when it ends (the same on every rank).
  virtual bool HasFinalExport(const FamModel& model) const = 0;
  // The tensors of that export, by name (read on rank 0, with every parameter gathered).
  virtual std::vector<std::pair<std::string, Tensor>> FinalExportTensors(
      const FamModel& model) const = 0;
  // Writes them (rank 0): `tensors` as returned above, bf16 ones replaced by their f32 masters.
  virtual absl::Status WriteFinalExport(
      const FamModel& model, const std::string& run_dir,
      std::vector<std::pair<std::string, Tensor>>* tensors) const = 0;
};

// The policy for config.trainer.type: pretraining or fine-tuning.
std::unique_ptr<ModelSetup> MakeModelSetup(const RunConfig& config);

}  // namespace fam
