// Where this process sits in a distributed job, read from the launcher's environment before any
// MPI call: OpenMPI's mpirun (OMPI_COMM_WORLD_*), Slurm's srun (SLURM_PROCID/SLURM_NTASKS/
// SLURM_LOCALID, only inside a job step, so that a batch script's own shell is not taken for rank
// 0 of N) or an MPICH-style PMI launcher (PMI_RANK/PMI_SIZE). Without any of them the process is a
// job of its own: world size 1, and MPI is never initialised.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"

namespace fam::dist {

struct DistEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes of this node (picks the GPU)
  int local_size = 1;
  std::string launcher = "none";  // "openmpi", "slurm", "pmi" or "none"
};

// Reads the environment through `getenv` (tests pass a fake). Values that are present but not
// integers, or a rank outside [0, world_size), are InvalidArgument naming the variable.
absl::StatusOr<DistEnv> DiscoverEnv(const std::function<const char*(const char*)>& getenv);
// The same from the process environment.
absl::StatusOr<DistEnv> DiscoverEnv();

}  // namespace fam::dist
