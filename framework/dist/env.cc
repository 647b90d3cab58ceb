// Launcher environment → rank, world size and local rank (see env.h for the precedence).
#include "framework/dist/env.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fam::dist {
namespace {

using GetEnv = std::function<const char*(const char*)>;

// Reads an integer variable into *out when it is set; false when absent.
absl::StatusOr<bool> ReadInt(const GetEnv& getenv, const char* name, int* out) {
  const char* text = getenv(name);
  if (text == nullptr || *text == '\0') return false;
  if (!absl::SimpleAtoi(text, out) || *out < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, "='", text, "' is not a non-negative integer"));
  }
  return true;
}

// Fills rank/size (and local rank/size when the names are given) from one launcher's variables.
// Returns false when the launcher's rank variable is absent.
absl::StatusOr<bool> ReadLauncher(const GetEnv& getenv, const char* rank, const char* size,
                                  const char* local_rank, const char* local_size, DistEnv* env) {
  absl::StatusOr<bool> has_rank = ReadInt(getenv, rank, &env->rank);
  if (!has_rank.ok() || !*has_rank) return has_rank;
  for (auto [name, out] :
       {std::pair{size, &env->world_size}, std::pair{local_rank, &env->local_rank},
        std::pair{local_size, &env->local_size}}) {
    if (name == nullptr) continue;
    if (absl::StatusOr<bool> ok = ReadInt(getenv, name, out); !ok.ok()) return ok.status();
  }
  return true;
}

}  // namespace

absl::StatusOr<DistEnv> DiscoverEnv(const GetEnv& getenv) {
  DistEnv env;
  struct Launcher {
    const char* name;
    const char* rank;
    const char* size;
    const char* local_rank;
    const char* local_size;
  };
  // OpenMPI's mpirun first, then Slurm job steps (srun), then MPICH-style PMI launchers. Slurm's
  // per-node task count comes in shapes like "2(x3)": local_size is left to the fix-up below.
  const Launcher launchers[] = {
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
      {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
  };
  for (const Launcher& l : launchers) {
    // A batch script's shell has SLURM_PROCID=0 and SLURM_NTASKS=N: only srun sets SLURM_STEP_ID.
    if (std::string(l.name) == "slurm" && getenv("SLURM_STEP_ID") == nullptr) continue;
    DistEnv candidate;
    absl::StatusOr<bool> found =
        ReadLauncher(getenv, l.rank, l.size, l.local_rank, l.local_size, &candidate);
    if (!found.ok()) return found.status();
    if (!*found) continue;
    candidate.launcher = l.name;
    env = candidate;
    break;
  }
  if (env.world_size < 1 || env.rank >= env.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("launcher ", env.launcher, " reports rank ",
                                                   env.rank, " of world size ", env.world_size));
  }
  if (env.local_size < 1 || env.local_rank >= env.local_size) {
    // Unknown (Slurm) or inconsistent: keep local_rank, the size is only informative.
    env.local_size = env.local_rank + 1;
  }
  return env;
}

absl::StatusOr<DistEnv> DiscoverEnv() {
  return DiscoverEnv([](const char* name) { return std::getenv(name); });
}

}  // namespace fam::dist
