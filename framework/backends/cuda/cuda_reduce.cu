// CUDA kernels: sum over arbitrary axes (one block per output element, double accumulation,
// fixed-shape tree reduction: deterministic) and the sum of squares of a whole tensor (fixed
// number of partial sums, then one block: deterministic).
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

template <typename T>
__global__ void ReduceSumKernel(const T* x, T* out, int64_t outputs, NdIndexer<1> kept,
                                int64_t reduced_count, NdIndexer<1> reduced) {
  __shared__ double shared[32];
  for (int64_t o = blockIdx.x; o < outputs; o += gridDim.x) {
    int64_t base;
    kept.Offsets(o, &base);
    double acc = 0;
    for (int64_t r = threadIdx.x; r < reduced_count; r += blockDim.x) {
      int64_t off;
      reduced.Offsets(r, &off);
      acc += static_cast<double>(x[base + off]);
    }
    acc = BlockSum(acc, shared);
    if (threadIdx.x == 0) out[o] = static_cast<T>(acc);
  }
}

template <typename T>
__global__ void SumSquaresPartialKernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[32];
  double acc = 0;
  FAM_CUDA_KERNEL_LOOP(i, n) {
    const double v = static_cast<double>(x[i]);
    acc += v * v;
  }
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void SumPartialsKernel(const double* partial, int count, double* result) {
  __shared__ double shared[32];
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) *result = acc;
}

}  // namespace

void LaunchReduceSum(DType dtype, const void* x, void* out, int64_t outputs,
                     const NdIndexer<1>& kept, int64_t reduced_count,
                     const NdIndexer<1>& reduced, cudaStream_t stream) {
  if (outputs == 0) return;
  const int64_t blocks = std::min<int64_t>(outputs, kMaxBlocks);
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    ReduceSumKernel<T><<<blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), outputs, kept, reduced_count, reduced);
  });
  if (!ok) BadDType("sum", dtype);
  CheckLaunch("sum");
}

void LaunchSumSquares(DType dtype, const void* x, int64_t n, double* partial, double* result,
                      cudaStream_t stream) {
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    SumSquaresPartialKernel<T><<<kSumSquaresBlocks, kThreads, 0, stream>>>(
        static_cast<const T*>(x), n, partial);
  });
  if (!ok) BadDType("sum of squares", dtype);
  CheckLaunch("sum of squares");
  SumPartialsKernel<<<1, kThreads, 0, stream>>>(partial, kSumSquaresBlocks, result);
  CheckLaunch("sum of squares (partials)");
}

}  // namespace fam::cuda
