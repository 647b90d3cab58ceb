// Optimizer base: parameter checks, f32 master copies of bf16 parameters, gradient access, step
// counter and named-state load/save.
#include "framework/optim/optimizer.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/ops/ops.h"

namespace fam {

Optimizer::Optimizer(std::vector<NamedParameter> params, bool masters)
    : params_(std::move(params)) {
  std::set<std::string> names;
  for (const NamedParameter& p : params_) {
    FAM_CHECK(!p.name.empty(), "optimizer: a parameter has an empty name");
    FAM_CHECK(names.insert(p.name).second, "optimizer: duplicate parameter name '", p.name, "'");
    FAM_CHECK(p.param.defined(), "optimizer: parameter '", p.name, "' is an undefined tensor");
    const DType dtype = p.param.dtype();
    FAM_CHECK(dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kBF16,
              "optimizer: parameter '", p.name, "' has dtype ", DTypeName(dtype),
              " (need f32, f64 or bf16)");
    FAM_CHECK(p.param.is_contiguous(), "optimizer: parameter '", p.name, "' (", p.param.Describe(),
              ") is not contiguous");
  }
  NoGradGuard no_grad;
  for (const NamedParameter& p : params_) {
    const bool master = masters && p.param.dtype() == DType::kBF16;
    masters_.push_back(master ? ops::Cast(p.param.detach(), DType::kF32) : Tensor());
  }
}

void Optimizer::WriteBackMaster(size_t i) {
  if (!masters_[i].defined()) return;
  NoGradGuard no_grad;
  ops::CopyInPlace(params_[i].param, masters_[i]);  // rounds to nearest even
}

std::vector<std::pair<Tensor, Tensor>> Optimizer::MasterWeights() const {
  std::vector<std::pair<Tensor, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i)
    if (masters_[i].defined()) out.emplace_back(params_[i].param, masters_[i]);
  return out;
}

Tensor Optimizer::GradientFor(size_t i) const {
  const NamedParameter& p = params_[i];
  Tensor g = p.param.grad();
  if (!g.defined()) return Tensor();
  FAM_CHECK(g.shape() == p.param.shape(), "optimizer: gradient of '", p.name, "' has shape ",
            ShapeString(g.shape()), ", parameter has ", ShapeString(p.param.shape()));
  FAM_CHECK(g.device() == p.param.device(), "optimizer: gradient of '", p.name, "' is on ",
            g.device().ToString(), ", parameter on ", p.param.device().ToString());
  NoGradGuard no_grad;
  const DType dtype = UpdateTarget(i).dtype();
  if (g.dtype() != dtype) g = ops::Cast(g, dtype);
  if (!g.is_contiguous()) g = ops::Contiguous(g).detach();
  return g;
}

std::vector<std::pair<std::string, Tensor>> Optimizer::StateTensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(kOptimizerStepName, Tensor::FromInts({step_}, {1}, DType::kI64));
  for (auto& entry : ParameterState()) out.push_back(std::move(entry));
  for (size_t i = 0; i < params_.size(); ++i) {
    if (masters_[i].defined())
      out.emplace_back(absl::StrCat(params_[i].name, ".", kMasterSlot), masters_[i]);
  }
  return out;
}

absl::Status Optimizer::LoadStateTensors(const std::map<std::string, Tensor>& tensors) {
  const std::vector<std::pair<std::string, Tensor>> expected = StateTensors();
  std::set<std::string> expected_names;
  for (const auto& [name, dst] : expected) expected_names.insert(name);
  for (const auto& [name, src] : tensors) {
    if (!expected_names.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer state: unexpected tensor '", name,
                                                     "' (not a state of this optimizer)"));
    }
  }
  // Validate everything before changing anything.
  int64_t step = 0;
  for (const auto& [name, dst] : expected) {
    auto it = tensors.find(name);
    if (it == tensors.end() || !it->second.defined()) {
      return absl::NotFoundError(absl::StrCat("optimizer state: missing tensor '", name, "'"));
    }
    const Tensor& src = it->second;
    if (name == kOptimizerStepName) {
      if (src.numel() != 1 || !src.device().is_cpu()) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state: tensor '", name,
                                                       "' must be one value on the CPU, got ",
                                                       src.Describe()));
      }
      const double value = src.ToDoubles()[0];
      if (!(value >= 0) || value != std::floor(value)) {
        return absl::InvalidArgumentError(absl::StrCat("optimizer state: tensor '", name,
                                                       "' holds ", value, ", not a step count"));
      }
      step = static_cast<int64_t>(value);
      continue;
    }
    if (src.shape() != dst.shape()) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer state: tensor '", name,
                                                     "' has shape ", ShapeString(src.shape()),
                                                     ", expected ", ShapeString(dst.shape())));
    }
    if (!IsFloating(src.dtype())) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer state: tensor '", name,
                                                     "' has dtype ", DTypeName(src.dtype()),
                                                     ", expected a floating dtype"));
    }
  }
  absl::Status status = CatchToStatus([&] {
    NoGradGuard no_grad;
    for (const auto& [name, dst] : expected) {
      if (name == kOptimizerStepName) continue;
      Tensor src = ops::To(tensors.at(name), dst.device()).detach();
      ops::CopyInPlace(dst, src);
    }
    for (size_t i = 0; i < params_.size(); ++i) WriteBackMaster(i);
  });
  if (!status.ok()) return status;
  step_ = step;
  return absl::OkStatus();
}

void Optimizer::ZeroGrad() {
  for (NamedParameter& p : params_) p.param.zero_grad();
}

}  // namespace fam
