// Global-norm gradient clipping and finiteness check, through the backend of each gradient.
#include "framework/optim/grad_clip.h"

#include <cmath>
#include <vector>

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

// Sum of squares of every defined gradient, in parameter order: one batched backend call per
// device (a GPU synchronises once for all of them, not once per parameter).
std::vector<double> GradSumSquaresEach(const std::vector<NamedParameter>& params) {
  std::vector<Tensor> grads;
  for (const NamedParameter& p : params)
    if (p.param.defined() && p.param.grad().defined()) grads.push_back(ComputableGrad(p));
  std::vector<double> out(grads.size(), 0.0);
  std::vector<bool> done(grads.size(), false);
  for (size_t first = 0; first < grads.size(); ++first) {
    if (done[first]) continue;
    const Device device = grads[first].device();
    std::vector<size_t> index;
    std::vector<Tensor> batch;
    for (size_t i = first; i < grads.size(); ++i) {
      if (done[i] || grads[i].device() != device) continue;
      index.push_back(i);
      batch.push_back(grads[i]);
      done[i] = true;
    }
    const std::vector<double> sums = GetBackend(device).SumSquaresEach(batch);
    for (size_t k = 0; k < index.size(); ++k) out[index[k]] = sums[k];
  }
  return out;
}

}  // namespace

double GradSumSquares(const std::vector<NamedParameter>& params) {
  NoGradGuard no_grad;
  double total = 0;
  for (double s : GradSumSquaresEach(params)) total += s;
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
  for (double s : GradSumSquaresEach(params))
    if (!std::isfinite(s)) return false;
  return true;
}

}  // namespace fam
