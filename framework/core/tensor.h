// Tensor: a cheap handle (shared_ptr) to shape, strides, offset, dtype and a shared Storage, plus
// the autograd fields (requires_grad, grad, grad_fn). Views (reshape, transpose, permute, slice,
// expand) share storage; contiguous() copies only when needed. Differentiable view and math
// functions live in framework/ops; the member functions here that are differentiable forward to
// them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "framework/core/device.h"
#include "framework/core/dtype.h"
#include "framework/core/error.h"
#include "framework/core/shape.h"
#include "framework/core/storage.h"

namespace fam {

class Node;
class Tensor;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Strides strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::kF32;

  // Autograd.
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;           // set on outputs of differentiable ops
  std::shared_ptr<TensorImpl> grad;        // accumulated gradient of a leaf
  std::shared_ptr<Node> grad_accumulator;  // created lazily for leaves that require grad
  std::string name;                        // optional, for error messages and parameters
  // Called by AccumulateGrad once per backward pass, after this leaf's gradient for that pass has
  // been fully accumulated into `grad` (all contributions summed). Data parallelism uses it to
  // start reducing a gradient bucket while backward goes on (framework/dist/grad_reducer.h).
  std::function<void()> grad_ready_hook;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // Factories (no autograd history). Full, Zeros, Ones and FromVector fill through a backend and
  // are defined in framework/ops/tensor_methods.cc, as are the host read-outs and the views below.
  static Tensor Empty(const Shape& shape, DType dtype = DType::kF32, Device device = Device::CPU());
  static Tensor Zeros(const Shape& shape, DType dtype = DType::kF32, Device device = Device::CPU());
  static Tensor Full(const Shape& shape, double value, DType dtype = DType::kF32,
                     Device device = Device::CPU());
  static Tensor Ones(const Shape& shape, DType dtype = DType::kF32, Device device = Device::CPU()) {
    return Full(shape, 1.0, dtype, device);
  }
  static Tensor Scalar(double value, DType dtype = DType::kF32) { return Full({}, value, dtype); }
  // Copies host values into a new CPU tensor of the given dtype (converted from double).
  static Tensor FromVector(const std::vector<double>& values, const Shape& shape,
                           DType dtype = DType::kF32);
  static Tensor FromFloats(const std::vector<float>& values, const Shape& shape);
  static Tensor FromInts(const std::vector<int64_t>& values, const Shape& shape,
                         DType dtype = DType::kI64);
  static Tensor Arange(int64_t n, DType dtype = DType::kI64);
  // A view over existing storage (no autograd); used by backends and by views.
  static Tensor MakeView(std::shared_ptr<Storage> storage, const Shape& shape,
                         const Strides& strides, int64_t offset, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Strides& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t axis) const;
  int64_t numel() const { return NumElements(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype()); }
  std::string Describe() const;  // "f32[2, 3] on cpu"

  // Host pointer to the first element (at offset). Checks the element type and that the tensor is
  // in host memory (device memory goes through ops::To or a backend).
  template <typename T>
  T* data() const {
    FAM_CHECK(DTypeOf<T>::value == dtype(), "tensor of dtype ", DTypeName(dtype()), " accessed as ",
              DTypeName(DTypeOf<T>::value));
    FAM_CHECK(device().is_cpu(), "host access to ", Describe(), ": copy it to the CPU first");
    return static_cast<T*>(raw_data());
  }
  // Pointer to the first element for a kernel that runs on the host: like data<T>(), but it
  // accepts any host-addressable memory (framework/core/storage.h), so the CPU kernels also serve
  // a device emulated on the host. Host-facing code keeps using data<T>().
  template <typename T>
  T* kernel_data() const {
    FAM_CHECK(DTypeOf<T>::value == dtype(), "tensor of dtype ", DTypeName(dtype()), " accessed as ",
              DTypeName(DTypeOf<T>::value));
    FAM_CHECK(HostAddressable(device()), "host kernel on ", Describe(),
              ": its memory is not host memory");
    return static_cast<T*>(raw_data());
  }
  // Pointer to the first element on the tensor's own device (for backends and copies).
  void* raw_data() const;

  // Host read-out (any dtype, layout and device; a device tensor is copied to the host first,
  // which waits for its work): values as double / float / int64.
  std::vector<double> ToDoubles() const;
  std::vector<float> ToFloats() const;
  std::vector<int64_t> ToInts() const;
  double item() const;

  // Differentiable views and conversions (defined in framework/ops).
  Tensor reshape(const Shape& shape) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t axis, int64_t start, int64_t end) const;
  Tensor unsqueeze(int64_t axis) const;
  Tensor squeeze(int64_t axis) const;
  Tensor expand(const Shape& shape) const;
  Tensor contiguous() const;
  Tensor to(DType dtype) const;
  Tensor clone() const;

  // Autograd.
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool value);
  Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
  void set_grad(const Tensor& grad) { impl().grad = grad.impl_; }
  void zero_grad() { impl().grad.reset(); }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  void set_grad_fn(std::shared_ptr<Node> node) { impl().grad_fn = std::move(node); }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  // Backpropagates from this scalar (or with an explicit gradient of the same shape).
  void backward(const Tensor& grad_output = Tensor()) const;
  // Same data, no history.
  Tensor detach() const;

  const std::string& name() const { return impl().name; }
  Tensor& set_name(std::string name) {
    impl().name = std::move(name);
    return *this;
  }

  TensorImpl& impl() const {
    FAM_CHECK(impl_ != nullptr, "use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

}  // namespace fam
