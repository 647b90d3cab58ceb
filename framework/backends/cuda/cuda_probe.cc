#include "framework/backends/cuda/cuda_probe.h"

#ifdef FAM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fam {

int CudaDeviceCount() {
#ifdef FAM_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
#else
  return 0;
#endif
}

int64_t CudaDeviceMemoryBytes(int index) {
#ifdef FAM_HAVE_CUDA
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) return 0;
  return static_cast<int64_t>(prop.totalGlobalMem);
#else
  (void)index;
  return 0;
#endif
}

std::string CudaDeviceName(int index) {
#ifdef FAM_HAVE_CUDA
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) return "";
  return prop.name;
#else
  (void)index;
  return "";
#endif
}

std::string CudaUnavailableReason(int index) {
#ifdef FAM_HAVE_CUDA
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) return std::string("no CUDA device present (") + cudaGetErrorString(err) + ")";
  if (index < 0 || index >= count)
    return "CUDA device index " + std::to_string(index) + " out of range (" +
           std::to_string(count) + " visible)";
  return "";
#else
  (void)index;
  return "this build has no CUDA support (no CUDA toolkit was found at configure time)";
#endif
}

}  // namespace fam
