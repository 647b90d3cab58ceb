// CudaBackend: rotate-half RoPE (kernel in cuda_rope.cu), as cpu_rope.cc.
#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_backend_internal.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

void CudaBackend::Rope(const Tensor& x, const Tensor& positions, const RopeSpec& rope, bool inverse,
                       const Tensor& out) {
  FAM_CHECK(x.dim() == 4, "rope on cuda: expected [B, H, T, D], got ", x.Describe());
  CheckFloat("rope", x);
  CheckContiguous("rope", x);
  CheckContiguous("rope", out);
  CheckSame("rope", x, out);
  const int64_t b = x.shape()[0], h = x.shape()[1], t = x.shape()[2], d = x.shape()[3];
  FAM_CHECK(d % 2 == 0, "rope: head dim must be even, got ", x.Describe());
  FAM_CHECK(positions.dim() == 2 && positions.shape()[0] == b && positions.shape()[1] == t &&
                positions.is_contiguous(),
            "rope on cuda: positions ", positions.Describe(), " do not match ", x.Describe());
  FAM_CHECK(positions.dtype() == DType::kI64 || positions.dtype() == DType::kI32,
            "rope: positions must be i32 or i64, got ", positions.Describe());
  DeviceGuard guard(device_);
  LaunchRope(x.dtype(), x.raw_data(), positions.dtype(), positions.raw_data(), rope, inverse,
             out.raw_data(), b, h, t, d, stream_);
}

}  // namespace fam::cuda
