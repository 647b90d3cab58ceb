// RMSNorm over the last dim, y = x / sqrt(mean(x²) + eps) · w, as one fused kernel that saves the
// per-row rstd for the backward (grad_x and the row-summed grad_w).
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

// The same contiguous storage seen as `shape` (no autograd).
Tensor AsShape(const Tensor& t, const Shape& shape) {
  return Tensor::MakeView(t.storage(), shape, ContiguousStrides(shape), t.offset(), t.dtype());
}

class RmsNormBackward : public Node {
 public:
  RmsNormBackward(Tensor x, Tensor w, Tensor rstd)
      : x_(std::move(x)), w_(std::move(w)), rstd_(std::move(rstd)) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    const int64_t d = w_.numel(), n = x_.numel() / d;
    Tensor xc = ForCompute(x_), wc = ForCompute(w_), gc = ForCompute(g);
    Tensor gx, gw;
    if (next[0]) gx = Tensor::Empty({n, d}, xc.dtype(), xc.device());
    if (next[1]) gw = Tensor::Empty({d}, xc.dtype(), xc.device());
    GetBackend(xc.device())
        .RmsNormBackward(AsShape(xc, {n, d}), wc, rstd_, AsShape(gc, {n, d}), gx, gw);
    if (gx.defined()) gx = FromCompute(AsShape(gx, x_.shape()), x_.dtype());
    if (gw.defined()) gw = FromCompute(gw, w_.dtype());
    return {gx, gw};
  }
  void Release() override { x_ = w_ = rstd_ = Tensor(); }
  std::string name() const override { return "RmsNorm"; }

 private:
  Tensor x_, w_;  // as given (storage dtype, any layout); converted again in the backward
  Tensor rstd_;   // [N], compute dtype
};

}  // namespace

Tensor RmsNorm(const Tensor& x, const Tensor& w, double eps) {
  Backend& backend = BackendFor("rmsnorm", {x, w});
  CheckSameFloatDType("rmsnorm", {x, w});
  FAM_CHECK(x.dim() >= 1 && w.dim() == 1 && w.numel() > 0 && x.shape().back() == w.numel(),
            "rmsnorm: input ", x.Describe(), " does not match weight ", w.Describe(),
            " (need x [..., D] and w [D], D > 0)");
  FAM_CHECK(eps >= 0, "rmsnorm: eps must be >= 0, got ", eps);
  const int64_t d = w.numel(), n = x.numel() / d;
  Tensor xc = ForCompute(x), wc = ForCompute(w);
  Tensor y = Tensor::Empty(x.shape(), xc.dtype(), x.device());
  Tensor rstd = Tensor::Empty({n}, xc.dtype(), x.device());
  backend.RmsNormForward(AsShape(xc, {n, d}), wc, eps, AsShape(y, {n, d}), rstd);
  Tensor out = FromCompute(y, x.dtype());
  if (GradEnabled() && AnyRequiresGrad({x, w}))
    RecordNode(std::make_shared<RmsNormBackward>(x.detach(), w.detach(), rstd), {x, w}, out);
  return out;
}

}  // namespace fam::ops
