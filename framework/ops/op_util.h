// Helpers shared by op implementations: device/dtype checks, compute-dtype promotion (bf16 → f32)
// and small node classes. Not part of the public op API.
#pragma once

#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/ops/ops.h"

namespace fam::ops {

// The backend of the inputs' common device; throws naming the op and both devices on a mismatch.
Backend& BackendFor(const char* op, const std::vector<Tensor>& inputs);
// Throws unless every defined input has the same floating dtype.
void CheckSameFloatDType(const char* op, const std::vector<Tensor>& inputs);
// The dtype kernels compute in: f64 stays f64, everything floating else computes in f32.
DType ComputeDType(DType dtype);
// x converted (no autograd) to its compute dtype and made contiguous.
Tensor ForCompute(const Tensor& x);
// A new contiguous tensor like `shape` on `device`.
inline Tensor NewLike(const Shape& shape, DType dtype, Device device) {
  return Tensor::Empty(shape, dtype, device);
}
// Casts a computed result back to the storage dtype (no autograd; used inside ops).
Tensor FromCompute(const Tensor& y, DType storage_dtype);

}  // namespace fam::ops
