// MPI behind the Communicator interface (CPU tensors), and the process-wide MPI runtime: MPI is
// initialised on first use (MPI_THREAD_SERIALIZED: every MPI call is made under one process-wide
// lock, from the communication threads and, for set-up only, the main thread) and finalised at
// exit. Collectives are non-blocking MPI calls (MPI_Iallreduce, MPI_Ireduce_scatter,
// MPI_Iallgatherv, MPI_Ibcast, MPI_Ibarrier) polled by the communication thread against the
// timeout; on timeout the job is ended with MPI_Abort. bf16/f16 reductions use MPI user ops that
// add in f32 and round once per step. Without MPI at build time, creation returns Unimplemented.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "framework/dist/communicator.h"
#include "framework/dist/env.h"

namespace fam::dist {

// A communicator over every rank of the job (a duplicate of MPI_COMM_WORLD). Fails when MPI's view
// of the job (rank, size) differs from the launcher environment `env`. `device` is the CPU, or a
// CUDA device emulated on the host (FAM_CUDA_EMULATION=host: its tensors are host memory).
absl::StatusOr<std::shared_ptr<Communicator>> CreateMpiCommunicator(const DistEnv& env,
                                                                    double timeout_s,
                                                                    Device device = Device::CPU());

// Initialises MPI once per process (no-op when already done) and checks it against `env`.
absl::Status EnsureMpiInitialized(const DistEnv& env);

// Blocking broadcast of raw bytes over all ranks from `root` (used to hand out the NCCL id); a
// DeadlineExceeded error after timeout_s.
absl::Status MpiBroadcastBytes(void* data, size_t nbytes, int root, double timeout_s);

// The MPI library's own version line ("Open MPI v4.1.4, ...") or "not built"; safe before MPI_Init.
std::string MpiLibraryDescription();

// Ends every rank of the job with exit_code (MPI_Abort when MPI is initialised, else _Exit).
[[noreturn]] void AbortJob(int exit_code);

}  // namespace fam::dist
