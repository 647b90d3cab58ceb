// CUDA kernels: fused RMSNorm forward and backward and row softmax forward/backward, one block per
// row with double row statistics (as cpu_norm.cc); a softmax row that is all -inf gets zeros. The
// weight gradient sums fixed row chunks into a double scratch buffer, then the chunks in order:
// deterministic, no atomics.
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

template <typename T>
__global__ void RmsNormForwardKernel(const T* x, const T* w, double eps, T* y, T* rstd,
                                     int64_t rows, int64_t d) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    double sum_sq = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
      sum_sq += static_cast<double>(xr[j]) * static_cast<double>(xr[j]);
    sum_sq = BlockSum(sum_sq, shared);
    const double inv = 1.0 / sqrt(sum_sq / static_cast<double>(d) + eps);
    const T s = static_cast<T>(inv);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = xr[j] * s * w[j];
    if (threadIdx.x == 0) rstd[r] = s;
  }
}

// grad_x = r·(g∘w) − x·r³/D · Σ(g∘w∘x).
template <typename T>
__global__ void RmsNormBackwardXKernel(const T* x, const T* w, const T* rstd, const T* g, T* gx,
                                       int64_t rows, int64_t d) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    const T* gr = g + r * d;
    T* gxr = gx + r * d;
    double dot = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
      dot += static_cast<double>(gr[j]) * static_cast<double>(w[j]) * static_cast<double>(xr[j]);
    dot = BlockSum(dot, shared);
    const double inv = static_cast<double>(rstd[r]);
    const T a = static_cast<T>(inv);
    const T b = static_cast<T>(inv * inv * inv * dot / static_cast<double>(d));
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) gxr[j] = a * gr[j] * w[j] - b * xr[j];
  }
}

// partial[c, j] = Σ_{rows r of chunk c} g[r, j]·x[r, j]·rstd[r]; grid (column blocks, chunks).
template <typename T>
__global__ void RmsNormWeightPartialKernel(const T* x, const T* rstd, const T* g, int64_t rows,
                                           int64_t d, int64_t chunk_rows, double* partial) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t c = blockIdx.y;
  if (j >= d) return;
  const int64_t begin = c * chunk_rows;
  const int64_t end = begin + chunk_rows < rows ? begin + chunk_rows : rows;
  double acc = 0;
  for (int64_t r = begin; r < end; ++r)
    acc += static_cast<double>(g[r * d + j]) * static_cast<double>(x[r * d + j]) *
           static_cast<double>(rstd[r]);
  partial[c * d + j] = acc;
}

template <typename T>
__global__ void RmsNormWeightFinalKernel(const double* partial, int64_t chunks, int64_t d, T* gw) {
  FAM_CUDA_KERNEL_LOOP(j, d) {
    double total = 0;
    for (int64_t c = 0; c < chunks; ++c) total += partial[c * d + j];
    gw[j] = static_cast<T>(total);
  }
}

template <typename T>
__global__ void SoftmaxForwardKernel(const T* x, T* y, int64_t rows, int64_t d) {
  __shared__ T shared_max[32];
  __shared__ double shared_sum[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    const T max = RowMax(xr, d, shared_max);
    if (max == NegInf<T>()) {
      for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] = T(0);
      continue;  // uniform across the block
    }
    double sum = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const T e = formula::Exp(xr[j] - max);
      yr[j] = e;
      sum += static_cast<double>(e);
    }
    sum = BlockSum(sum, shared_sum);
    const T inv = static_cast<T>(1.0 / sum);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) yr[j] *= inv;
  }
}

template <typename T>
__global__ void SoftmaxBackwardKernel(const T* y, const T* g, T* gx, int64_t rows, int64_t d) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* yr = y + r * d;
    const T* gr = g + r * d;
    T* gxr = gx + r * d;
    double dot = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
      dot += static_cast<double>(gr[j]) * static_cast<double>(yr[j]);
    dot = BlockSum(dot, shared);
    const T s = static_cast<T>(dot);
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) gxr[j] = yr[j] * (gr[j] - s);
  }
}

}  // namespace

void LaunchRmsNormForward(DType dtype, const void* x, const void* w, double eps, void* y,
                          void* rstd, int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    RmsNormForwardKernel<T><<<RowBlocks(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), eps, static_cast<T*>(y),
        static_cast<T*>(rstd), rows, d);
  });
  if (!ok) BadDType("rmsnorm", dtype);
  CheckLaunch("rmsnorm");
}

void LaunchRmsNormBackwardX(DType dtype, const void* x, const void* w, const void* rstd,
                            const void* grad_y, void* grad_x, int64_t rows, int64_t d,
                            cudaStream_t stream) {
  if (rows == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    RmsNormBackwardXKernel<T><<<RowBlocks(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(rstd),
        static_cast<const T*>(grad_y), static_cast<T*>(grad_x), rows, d);
  });
  if (!ok) BadDType("rmsnorm backward", dtype);
  CheckLaunch("rmsnorm backward");
}

void LaunchRmsNormBackwardW(DType dtype, const void* x, const void* rstd, const void* grad_y,
                            void* grad_w, int64_t rows, int64_t d, double* partial, int64_t chunks,
                            int64_t chunk_rows, cudaStream_t stream) {
  if (d == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (chunks > 0) {
      const dim3 grid(static_cast<unsigned>((d + kThreads - 1) / kThreads),
                      static_cast<unsigned>(chunks));
      RmsNormWeightPartialKernel<T><<<grid, kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(rstd), static_cast<const T*>(grad_y),
          rows, d, chunk_rows, partial);
    }
    RmsNormWeightFinalKernel<T>
        <<<BlocksFor(d), kThreads, 0, stream>>>(partial, chunks, d, static_cast<T*>(grad_w));
  });
  if (!ok) BadDType("rmsnorm weight backward", dtype);
  CheckLaunch("rmsnorm weight backward");
}

void LaunchSoftmaxForward(DType dtype, const void* x, void* y, int64_t rows, int64_t d,
                          cudaStream_t stream) {
  if (rows == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    SoftmaxForwardKernel<T><<<RowBlocks(rows), kThreads, 0, stream>>>(static_cast<const T*>(x),
                                                                      static_cast<T*>(y), rows, d);
  });
  if (!ok) BadDType("softmax", dtype);
  CheckLaunch("softmax");
}

void LaunchSoftmaxBackward(DType dtype, const void* y, const void* grad_y, void* grad_x,
                           int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    SoftmaxBackwardKernel<T><<<RowBlocks(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(y), static_cast<const T*>(grad_y), static_cast<T*>(grad_x), rows, d);
  });
  if (!ok) BadDType("softmax backward", dtype);
  CheckLaunch("softmax backward");
}

}  // namespace fam::cuda
