// The pretraining and fine-tuning model-setup policies of the training loop, and the one-argument
// RunTraining that picks between them.
#include <memory>

#include "models/fam/lora.h"
#include "trainers/train/finetune.h"
#include "trainers/train/model_setup.h"
#include "trainers/train/train_loop.h"

namespace fam {
namespace {

// Fresh weights (BuildModelForRun initialises them from trainer.seed); every parameter trains and
// every parameter is checkpointed.
class PretrainingSetup : public ModelSetup {
 public:
  explicit PretrainingSetup(const RunConfig& config) : config_(config) {}

  absl::StatusOr<std::unique_ptr<FamModel>> BuildModel(std::vector<std::string>* notes) override {
    return BuildModelForRun(config_, notes);
  }
  std::vector<NamedParameter> TrainableParameters(const FamModel& model) const override {
    return ::fam::TrainableParameters(model, config_.optimizer);
  }
  std::optional<data::RoleWeights> LoaderRoleWeights() const override {
    return ::fam::LoaderRoleWeights(config_);
  }
  void FillCheckpoint(const FamModel& model, io::CheckpointData* data) const override {
    FillModelCheckpoint(model, nullptr, data);
  }
  absl::Status RestoreCheckpoint(FamModel& model,
                                 const io::LoadedCheckpoint& checkpoint) const override {
    return RestoreModelCheckpoint(model, checkpoint);
  }
  void BeforeTrainingMicroBatch(FamModel&, uint64_t, uint64_t) const override {}
  void BeforeEvaluation(FamModel&) const override {}
  bool HasFinalExport(const FamModel&) const override { return false; }
  std::vector<std::pair<std::string, Tensor>> FinalExportTensors(const FamModel&) const override {
    return {};
  }
  absl::Status WriteFinalExport(const FamModel&, const std::string&,
                                std::vector<std::pair<std::string, Tensor>>*) const override {
    return absl::OkStatus();
  }

 protected:
  const RunConfig& config() const { return config_; }

 private:
  RunConfig config_;
};

// Base weights + LoRA adapters: adapter-only checkpoints with the base's fingerprint, dropout on
// the adapters while training, adapters.safetensors (for `fam export --merge`) at the end.
class LoraFineTuningSetup final : public PretrainingSetup {
 public:
  using PretrainingSetup::PretrainingSetup;

  absl::StatusOr<std::unique_ptr<FamModel>> BuildModel(std::vector<std::string>* notes) override {
    absl::StatusOr<std::unique_ptr<FamModel>> model = BuildModelForRun(config(), notes);
    // Hashes every base value: once, here.
    if (model.ok()) lora_state_ = CheckpointLoraState(**model, config());
    return model;
  }
  void FillCheckpoint(const FamModel& model, io::CheckpointData* data) const override {
    FillModelCheckpoint(model, lora_state_, data);
  }
  void BeforeTrainingMicroBatch(FamModel& model, uint64_t seed,
                                uint64_t first_sequence) const override {
    // Dropout masks keyed by the micro-batch's first sequence (distinct per micro-batch and rank).
    if (HasLora(model)) SetLoraDropout(model, true, seed, first_sequence);
  }
  void BeforeEvaluation(FamModel& model) const override {
    if (HasLora(model)) SetLoraDropout(model, false, 0, 0);
  }
  bool HasFinalExport(const FamModel& model) const override { return HasLora(model); }
  std::vector<std::pair<std::string, Tensor>> FinalExportTensors(
      const FamModel& model) const override {
    return LoraTrainableParameters(model);
  }
  absl::Status WriteFinalExport(
      const FamModel& model, const std::string& run_dir,
      std::vector<std::pair<std::string, Tensor>>* tensors) const override {
    // The adapters alone, with the fingerprint of their base.
    return SaveLoraAdapters(model, run_dir + "/adapters.safetensors",
                            config().finetune.base_weights, tensors);
  }

 private:
  nlohmann::json lora_state_;  // adapter settings + base fingerprint, recorded in checkpoints
};

}  // namespace

std::unique_ptr<ModelSetup> MakeModelSetup(const RunConfig& config) {
  if (config.trainer.type == TrainerType::kFinetune)
    return std::make_unique<LoraFineTuningSetup>(config);
  return std::make_unique<PretrainingSetup>(config);
}

absl::StatusOr<TrainResult> RunTraining(const RunConfig& config) {
  std::unique_ptr<ModelSetup> setup = MakeModelSetup(config);
  return RunTraining(config, *setup);
}

}  // namespace fam
