#include "framework/ops/op_util.h"

#include "framework/autograd/node.h"
#include "framework/backends/dtype_dispatch.h"
#include "framework/ops/ops.h"

namespace fam::ops {
namespace {

// The engine sums gradients with these ops (framework/autograd/node.h). This file is linked into
// every program that runs an op (BackendFor below), so the arithmetic is there before any backward.
const bool g_grad_arithmetic_installed = [] {
  GradArithmetic arithmetic;
  arithmetic.add = [](const Tensor& a, const Tensor& b) { return Add(a, b); };
  arithmetic.add_in_place = [](const Tensor& dst, const Tensor& src) { AddInPlace(dst, src); };
  arithmetic.cast = [](const Tensor& x, DType dtype) { return Cast(x, dtype); };
  arithmetic.clone = [](const Tensor& x) { return Clone(x); };
  arithmetic.zeros = [](const Shape& shape, DType dtype, Device device) {
    return Tensor::Zeros(shape, dtype, device);
  };
  arithmetic.slice = [](const Tensor& x, int axis, int64_t start, int64_t end) {
    return Slice(x, axis, start, end);
  };
  InstallGradArithmetic(arithmetic);
  return true;
}();

}  // namespace

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

void CheckCrossEntropyInputs(const char* op, const std::string& rows_of, const Tensor& targets,
                             const Tensor& weights, int64_t n, int64_t vocab,
                             int64_t ignore_index) {
  const bool index_dtype =
      targets.defined() && (targets.dtype() == DType::kI32 || targets.dtype() == DType::kI64);
  FAM_CHECK(index_dtype && targets.dim() == 1 && targets.size(0) == n, op, ": targets ",
            targets.defined() ? targets.Describe() : "undefined", " do not match ", rows_of,
            " (need i32/i64 [N])");
  FAM_CHECK(!weights.defined() || (weights.dim() == 1 && weights.size(0) == n), op, ": weights ",
            weights.defined() ? weights.Describe() : "", " do not match ", rows_of, " (need [N])");
  CheckIndexRange(op, "target", targets, vocab, ignore_index);
}

void CheckIndexRange(const char* op, const char* what, const Tensor& indices, int64_t limit,
                     std::optional<int64_t> ignore) {
  const Tensor host = HostAddressable(indices.device()) ? ContiguousIndices(indices)
                                                        : To(indices, Device::CPU()).contiguous();
  DispatchIndex(host.dtype(), op, [&](auto tag) {
    using I = decltype(tag);
    const I* values = host.kernel_data<I>();
    for (int64_t i = 0; i < host.numel(); ++i) {
      const int64_t value = values[i];
      if (value >= 0 && value < limit) continue;
      if (ignore && value == *ignore) continue;
      if (ignore)
        ThrowInvalid(op, ": ", what, " ", value, " at position ", i, " is outside [0, ", limit,
                     ") and is not ignore_index ", *ignore);
      ThrowInvalid(op, ": ", what, " ", value, " at position ", i, " is outside [0, ", limit, ")");
    }
  });
}

Tensor ContiguousIndices(const Tensor& t) {
  if (t.is_contiguous()) return t.detach();
  Tensor out = Tensor::Empty(t.shape(), t.dtype(), t.device());
  GetBackend(t.device()).Copy(t, out);
  return out;
}

}  // namespace fam::ops
