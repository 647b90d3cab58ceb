// The training loop (`fam train`): set up, then step → log → validate → checkpoint until
// trainer.steps or a stop signal, then the final checkpoint and export.
#include "trainers/train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/backends/registry.h"
#include "framework/dist/collective_helpers.h"
#include "framework/io/atomic_file.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

// Set by SIGTERM/SIGINT; the loop checkpoints and exits at the end of the current step.
std::atomic<int> g_stop_signal{0};
extern "C" void OnStopSignal(int sig) { g_stop_signal.store(sig); }

}  // namespace

int StopSignalReceived() { return g_stop_signal.load(); }

absl::StatusOr<TrainResult> Trainer::Run() {
  if (absl::Status s = Setup(); !s.ok()) return s;  // includes the resume
  absl::Status written;
  if (is_root())
    written = io::WriteFileAtomic((fs::path(run_dir_) / "config.yaml").string(),
                                  RunConfigToYaml(config_));
  if (absl::Status s = dist::AgreeOnStatus(*comm_, written, "to write config.yaml"); !s.ok())
    return s;
  const TrainerConfig& t = config_.trainer;
  std::cout << absl::StrFormat(
      "run %s: %s, %d parameters, %d train windows of %d tokens, %d steps x %d sequences, on "
      "%s%s\n",
      run_dir_, AttentionTypeName(config_.model.attention.type), model_->ParameterCount(),
      train_.NumWindows(), t.seq_len, t.steps, t.global_batch, GetBackend(model_->device()).name(),
      world_ > 1 ? absl::StrCat(" (rank 0 of ", world_, ", ", comm_->backend_name(), ")") : "");
  g_stop_signal.store(0);
  auto previous_term = std::signal(SIGTERM, OnStopSignal);
  auto previous_int = std::signal(SIGINT, OnStopSignal);

  absl::Status status;
  if (step_ == 0) status = ValidateAndLog();
  run_clock_.Reset();
  interval_clock_.Reset();
  interval_ = Interval{0, 0, tokens_seen_};
  while (status.ok() && step_ < t.steps) {
    StepOutcome outcome;
    status = TrainStep(&outcome);
    if (!status.ok()) break;
    const bool last = step_ == t.steps;
    LogInterval(outcome, last);
    if ((t.eval_interval > 0 && step_ % t.eval_interval == 0) || last) {
      status = ValidateAndLog();
      if (!status.ok()) break;
    }
    // With several ranks, the signal seen by any rank at the end of this step (agreed in
    // TrainStep).
    const int sig = world_ > 1 ? stop_signal_ : g_stop_signal.load();
    if (sig != 0) {
      std::cout << "\nreceived " << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
                << ": saving a checkpoint at step " << step_ << " and exiting\n";
      result_.interrupted = true;
      break;
    }
    if (!last && config_.checkpoint.interval > 0 && step_ % config_.checkpoint.interval == 0) {
      elapsed_before_ += run_clock_.Seconds();
      run_clock_.Reset();
      status = SaveCheckpoint(false);
    }
  }
  std::signal(SIGTERM, previous_term);
  std::signal(SIGINT, previous_int);
  if (!status.ok()) {
    checkpoints_->Wait().IgnoreError();
    AbortIfDistributed(status);
    return status;  // the last saved checkpoint stays as it was
  }
  elapsed_before_ += run_clock_.Seconds();
  if (config_.checkpoint.save_final || result_.interrupted) {
    if (absl::Status s = SaveCheckpoint(true); !s.ok()) return s;
  }
  if (absl::Status s = WriteFinalExport(); !s.ok()) {
    AbortIfDistributed(s);
    return s;
  }
  result_.final_step = step_;
  ReportRunTotals();
  return result_;
}

// Accumulates the step into the log interval; at each trainer.log_interval (and the last step)
// writes a metrics line and the progress line.
void Trainer::LogInterval(const StepOutcome& outcome, bool last) {
  if (outcome.applied) {
    interval_.loss += outcome.loss;
    ++interval_.steps;
    result_.last_train_loss = outcome.loss;
  }
  const TrainerConfig& t = config_.trainer;
  if (interval_.steps == 0 || (step_ % t.log_interval != 0 && !last)) return;
  const double seconds = interval_clock_.Seconds();
  const double tps = (tokens_seen_ - interval_.tokens_at_start) / std::max(seconds, 1e-9);
  const double avg = interval_.loss / interval_.steps;
  const double lr = LearningRate(schedule_, step_ - 1);
  nlohmann::json line = {{"kind", "train"},
                         {"step", step_},
                         {"loss", avg},
                         {"lr", lr},
                         {"grad_norm", outcome.grad_norm},
                         {"tokens", tokens_seen_},
                         {"tokens_per_s", tps},
                         {"mfu", peak_ ? nlohmann::json(Mfu(tps)) : nlohmann::json(nullptr)},
                         {"elapsed_s", elapsed_before_ + run_clock_.Seconds()}};
  if (interval_comm_.steps > 0) {
    // Per step: seconds of gradient communication, and the part backward did not hide.
    line["comm_s"] = interval_comm_.comm_s / interval_comm_.steps;
    line["comm_wait_s"] = interval_comm_.wait_s / interval_comm_.steps;
    line["world_size"] = world_;
  }
  run_comm_.comm_s += interval_comm_.comm_s;
  run_comm_.wait_s += interval_comm_.wait_s;
  run_comm_.steps += interval_comm_.steps;
  interval_comm_ = CommTotals();
  metrics_.Write(line);
  ProgressFields p;
  p.step = step_;
  p.total_steps = t.steps;
  p.loss = avg;
  p.lr = lr;
  p.grad_norm = outcome.grad_norm;
  p.tokens_per_s = tps;
  if (peak_) p.mfu = Mfu(tps);
  p.eta_s = seconds / interval_.steps * static_cast<double>(t.steps - step_);
  if (is_root()) PrintProgress(p, last);
  interval_clock_.Reset();
  interval_ = Interval{0, 0, tokens_seen_};
}

// Validation loss and perplexity into the result, metrics.jsonl and the console (no-op without
// validation data).
absl::Status Trainer::ValidateAndLog() {
  if (!has_val_) return absl::OkStatus();
  absl::StatusOr<double> v = Validate();
  if (!v.ok()) return v.status();
  result_.last_val_loss = *v;
  if (result_.first_val_loss < 0) result_.first_val_loss = *v;
  metrics_.Write({{"kind", "eval"}, {"step", step_}, {"val_loss", *v}, {"val_ppl", std::exp(*v)}});
  std::cout << absl::StrFormat("%sstep %d: val loss %.4f (ppl %.1f)\n",
                               step_ > 0 && isatty(1) ? "\n" : "", step_, *v, std::exp(*v));
  return absl::OkStatus();
}

// The run's communication and ZeRO memory totals (collective under ZeRO-2/3).
void Trainer::ReportRunTotals() {
  if (run_comm_.steps > 0) {
    const double comm = run_comm_.comm_s / run_comm_.steps,
                 wait = run_comm_.wait_s / run_comm_.steps;
    std::cout << absl::StrFormat(
        "distributed: %d ranks, gradient communication %.2f ms/step, of which %.2f ms/step not "
        "hidden behind backward (%.0f%% overlapped)\n",
        world_, 1e3 * comm, 1e3 * wait, comm > 0 ? 100.0 * std::max(0.0, 1.0 - wait / comm) : 0.0);
  }
  if (sharding_) {
    // Measured peaks per rank over the run (a collective): gathered parameters and gradients.
    const dist::ShardingStats& st = sharding_->stats();
    std::vector<int64_t> peaks(2 * world_, 0);
    peaks[2 * rank_] = st.peak_gathered_bytes;
    peaks[2 * rank_ + 1] = st.peak_grad_bytes;
    peaks = dist::AllReduceInts(*comm_, peaks);
    std::string per_rank;
    for (int r = 0; r < world_; ++r)
      absl::StrAppend(&per_rank, r == 0 ? "" : "; ", "rank ", r, ": gathered parameters ",
                      dist::FormatBytes(static_cast<double>(peaks[2 * r])), ", gradients ",
                      dist::FormatBytes(static_cast<double>(peaks[2 * r + 1])));
    std::cout << absl::StrFormat(
        "zero: peak memory beyond the persistent shards (%s); %d unit gathers, %d prefetched (%d "
        "complete when needed), %d gradient reduce-scatters\n",
        per_rank, st.gathers, st.prefetched, st.prefetch_ready, st.reduce_scatters);
  }
}

void Trainer::AbortIfDistributed(const absl::Status& status) {
  if (world_ <= 1 || agreed_error_ || status.ok()) return;
  comm_->Abort(absl::StrCat("training failed, stopping every rank: ", status.message()),
               ExitCode(status));
}

absl::StatusOr<TrainResult> RunTraining(const RunConfig& config, ModelSetup& setup) {
  Trainer trainer(config, setup);
  absl::StatusOr<TrainResult> result;
  absl::Status s = CatchToStatus([&] { result = trainer.Run(); });
  if (!s.ok()) {
    trainer.AbortIfDistributed(s);  // an exception on this rank alone: end the whole job
    return s;
  }
  return result;
}

}  // namespace fam
