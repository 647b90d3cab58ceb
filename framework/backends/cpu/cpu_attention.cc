// (stub, to be implemented)
#include "framework/backends/cpu/cpu_backend.h"

namespace fam {

void CpuBackend::AttentionForward(const AttentionArgs&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

void CpuBackend::AttentionBackward(const AttentionGradArgs&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam
