// CudaBackend: fused AdamW and Adafactor updates (kernels in cuda_optim.cu), as cpu_optim.cc.
#include <cmath>

#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_backend_internal.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

void CudaBackend::AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                              const Tensor& exp_avg_sq, double lr, double beta1, double beta2,
                              double eps, double weight_decay, int64_t step) {
  CheckAdamWArgs(param, grad, exp_avg, exp_avg_sq, step);
  CheckFloat("adamw update", param);
  const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  AdamWCoefficients c;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.one_minus_beta1 = 1.0 - beta1;
  c.one_minus_beta2 = 1.0 - beta2;
  c.decay = 1.0 - lr * weight_decay;
  c.step_size = lr / bias1;
  c.inv_sqrt_bias2 = 1.0 / std::sqrt(bias2);
  c.eps = eps;
  DeviceGuard guard(device_);
  LaunchAdamW(param.dtype(), param.raw_data(), grad.raw_data(), exp_avg.raw_data(),
              exp_avg_sq.raw_data(), param.numel(), c, stream_);
}

void CudaBackend::AdafactorUpdate(const AdafactorArgs& a) {
  CheckAdafactorArgs(a);
  const int64_t numel = a.param.numel();
  if (numel == 0) return;
  DeviceGuard guard(device_);
  const bool factored = a.row.defined();
  Scratch u(*allocator_, static_cast<size_t>(numel) * sizeof(double));
  Scratch partial(*allocator_, (kSumSquaresBlocks + 1) * sizeof(double));
  Scratch row_mean(*allocator_, static_cast<size_t>(factored ? a.batch : 1) * sizeof(double));
  AdafactorCoefficients c{a.decay, a.eps1, a.clip_threshold, a.beta1, a.lr, a.weight_decay};
  LaunchAdafactor(a.param.dtype(), a.param.raw_data(), a.grad.raw_data(),
                  factored ? a.row.raw_data() : nullptr, factored ? a.col.raw_data() : nullptr,
                  factored ? nullptr : a.sq.raw_data(),
                  a.exp_avg.defined() ? a.exp_avg.raw_data() : nullptr, factored ? a.batch : 1,
                  factored ? a.n : 1, factored ? a.m : numel, c, u.as<double>(),
                  partial.as<double>(), row_mean.as<double>(), stream_);
}

}  // namespace fam::cuda
