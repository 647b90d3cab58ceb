// Device-side helpers shared by the CUDA kernel files: bf16 conversion (round to nearest even, as
// fam::BF16 on the host), dtype conversion, block reductions (math functions: formula:: of
// backends/op_kinds.h; dtype dispatch: backends/dtype_dispatch.h). Included only by .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "framework/backends/cuda/cuda_indexing.h"
#include "framework/backends/cuda/cuda_kernels.h"
#include "framework/backends/dtype_dispatch.h"
#include "framework/backends/op_kinds.h"
#include "framework/core/dtype.h"

namespace fam::cuda {

// bf16 storage as raw bits on the device (the host type fam::BF16 has the same layout).
struct Bf16Bits {
  uint16_t bits;
};

__device__ __forceinline__ float Bf16ToFloat(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}
__device__ __forceinline__ uint16_t FloatToBf16(float value) {
  const uint32_t u = __float_as_uint(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

// Conversion between storage types with the CPU backend's rules (bf16 goes through float).
template <typename Src, typename Dst>
__device__ __forceinline__ Dst ConvertValue(Src v) {
  if constexpr (std::is_same_v<Src, Dst>) {
    return v;
  } else if constexpr (std::is_same_v<Dst, Bf16Bits>) {
    return Bf16Bits{FloatToBf16(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<Src, Bf16Bits>) {
    return static_cast<Dst>(Bf16ToFloat(v.bits));
  } else {
    return static_cast<Dst>(v);
  }
}

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <typename T>
__device__ __forceinline__ T WarpMax(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = o > v ? o : v;
  }
  return v;
}

// Sum / max of one value per thread over the block; every thread gets the result. `shared` holds
// at least 32 elements. Safe to call repeatedly with the same buffer. Deterministic for a fixed
// block size.
template <typename T>
__device__ T BlockSum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? shared[lane] : T(0);
    w = WarpSum(w);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  return shared[0];
}
template <typename T>
__device__ T BlockMax(T v, T* shared, T lowest) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? shared[lane] : lowest;
    w = WarpMax(w);
    if (lane == 0) shared[0] = w;
  }
  __syncthreads();
  return shared[0];
}

// -inf of T; the largest element of a row of d values (one block per row; `shared` holds 32).
template <typename T>
__device__ __forceinline__ T NegInf() {
  if constexpr (std::is_same_v<T, float>) {
    return -__int_as_float(0x7f800000);
  } else {
    return -__longlong_as_double(0x7ff0000000000000LL);
  }
}

template <typename T>
__device__ T RowMax(const T* row, int64_t d, T* shared) {
  T m = NegInf<T>();
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) m = row[j] > m ? row[j] : m;
  return BlockMax(m, shared, NegInf<T>());
}

// Blocks for a one-block-per-row kernel over `rows` rows.
inline int64_t RowBlocks(int64_t rows) { return std::min<int64_t>(rows, kMaxBlocks); }

// Grid-stride loop over [0, n).
#define FAM_CUDA_KERNEL_LOOP(i, n)                                                       \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

inline void CheckLaunch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) LaunchFailure(what, err);
}

}  // namespace fam::cuda
