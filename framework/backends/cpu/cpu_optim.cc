// (stub, to be implemented)
#include "framework/backends/cpu/cpu_backend.h"

namespace fam {

void CpuBackend::AdamWUpdate(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, double, double, double, double, int64_t) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam
