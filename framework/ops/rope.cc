// (stub, to be implemented)
#include "framework/ops/op_util.h"

namespace fam::ops {

Tensor Rope(const Tensor&, const Tensor&, double) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam::ops
