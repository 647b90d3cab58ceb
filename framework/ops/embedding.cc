// (stub, to be implemented)
#include "framework/ops/op_util.h"

namespace fam::ops {

Tensor Embedding(const Tensor&, const Tensor&) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam::ops
