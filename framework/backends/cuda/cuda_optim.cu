// CUDA kernels: fused AdamW update (decoupled weight decay, bias-corrected moments), one pass over
// the parameter with the CPU backend's arithmetic (cpu_optim.cc); Adafactor as a short chain of
// kernels (second-moment state, the raw update u in double, its sum of squares in fixed partials,
// the clipped apply) with the CPU's arithmetic in double.
#include <algorithm>

#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

template <typename T>
__global__ void AdamWKernel(T* p, const T* g, T* m, T* v, int64_t n, T b1, T b2, T one_minus_b1,
                            T one_minus_b2, T decay, T step_size, T inv_sqrt_bias2, T eps) {
  FAM_CUDA_KERNEL_LOOP(i, n) {
    const T gi = g[i];
    const T mi = b1 * m[i] + one_minus_b1 * gi;
    const T vi = b2 * v[i] + one_minus_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (formula::Sqrt(vi) * inv_sqrt_bias2 + eps);
  }
}

// Factored state, rows: one block per (batch, row); row ← β̂·row + (1−β̂)·mean_j(g² + ε1).
template <typename T>
__global__ void AdafactorRowKernel(const T* g, T* row, int64_t rows, int64_t m,
                                   AdafactorCoefficients c) {
  __shared__ double shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* gr = g + r * m;
    double acc = 0;
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
      const double v = static_cast<double>(gr[j]);
      acc += v * v + c.eps1;
    }
    acc = BlockSum(acc, shared);
    if (threadIdx.x == 0)
      row[r] = static_cast<T>(c.decay * static_cast<double>(row[r]) +
                              (1.0 - c.decay) * (acc / static_cast<double>(m)));
  }
}

// Factored state, columns: one thread per (batch, column), summing its n rows in order (coalesced
// across the threads of a block).
template <typename T>
__global__ void AdafactorColKernel(const T* g, T* col, int64_t batch, int64_t n, int64_t m,
                                   AdafactorCoefficients c) {
  FAM_CUDA_KERNEL_LOOP(k, batch * m) {
    const int64_t b = k / m, j = k % m;
    const T* gb = g + b * n * m;
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double v = static_cast<double>(gb[i * m + j]);
      acc += v * v + c.eps1;
    }
    col[k] = static_cast<T>(c.decay * static_cast<double>(col[k]) +
                            (1.0 - c.decay) * (acc / static_cast<double>(n)));
  }
}

// row_mean[b] = mean of the (updated, stored) row state of batch entry b: one block per entry.
template <typename T>
__global__ void AdafactorRowMeanKernel(const T* row, int64_t batch, int64_t n, double* row_mean) {
  __shared__ double shared[32];
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    double acc = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      acc += static_cast<double>(row[b * n + i]);
    acc = BlockSum(acc, shared);
    if (threadIdx.x == 0) row_mean[b] = acc / static_cast<double>(n);
  }
}

// u = g / sqrt((row / row_mean) · col).
template <typename T>
__global__ void AdafactorFactoredUKernel(const T* g, const T* row, const T* col,
                                         const double* row_mean, int64_t batch, int64_t n,
                                         int64_t m, double* u) {
  FAM_CUDA_KERNEL_LOOP(k, batch * n * m) {
    const int64_t b = k / (n * m), i = (k / m) % n, j = k % m;
    const double r = static_cast<double>(row[b * n + i]) / row_mean[b];
    u[k] = static_cast<double>(g[k]) / sqrt(r * static_cast<double>(col[b * m + j]));
  }
}

// Unfactored: sq ← β̂·sq + (1−β̂)·(g² + ε1); u = g / sqrt(sq) (of the stored value).
template <typename T>
__global__ void AdafactorUnfactoredUKernel(const T* g, T* sq, int64_t numel,
                                           AdafactorCoefficients c, double* u) {
  FAM_CUDA_KERNEL_LOOP(k, numel) {
    const double gk = static_cast<double>(g[k]);
    const T v =
        static_cast<T>(c.decay * static_cast<double>(sq[k]) + (1.0 - c.decay) * (gk * gk + c.eps1));
    sq[k] = v;
    u[k] = gk / sqrt(static_cast<double>(v));
  }
}

