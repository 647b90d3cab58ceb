// CPU optimizer kernels: the fused AdamW update (decoupled weight decay, bias-corrected moments),
// one OpenMP-parallel pass over the parameter.
#include <cmath>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr int64_t kOptimParallelGrain = 1 << 14;

}  // namespace

void CpuBackend::AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                             const Tensor& exp_avg_sq, double lr, double beta1, double beta2,
                             double eps, double weight_decay, int64_t step) {
  for (const Tensor* t : {&grad, &exp_avg, &exp_avg_sq}) {
    FAM_CHECK(t->shape() == param.shape() && t->dtype() == param.dtype(),
              "adamw update: ", t->Describe(), " does not match parameter ", param.Describe());
  }
  for (const Tensor* t : {&param, &grad, &exp_avg, &exp_avg_sq}) {
    FAM_CHECK(t->is_contiguous(), "adamw update: ", t->Describe(), " is not contiguous");
  }
  FAM_CHECK(step >= 1, "adamw update: step counts from 1, got ", step);
  const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  cpu::DispatchFloat(param.dtype(), "adamw update", [&](auto tag) {
    using T = decltype(tag);
    T* p = param.data<T>();
    const T* g = grad.data<T>();
    T* m = exp_avg.data<T>();
    T* v = exp_avg_sq.data<T>();
    const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
    const T one_minus_b1 = static_cast<T>(1.0 - beta1), one_minus_b2 = static_cast<T>(1.0 - beta2);
    const T decay = static_cast<T>(1.0 - lr * weight_decay);
    const T step_size = static_cast<T>(lr / bias1);
    const T inv_sqrt_bias2 = static_cast<T>(1.0 / std::sqrt(bias2));
    const T epsilon = static_cast<T>(eps);
    const int64_t n = param.numel();
#pragma omp parallel for if (n > kOptimParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = g[i];
      const T mi = b1 * m[i] + one_minus_b1 * gi;
      const T vi = b2 * v[i] + one_minus_b2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bias2 + epsilon);
    }
  });
}

}  // namespace fam
