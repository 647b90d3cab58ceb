// CUDA kernel: fused AdamW update (decoupled weight decay, bias-corrected moments), one pass over
// the parameter with the CPU backend's arithmetic (cpu_optim.cc).
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
    p[i] = p[i] * decay - step_size * mi / (DSqrt(vi) * inv_sqrt_bias2 + eps);
  }
}

}  // namespace

void LaunchAdamW(DType dtype, void* param, const void* grad, void* exp_avg, void* exp_avg_sq,
                 int64_t n, const AdamWCoefficients& c, cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
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
