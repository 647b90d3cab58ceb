#include "framework/backends/cuda/cuda_device.h"

#include "absl/strings/str_format.h"
#include "framework/backends/cuda/cuda_kernels.h"
#include "framework/core/error.h"

namespace fam::cuda {

void ThrowCudaError(cudaError_t err, const char* expr, const char* file, int line) {
  const absl::StatusCode code = err == cudaErrorMemoryAllocation
                                    ? absl::StatusCode::kResourceExhausted
                                    : absl::StatusCode::kInternal;
  ThrowError(code, "CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ",
             expr, " at ", file, ":", line);
}

void LaunchFailure(const char* what, cudaError_t err) {
  ThrowError(absl::StatusCode::kInternal, "CUDA kernel ", what, " failed to launch: ",
             cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

void BadDType(const char* what, DType dtype) {
  ThrowError(absl::StatusCode::kInternal, "CUDA kernel ", what, ": unsupported dtype ",
             DTypeName(dtype));
}

DeviceGuard::DeviceGuard(int device) : device_(device) {
  FAM_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device_) FAM_CUDA_CHECK(cudaSetDevice(device_));
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0 && previous_ != device_) cudaSetDevice(previous_);
}

std::string DescribeDeviceMemory(int device) {
  std::string out = "cuda:" + std::to_string(device);
  cudaDeviceProp prop;
  size_t free_bytes = 0, total_bytes = 0;
  int previous = -1;
  if (cudaGetDevice(&previous) != cudaSuccess) return out;
  if (cudaSetDevice(device) == cudaSuccess &&
      cudaGetDeviceProperties(&prop, device) == cudaSuccess &&
      cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
    out += absl::StrFormat(" (%s, total %.2f GiB, free %.2f GiB)", prop.name,
                           static_cast<double>(total_bytes) / (1 << 30),
                           static_cast<double>(free_bytes) / (1 << 30));
  }
  cudaSetDevice(previous);
  return out;
}

}  // namespace fam::cuda
