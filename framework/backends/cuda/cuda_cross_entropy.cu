// CUDA kernels: fused cross-entropy forward/backward, one block per row, row sums in double (as
// cpu_cross_entropy.cc). An ignored target gets loss 0 and a zero gradient row.
#include <cfloat>

#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

template <typename I>
__device__ __forceinline__ int64_t TargetAt(const void* targets, int64_t r) {
  return static_cast<int64_t>(static_cast<const I*>(targets)[r]);
}

template <typename T, typename I>
__global__ void CrossEntropyForwardKernel(const T* logits, const void* targets, const T* weights,
                                          int64_t ignore_index, T* losses, T* lse, int64_t rows,
                                          int64_t v) {
  __shared__ T shared_max[32];
  __shared__ double shared_sum[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * v;
    const T max = RowMax(row, v, shared_max);
    double sum = 0;
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
      sum += static_cast<double>(formula::Exp(row[j] - max));
    sum = BlockSum(sum, shared_sum);
    if (threadIdx.x == 0) {
      const double row_lse = static_cast<double>(max) + log(sum);
      lse[r] = static_cast<T>(row_lse);
      const int64_t t = TargetAt<I>(targets, r);
      if (t == ignore_index) {
        losses[r] = T(0);
      } else {
        const double weight = weights ? static_cast<double>(weights[r]) : 1.0;
        losses[r] = static_cast<T>(weight * (row_lse - static_cast<double>(row[t])));
      }
    }
  }
}

// One block per row: the whole row is written by the loop, then thread 0 subtracts at the target
// after a barrier.
template <typename T, typename I>
__global__ void CrossEntropyBackwardKernel(const T* logits, const void* targets, const T* weights,
                                           int64_t ignore_index, const T* lse, const T* grad_losses,
                                           T* grad_logits, int64_t rows, int64_t v) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * v;
    T* grow = grad_logits + r * v;
    const int64_t t = TargetAt<I>(targets, r);
    if (t == ignore_index) {
      for (int64_t j = threadIdx.x; j < v; j += blockDim.x) grow[j] = T(0);
      continue;
    }
    const T scale = weights ? grad_losses[r] * weights[r] : grad_losses[r];
    const T row_lse = lse[r];
    for (int64_t j = threadIdx.x; j < v; j += blockDim.x)
      grow[j] = scale * formula::Exp(row[j] - row_lse);
    __syncthreads();
    if (threadIdx.x == 0) grow[t] -= scale;
    __syncthreads();
  }
}

}  // namespace

void LaunchCrossEntropyForward(DType dtype, const void* logits, DType target_dtype,
                               const void* targets, const void* weights, int64_t ignore_index,
                               void* losses, void* lse, int64_t rows, int64_t v,
                               cudaStream_t stream) {
  if (rows == 0) return;
  bool index_ok = false;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    index_ok = VisitIndex(target_dtype, [&](auto itag) {
      using I = decltype(itag);
      CrossEntropyForwardKernel<T, I><<<RowBlocks(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(logits), targets, static_cast<const T*>(weights), ignore_index,
          static_cast<T*>(losses), static_cast<T*>(lse), rows, v);
    });
  });
  if (!ok) BadDType("cross_entropy", dtype);
  if (!index_ok) BadDType("cross_entropy targets", target_dtype);
  CheckLaunch("cross_entropy");
}

void LaunchCrossEntropyBackward(DType dtype, const void* logits, DType target_dtype,
                                const void* targets, const void* weights, int64_t ignore_index,
                                const void* lse, const void* grad_losses, void* grad_logits,
                                int64_t rows, int64_t v, cudaStream_t stream) {
  if (rows == 0) return;
  bool index_ok = false;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    index_ok = VisitIndex(target_dtype, [&](auto itag) {
      using I = decltype(itag);
      CrossEntropyBackwardKernel<T, I><<<RowBlocks(rows), kThreads, 0, stream>>>(
          static_cast<const T*>(logits), targets, static_cast<const T*>(weights), ignore_index,
          static_cast<const T*>(lse), static_cast<const T*>(grad_losses),
          static_cast<T*>(grad_logits), rows, v);
    });
  });
  if (!ok) BadDType("cross_entropy backward", dtype);
  if (!index_ok) BadDType("cross_entropy backward targets", target_dtype);
  CheckLaunch("cross_entropy backward");
}

}  // namespace fam::cuda
