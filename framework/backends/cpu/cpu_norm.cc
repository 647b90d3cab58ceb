// (stub, to be implemented)
#include "framework/backends/cpu/cpu_backend.h"

namespace fam {

void CpuBackend::RmsNormForward(const Tensor&, const Tensor&, double, const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

void CpuBackend::RmsNormBackward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

void CpuBackend::SoftmaxForward(const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

void CpuBackend::SoftmaxBackward(const Tensor&, const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam
