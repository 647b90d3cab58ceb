// The FAM training tricks of the paper (FAM_SPEC.md): Random Position Offset (RPO) and Random State
// Passing (RSP), owned in one place for the training loop.
//
// RPO: each sequence's positions are shifted by a draw in [0, floor(2π·rope_base)), or not shifted
// at all with probability 1/2. RSP: once per step, with probability state_passing_prob, every
// sequence starts from the kept FAM state instead of the learned initial one; the kept state is
// the final FAM state of the first sequence of the global batch of the previous applied step.
// Every draw is a pure function of (trainer.seed, step, sequence number in the global batch), so
// a resumed run or one with another world size draws the same numbers.
//
// The loop's calls: BeginStep(step) → per micro-batch ApplyTo(first_sequence, count, &options),
// forward, and CaptureState(result) on the first micro-batch → after the optimizer step
// pending_state() is agreed across ranks (rank 0's) and CommitStep() keeps it.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "models/fam/model.h"
#include "models/fam/model_config.h"

namespace fam {

class FamTrainingTricks {
 public:
  // `global_batch`: sequences per step over every rank (the draws' numbering of sequences).
  FamTrainingTricks(const ModelConfig& model, uint64_t seed, int64_t global_batch);

  // Whether the model has FAM rows (without them neither trick nor the kept state applies).
  bool enabled() const { return is_fam_; }

  // Draws whether this step passes the kept state (RSP).
  void BeginStep(int64_t step);
  // Sets options->position_offsets for the global-batch sequences [first_sequence,
  // first_sequence + count) (RPO) and options->initial_state when this step passes state.
  void ApplyTo(int64_t first_sequence, int64_t count, ForwardOptions* options) const;
  // Keeps the final state of the first sequence of `result` (the step's first micro-batch) until
  // CommitStep.
  void CaptureState(const ForwardResult& result);
  // The state captured this step; the loop replaces it by rank 0's before CommitStep.
  std::vector<Tensor>& pending_state() { return pending_; }
  // The step was applied: the captured state becomes the kept state.
  void CommitStep() { kept_ = pending_; }

  // Checkpoint entries "fam_state.layers.<l>" of the kept state (empty before the first step).
  std::vector<std::pair<std::string, Tensor>> CheckpointTensors() const;
  // Restores the kept state from a checkpoint's extra tensors, converted to `dtype` and moved to
  // `model`'s device; none found leaves no kept state.
  void RestoreCheckpointTensors(const std::map<std::string, Tensor>& extra, const FamModel& model,
                                DType dtype);

 private:
  bool is_fam_;
  bool random_position_offset_;
  double state_passing_prob_;
  double rope_base_;
  int64_t n_layers_;
  uint64_t seed_;
  int64_t global_batch_;
  int64_t step_ = 0;
  bool pass_state_ = false;
  std::vector<Tensor> kept_;     // per layer [1, F, d], no gradient
  std::vector<Tensor> pending_;  // captured this step
};

}  // namespace fam
