// Copies and conversions: Cast, Clone, Contiguous, To(device), and in-place helpers.
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

class CastBackward : public Node {
 public:
  explicit CastBackward(DType input_dtype) : input_dtype_(input_dtype) {}
  std::vector<Tensor> Backward(const Tensor& g) override { return {Cast(g, input_dtype_)}; }
  std::string name() const override { return "Cast"; }

 private:
  DType input_dtype_;
};

class IdentityBackward : public Node {
 public:
  std::vector<Tensor> Backward(const Tensor& g) override { return {g}; }
  std::string name() const override { return "Clone"; }
};

class ToDeviceBackward : public Node {
 public:
  explicit ToDeviceBackward(Device device) : device_(device) {}
  std::vector<Tensor> Backward(const Tensor& g) override { return {To(g, device_)}; }
  std::string name() const override { return "ToDevice"; }

 private:
  Device device_;
};

}  // namespace

Tensor Cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::Empty(x.shape(), dtype, x.device());
  GetBackend(x.device()).Copy(x, out);
  if (IsFloating(x.dtype()) && IsFloating(dtype))
    RecordNode(std::make_shared<CastBackward>(x.dtype()), {x}, out);
  return out;
}

Tensor Clone(const Tensor& x) {
  Tensor out = Tensor::Empty(x.shape(), x.dtype(), x.device());
  GetBackend(x.device()).Copy(x, out);
  RecordNode(std::make_shared<IdentityBackward>(), {x}, out);
  return out;
}

Tensor Contiguous(const Tensor& x) { return x.is_contiguous() ? x : Clone(x); }

Tensor To(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor src = x.is_contiguous() ? x : Clone(x).detach();
  Tensor out = Tensor::Empty(x.shape(), x.dtype(), device);
  if (device.is_cpu()) {
    GetBackend(x.device()).CopyToHost(out.raw_data(), src.raw_data(), src.nbytes());
  } else {
    GetBackend(device).CopyFromHost(out.raw_data(), src.raw_data(), src.nbytes());
  }
  RecordNode(std::make_shared<ToDeviceBackward>(x.device()), {x}, out);
  return out;
}

void AddInPlace(const Tensor& dst, const Tensor& src, double alpha) {
  FAM_CHECK(dst.shape() == src.shape(), "add in place: shapes ", ShapeString(dst.shape()), " and ",
            ShapeString(src.shape()));
  Backend& backend = BackendFor("add in place", {dst, src});
  if (dst.is_contiguous() && dst.dtype() == ComputeDType(dst.dtype())) {
    Tensor s = src.dtype() == dst.dtype() && src.is_contiguous() ? src : Tensor::Empty(src.shape(), dst.dtype(), src.device());
    if (!s.same(src)) backend.Copy(src, s);
    backend.Axpy(s, alpha, dst);
    return;
  }
  // bf16 or strided destination: compute in f32 and write back.
  Tensor d = ForCompute(dst);
  Tensor s = ForCompute(src);
  if (s.dtype() != d.dtype()) s = FromCompute(s, d.dtype());
  backend.Axpy(s, alpha, d);
  backend.Copy(d, dst);
}

void CopyInPlace(const Tensor& dst, const Tensor& src) {
  FAM_CHECK(dst.shape() == src.shape(), "copy: shapes ", ShapeString(dst.shape()), " and ",
            ShapeString(src.shape()));
  if (src.device() != dst.device()) {
    GetBackend(dst.device()).Copy(To(src.detach(), dst.device()), dst);
    return;
  }
  BackendFor("copy", {dst, src}).Copy(src, dst);
}

void FillInPlace(const Tensor& dst, double value) {
  Backend& backend = GetBackend(dst.device());
  if (dst.is_contiguous()) {
    backend.Fill(dst, value);
  } else {
    Tensor tmp = Tensor::Full(dst.shape(), value, dst.dtype(), dst.device());
    backend.Copy(tmp, dst);
  }
}

}  // namespace fam::ops
