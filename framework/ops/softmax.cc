// (stub, to be implemented)
#include "framework/ops/op_util.h"

namespace fam::ops {

Tensor Softmax(const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam::ops
