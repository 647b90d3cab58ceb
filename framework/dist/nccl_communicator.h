// NCCL behind the Communicator interface (CUDA tensors; one GPU per rank). The GPU is chosen from
// the local rank (OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID, env.h): local rank i uses visible
// device i mod count, and more ranks on a node than visible GPUs is an error. The ncclUniqueId is
// made by rank 0 and handed to the others with an MPI broadcast. The communicator is created
// non-blocking (ncclConfig_t.blocking = 0) so set-up and every collective are polled against the
// timeout; on timeout the NCCL communicator is aborted (ncclCommAbort) and the job ended with
// MPI_Abort. Collectives run on a communication stream after an event recorded on the default
// stream when they are submitted. Uneven reduce-scatter/all-gather are grouped ncclReduce/
// ncclBroadcast calls.
//
// Compiled only when CUDA and NCCL (nccl.h, libnccl) are found at configure time (FAM_HAVE_NCCL);
// otherwise creation returns Unimplemented "NCCL support not built". It has not been run on GPUs
// yet (no CUDA tensors exist until the CUDA backend lands).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "framework/core/device.h"
#include "framework/dist/communicator.h"
#include "framework/dist/env.h"

namespace fam::dist {

// Whether this build has the NCCL communicator.
bool NcclBuilt();
// "2.27.3" (the loaded library's ncclGetVersion) or why NCCL is absent.
std::string NcclDescription();

absl::StatusOr<std::shared_ptr<Communicator>> CreateNcclCommunicator(const DistEnv& env,
                                                                     Device device,
                                                                     double timeout_s);

}  // namespace fam::dist
