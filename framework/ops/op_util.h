// Helpers shared by op implementations: device/dtype checks, compute-dtype promotion (bf16 → f32)
// and small node classes. Not part of the public op API.
#pragma once

#include <optional>
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

// The inputs of a cross-entropy over n rows of vocab logits (CrossEntropy, LinearCrossEntropy):
// targets i32/i64 [n], each in [0, vocab) or ignore_index; weights undefined or [n]. `rows_of`
// describes the tensor the rows come from ("logits f32[4, 9]"); errors name `op`.
void CheckCrossEntropyInputs(const char* op, const std::string& rows_of, const Tensor& targets,
                             const Tensor& weights, int64_t n, int64_t vocab, int64_t ignore_index);
// A detached contiguous integer tensor: `t` itself when already contiguous, else a copy.
Tensor ContiguousIndices(const Tensor& t);
// The one range check of index inputs (embedding ids, cross-entropy targets), done here so the
// backends need not: every value of the i32/i64 tensor `indices` must lie in [0, limit) or equal
// `ignore` when given. Host-addressable memory is read in place; other devices' indices come over
// in one copy. The error names `op`, the value's `what` ("id", "target") and its position.
void CheckIndexRange(const char* op, const char* what, const Tensor& indices, int64_t limit,
                     std::optional<int64_t> ignore = std::nullopt);

}  // namespace fam::ops
