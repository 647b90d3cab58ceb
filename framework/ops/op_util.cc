#include "framework/ops/op_util.h"

namespace fam::ops {

Backend& BackendFor(const char* op, const std::vector<Tensor>& inputs) {
  const Tensor* first = nullptr;
  for (const Tensor& t : inputs) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
    } else {
      FAM_CHECK(t.device() == first->device(), op, ": inputs on different devices (",
                first->Describe(), " and ", t.Describe(), ")");
    }
  }
  FAM_CHECK(first != nullptr, op, ": no defined input");
  return GetBackend(first->device());
}

void CheckSameFloatDType(const char* op, const std::vector<Tensor>& inputs) {
  const Tensor* first = nullptr;
  for (const Tensor& t : inputs) {
    if (!t.defined()) continue;
    FAM_CHECK(IsFloating(t.dtype()), op, ": needs a floating tensor, got ", t.Describe());
    if (!first) {
      first = &t;
    } else {
      FAM_CHECK(t.dtype() == first->dtype(), op, ": dtype mismatch (", first->Describe(), " and ",
                t.Describe(), ")");
    }
  }
}

DType ComputeDType(DType dtype) { return dtype == DType::kF64 ? DType::kF64 : DType::kF32; }

Tensor ForCompute(const Tensor& x) {
  DType target = ComputeDType(x.dtype());
  if (x.dtype() == target && x.is_contiguous()) return x.detach();
  Tensor out = Tensor::Empty(x.shape(), target, x.device());
  GetBackend(x.device()).Copy(x, out);
  return out;
}

Tensor FromCompute(const Tensor& y, DType storage_dtype) {
  if (y.dtype() == storage_dtype) return y;
  Tensor out = Tensor::Empty(y.shape(), storage_dtype, y.device());
  GetBackend(y.device()).Copy(y, out);
  return out;
}

}  // namespace fam::ops
