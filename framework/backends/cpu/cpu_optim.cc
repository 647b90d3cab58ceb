// CPU optimizer kernels: the fused AdamW update (decoupled weight decay, bias-corrected moments),
// one OpenMP-parallel pass over the parameter; the Adafactor update (factored or unfactored second
// moments, update clipping, momentum, weight decay) accumulating in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr int64_t kOptimParallelGrain = 1 << 14;

// U = G / sqrt(V) for every element, with V from the factored (row, col) state, after updating
// that state with G. Returns U in double.
template <typename T>
std::vector<double> AdafactorFactoredU(const T* g, T* row, T* col, const AdafactorArgs& a) {
  const int64_t n = a.n, m = a.m;
  std::vector<double> u(static_cast<size_t>(a.batch * n * m));
  for (int64_t b = 0; b < a.batch; ++b) {
    const T* gb = g + b * n * m;
    T* rb = row + b * n;
    T* cb = col + b * m;
    std::vector<double> col_sum(m, 0.0);
    double row_state_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      double row_sum = 0;
      for (int64_t j = 0; j < m; ++j) {
        const double sq = static_cast<double>(gb[i * m + j]) * gb[i * m + j] + a.eps1;
        row_sum += sq;
        col_sum[j] += sq;
      }
      rb[i] = static_cast<T>(a.decay * rb[i] + (1.0 - a.decay) * (row_sum / m));
      row_state_sum += rb[i];
    }
    for (int64_t j = 0; j < m; ++j)
      cb[j] = static_cast<T>(a.decay * cb[j] + (1.0 - a.decay) * (col_sum[j] / n));
    const double row_mean = row_state_sum / n;
    double* ub = u.data() + b * n * m;
#pragma omp parallel for if (n * m > kOptimParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
      const double r = rb[i] / row_mean;
      for (int64_t j = 0; j < m; ++j) ub[i * m + j] = gb[i * m + j] / std::sqrt(r * cb[j]);
    }
  }
  return u;
}

// The same with the unfactored state sq (like the parameter).
template <typename T>
std::vector<double> AdafactorUnfactoredU(const T* g, T* sq, int64_t n, const AdafactorArgs& a) {
  std::vector<double> u(static_cast<size_t>(n));
#pragma omp parallel for if (n > kOptimParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const double gi = g[i];
    const double v = a.decay * sq[i] + (1.0 - a.decay) * (gi * gi + a.eps1);
    sq[i] = static_cast<T>(v);
    u[i] = gi / std::sqrt(static_cast<double>(sq[i]));
  }
  return u;
}

// Clips U to RMS <= clip_threshold, applies momentum when exp_avg is given, updates the parameter.
template <typename T>
void AdafactorApply(const std::vector<double>& u, T* param, T* exp_avg, const AdafactorArgs& a) {
  const int64_t n = static_cast<int64_t>(u.size());
  double sum_sq = 0;
#pragma omp parallel for reduction(+ : sum_sq) if (n > kOptimParallelGrain)
  for (int64_t i = 0; i < n; ++i) sum_sq += u[i] * u[i];
  const double rms = std::sqrt(sum_sq / static_cast<double>(n));
  const double scale = 1.0 / std::max(1.0, rms / a.clip_threshold);
  const double decay = 1.0 - a.lr * a.weight_decay;
#pragma omp parallel for if (n > kOptimParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    double update = u[i] * scale;
    if (exp_avg != nullptr) {
      const double mi = a.beta1 * exp_avg[i] + (1.0 - a.beta1) * update;
      exp_avg[i] = static_cast<T>(mi);
      update = mi;
    }
    param[i] = static_cast<T>(param[i] * decay - a.lr * update);
  }
}

}  // namespace

void CpuBackend::AdafactorUpdate(const AdafactorArgs& a) {
  CheckAdafactorArgs(a);
  DispatchFloat(a.param.dtype(), "adafactor update", [&](auto tag) {
    using T = decltype(tag);
    const std::vector<double> u =
        a.row.defined() ? AdafactorFactoredU<T>(a.grad.kernel_data<T>(), a.row.kernel_data<T>(),
                                                a.col.kernel_data<T>(), a)
                        : AdafactorUnfactoredU<T>(a.grad.kernel_data<T>(), a.sq.kernel_data<T>(),
                                                  a.param.numel(), a);
    AdafactorApply<T>(u, a.param.kernel_data<T>(),
                      a.exp_avg.defined() ? a.exp_avg.kernel_data<T>() : nullptr, a);
  });
}

void CpuBackend::AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                             const Tensor& exp_avg_sq, double lr, double beta1, double beta2,
                             double eps, double weight_decay, int64_t step) {
  CheckAdamWArgs(param, grad, exp_avg, exp_avg_sq, step);
  const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  DispatchFloat(param.dtype(), "adamw update", [&](auto tag) {
    using T = decltype(tag);
    T* p = param.kernel_data<T>();
    const T* g = grad.kernel_data<T>();
    T* m = exp_avg.kernel_data<T>();
    T* v = exp_avg_sq.kernel_data<T>();
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
