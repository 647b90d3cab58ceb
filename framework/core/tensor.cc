#include "framework/core/tensor.h"

#include <algorithm>
#include <cmath>

namespace fam {

Tensor Tensor::MakeView(std::shared_ptr<Storage> storage, const Shape& shape,
                        const Strides& strides, int64_t offset, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::Empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) FAM_CHECK(d >= 0, "negative dimension in shape ", ShapeString(shape));
  size_t nbytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  return MakeView(Storage::Allocate(nbytes, device), shape, ContiguousStrides(shape), 0, dtype);
}

Tensor Tensor::FromFloats(const std::vector<float>& values, const Shape& shape) {
  FAM_CHECK(static_cast<int64_t>(values.size()) == NumElements(shape), values.size(),
            " values do not fill shape ", ShapeString(shape));
  Tensor t = Empty(shape, DType::kF32);
  std::copy(values.begin(), values.end(), t.data<float>());
  return t;
}

Tensor Tensor::FromInts(const std::vector<int64_t>& values, const Shape& shape, DType dtype) {
  FAM_CHECK(static_cast<int64_t>(values.size()) == NumElements(shape), values.size(),
            " values do not fill shape ", ShapeString(shape));
  FAM_CHECK(dtype == DType::kI64 || dtype == DType::kI32, "FromInts needs an integer dtype");
  Tensor t = Empty(shape, dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kI64) {
      t.data<int64_t>()[i] = values[i];
    } else {
      t.data<int32_t>()[i] = static_cast<int32_t>(values[i]);
    }
  }
  return t;
}

Tensor Tensor::Arange(int64_t n, DType dtype) {
  std::vector<int64_t> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = i;
  return FromInts(values, {n}, dtype);
}

int64_t Tensor::size(int64_t axis) const { return shape()[NormalizeAxis(axis, dim())]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  int64_t expected = 1;
  for (int i = static_cast<int>(dim()) - 1; i >= 0; --i) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

std::string Tensor::Describe() const {
  if (!defined()) return "undefined tensor";
  return absl::StrCat(DTypeName(dtype()), ShapeString(shape()), " on ", device().ToString());
}

void* Tensor::raw_data() const {
  return static_cast<char*>(storage()->data()) +
         offset() * static_cast<int64_t>(DTypeSize(dtype()));
}

Tensor& Tensor::set_requires_grad(bool value) {
  FAM_CHECK(!value || IsFloating(dtype()), "only floating tensors can require grad, got ",
            Describe());
  FAM_CHECK(is_leaf(), "requires_grad can only be set on leaf tensors");
  impl().requires_grad = value;
  return *this;
}

Tensor Tensor::detach() const { return MakeView(storage(), shape(), strides(), offset(), dtype()); }

}  // namespace fam
