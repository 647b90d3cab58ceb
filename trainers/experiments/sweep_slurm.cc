// `fam sweep` scripts (Slurm job array, mpirun) and the launch shape of a cell.
#include "trainers/experiments/sweep_slurm.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/io/config_tree.h"

namespace fam::sweep {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Launch shape

bool UsesGpuNodes(const SweepConfig& sweep) {
  return sweep.slurm.nodes > 0 || sweep.slurm.gpus_per_node > 0;
}

int64_t CellRanks(const SweepConfig& sweep) {
  if (!UsesGpuNodes(sweep)) return sweep.ranks;
  return std::max<int64_t>(sweep.slurm.nodes, 1) * std::max<int64_t>(sweep.slurm.gpus_per_node, 1);
}

absl::Status ApplyLaunchFlags(const LaunchFlags& flags, SweepConfig* sweep) {
  for (const auto& [flag, value, field] :
       {std::tuple{"--nodes", flags.nodes, &sweep->slurm.nodes},
        std::tuple{"--gpus-per-node", flags.gpus_per_node, &sweep->slurm.gpus_per_node}}) {
    if (!value) continue;
    if (*value < 1)
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": expected an integer >= 1, got ", *value));
    *field = *value;
  }
  if (flags.time) {
    if (flags.time->empty())
      return absl::InvalidArgumentError("--time: expected a Slurm time limit such as 04:00:00");
    sweep->slurm.time = *flags.time;
  }
  if (flags.partition) sweep->slurm.partition = *flags.partition;
  if (flags.account) sweep->slurm.account = *flags.account;
  return absl::OkStatus();
}

