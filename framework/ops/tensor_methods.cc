// Tensor's member functions that need layers above core: filling through a backend, copies to
// the host, the differentiable views and conversions, and the RNG fills of a device tensor. Their
// declarations are in framework/core (tensor.h, rng.h); they are defined here, in the ops layer,
// so that core includes nothing above it (docs/layers.txt).
#include <algorithm>
#include <type_traits>
#include <vector>

#include "framework/backends/registry.h"
#include "framework/core/rng.h"
#include "framework/core/tensor.h"
#include "framework/ops/ops.h"

namespace fam {

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

namespace {

// A CPU tensor with t's values: t itself, or a copy from its device (synchronising).
Tensor HostView(const Tensor& t) {
  return t.device().is_cpu() ? t : ops::To(t.detach(), Device::CPU());
}

// The elements of `x` converted to T (f64 or i64) in a host vector.
template <typename T>
std::vector<T> CopyToHostVector(const Tensor& x) {
  const Tensor host = HostView(x);
  Tensor t = Tensor::Empty(x.shape(), std::is_same_v<T, double> ? DType::kF64 : DType::kI64);
  GetBackend(Device::CPU()).Copy(host, t);
  const T* p = t.data<T>();
  return std::vector<T>(p, p + x.numel());
}

}  // namespace

std::vector<double> Tensor::ToDoubles() const { return CopyToHostVector<double>(*this); }

std::vector<float> Tensor::ToFloats() const {
  std::vector<double> d = ToDoubles();
  return std::vector<float>(d.begin(), d.end());
}

std::vector<int64_t> Tensor::ToInts() const { return CopyToHostVector<int64_t>(*this); }

double Tensor::item() const {
  FAM_CHECK(numel() == 1, "item() needs a one-element tensor, got ", Describe());
  return ToDoubles()[0];
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

namespace {

// Writes draw(counter) for the next numel() counters of a generator into t (any device, through
// an f64 host buffer) and advances *offset past them.
template <typename Draw>
void FillFromCounters(const Tensor& t, uint64_t* offset, Draw draw) {
  const int64_t n = t.numel();
  Tensor host = Tensor::Empty(t.shape(), DType::kF64);
  double* p = host.data<double>();
  const uint64_t base = *offset;
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) p[i] = draw(base + i);
  *offset += n;
  ops::CopyInPlace(t, ops::To(host, t.device()));
}

}  // namespace

void Generator::FillNormal(const Tensor& t, double mean, double std) {
  FillFromCounters(t, &offset_,
                   [&](uint64_t i) { return mean + std * NormalAt(seed_, stream_, i); });
}

void Generator::FillUniform(const Tensor& t, double lo, double hi) {
  FillFromCounters(t, &offset_,
                   [&](uint64_t i) { return lo + (hi - lo) * UniformAt(seed_, stream_, i); });
}

}  // namespace fam
