// Elementwise math with NumPy broadcasting: add/sub/mul/div, scale, add-scalar and unary functions.
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

// x in its compute dtype, strides kept (the binary kernel takes strided views).
Tensor InComputeDType(const Tensor& x) {
  if (x.dtype() == ComputeDType(x.dtype())) return x.detach();
  return ForCompute(x);
}

Tensor BinaryForward(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = BinaryOpName(op);
  Backend& backend = BackendFor(name, {a, b});
  CheckSameFloatDType(name, {a, b});
  Shape shape = BroadcastShapes(a.shape(), b.shape());
  DType compute = ComputeDType(a.dtype());
  Tensor out = Tensor::Empty(shape, compute, a.device());
  NoGradGuard no_grad;
  backend.Binary(op, Expand(InComputeDType(a), shape), Expand(InComputeDType(b), shape), out);
  return FromCompute(out, a.dtype());
}

class AddBackward : public Node {
 public:
  AddBackward(Shape a, Shape b, double sign_b) : a_(std::move(a)), b_(std::move(b)), sign_b_(sign_b) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor gb = sign_b_ < 0 ? Neg(g) : g;
    return {SumToShape(g, a_), SumToShape(gb, b_)};
  }
  std::string name() const override { return sign_b_ < 0 ? "Sub" : "Add"; }

 private:
  Shape a_, b_;
  double sign_b_;
};

class MulBackward : public Node {
 public:
  MulBackward(Tensor a, Tensor b) : a_(std::move(a)), b_(std::move(b)) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor ga = next[0] ? SumToShape(Mul(g, b_), a_.shape()) : Tensor();
    Tensor gb = next[1] ? SumToShape(Mul(g, a_), b_.shape()) : Tensor();
    return {ga, gb};
  }
  void Release() override { a_ = b_ = Tensor(); }
  std::string name() const override { return "Mul"; }

 private:
  Tensor a_, b_;
};

class DivBackward : public Node {
 public:
  DivBackward(Tensor a, Tensor b) : a_(std::move(a)), b_(std::move(b)) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor ga = next[0] ? SumToShape(Div(g, b_), a_.shape()) : Tensor();
    Tensor gb = next[1] ? SumToShape(Neg(Div(Mul(g, a_), Mul(b_, b_))), b_.shape()) : Tensor();
    return {ga, gb};
  }
  void Release() override { a_ = b_ = Tensor(); }
  std::string name() const override { return "Div"; }

 private:
  Tensor a_, b_;
};

class ScaleBackward : public Node {
 public:
  explicit ScaleBackward(double alpha) : alpha_(alpha) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    return {alpha_ == 1.0 ? g : Scale(g, alpha_)};
  }
  std::string name() const override { return "Scale"; }

 private:
  double alpha_;
};

class UnaryBackwardNode : public Node {
 public:
  UnaryBackwardNode(UnaryOp op, Tensor x, Tensor y) : op_(op), x_(std::move(x)), y_(std::move(y)) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor gc = ForCompute(g);
    Tensor gx = Tensor::Empty(x_.shape(), gc.dtype(), gc.device());
    GetBackend(g.device()).UnaryBackward(op_, x_, y_, gc, gx);
    return {FromCompute(gx, g.dtype())};
  }
  void Release() override { x_ = y_ = Tensor(); }
  std::string name() const override { return UnaryOpName(op_); }

 private:
  UnaryOp op_;
  Tensor x_, y_;  // in compute dtype, contiguous
};

Tensor AffineForward(const Tensor& x, double alpha, double beta) {
  CheckSameFloatDType("scale", {x});
  Tensor xc = ForCompute(x);
  Tensor out = Tensor::Empty(x.shape(), xc.dtype(), x.device());
  GetBackend(x.device()).Affine(xc, alpha, beta, out);
  return FromCompute(out, x.dtype());
}

}  // namespace

Tensor Add(const Tensor& a, const Tensor& b) {
  Tensor out = BinaryForward(BinaryOp::kAdd, a, b);
  RecordNode(std::make_shared<AddBackward>(a.shape(), b.shape(), 1.0), {a, b}, out);
  return out;
}

Tensor Sub(const Tensor& a, const Tensor& b) {
  Tensor out = BinaryForward(BinaryOp::kSub, a, b);
  RecordNode(std::make_shared<AddBackward>(a.shape(), b.shape(), -1.0), {a, b}, out);
  return out;
}

Tensor Mul(const Tensor& a, const Tensor& b) {
  Tensor out = BinaryForward(BinaryOp::kMul, a, b);
  if (GradEnabled() && AnyRequiresGrad({a, b}))
    RecordNode(std::make_shared<MulBackward>(a.detach(), b.detach()), {a, b}, out);
  return out;
}

Tensor Div(const Tensor& a, const Tensor& b) {
  Tensor out = BinaryForward(BinaryOp::kDiv, a, b);
  if (GradEnabled() && AnyRequiresGrad({a, b}))
    RecordNode(std::make_shared<DivBackward>(a.detach(), b.detach()), {a, b}, out);
  return out;
}

Tensor Scale(const Tensor& x, double alpha) {
  Tensor out = AffineForward(x, alpha, 0.0);
  RecordNode(std::make_shared<ScaleBackward>(alpha), {x}, out);
  return out;
}

Tensor AddScalar(const Tensor& x, double value) {
  Tensor out = AffineForward(x, 1.0, value);
  RecordNode(std::make_shared<ScaleBackward>(1.0), {x}, out);
  return out;
}

Tensor Unary(UnaryOp op, const Tensor& x) {
  CheckSameFloatDType(UnaryOpName(op), {x});
  Tensor xc = ForCompute(x);
  Tensor y = Tensor::Empty(x.shape(), xc.dtype(), x.device());
  GetBackend(x.device()).Unary(op, xc, y);
  Tensor out = FromCompute(y, x.dtype());
  if (GradEnabled() && AnyRequiresGrad({x}))
    RecordNode(std::make_shared<UnaryBackwardNode>(op, xc, y.detach()), {x}, out);
  return out;
}

}  // namespace fam::ops
