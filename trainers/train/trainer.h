// The training loop's state and its steps (internal to trainers/train): set-up
// (trainer_setup.cc), one optimizer step (train_step.cc), checkpoints and resume
// (trainer_checkpoint.cc), and the loop with its logging (trainer.cc). What differs between
// pretraining and fine-tuning comes in as a ModelSetup (model_setup.h).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/data/loader.h"
#include "framework/dist/communicator.h"
#include "framework/dist/grad_reducer.h"
#include "framework/dist/gradient_sync.h"
#include "framework/dist/sharded_parameters.h"
#include "framework/dist/zero_optimizer.h"
#include "framework/io/checkpoint.h"
#include "framework/metrics/metrics.h"
#include "framework/optim/optimizer.h"
#include "framework/optim/schedule.h"
#include "models/fam/model.h"
#include "models/fam/training_tricks.h"
#include "trainers/train/loss_shares.h"
#include "trainers/train/model_setup.h"
#include "trainers/train/peak_flops.h"
#include "trainers/train/run_config.h"
#include "trainers/train/train_loop.h"

namespace fam {

// ZeRO-3: the model's layer hooks drive the unit gathers (units = decoder layers, then the root).
class ZeroLayerHooks : public LayerHooks {
 public:
  explicit ZeroLayerHooks(dist::ShardedParameters* sharding) : sharding_(sharding) {}
  void BeforeLayer(int64_t layer) override { sharding_->BeforeUnit(static_cast<int>(layer)); }
  Tensor AfterLayer(int64_t layer, const Tensor& output) override {
    return sharding_->AfterUnit(static_cast<int>(layer), output);
  }

 private:
  dist::ShardedParameters* sharding_;
};

// What one optimizer step reports.
struct StepOutcome {
  double loss = 0;       // mean over the step's loss weight, agreed by every rank
  double grad_norm = 0;  // global norm before clipping; NaN when the step was skipped
  bool applied = false;  // false: skipped (non-finite loss or gradient)
};

// SIGTERM or SIGINT when one arrived since the loop started (0: none); the loop checkpoints and
// exits at the end of the current step.
int StopSignalReceived();

// The optimizer of optimizer.type over `params`.
std::unique_ptr<Optimizer> MakeOptimizer(const OptimizerConfig& o,
                                         std::vector<NamedParameter> params);

class Trainer {
 public:
  Trainer(const RunConfig& config, ModelSetup& setup);

  absl::StatusOr<TrainResult> Run();
  // Ends every rank of a data-parallel job after an error this rank alone may have hit (returns
  // when the job has one rank, or when the error is known to be the same on every rank).
  void AbortIfDistributed(const absl::Status& status);

 private:
  // Set-up (trainer_setup.cc).
  absl::Status Setup();
  absl::Status SetupCommunicator();
  absl::Status SetupRun();
  absl::Status CheckHostMemory() const;
  absl::Status SetupData();
  absl::Status SetupModel();
  void SetupGradientSync();
  void SetupSharding();
  void ReportDistributed();
  void ReportSharding(const std::vector<int64_t>& optimizer_bytes);

  // One optimizer step and validation (train_step.cc).
  absl::Status TrainStep(StepOutcome* outcome);
  // Forward, loss and backward of micro-batch m (`last`: the step's last); returns its loss x its
  // loss weight.
  double ForwardBackward(const data::Batch& batch, size_t m, bool last, int64_t first_sequence,
                         const LossShares& shares);
  // Adds the step's gradient communication to the interval totals.
  void RecordCommunication(const dist::SyncStats& stats);
  // Sums the loss, squared gradient norm and stop requests over every rank (one reduction).
  StepOutcome AgreeOnStep(double weighted_loss_sum, double sum_squares, const LossShares& shares);
  absl::Status SkipStep(const StepOutcome& outcome);
  void ClipGradients(double grad_norm);
  void KeepFamState();
  absl::StatusOr<double> Validate();