// Clip by max(1, RMS(u) / d) with sum u² read from the device, momentum, decay, step.
template <typename T>
__global__ void AdafactorApplyKernel(T* param, T* exp_avg, const double* u, const double* sum_sq,
                                     int64_t numel, AdafactorCoefficients c) {
  const double rms = sqrt(*sum_sq / static_cast<double>(numel));
  const double scale = 1.0 / fmax(1.0, rms / c.clip_threshold);
  const double decay = 1.0 - c.lr * c.weight_decay;
  FAM_CUDA_KERNEL_LOOP(k, numel) {
    double update = u[k] * scale;
    if (exp_avg != nullptr) {
      const double mk = c.beta1 * static_cast<double>(exp_avg[k]) + (1.0 - c.beta1) * update;
      exp_avg[k] = static_cast<T>(mk);
      update = mk;
    }
    param[k] = static_cast<T>(static_cast<double>(param[k]) * decay - c.lr * update);
  }
}

}  // namespace

void LaunchAdafactor(DType dtype, void* param, const void* grad, void* row, void* col, void* sq,
                     void* exp_avg, int64_t batch, int64_t n, int64_t m,
                     const AdafactorCoefficients& c, double* u, double* partial, double* row_mean,
                     cudaStream_t stream) {
  const int64_t numel = batch * n * m;
  if (numel == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* g = static_cast<const T*>(grad);
    if (row != nullptr) {
      T* r = static_cast<T*>(row);
      T* cl = static_cast<T*>(col);
      AdafactorRowKernel<T><<<std::min<int64_t>(batch * n, kMaxBlocks), kThreads, 0, stream>>>(
          g, r, batch * n, m, c);
      AdafactorColKernel<T><<<BlocksFor(batch * m), kThreads, 0, stream>>>(g, cl, batch, n, m, c);
      AdafactorRowMeanKernel<T>
          <<<std::min<int64_t>(batch, kMaxBlocks), kThreads, 0, stream>>>(r, batch, n, row_mean);
      AdafactorFactoredUKernel<T>
          <<<BlocksFor(numel), kThreads, 0, stream>>>(g, r, cl, row_mean, batch, n, m, u);
    } else {
      AdafactorUnfactoredUKernel<T>
          <<<BlocksFor(numel), kThreads, 0, stream>>>(g, static_cast<T*>(sq), numel, c, u);
    }
  });
  if (!ok) BadDType("adafactor update", dtype);
  CheckLaunch("adafactor update (second moments)");
  double* sum_sq = partial + kSumSquaresBlocks;
  LaunchSumSquares(DType::kF64, u, numel, partial, sum_sq, stream);
  VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    AdafactorApplyKernel<T><<<BlocksFor(numel), kThreads, 0, stream>>>(
        static_cast<T*>(param), static_cast<T*>(exp_avg), u, sum_sq, numel, c);
  });
  CheckLaunch("adafactor update (apply)");
}

void LaunchAdamW(DType dtype, void* param, const void* grad, void* exp_avg, void* exp_avg_sq,
                 int64_t n, const AdamWCoefficients& c, cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    AdamWKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        static_cast<T*>(param), static_cast<const T*>(grad), static_cast<T*>(exp_avg),
        static_cast<T*>(exp_avg_sq), n, static_cast<T>(c.beta1), static_cast<T>(c.beta2),
        static_cast<T>(c.one_minus_beta1), static_cast<T>(c.one_minus_beta2),
        static_cast<T>(c.decay), static_cast<T>(c.step_size), static_cast<T>(c.inv_sqrt_bias2),
        static_cast<T>(c.eps));
  });
  if (!ok) BadDType("adamw update", dtype);
  CheckLaunch("adamw update");
}

}  // namespace fam::cuda
