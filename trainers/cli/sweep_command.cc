// `fam sweep --config <sweep.yaml>`: config-driven ablations. Expands the sweep's axes into runs,
// trains and evaluates them one after the other (or writes a Slurm/mpirun script), skips finished
// cells, and writes the summary table and plots. See trainers/experiments/sweep.h and docs/evaluation.md.
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "trainers/cli/commands.h"
#include "trainers/experiments/sweep.h"

namespace fam {

Command SweepCommand() {
  Command c;
  c.name = "sweep";
  c.synopsis =
      "--config <sweep.yaml> [--mode run|slurm|mpirun] [--set key=value ...] "
      "[--summary | --dry-run] [--nodes N --gpus-per-node G --time T --partition P --account A]";
  c.summary = "config-driven ablations: expand axes into runs, train + eval them, summary table";
  c.flags = {
      {"config", "sweep YAML (see configs/experiments/ablation_*.yaml)"},
      {"mode",
       "run (cells in this process), slurm (write a job array), mpirun (write a script); "
       "default: the file's mode"},
      {"set", "override a run-config key in every cell, e.g. --set trainer.steps=20 (repeatable)"},
      {"summary", "only collect the cells' results and write the summary", /*is_bool=*/true},
      {"dry-run", "list the cells and their states; write nothing", /*is_bool=*/true},
      {"fam", "fam binary named in the slurm/mpirun scripts (default: this one)"},
      {"nodes",
       "nodes per cell (launch.slurm.nodes): with --gpus-per-node, nodes x GPUs ranks per cell, "
       "one per GPU (slurm: #SBATCH --nodes, srun --ntasks; mpirun: -np)"},
      {"gpus-per-node", "GPUs and ranks per node (launch.slurm.gpus_per_node)"},
      {"time", "Slurm time limit per cell, e.g. 04:00:00 (launch.slurm.time)"},
      {"partition", "Slurm partition (launch.slurm.partition)"},
      {"account", "Slurm account (launch.slurm.account)"},
      {"no-plots", "do not write PNG plots", /*is_bool=*/true}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"config"}); !s.ok()) return s;
    sweep::SweepRequest request;
    request.config = args.Get("config");
    request.overrides = args.GetAll("set");
    request.summary_only = args.GetBool("summary");
    request.dry_run = args.GetBool("dry-run");
    request.plots = !args.GetBool("no-plots");
    request.fam = args.Get("fam");
    for (const auto& [flag, field] : {std::pair{"nodes", &request.launch.nodes},
                                      std::pair{"gpus-per-node", &request.launch.gpus_per_node}}) {
      if (!args.Has(flag)) continue;
      absl::StatusOr<int64_t> value = args.GetInt(flag, 0);
      if (!value.ok()) return value.status();
      *field = *value;
    }
    for (const auto& [flag, field] : {std::pair{"time", &request.launch.time},
                                      std::pair{"partition", &request.launch.partition},
                                      std::pair{"account", &request.launch.account}})
      if (args.Has(flag)) *field = args.Get(flag);
    if (args.Has("mode")) {
      const std::string mode = args.Get("mode");
      if (mode == "run") {
        request.mode = sweep::SweepMode::kRun;
      } else if (mode == "slurm") {
        request.mode = sweep::SweepMode::kSlurm;
      } else if (mode == "mpirun") {
        request.mode = sweep::SweepMode::kMpirun;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--mode: expected run, slurm or mpirun, got \"", mode, "\""));
      }
    }
    absl::StatusOr<sweep::SweepOutcome> outcome = sweep::RunSweep(request, std::cout);
    if (!outcome.ok()) return outcome.status();
    if (outcome->interrupted)
      std::cout << "(interrupted by a signal; rerun the same command to resume)\n";
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
