#include "framework/backends/backend.h"

namespace fam {

const char* UnaryOpName(UnaryOp op) {
  switch (op) {
    case UnaryOp::kNeg: return "neg";
    case UnaryOp::kExp: return "exp";
    case UnaryOp::kLog: return "log";
    case UnaryOp::kSilu: return "silu";
    case UnaryOp::kGelu: return "gelu";
    case UnaryOp::kSqrt: return "sqrt";
    case UnaryOp::kRsqrt: return "rsqrt";
    case UnaryOp::kSquare: return "square";
    case UnaryOp::kTanh: return "tanh";
    case UnaryOp::kSigmoid: return "sigmoid";
    case UnaryOp::kRelu: return "relu";
    case UnaryOp::kAbs: return "abs";
  }
  return "?";
}

const char* BinaryOpName(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd: return "add";
    case BinaryOp::kSub: return "sub";
    case BinaryOp::kMul: return "mul";
    case BinaryOp::kDiv: return "div";
    case BinaryOp::kMax: return "max";
    case BinaryOp::kMin: return "min";
  }
  return "?";
}

std::vector<double> Backend::SumSquaresEach(const std::vector<Tensor>& xs) {
  std::vector<double> out;
  out.reserve(xs.size());
  for (const Tensor& x : xs) out.push_back(SumSquares(x));
  return out;
}

void CheckAdafactorArgs(const AdafactorArgs& a) {
  const Tensor& p = a.param;
  FAM_CHECK(p.dtype() == DType::kF32 || p.dtype() == DType::kF64, "adafactor update: parameter ",
            p.Describe(), " is not f32 or f64");
  auto check = [&](const Tensor& t, int64_t numel, const char* what) {
    FAM_CHECK(t.defined() && t.numel() == numel && t.dtype() == p.dtype() && t.is_contiguous() &&
                  t.device() == p.device(),
              "adafactor update: ", what, " ", t.defined() ? t.Describe() : "undefined",
              " does not match parameter ", p.Describe());
  };
  FAM_CHECK(p.is_contiguous(), "adafactor update: parameter ", p.Describe(), " is not contiguous");
  check(a.grad, p.numel(), "gradient");
  if (a.row.defined()) {
    FAM_CHECK(a.batch >= 1 && a.n >= 1 && a.m >= 1 && a.batch * a.n * a.m == p.numel(),
              "adafactor update: factored shape ", a.batch, " x ", a.n, " x ", a.m,
              " does not match parameter ", p.Describe());
    check(a.row, a.batch * a.n, "row state");
    check(a.col, a.batch * a.m, "column state");
  } else {
    check(a.sq, p.numel(), "second moment");
  }
  if (a.exp_avg.defined()) check(a.exp_avg, p.numel(), "momentum");
}

}  // namespace fam
