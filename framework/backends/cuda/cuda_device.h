// CUDA runtime helpers of the CUDA backend: the error-checking macro (a failed CUDA call throws
// fam::Error with the CUDA error string and the call site), a scope guard that makes a device
// current, and device memory queries. Compiled only when the CUDA toolkit is present.
#pragma once

#include <cuda_runtime.h>

#include <string>

namespace fam::cuda {

// Throws fam::Error(kInternal, or kResourceExhausted for cudaErrorMemoryAllocation) naming the
// failed expression, its file:line and cudaGetErrorString(err).
[[noreturn]] void ThrowCudaError(cudaError_t err, const char* expr, const char* file, int line);

#define FAM_CUDA_CHECK(expr)                                                  \
  do {                                                                        \
    const cudaError_t fam_cuda_err_ = (expr);                                 \
    if (fam_cuda_err_ != cudaSuccess)                                         \
      ::fam::cuda::ThrowCudaError(fam_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Checks the last kernel launch (configuration errors surface here, asynchronous faults later).
#define FAM_CUDA_CHECK_LAUNCH() FAM_CUDA_CHECK(cudaGetLastError())

// Makes `device` current for the scope and restores the previous device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  int device_;
};

// "cuda:0 (NVIDIA H100, total 79.1 GiB, free 12.3 GiB)"; never throws.
std::string DescribeDeviceMemory(int device);

}  // namespace fam::cuda