  // Checkpoints and resume (trainer_checkpoint.cc).
  absl::Status MaybeResume();
  void LogResume(const std::string& path, const io::LoadedCheckpoint& checkpoint);
  absl::Status SaveCheckpoint(bool final_save);  // collective
  // Everything but the optimizer state; model: every tensor, or (owned_only) those this rank owns.
  io::CheckpointData MakeCheckpointData(bool owned_only) const;
  absl::Status WriteCheckpoint(io::CheckpointData data, bool final_save);  // unsharded: rank 0
  // ZeRO with several ranks: each rank writes the weights and optimizer state it owns.
  bool sharded_checkpoints() const {
    return world_ > 1 && config_.distributed.zero != ZeroStage::kNone;
  }
  io::ShardGroup CheckpointGroup() const;
  // The model setup's end-of-run export (LoRA adapters), from the f32 masters in bf16 runs.
  absl::Status WriteFinalExport();

  // The loop's reporting (trainer.cc).
  void LogInterval(const StepOutcome& outcome, bool last);
  absl::Status ValidateAndLog();
  void ReportRunTotals();

  bool is_root() const { return rank_ == 0; }
  // Whether this rank owns (updates, checkpoints) trainable parameter params_[i] (ZeRO 1/2/3).
  bool OwnsTrainable(size_t i) const {
    return sharding_ ? sharding_->trainable_owners()[i] == rank_ : reducer_->owns(i);
  }
  // ZeRO-3: every parameter gathered around evaluation and checkpoint writes (collective).
  void GatherFullWeights();
  void ReleaseFullWeights();
  // Model FLOPs utilisation at `tokens_per_s` (all ranks): attention over the attended span only,
  // recomputation not counted.
  double Mfu(double tokens_per_s) const {
    return tokens_per_s * config_.model.TrainingFlopsPerToken(config_.trainer.seq_len) /
           (peak_->flops_per_s * world_);
  }

  RunConfig config_;
  ModelSetup& setup_;
  std::string run_dir_;
  // Data parallelism (world_ == 1: comm_ is the local communicator and there is no reducer).
  std::shared_ptr<dist::Communicator> comm_;
  int rank_ = 0, world_ = 1;
  std::unique_ptr<dist::GradReducer> reducer_;  // DDP and ZeRO-1
  dist::Zero1Optimizer* zero_ = nullptr;        // optimizer_ when distributed.zero = zero1/2/3
  // ZeRO-2/3: gradient (and ZeRO-3 parameter) sharding by units; hooks_ when parameters are
  // sharded.
  std::unique_ptr<dist::ShardedParameters> sharding_;
  std::unique_ptr<ZeroLayerHooks> hooks_;
  std::unique_ptr<dist::GradientSync> sync_;
  bool has_val_ = false;       // validation data on some rank
  int stop_signal_ = 0;        // SIGTERM/SIGINT seen by some rank, agreed at each step
  bool agreed_error_ = false;  // the failing status is the same on every rank
  // Gradient communication per step (GradientSync stats), summed since the last log line and over
  // the whole run.
  struct CommTotals {
    double comm_s = 0, wait_s = 0;
    int steps = 0;
  };
  CommTotals interval_comm_, run_comm_;
  std::unique_ptr<FamModel> model_;
  std::unique_ptr<FamTrainingTricks> tricks_;  // RPO, RSP and the kept FAM state
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<NamedParameter> params_;
  data::DataLoader train_;
  std::vector<data::Batch> val_batches_;
  std::unique_ptr<io::CheckpointManager> checkpoints_;
  MetricsWriter metrics_;
  ScheduleOptions schedule_;

  int64_t step_ = 0;  // optimizer steps completed
  int64_t tokens_seen_ = 0;
  int consecutive_skips_ = 0;
  double elapsed_before_ = 0;           // training seconds of earlier runs of this job (resume)
  std::string tokenizer_bytes_;         // data.tokenizer, copied into every checkpoint
  std::string tokenizer_config_bytes_;  // the tokenizer_config.json beside a tokenizer.json
  std::optional<PeakFlops> peak_;       // of this rank's device; none on the CPU (no MFU then)
  // The loop's log interval (trainer.cc).
  struct Interval {
    double loss = 0;
    int steps = 0;
    int64_t tokens_at_start = 0;
  };
  Interval interval_;
  Stopwatch interval_clock_, run_clock_;
  TrainResult result_;
};

}  // namespace fam
