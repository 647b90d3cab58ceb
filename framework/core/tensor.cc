#include "framework/core/tensor.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/ops/ops.h"

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
  for (int64_t d : shape)
    FAM_CHECK(d >= 0, "negative dimension in shape ", ShapeString(shape));
  size_t nbytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  return MakeView(Storage::Allocate(nbytes, device), shape, ContiguousStrides(shape), 0, dtype);
}

Tensor Tensor::Zeros(const Shape& shape, DType dtype, Device device) {
  return Full(shape, 0.0, dtype, device);
}

Tensor Tensor::Full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Empty(shape, dtype, device);
  GetBackend(device).Fill(t, value);
  return t;
}

Tensor Tensor::FromVector(const std::vector<double>& values, const Shape& shape, DType dtype) {
  FAM_CHECK(static_cast<int64_t>(values.size()) == NumElements(shape), values.size(),
            " values do not fill shape ", ShapeString(shape));
  Tensor t = Empty(shape, DType::kF64);
  std::copy(values.begin(), values.end(), t.data<double>());
  return dtype == DType::kF64 ? t : ops::Cast(t, dtype);
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
  return static_cast<char*>(storage()->data()) + offset() * static_cast<int64_t>(DTypeSize(dtype()));
}

namespace {

// A CPU tensor with t's values: t itself, or a copy from its device (synchronising).
Tensor HostView(const Tensor& t) {
  return t.device().is_cpu() ? t : ops::To(t.detach(), Device::CPU());
}

}  // namespace

std::vector<double> Tensor::ToDoubles() const {
  const Tensor host = HostView(*this);
  Tensor t = Tensor::Empty(shape(), DType::kF64);
  GetBackend(Device::CPU()).Copy(host, t);
  const double* p = t.data<double>();
  return std::vector<double>(p, p + numel());
}

std::vector<float> Tensor::ToFloats() const {
  std::vector<double> d = ToDoubles();
  return std::vector<float>(d.begin(), d.end());
}

std::vector<int64_t> Tensor::ToInts() const {
  const Tensor host = HostView(*this);
  Tensor t = Tensor::Empty(shape(), DType::kI64);
  GetBackend(Device::CPU()).Copy(host, t);
  const int64_t* p = t.data<int64_t>();
  return std::vector<int64_t>(p, p + numel());
}

double Tensor::item() const {
  FAM_CHECK(numel() == 1, "item() needs a one-element tensor, got ", Describe());
  return ToDoubles()[0];
}

Tensor& Tensor::set_requires_grad(bool value) {
  FAM_CHECK(!value || IsFloating(dtype()), "only floating tensors can require grad, got ",
            Describe());
  FAM_CHECK(is_leaf(), "requires_grad can only be set on leaf tensors");
  impl().requires_grad = value;
  return *this;
}

Tensor Tensor::detach() const {
  return MakeView(storage(), shape(), strides(), offset(), dtype());
}

Tensor Tensor::reshape(const Shape& shape) const { return ops::Reshape(*this, shape); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return ops::Transpose(*this, a, b); }
Tensor Tensor::permute(const std::vector<int64_t>& dims) const { return ops::Permute(*this, dims); }
Tensor Tensor::slice(int64_t axis, int64_t start, int64_t end) const {
  return ops::Slice(*this, axis, start, end);
}
Tensor Tensor::unsqueeze(int64_t axis) const { return ops::Unsqueeze(*this, axis); }
Tensor Tensor::squeeze(int64_t axis) const { return ops::Squeeze(*this, axis); }
Tensor Tensor::expand(const Shape& shape) const { return ops::Expand(*this, shape); }
Tensor Tensor::contiguous() const { return ops::Contiguous(*this); }
Tensor Tensor::to(DType dtype) const { return ops::Cast(*this, dtype); }
Tensor Tensor::clone() const { return ops::Clone(*this); }

}  // namespace fam
