// The scripts of `fam sweep --mode slurm|mpirun` and the launch shape of a cell. A cell trains
// with `ranks` processes, or, for multi-GPU cells, with launch.slurm.nodes × gpus_per_node ranks,
// one per GPU (each rank picks its GPU by its local rank): the Slurm job array then asks for
// --nodes, --ntasks-per-node and --gpus-per-node per task and starts the ranks with
// `srun --ntasks=<nodes × gpus_per_node>`; the mpirun script runs `mpirun -np` as many.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "trainers/experiments/sweep.h"
#include "trainers/train/run_config.h"

namespace fam::sweep {

// Whether the sweep asks for whole nodes of GPUs (launch.slurm.nodes or gpus_per_node set).
bool UsesGpuNodes(const SweepConfig& sweep);
// Processes per cell: nodes × gpus_per_node when set, else `ranks`.
int64_t CellRanks(const SweepConfig& sweep);

// Replaces the sweep file's launch.slurm keys by the flags given; a flag's bad value (nodes or GPUs
// per node < 1, an empty time) is an InvalidArgument naming the flag.
absl::Status ApplyLaunchFlags(const LaunchFlags& flags, SweepConfig* sweep);
// Checks the launch shape: nodes × gpus_per_node against a written launch.ranks (a different
// number is an InvalidArgument naming the keys and flags), gpus_per_task not with gpus_per_node;
// sets `ranks` to nodes × gpus_per_node when ranks was not written.
absl::Status ResolveLaunchShape(SweepConfig* sweep);

struct ScriptContext {
  std::string workdir;  // the scripts cd here first (relative paths in configs resolve from it)
  std::string fam;      // fam binary
  std::string sweep_file;
  std::vector<std::string> extra;  // --set flags of `fam sweep`, repeated in the summary line
};
// A Slurm job array, one task per cell: skip when finished, else `srun fam train --config <cell
// config>` then `fam eval`.
std::string SlurmScript(const SweepConfig& sweep, const std::vector<SweepCell>& cells,
                        const std::vector<RunConfig>& runs, const ScriptContext& context);
// A bash script running the cells one after the other with `mpirun -np <CellRanks> fam train`
// then `fam eval`, skipping finished ones, and ending with the summary.
std::string MpirunScript(const SweepConfig& sweep, const std::vector<SweepCell>& cells,
                         const std::vector<RunConfig>& runs, const ScriptContext& context);

}  // namespace fam::sweep
