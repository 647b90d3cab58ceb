// CUDA emulated on the host: a backend whose tensors are labelled cuda:N but live in host memory
// and are computed by the CPU backend's kernels. It exists to check, on machines without a GPU,
// every code path that only runs for a non-CPU device: host <-> device copies in the trainer,
// evaluation, checkpoints, LoRA and optimizers. Host code that touches "device" memory directly
// (Tensor::data, ToDoubles, item) fails here exactly where it would fault on a GPU, and a run on
// the emulated device must reproduce the CPU run bit for bit (same kernels). It says nothing about
// the CUDA kernels.
//
// Enabled by the environment: FAM_CUDA_EMULATION=host makes cuda:0 .. cuda:7 available through this
// backend (in place of real GPUs, whether or not the CUDA backend is built). Tests and scripts set
// it; a real run never should.
#pragma once

#include <memory>

#include "framework/backends/backend.h"

namespace fam {

// True when FAM_CUDA_EMULATION=host (read once per process).
bool CudaEmulationEnabled();
// How many cuda:N devices the emulation provides.
inline constexpr int kEmulatedCudaDevices = 8;

std::unique_ptr<Backend> MakeHostEmulatedCudaBackend(int index);

}  // namespace fam
