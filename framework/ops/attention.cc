// (stub, to be implemented)
#include "framework/ops/op_util.h"

namespace fam::ops {

Tensor Attention(const Tensor&, const std::vector<Tensor>&, const std::vector<Tensor>&, const std::vector<KeyMask>&, double) { ThrowError(absl::StatusCode::kUnimplemented, "not implemented yet"); }

}  // namespace fam::ops
