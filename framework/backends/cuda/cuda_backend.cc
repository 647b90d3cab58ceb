#include "framework/backends/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "framework/backends/cpu/cpu_dispatch.h"
#include "framework/backends/cuda/cuda_backend_internal.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_gemm.h"
#include "framework/backends/cuda/cuda_indexing.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

namespace {

bool PoisonAllocations() {
  const char* v = std::getenv("FAM_POISON_ALLOC");
  return v != nullptr && v[0] == '1';
}

}  // namespace

CudaBackend::CudaBackend(int device) : device_(device), poison_(PoisonAllocations()) {
  DeviceGuard guard(device_);
  FAM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  RawAllocator raw;
  raw.alloc = [this](size_t nbytes) -> void* {
    DeviceGuard guard(device_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, nbytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error state
      return nullptr;
    }
    FAM_CUDA_CHECK(err);
    return p;
  };
  raw.free = [this](void* p) {
    DeviceGuard guard(device_);
    // Blocks may still be in use by queued work; cudaFree waits for the device.
    cudaFree(p);
  };
  raw.describe_device = [this] { return DescribeDeviceMemory(device_); };
  allocator_ = std::make_unique<CachingAllocator>(std::move(raw));
  gemm_workspace_ = allocator_->Allocate(kGemmWorkspaceBytes);
  gemm_ = std::make_unique<GemmRunner>(stream_, gemm_workspace_, kGemmWorkspaceBytes);
}

CudaBackend::~CudaBackend() {
  // Teardown may run after the CUDA runtime began unloading: errors are ignored here.
  cudaStreamSynchronize(stream_);
  gemm_.reset();
  allocator_->Free(gemm_workspace_);
  allocator_.reset();
  for (int i = 0; i < 2; ++i) {
    if (staging_[i]) cudaFreeHost(staging_[i]);
    if (staging_done_[i]) cudaEventDestroy(staging_done_[i]);
  }
  cudaStreamDestroy(stream_);
}

std::string CudaBackend::name() const { return "cuda:" + std::to_string(device_); }

void CudaBackend::Synchronize() {
  DeviceGuard guard(device_);
  FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- Memory and copies ----

void* CudaBackend::Allocate(size_t nbytes) {
  DeviceGuard guard(device_);
  void* p = allocator_->Allocate(nbytes);
  if (poison_)
    FAM_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, CachingAllocator::RoundSize(nbytes), stream_));
  return p;
}

void CudaBackend::Free(void* data, size_t) { allocator_->Free(data); }

void CudaBackend::EnsureStaging() {
  if (staging_[0]) return;
  for (int i = 0; i < 2; ++i) {
    FAM_CUDA_CHECK(cudaMallocHost(&staging_[i], kStagingBytes));
    FAM_CUDA_CHECK(cudaEventCreateWithFlags(&staging_done_[i], cudaEventDisableTiming));
  }
}

void CudaBackend::CopyFromHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  DeviceGuard guard(device_);
  if (nbytes < kDirectCopyBytes) {
    FAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream_));
    FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  // Double-buffered: fill one pinned buffer while the other one's copy runs.
  std::lock_guard<std::mutex> lock(staging_mu_);
  EnsureStaging();
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  int buf = 0;
  for (size_t done = 0; done < nbytes; done += kStagingBytes, buf ^= 1) {
    const size_t chunk = std::min(kStagingBytes, nbytes - done);
    FAM_CUDA_CHECK(cudaEventSynchronize(staging_done_[buf]));
    std::memcpy(staging_[buf], s + done, chunk);
    FAM_CUDA_CHECK(
        cudaMemcpyAsync(d + done, staging_[buf], chunk, cudaMemcpyHostToDevice, stream_));
    FAM_CUDA_CHECK(cudaEventRecord(staging_done_[buf], stream_));
  }
  FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::CopyToHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  DeviceGuard guard(device_);
  if (nbytes < kDirectCopyBytes) {
    FAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream_));
    FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  // Double-buffered: the device copies chunk i+1 while the host copies chunk i out.
  std::lock_guard<std::mutex> lock(staging_mu_);
  EnsureStaging();
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  const size_t chunks = (nbytes + kStagingBytes - 1) / kStagingBytes;
  auto issue = [&](size_t i) {
    const size_t offset = i * kStagingBytes;
    const size_t chunk = std::min(kStagingBytes, nbytes - offset);
    FAM_CUDA_CHECK(
        cudaMemcpyAsync(staging_[i % 2], s + offset, chunk, cudaMemcpyDeviceToHost, stream_));
    FAM_CUDA_CHECK(cudaEventRecord(staging_done_[i % 2], stream_));
  };
  issue(0);
  for (size_t i = 0; i < chunks; ++i) {
    if (i + 1 < chunks) issue(i + 1);
    FAM_CUDA_CHECK(cudaEventSynchronize(staging_done_[i % 2]));
    const size_t offset = i * kStagingBytes;
    std::memcpy(d + offset, staging_[i % 2], std::min(kStagingBytes, nbytes - offset));
  }
}

std::vector<int64_t> CudaBackend::ReadIndices(const Tensor& t) {
  FAM_CHECK(t.dtype() == DType::kI32 || t.dtype() == DType::kI64,
            "cuda: index tensor must be i32 or i64, got ", t.Describe());
  CheckContiguous("index read-back", t);
  const int64_t n = t.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (t.dtype() == DType::kI64) {
    CopyToHost(out.data(), t.raw_data(), t.nbytes());
  } else {
    std::vector<int32_t> tmp(static_cast<size_t>(n));
    CopyToHost(tmp.data(), t.raw_data(), t.nbytes());
    std::copy(tmp.begin(), tmp.end(), out.begin());
  }
  return out;
}

void CudaBackend::Copy(const Tensor& src, const Tensor& dst) {
  FAM_CHECK(src.shape() == dst.shape(), "copy between shapes ", ShapeString(src.shape()), " and ",
            ShapeString(dst.shape()));
  FAM_CHECK(src.device() == dst.device(), "copy on cuda: ", src.Describe(), " and ", dst.Describe(),
            " are on different devices");
  FAM_CHECK(src.dtype() != DType::kF16 && dst.dtype() != DType::kF16,
            "f16 tensors are converted to f32 on load and not computed on");
  if (src.numel() == 0) return;
  DeviceGuard guard(device_);
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    FAM_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(),
                                   cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  const std::vector<int64_t>* const strides[2] = {&src.strides(), &dst.strides()};
  const NdIndexer<2> index = IndexerFor<2>("copy", src.shape(), strides);
  LaunchCopy(src.dtype(), src.raw_data(), dst.dtype(), dst.raw_data(), src.numel(), index, stream_);
}

void CudaBackend::Fill(const Tensor& dst, double value) {
  CheckContiguous("fill", dst);
  if (dst.numel() == 0) return;
  uint64_t bits = 0;
  int elem_size = 0;
  DispatchStorage(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = cpu::Convert<double, T>(value);
    static_assert(sizeof(T) <= sizeof(bits));
    std::memcpy(&bits, &v, sizeof(T));
    elem_size = static_cast<int>(sizeof(T));
  });
  DeviceGuard guard(device_);
  LaunchFill(dst.raw_data(), dst.numel(), elem_size, bits, stream_);
}

}  // namespace fam::cuda
