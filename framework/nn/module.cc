#include "framework/nn/module.h"

#include "framework/ops/ops.h"

namespace fam::nn {

std::vector<std::pair<std::string, Tensor>> Module::NamedParameters(
    const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : params_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) {
    auto sub = child->NamedParameters(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Tensor> Module::Parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : NamedParameters()) out.push_back(t);
  return out;
}

int64_t Module::ParameterCount() const {
  int64_t n = 0;
  for (auto& [name, t] : NamedParameters()) n += t.numel();
  return n;
}

Tensor Module::FindParameter(const std::string& name) const {
  for (auto& [n, t] : NamedParameters())
    if (n == name) return t;
  return Tensor();
}

void Module::ZeroGrad() {
  for (auto& [name, t] : NamedParameters()) t.zero_grad();
}

Tensor Module::RegisterParameter(const std::string& name, Tensor value) {
  value.set_requires_grad(true);
  value.set_name(name);
  params_.emplace_back(name, value);
  return value;
}

Linear::Linear(int64_t in_features, int64_t out_features, DType dtype) {
  weight_ = RegisterParameter("weight", Tensor::Zeros({out_features, in_features}, dtype));
}

Tensor Linear::Forward(const Tensor& x) const { return ops::Linear(x, weight_); }

RmsNorm::RmsNorm(int64_t dim, double eps, DType dtype) : eps_(eps) {
  weight_ = RegisterParameter("weight", Tensor::Ones({dim}, dtype));
}

Tensor RmsNorm::Forward(const Tensor& x) const { return ops::RmsNorm(x, weight_, eps_); }

Embedding::Embedding(int64_t vocab, int64_t dim, DType dtype) {
  weight_ = RegisterParameter("weight", Tensor::Zeros({vocab, dim}, dtype));
}

Tensor Embedding::Forward(const Tensor& ids) const { return ops::Embedding(weight_, ids); }

}  // namespace fam::nn
