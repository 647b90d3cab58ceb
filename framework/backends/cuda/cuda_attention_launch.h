// Launchers of the fused attention kernels (cuda_attention.cu), called by cuda_attention.cc after
// it has checked the tensors and described them as a TiledAttention (plain C++17, for nvcc).
#pragma once

#include <cuda_runtime.h>

#include "framework/backends/cuda/attention_tiling.h"
#include "framework/core/dtype.h"

namespace fam::cuda {

// dtype: of q, k, v, out and the gradients (f32, f64 or bf16); lse and delta are in the
// accumulation type (f32 for bf16). Requires 1 <= p.d <= 128 and grids below 2^31 CTAs.
void LaunchAttentionForward(const TiledAttention& p, DType dtype, cudaStream_t stream);
// p.delta: batch·hq·tq elements of scratch in the accumulation type.
void LaunchAttentionBackward(const TiledAttention& p, DType dtype, cudaStream_t stream);

// Tile sizes of the kernels (query rows = keys per tile), by accumulation type.
inline constexpr int kAttentionTileF32 = 64;
inline constexpr int kAttentionTileF64 = 32;

}  // namespace fam::cuda
