// (stub, to be implemented)
#include "framework/ops/op_util.h"

namespace fam::ops {

Tensor CrossEntropy(const Tensor&, const Tensor&, const Tensor&, int64_t) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam::ops
