#include "framework/backends/backend.h"

namespace fam {

std::vector<double> Backend::SumSquaresEach(const std::vector<Tensor>& xs) {
  std::vector<double> out;
  out.reserve(xs.size());
  for (const Tensor& x : xs) out.push_back(SumSquares(x));
  return out;
}

void CheckAdamWArgs(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                    const Tensor& exp_avg_sq, int64_t step) {
  for (const Tensor* t : {&grad, &exp_avg, &exp_avg_sq}) {
    FAM_CHECK(t->shape() == param.shape() && t->dtype() == param.dtype(),
              "adamw update: ", t->Describe(), " does not match parameter ", param.Describe());
  }
  for (const Tensor* t : {&param, &grad, &exp_avg, &exp_avg_sq}) {
    FAM_CHECK(t->is_contiguous(), "adamw update: ", t->Describe(), " is not contiguous");
  }
  FAM_CHECK(step >= 1, "adamw update: step counts from 1, got ", step);
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
