// Fused attention kernels of the CUDA backend (forward and backward over a list of key/value
// segments), called by CudaBackend::AttentionForward/AttentionBackward on the backend's stream.
#pragma once

#include <cuda_runtime.h>

#include "framework/backends/backend.h"

namespace fam::cuda {
void AttentionForward(const AttentionArgs& args, cudaStream_t stream);
void AttentionBackward(const AttentionGradArgs& args, cudaStream_t stream);
}  // namespace fam::cuda
