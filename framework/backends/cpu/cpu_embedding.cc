// (stub, to be implemented)
#include "framework/backends/cpu/cpu_backend.h"

namespace fam {

void CpuBackend::EmbeddingForward(const Tensor&, const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

void CpuBackend::EmbeddingBackward(const Tensor&, const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam
