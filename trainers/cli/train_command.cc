// `fam train --config <yaml> [--set a.b=c ...]`: pretraining (and, later, fine-tuning) from a
// config.
#include <cmath>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/backends/cuda/cuda_probe.h"
#include "framework/dist/collective_helpers.h"
#include "framework/dist/env.h"
#include "trainers/cli/commands.h"
#include "trainers/train/memory_plan.h"
#include "trainers/train/portable_checkpoint.h"
#include "trainers/train/train_loop.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

// The start check (docs/memory.md): on CUDA, or whenever trainer.memory_budget_gb is set, the
// memory planner's estimate for this world size must fit the budget; otherwise the run is refused
// with the breakdown and the settings `fam plan` suggests, instead of dying with OOM later. An
// unset trainer.micro_batch is derived here as the largest that fits.
absl::Status CheckMemoryPlan(RunConfig& config) {
  double budget = config.trainer.memory_budget_gb * 1024.0 * 1024.0 * 1024.0;
  if (budget <= 0) {
    if (config.trainer.device == DeviceType::kCPU) return absl::OkStatus();
    budget = static_cast<double>(CudaDeviceMemoryBytes(0));
    if (budget <= 0) return absl::OkStatus();  // no device: the trainer's own check says why
  }
  absl::StatusOr<dist::DistEnv> env = dist::DiscoverEnv();
  const int world = env.ok() ? env->world_size : 1;
  const bool root = !env.ok() || env->rank == 0;
  if (config.trainer.global_batch % world != 0) return absl::OkStatus();  // the trainer explains
  absl::StatusOr<MemoryPlan> plan = PlanMemory(config, world, budget);
  if (!plan.ok()) return plan.status();
  if (!plan->configured_fits && config.trainer.micro_batch == 0) {
    // A derived micro-batch: the largest divisor of each rank's share that fits the budget.
    const int64_t share = config.trainer.global_batch / world;
    for (int64_t micro = share - 1; micro >= 1 && !plan->configured_fits; --micro) {
      if (share % micro != 0) continue;
      RunConfig smaller = config;
      smaller.trainer.micro_batch = micro;
      absl::StatusOr<MemoryPlan> p = PlanMemory(smaller, world, budget);
      if (!p.ok()) return p.status();
      if (p->configured_fits) {
        config.trainer.micro_batch = micro;
        config.trainer.micro_batch_derived = true;
        if (root)
          std::cout << "memory plan: trainer.micro_batch derived as " << micro << " (each rank's "
                    << share << " sequences at once would not fit)\n";
        plan = std::move(p);
      }
    }
  }
  if (plan->configured_fits) {
    if (root) std::cout << "memory plan: " << PlanSummaryLine(*plan) << "\n";
    return absl::OkStatus();
  }
  if (root) std::cerr << FormatMemoryPlan(config, *plan);
  std::string fix = "nothing fits: use more GPUs or a shorter trainer.seq_len";
  if (plan->suggestion >= 0) {
    const PlanSettings& s = plan->options[plan->suggestion].settings;
    fix = absl::StrFormat(
        "fam plan suggests --set distributed.zero=%s --set trainer.recompute=%s --set "
        "trainer.micro_batch=%d",
        PlannerZeroName(s.zero), s.recompute ? "true" : "false", s.micro_batch);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "trainer.memory_budget_gb: the run would not fit: ", PlanSummaryLine(*plan), "; ", fix));
}

// The run config of `fam train`: --config, or with --resume alone the one the checkpoint carries
// (trainers/train/portable_checkpoint.h), with checkpoint.resume set to that checkpoint; --set last.
absl::StatusOr<RunConfig> LoadTrainConfig(const cli::Args& args) {
  if (!args.Has("config") && !args.Has("resume"))
    return absl::InvalidArgumentError(
        "fam train: pass --config <experiment.yaml> or --resume <checkpoint>");
  std::string config_path = args.Get("config");
  std::vector<std::string> sets;
  if (args.Has("resume")) {
    absl::StatusOr<std::string> checkpoint = ResolveCheckpoint(args.Get("resume"));
    if (!checkpoint.ok()) return checkpoint.status();
    sets.push_back(absl::StrCat("checkpoint.resume=", *checkpoint));
    if (config_path.empty()) {
      absl::StatusOr<std::string> carried = CheckpointRunConfigPath(*checkpoint);
      if (!carried.ok()) return carried.status();
      config_path = *carried;
      const std::string tokenizer = CheckpointTokenizerPath(*checkpoint);
      if (!tokenizer.empty()) sets.push_back(absl::StrCat("data.tokenizer=", tokenizer));
      absl::StatusOr<dist::DistEnv> env = dist::DiscoverEnv();
      if (!env.ok() || env->rank == 0)
        std::cout << "config: " << config_path << " (carried by the checkpoint)\n";
    }
  }
  for (const std::string& set : args.GetAll("set")) sets.push_back(set);
  return LoadRunConfig(config_path, sets);
}

}  // namespace

Command TrainCommand() {
  Command c;
  c.name = "train";
  c.synopsis = "--config <experiment.yaml> | --resume <checkpoint> [--set key=value ...]";
  c.summary = "train a model from a YAML config (resumes from the newest valid checkpoint)";
  c.flags = {{"config", "experiment YAML (see configs/experiments/, configs/reference.yaml)"},
             {"resume",
              "continue from this checkpoint (or the newest of a checkpoints or run directory); "
              "without --config, with the run config and tokenizer the checkpoint carries"},
             {"set", "override a config key, e.g. --set trainer.steps=100 (repeatable)"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    absl::StatusOr<RunConfig> config = LoadTrainConfig(args);
    absl::Status loaded = config.ok() ? CheckMemoryPlan(*config) : config.status();
    // Under mpirun every rank reads the config: one of them reports what is wrong with it.
    if (absl::Status s = dist::AgreeOnStatusInJob(loaded, "to load the run config"); !s.ok())
      return s;
    absl::StatusOr<TrainResult> result = RunTraining(*config);
    if (!result.ok()) return result.status();
    std::cout << absl::StrFormat("done: step %d", result->final_step);
    if (result->last_train_loss >= 0)
      std::cout << absl::StrFormat(", train loss %.4f", result->last_train_loss);
    if (result->first_val_loss >= 0 && result->last_val_loss >= 0)
      std::cout << absl::StrFormat(
          ", val loss %.4f → %.4f (ppl %.1f → %.1f)", result->first_val_loss, result->last_val_loss,
          std::exp(result->first_val_loss), std::exp(result->last_val_loss));
    std::cout << "\ncheckpoint: " << result->last_checkpoint << "\n";
    if (result->interrupted)
      std::cout << "(interrupted by a signal; rerun the same command to resume)\n";
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
