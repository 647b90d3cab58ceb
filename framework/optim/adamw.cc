// AdamW: option checks, zero-initialised moments, and one fused backend update per parameter.
#include "framework/optim/adamw.h"

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"

namespace fam {

AdamW::AdamW(std::vector<NamedParameter> params, const AdamWOptions& options)
    : Optimizer(std::move(params)), options_(options) {
  FAM_CHECK(options.beta1 >= 0 && options.beta1 < 1, "adamw: beta1 = ", options.beta1,
            " is outside [0, 1)");
  FAM_CHECK(options.beta2 >= 0 && options.beta2 < 1, "adamw: beta2 = ", options.beta2,
            " is outside [0, 1)");
  FAM_CHECK(options.eps > 0, "adamw: eps = ", options.eps, " must be > 0");
  FAM_CHECK(options.weight_decay >= 0, "adamw: weight_decay = ", options.weight_decay,
            " must be >= 0");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = UpdateTarget(i);  // bf16 parameters: the f32 master, so the state is f32
    exp_avg_.push_back(Tensor::Zeros(t.shape(), t.dtype(), t.device()));
    exp_avg_sq_.push_back(Tensor::Zeros(t.shape(), t.dtype(), t.device()));
  }
}

void AdamW::Step(double lr) {
  FAM_CHECK(lr >= 0, "adamw: learning rate ", lr, " must be >= 0");
  AdvanceStep();
  NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor grad = GradientFor(i);
    if (!grad.defined()) continue;
    const NamedParameter& p = params_[i];
    const double wd = p.weight_decay ? options_.weight_decay : 0.0;
    GetBackend(p.param.device())
        .AdamWUpdate(UpdateTarget(i), grad, exp_avg_[i], exp_avg_sq_[i], lr, options_.beta1,
                     options_.beta2, options_.eps, wd, step_count());
    WriteBackMaster(i);
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::ParameterState() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(params_[i].name + ".exp_avg", exp_avg_[i]);
    out.emplace_back(params_[i].name + ".exp_avg_sq", exp_avg_sq_[i]);
  }
  return out;
}

}  // namespace fam
