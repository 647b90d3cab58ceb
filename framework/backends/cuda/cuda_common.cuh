// Device-side helpers shared by the CUDA kernel files: bf16 conversion (round to nearest even, as
// fam::BF16 on the host), dtype conversion, float/double math overloads, block reductions and a
// dtype dispatch for launchers. Included only by .cu files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "framework/backends/cuda/cuda_indexing.h"
#include "framework/backends/cuda/cuda_kernels.h"
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

// Math overloads resolving to the float or double CUDA functions.
__device__ __forceinline__ float DExp(float x) { return expf(x); }
__device__ __forceinline__ double DExp(double x) { return exp(x); }
__device__ __forceinline__ float DLog(float x) { return logf(x); }
__device__ __forceinline__ double DLog(double x) { return log(x); }
__device__ __forceinline__ float DSqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double DSqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float DTanh(float x) { return tanhf(x); }
__device__ __forceinline__ double DTanh(double x) { return tanh(x); }
__device__ __forceinline__ float DAbs(float x) { return fabsf(x); }
__device__ __forceinline__ double DAbs(double x) { return fabs(x); }

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

// Grid-stride loop over [0, n).
#define FAM_CUDA_KERNEL_LOOP(i, n)                                                      \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Calls fn(T{}) with T = float or double; returns false for another dtype (the backend has
// already rejected those, so launchers treat false as an internal error).
template <typename Fn>
bool DispatchFloatDevice(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32: fn(float{}); return true;
    case DType::kF64: fn(double{}); return true;
    default: return false;
  }
}

inline void CheckLaunch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) LaunchFailure(what, err);
}

}  // namespace fam::cuda
