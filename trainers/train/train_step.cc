// One optimizer step of the training loop, as a short sequence of named calls, and validation.
#include <cmath>
#include <csignal>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/dist/collective_helpers.h"
#include "framework/ops/ops.h"
#include "framework/optim/grad_clip.h"
#include "trainers/train/trainer.h"

namespace fam {

absl::Status Trainer::TrainStep(StepOutcome* outcome) {
  absl::StatusOr<std::vector<data::Batch>> micro = train_.NextStep();
  if (!micro.ok()) return micro.status();
  optimizer_->ZeroGrad();
  const LossShares shares = ShareLoss(
      *micro, world_, [this](double local) { return dist::AllReduceDoubles(*comm_, {local})[0]; });
  tricks_->BeginStep(step_);
  // Sequences are numbered across the global batch (rank r holds a contiguous block of them), so
  // the random draws keyed by them do not depend on the world size.
  int64_t first_sequence = rank_ * (config_.trainer.global_batch / world_);
  double weighted_loss_sum = 0;
  for (size_t m = 0; m < micro->size(); ++m) {
    const bool last = m + 1 == micro->size();
    weighted_loss_sum += ForwardBackward((*micro)[m], m, last, first_sequence, shares);
    first_sequence += (*micro)[m].inputs.size(0);
  }
  const double sum_squares = sync_->Finish(params_);
  RecordCommunication(sync_->last_stats());
  *outcome = AgreeOnStep(weighted_loss_sum, sum_squares, shares);
  if (!outcome->applied) return SkipStep(*outcome);
  consecutive_skips_ = 0;
  ClipGradients(outcome->grad_norm);
  optimizer_->Step(LearningRate(schedule_, step_));  // ZeRO-1: owned update, then all-gather
  optimizer_->ZeroGrad();
  KeepFamState();
  ++step_;
  return absl::OkStatus();
}

double Trainer::ForwardBackward(const data::Batch& batch, size_t m, bool last,
                                int64_t first_sequence, const LossShares& shares) {
  const TrainerConfig& t = config_.trainer;
  ForwardOptions fo;
  fo.recompute = t.recompute;
  fo.compute_logits = t.loss_chunk_tokens == 0;  // else the chunked head computes the loss
  fo.hooks = hooks_.get();  // ZeRO-3: each layer's parameters gathered around its use
  tricks_->ApplyTo(first_sequence, batch.inputs.size(0), &fo);
  sync_->BeginMicroBatch(last);
  setup_.BeforeTrainingMicroBatch(*model_, t.seed,
                                  static_cast<uint64_t>(step_ * t.global_batch + first_sequence));
  ForwardResult out = model_->Forward(batch.inputs, fo);
  Tensor loss = fo.compute_logits ? model_->Loss(out.logits, batch.targets, batch.weights)
                                  : model_->LossFromHidden(out.hidden, batch.targets, batch.weights,
                                                           t.loss_chunk_tokens);
  ops::Scale(loss, shares.BackwardScale(m, world_)).backward();
  sync_->EndMicroBatch();
  if (m == 0) tricks_->CaptureState(out);
  tokens_seen_ += batch.inputs.numel() * world_;
  return loss.item() * shares.micro_weight[m];
}

void Trainer::RecordCommunication(const dist::SyncStats& stats) {
  if (!stats.communicated) return;
  interval_comm_.comm_s += stats.comm_s;
  interval_comm_.wait_s += stats.wait_s;
  interval_comm_.steps += 1;
}

StepOutcome Trainer::AgreeOnStep(double weighted_loss_sum, double sum_squares,
                                 const LossShares& shares) {
  const int sig = StopSignalReceived();
  std::vector<double> agreed = {weighted_loss_sum, sum_squares, sig == SIGTERM ? 1.0 : 0.0,
                                sig == SIGINT ? 1.0 : 0.0};
  if (world_ > 1) agreed = dist::AllReduceDoubles(*comm_, agreed);
  stop_signal_ = agreed[2] > 0 ? SIGTERM : agreed[3] > 0 ? SIGINT : 0;
  StepOutcome outcome;
  outcome.loss = shares.StepLoss(agreed[0]);
  outcome.grad_norm = std::sqrt(agreed[1]);
  outcome.applied = std::isfinite(outcome.loss) && std::isfinite(outcome.grad_norm);
  if (!outcome.applied) outcome.grad_norm = NAN;
  return outcome;
}

// A non-finite loss or gradient: the data was consumed, so the step counts, but the weights stay;
// too many in a row stop the run.
absl::Status Trainer::SkipStep(const StepOutcome& outcome) {
  ++consecutive_skips_;
  optimizer_->ZeroGrad();
  metrics_.Write({{"kind", "event"},
                  {"step", step_ + 1},
                  {"event", "skipped_step"},
                  {"reason", "non-finite loss or gradient"},
                  {"loss", std::isfinite(outcome.loss) ? outcome.loss : -1.0},
                  {"consecutive", consecutive_skips_}});
  if (is_root())
    std::cerr << "\nwarning: step " << step_ + 1 << " skipped: non-finite loss or gradient ("
              << consecutive_skips_ << " in a row)\n";
  const int64_t limit = config_.trainer.max_consecutive_skips;
  if (consecutive_skips_ >= limit) {
    agreed_error_ = true;  // every rank saw the same reduced loss and norm
    return absl::AbortedError(absl::StrCat(
        "stopping: ", consecutive_skips_,
        " consecutive steps with a non-finite loss or gradient (trainer.max_consecutive_skips = ",
        limit, "); lower optimizer.lr or check the data"));
  }
  ++step_;
  return absl::OkStatus();
}

// Global-norm clipping (as ClipGradNorm, with the norm agreed by every rank).
void Trainer::ClipGradients(double grad_norm) {
  const double max_norm = config_.optimizer.grad_clip;
  if (max_norm > 0 && grad_norm > max_norm) ScaleGrads(params_, max_norm / grad_norm);
}

// Random State Passing keeps the state of the first sequence of the global batch: rank 0's.
void Trainer::KeepFamState() {
  if (!tricks_->enabled()) return;
  if (world_ > 1) dist::BroadcastTensors(*comm_, tricks_->pending_state(), 0);
  tricks_->CommitStep();
}

absl::StatusOr<double> Trainer::Validate() {
  if (!has_val_) return -1.0;
  NoGradGuard no_grad;
  double total = 0;
  setup_.BeforeEvaluation(*model_);
  GatherFullWeights();  // ZeRO-3: evaluation sees every parameter
  const int64_t chunk = config_.trainer.loss_chunk_tokens;
  ForwardOptions fo;
  fo.compute_logits = chunk == 0;
  for (const data::Batch& b : val_batches_) {
    ForwardResult out = model_->Forward(b.inputs, fo);
    total += (chunk == 0 ? model_->Loss(out.logits, b.targets, b.weights)
                         : model_->LossFromHidden(out.hidden, b.targets, b.weights, chunk))
                 .item();
  }
  ReleaseFullWeights();
  double count = static_cast<double>(val_batches_.size());
  if (world_ > 1) {
    // Each rank evaluated its share of the validation batches.
    std::vector<double> sums = dist::AllReduceDoubles(*comm_, {total, count});
    total = sums[0];
    count = sums[1];
  }
  return total / count;
}

}  // namespace fam