absl::Status ResolveLaunchShape(SweepConfig* sweep) {
  if (!UsesGpuNodes(*sweep)) return absl::OkStatus();
  SlurmOptions& slurm = sweep->slurm;
  if (slurm.nodes == 0) slurm.nodes = 1;
  if (slurm.gpus_per_node == 0) slurm.gpus_per_node = 1;
  if (slurm.gpus_per_task > 0)
    return ConfigError(SourceLoc{sweep->source}, "launch.slurm.gpus_per_task",
                       "not together with nodes/gpus_per_node, which start one rank per GPU "
                       "(each rank sees its node's GPUs and takes the one of its local rank)");
  const int64_t total = slurm.nodes * slurm.gpus_per_node;
  if (sweep->ranks_loc.file.empty()) {
    sweep->ranks = total;
  } else if (sweep->ranks != total) {
    return ConfigError(
        sweep->ranks_loc, "launch.ranks",
        absl::StrCat(sweep->ranks, " conflicts with launch.slurm.nodes x gpus_per_node (--nodes x ",
                     "--gpus-per-node) = ", slurm.nodes, " x ", slurm.gpus_per_node, " = ", total,
                     " ranks, one per GPU; drop launch.ranks or set it to ", total));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Scripts

namespace {

std::string EvalLine(const SweepConfig& sweep, const RunConfig& run) {
  std::string line =
      absl::StrCat("\"$FAM\" eval --checkpoint ", ShellQuote(FinalCheckpointPath(run)));
  if (!sweep.eval_suite.empty()) absl::StrAppend(&line, " --config ", ShellQuote(sweep.eval_suite));
  absl::StrAppend(&line, " --out ", ShellQuote(CellReportPath(run)));
  return line;
}

// The test that a cell is finished, for the scripts.
std::string DoneTest(const SweepConfig& sweep, const RunConfig& run) {
  if (sweep.eval_enabled) return absl::StrCat("[ -s ", ShellQuote(CellReportPath(run)), " ]");
  return absl::StrCat("[ -f ", ShellQuote(FinalCheckpointPath(run) + "/manifest.json"), " ]");
}

// The srun of a cell's training: the job's tasks (--ntasks of the array task), or nodes x GPUs per
// node ranks spread evenly over the nodes.
std::string SrunCommand(const SweepConfig& sweep) {
  if (!UsesGpuNodes(sweep)) return "srun";
  return absl::StrCat("srun --nodes=", sweep.slurm.nodes, " --ntasks=", CellRanks(sweep),
                      " --ntasks-per-node=", sweep.slurm.gpus_per_node);
}

std::string SummaryLine(const ScriptContext& context) {
  std::string line = absl::StrCat("\"$FAM\" sweep --config ", ShellQuote(context.sweep_file));
  for (const std::string& s : context.extra) absl::StrAppend(&line, " --set ", ShellQuote(s));
  return line + " --summary";
}

}  // namespace

std::string SlurmScript(const SweepConfig& sweep, const std::vector<SweepCell>& cells,
                        const std::vector<RunConfig>& runs, const ScriptContext& context) {
  std::error_code ec;
  const std::string logs = (fs::absolute(SweepDir(sweep), ec) / "logs").lexically_normal().string();
  std::string s = absl::StrCat(
      "#!/bin/bash\n", "# Slurm job array of the sweep ", sweep.name, " (", cells.size(),
      " cells), written by `fam sweep`.\n", "#   sbatch ", SweepDir(sweep), "/sweep.sbatch\n",
      "# Task i trains cell i (`fam train` resumes from the cell's newest checkpoint), then\n",
      "# evaluates it; a finished cell is skipped, so resubmitting the array is safe.\n",
      UsesGpuNodes(sweep)
          ? absl::StrCat("# Each cell: ", sweep.slurm.nodes, " node(s) x ",
                         sweep.slurm.gpus_per_node, " GPU(s), ", CellRanks(sweep),
                         " ranks (one per GPU, picked by the rank's SLURM_LOCALID).\n")
          : std::string(),
      "# When every task has ended, write the summary table:\n#   ", SummaryLine(context), "\n");
  absl::StrAppend(&s, "#SBATCH --job-name=", SanitizeName(sweep.name), "\n");
  absl::StrAppend(&s, "#SBATCH --array=0-", cells.size() - 1);
  if (sweep.slurm.max_parallel > 0) absl::StrAppend(&s, "%", sweep.slurm.max_parallel);
  if (UsesGpuNodes(sweep)) {
    absl::StrAppend(&s, "\n#SBATCH --nodes=", sweep.slurm.nodes,
                    "\n#SBATCH --ntasks-per-node=", sweep.slurm.gpus_per_node,
                    "\n#SBATCH --gpus-per-node=", sweep.slurm.gpus_per_node, "\n");
  } else {
    absl::StrAppend(&s, "\n#SBATCH --ntasks=", CellRanks(sweep), "\n");
  }
  if (sweep.slurm.cpus_per_task > 0)
    absl::StrAppend(&s, "#SBATCH --cpus-per-task=", sweep.slurm.cpus_per_task, "\n");
  if (sweep.slurm.gpus_per_task > 0)
    absl::StrAppend(&s, "#SBATCH --gpus-per-task=", sweep.slurm.gpus_per_task, "\n");
  if (!sweep.slurm.time.empty()) absl::StrAppend(&s, "#SBATCH --time=", sweep.slurm.time, "\n");
  if (!sweep.slurm.partition.empty())
    absl::StrAppend(&s, "#SBATCH --partition=", sweep.slurm.partition, "\n");
  if (!sweep.slurm.account.empty())
    absl::StrAppend(&s, "#SBATCH --account=", sweep.slurm.account, "\n");
  absl::StrAppend(&s, "#SBATCH --output=", logs, "/%x-%a.out\n");
  absl::StrAppend(&s, "set -euo pipefail\ncd ", ShellQuote(context.workdir), "\n", "FAM=${FAM:-",
                  ShellQuote(context.fam), "}\n",
                  "task=${SLURM_ARRAY_TASK_ID:?submit this script with sbatch}\n",
                  "case \"$task\" in\n");
  for (size_t i = 0; i < cells.size(); ++i) {
    const SweepCell& cell = cells[i];
    const RunConfig& run = runs[i];
    absl::StrAppend(&s, "  ", i, ")  # ", cell.name, ": ", CellComment(sweep, cell), "\n");
    absl::StrAppend(&s, "    if ", DoneTest(sweep, run), "; then echo ", ShellQuote(cell.name),
                    "': finished, skipped'; exit 0; fi\n");
    absl::StrAppend(&s, "    ", SrunCommand(sweep), " \"$FAM\" train --config ",
                    ShellQuote(CellConfigPath(sweep, cell)), "\n");
    if (sweep.eval_enabled) absl::StrAppend(&s, "    ", EvalLine(sweep, run), "\n");
    s += "    ;;\n";
  }
  absl::StrAppend(&s, "  *) echo \"no cell $task in this sweep (0-", cells.size() - 1,
                  ")\" >&2; exit 2 ;;\nesac\n");
  return s;
}

std::string MpirunScript(const SweepConfig& sweep, const std::vector<SweepCell>& cells,
                         const std::vector<RunConfig>& runs, const ScriptContext& context) {
  std::string s = absl::StrCat(
      "#!/usr/bin/env bash\n", "# The sweep ", sweep.name, " (", cells.size(),
      " cells), written by `fam sweep`: each cell\n", "# is trained by ", CellRanks(sweep),
      " process(es) under mpirun, then evaluated; finished cells\n",
      "# are skipped and an interrupted one resumes, so rerunning the script is safe.\n",
      "#   bash ", SweepDir(sweep), "/sweep_mpirun.sh\n", "set -euo pipefail\ncd ",
      ShellQuote(context.workdir), "\n", "FAM=${FAM:-", ShellQuote(context.fam), "}\n",
      "MPIRUN=${MPIRUN:-", ShellQuote(sweep.mpirun), "}\n");
  for (size_t i = 0; i < cells.size(); ++i) {
    const SweepCell& cell = cells[i];
    const RunConfig& run = runs[i];
    absl::StrAppend(&s, "\n# cell ", i + 1, "/", cells.size(), ": ", cell.name, " (",
                    CellComment(sweep, cell), ")\n");
    absl::StrAppend(&s, "if ", DoneTest(sweep, run), "; then\n  echo ", ShellQuote(cell.name),
                    "': finished, skipped'\nelse\n");
    absl::StrAppend(&s, "  \"$MPIRUN\" -np ", CellRanks(sweep), " \"$FAM\" train --config ",
                    ShellQuote(CellConfigPath(sweep, cell)), "\n");
    if (sweep.eval_enabled) absl::StrAppend(&s, "  ", EvalLine(sweep, run), "\n");
    s += "fi\n";
  }
  absl::StrAppend(&s, "\n", SummaryLine(context), "\n");
  return s;
}

}  // namespace fam::sweep
