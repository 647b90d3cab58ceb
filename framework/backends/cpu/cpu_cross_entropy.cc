// (stub, to be implemented)
#include "framework/backends/cpu/cpu_backend.h"

namespace fam {

void CpuBackend::CrossEntropyForward(const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

void CpuBackend::CrossEntropyBackward(const Tensor&, const Tensor&, const Tensor&, int64_t, const Tensor&, const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam
