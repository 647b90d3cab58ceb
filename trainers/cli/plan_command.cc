// `fam plan --config <yaml> --gpus N --gpu-memory-gb G [--json]`: the per-GPU memory breakdown of
// a run and the cheapest settings that fit (trainers/train/memory_plan.h, docs/memory.md).
#include <iostream>

#include "trainers/cli/commands.h"
#include "trainers/train/memory_plan.h"
#include "trainers/train/run_config.h"

namespace fam {

Command PlanCommand() {
  Command c;
  c.name = "plan";
  c.synopsis =
      "--config <experiment.yaml> --gpus N --gpu-memory-gb G [--set key=value ...] [--json]";
  c.summary =
      "per-GPU memory estimate of a run and the settings that fit (ZeRO, recompute, micro-batch)";
  c.flags = {{"config", "experiment YAML (configs/experiments/finetune_24b.yaml, ...)"},
             {"gpus", "data-parallel ranks, one GPU each (default 1)"},
             {"gpu-memory-gb", "memory of one GPU in GiB (2^30 bytes; an \"80 GB\" H100 has 79.6)"},
             {"set", "override a config key, e.g. --set trainer.type=pretrain (repeatable)"},
             {"json", "print the plan as JSON (bytes) instead of the table", true}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"config", "gpu-memory-gb"}); !s.ok()) return s;
    absl::StatusOr<RunConfig> config = LoadRunConfig(args.Get("config"), args.GetAll("set"));
    if (!config.ok()) return config.status();
    absl::StatusOr<int64_t> gpus = args.GetInt("gpus", 1);
    if (!gpus.ok()) return gpus.status();
    absl::StatusOr<double> gb = args.GetDouble("gpu-memory-gb", 0);
    if (!gb.ok()) return gb.status();
    if (*gpus < 1 || *gpus > 1000000)
      return absl::InvalidArgumentError("fam plan: --gpus must be between 1 and 1000000");
    if (!(*gb > 0)) return absl::InvalidArgumentError("fam plan: --gpu-memory-gb must be > 0");
    absl::StatusOr<MemoryPlan> plan =
        PlanMemory(*config, static_cast<int>(*gpus), *gb * 1024.0 * 1024.0 * 1024.0);
    if (!plan.ok()) return plan.status();
    std::cout << (args.GetBool("json") ? MemoryPlanJson(*config, *plan) + "\n"
                                       : FormatMemoryPlan(*config, *plan));
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
