// Global-norm gradient clipping and finiteness check, through the backend of each gradient.
#include "framework/optim/grad_clip.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/ops/ops.h"

namespace fam {
namespace {

bool IsComputeDType(DType dtype) { return dtype == DType::kF32 || dtype == DType::kF64; }

// The gradient as a contiguous f32/f64 tensor (a copy when it is bf16 or strided).
Tensor ComputableGrad(const NamedParameter& p) {
  Tensor g = p.param.grad();
  FAM_CHECK(IsFloating(g.dtype()), "grad clip: gradient of '", p.name, "' has dtype ",
            DTypeName(g.dtype()));
  if (!IsComputeDType(g.dtype())) g = ops::Cast(g, DType::kF32);
  if (!g.is_contiguous()) g = ops::Contiguous(g);
  return g.detach();
}

double SumSquaresOf(const NamedParameter& p) {
  Tensor g = ComputableGrad(p);
  return GetBackend(g.device()).SumSquares(g);
}

}  // namespace

double GradSumSquares(const std::vector<NamedParameter>& params) {
  NoGradGuard no_grad;
  double total = 0;
  for (const NamedParameter& p : params) {
    if (p.param.defined() && p.param.grad().defined()) total += SumSquaresOf(p);
  }
  return total;
}

void ScaleGrads(const std::vector<NamedParameter>& params, double factor) {
  NoGradGuard no_grad;
  for (const NamedParameter& p : params) {
    if (!p.param.defined() || !p.param.grad().defined()) continue;
    Tensor g = p.param.grad();
    Backend& backend = GetBackend(g.device());
    if (IsComputeDType(g.dtype()) && g.is_contiguous()) {
      backend.Affine(g, factor, 0.0, g);
    } else {
      Tensor tmp = ComputableGrad(p);  // a copy: g is bf16 or strided
      backend.Affine(tmp, factor, 0.0, tmp);
      ops::CopyInPlace(g, tmp);
    }
  }
}

double ClipGradNorm(const std::vector<NamedParameter>& params, double max_norm) {
  const double norm = std::sqrt(GradSumSquares(params));
  if (std::isfinite(norm) && max_norm > 0 && norm > max_norm) {
    ScaleGrads(params, max_norm / norm);
  }
  return norm;
}

bool AllGradsFinite(const std::vector<NamedParameter>& params) {
  NoGradGuard no_grad;
  for (const NamedParameter& p : params) {
    if (!p.param.defined() || !p.param.grad().defined()) continue;
    if (!std::isfinite(SumSquaresOf(p))) return false;
  }
  return true;
}

}  // namespace fam
