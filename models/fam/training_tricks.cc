// Random Position Offset and Random State Passing draws, and the kept FAM state.
#include "models/fam/training_tricks.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "framework/core/rng.h"
#include "framework/ops/ops.h"

namespace fam {
namespace {

// Philox streams of the draws (keyed by step and sequence, so a resume draws the same numbers).
constexpr uint64_t kStreamPositionOffset = 0x5057000000000001ull;
constexpr uint64_t kStreamStatePassing = 0x5057000000000002ull;

std::string StateName(size_t layer) { return absl::StrCat("fam_state.layers.", layer); }

}  // namespace

FamTrainingTricks::FamTrainingTricks(const ModelConfig& model, uint64_t seed, int64_t global_batch)
    : is_fam_(model.fam_rows() > 0),
      random_position_offset_(model.training.random_position_offset),
      state_passing_prob_(model.training.state_passing_prob),
      rope_base_(model.rope_base),
      n_layers_(model.n_layers),
      seed_(seed),
      global_batch_(global_batch) {}

void FamTrainingTricks::BeginStep(int64_t step) {
  step_ = step;
  pass_state_ = is_fam_ && !kept_.empty() && state_passing_prob_ > 0 &&
                UniformAt(seed_, kStreamStatePassing, step) < state_passing_prob_;
  pending_.clear();
}

void FamTrainingTricks::ApplyTo(int64_t first_sequence, int64_t count,
                                ForwardOptions* options) const {
  if (random_position_offset_) {
    const uint64_t range = static_cast<uint64_t>(std::floor(2 * M_PI * rope_base_));
    for (int64_t i = 0; i < count; ++i) {
      const uint64_t key = static_cast<uint64_t>(step_ * global_batch_ + first_sequence + i);
      const bool zero = UniformAt(seed_, kStreamPositionOffset, 2 * key) < 0.5f;
      const uint64_t bits = Philox(seed_, kStreamPositionOffset, (uint64_t{1} << 40) + key)[0];
      options->position_offsets.push_back(zero ? 0 : static_cast<int64_t>(bits % range));
    }
  }
  if (pass_state_) options->initial_state = kept_;
}

void FamTrainingTricks::CaptureState(const ForwardResult& result) {
  if (!is_fam_) return;
  pending_.clear();
  for (const Tensor& s : result.final_state)
    pending_.push_back(ops::Clone(ops::Slice(s, 0, 0, 1).detach()));
}

std::vector<std::pair<std::string, Tensor>> FamTrainingTricks::CheckpointTensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t l = 0; l < kept_.size(); ++l) out.emplace_back(StateName(l), kept_[l]);
  return out;
}

void FamTrainingTricks::RestoreCheckpointTensors(const std::map<std::string, Tensor>& extra,
                                                 const FamModel& model, DType dtype) {
  kept_.clear();
  for (int64_t l = 0; l < n_layers_; ++l) {
    auto it = extra.find(StateName(static_cast<size_t>(l)));
    if (it == extra.end()) break;
    // In the run's precision (a checkpoint of a run with another trainer.precision is converted).
    Tensor state = model.OnDevice(ops::Clone(it->second));
    if (state.dtype() != dtype) state = ops::Cast(state, dtype);
    kept_.push_back(state);
  }
}

}  // namespace fam
