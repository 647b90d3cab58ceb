// CudaBackend: fused RMSNorm and row softmax (kernels in cuda_norm.cu), as cpu_norm.cc.
#include <algorithm>

#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_backend_internal.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

void CudaBackend::RmsNormForward(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                                 const Tensor& rstd) {
  int64_t n, d;
  RowsOf("rmsnorm", x, &n, &d);
  FAM_CHECK(w.numel() == d && w.dtype() == x.dtype() && w.is_contiguous(),
            "rmsnorm on cuda: weight ", w.Describe(), " does not match ", x.Describe());
  CheckContiguous("rmsnorm", y);
  CheckSame("rmsnorm", x, y);
  FAM_CHECK(rstd.numel() == n && rstd.dtype() == x.dtype() && rstd.is_contiguous(),
            "rmsnorm on cuda: rstd ", rstd.Describe(), " does not match ", x.Describe());
  DeviceGuard guard(device_);
  LaunchRmsNormForward(x.dtype(), x.raw_data(), w.raw_data(), eps, y.raw_data(), rstd.raw_data(), n,
                       d, stream_);
}

void CudaBackend::RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                  const Tensor& grad_y, const Tensor& grad_x,
                                  const Tensor& grad_w) {
  int64_t n, d;
  RowsOf("rmsnorm backward", x, &n, &d);
  FAM_CHECK(w.numel() == d && w.dtype() == x.dtype() && w.is_contiguous() && rstd.numel() == n &&
                rstd.dtype() == x.dtype() && rstd.is_contiguous(),
            "rmsnorm backward on cuda: weight ", w.Describe(), " or rstd ", rstd.Describe(),
            " does not match ", x.Describe());
  CheckContiguous("rmsnorm backward", grad_y);
  CheckSame("rmsnorm backward", x, grad_y);
  DeviceGuard guard(device_);
  if (grad_x.defined()) {
    CheckContiguous("rmsnorm backward", grad_x);
    CheckSame("rmsnorm backward", x, grad_x);
    LaunchRmsNormBackwardX(x.dtype(), x.raw_data(), w.raw_data(), rstd.raw_data(),
                           grad_y.raw_data(), grad_x.raw_data(), n, d, stream_);
  }
  if (grad_w.defined()) {
    CheckContiguous("rmsnorm backward", grad_w);
    CheckSame("rmsnorm backward", w, grad_w);
    constexpr int64_t kWeightGradChunks = 32;
    const int64_t chunk_rows =
        std::max<int64_t>(1, (n + kWeightGradChunks - 1) / kWeightGradChunks);
    const int64_t chunks = n == 0 ? 0 : (n + chunk_rows - 1) / chunk_rows;
    Scratch partial(*allocator_,
                    static_cast<size_t>(std::max<int64_t>(1, chunks * d)) * sizeof(double));
    LaunchRmsNormBackwardW(x.dtype(), x.raw_data(), rstd.raw_data(), grad_y.raw_data(),
                           grad_w.raw_data(), n, d, partial.as<double>(), chunks, chunk_rows,
                           stream_);
  }
}

void CudaBackend::SoftmaxForward(const Tensor& x, const Tensor& y) {
  int64_t n, d;
  RowsOf("softmax", x, &n, &d);
  CheckContiguous("softmax", y);
  CheckSame("softmax", x, y);
  DeviceGuard guard(device_);
  LaunchSoftmaxForward(x.dtype(), x.raw_data(), y.raw_data(), n, d, stream_);
}

void CudaBackend::SoftmaxBackward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x) {
  int64_t n, d;
  RowsOf("softmax backward", y, &n, &d);
  CheckContiguous("softmax backward", grad_y);
  CheckContiguous("softmax backward", grad_x);
  CheckSame("softmax backward", y, grad_y);
  CheckSame("softmax backward", y, grad_x);
  DeviceGuard guard(device_);
  LaunchSoftmaxBackward(y.dtype(), y.raw_data(), grad_y.raw_data(), grad_x.raw_data(), n, d,
                        stream_);
}

}  // namespace fam::cuda
