// CudaBackend: fused cross-entropy over logits rows (kernels in cuda_cross_entropy.cu), as
// cpu_cross_entropy.cc. Targets were range-checked by the op (ops::CheckIndexRange).
#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_backend_internal.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

void CudaBackend::CrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                      const Tensor& weights, int64_t ignore_index,
                                      const Tensor& losses, const Tensor& lse) {
  int64_t n, v;
  RowsOf("cross_entropy", logits, &n, &v);
  FAM_CHECK(targets.numel() == n, "cross_entropy on cuda: targets ", targets.Describe(),
            " do not match logits ", logits.Describe());
  FAM_CHECK(!weights.defined() || (weights.numel() == n && weights.is_contiguous() &&
                                   weights.dtype() == logits.dtype()),
            "cross_entropy on cuda: weights ", weights.defined() ? weights.Describe() : "",
            " do not match logits ", logits.Describe());
  for (const Tensor* t : {&losses, &lse}) {
    CheckContiguous("cross_entropy", *t);
    FAM_CHECK(t->numel() == n && t->dtype() == logits.dtype(),
              "cross_entropy on cuda: ", t->Describe(), " does not match logits ",
              logits.Describe());
  }
  DeviceGuard guard(device_);
  LaunchCrossEntropyForward(logits.dtype(), logits.raw_data(), targets.dtype(), targets.raw_data(),
                            weights.defined() ? weights.raw_data() : nullptr, ignore_index,
                            losses.raw_data(), lse.raw_data(), n, v, stream_);
}

void CudaBackend::CrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                       const Tensor& weights, int64_t ignore_index,
                                       const Tensor& lse, const Tensor& grad_losses,
                                       const Tensor& grad_logits) {
  int64_t n, v;
  RowsOf("cross_entropy backward", logits, &n, &v);
  FAM_CHECK(targets.numel() == n, "cross_entropy backward on cuda: targets ", targets.Describe(),
            " do not match logits ", logits.Describe());
  FAM_CHECK(!weights.defined() || (weights.numel() == n && weights.is_contiguous() &&
                                   weights.dtype() == logits.dtype()),
            "cross_entropy backward on cuda: weights do not match logits ", logits.Describe());
  for (const Tensor* t : {&lse, &grad_losses}) {
    CheckContiguous("cross_entropy backward", *t);
    FAM_CHECK(t->numel() == n && t->dtype() == logits.dtype(),
              "cross_entropy backward on cuda: ", t->Describe(), " does not match logits ",
              logits.Describe());
  }
  CheckContiguous("cross_entropy backward", grad_logits);
  CheckSame("cross_entropy backward", logits, grad_logits);
  DeviceGuard guard(device_);
  LaunchCrossEntropyBackward(logits.dtype(), logits.raw_data(), targets.dtype(), targets.raw_data(),
                             weights.defined() ? weights.raw_data() : nullptr, ignore_index,
                             lse.raw_data(), grad_losses.raw_data(), grad_logits.raw_data(), n, v,
                             stream_);
}

}  // namespace fam::cuda
