// Numerically stable softmax over the last dim (fused kernel); the backward uses the saved output:
// grad_x = y ∘ (g − Σ g∘y).
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

// The same contiguous storage seen as `shape` (no autograd).
Tensor AsShape(const Tensor& t, const Shape& shape) {
  return Tensor::MakeView(t.storage(), shape, ContiguousStrides(shape), t.offset(), t.dtype());
}

class SoftmaxBackward : public Node {
 public:
  SoftmaxBackward(Tensor y, DType input_dtype) : y_(std::move(y)), input_dtype_(input_dtype) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    const int64_t d = y_.shape().back(), n = d == 0 ? 0 : y_.numel() / d;
    Tensor gc = ForCompute(g);
    Tensor gx = Tensor::Empty(y_.shape(), y_.dtype(), y_.device());
    GetBackend(y_.device())
        .SoftmaxBackward(AsShape(y_, {n, d}), AsShape(gc, {n, d}), AsShape(gx, {n, d}));
    return {FromCompute(gx, input_dtype_)};
  }
  void Release() override { y_ = Tensor(); }
  std::string name() const override { return "Softmax"; }

 private:
  Tensor y_;  // output in compute dtype, contiguous
  DType input_dtype_;
};

}  // namespace

Tensor Softmax(const Tensor& x) {
  Backend& backend = BackendFor("softmax", {x});
  CheckSameFloatDType("softmax", {x});
  FAM_CHECK(x.dim() >= 1, "softmax: needs a tensor of rank >= 1, got ", x.Describe());
  const int64_t d = x.shape().back(), n = d == 0 ? 0 : x.numel() / d;
  Tensor xc = ForCompute(x);
  Tensor y = Tensor::Empty(x.shape(), xc.dtype(), x.device());
  backend.SoftmaxForward(AsShape(xc, {n, d}), AsShape(y, {n, d}));
  Tensor out = FromCompute(y, x.dtype());
  if (GradEnabled() && AnyRequiresGrad({x}))
    // y.detach(): out may be y itself, and the node must not hold out's own handle (a cycle).
    RecordNode(std::make_shared<SoftmaxBackward>(y.detach(), x.dtype()), {x}, out);
  return out;
}

}  // namespace fam::ops
