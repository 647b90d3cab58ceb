// Adafactor: the state on the parameter's device and the per-step coefficients; the update itself
// is the backend's fused AdafactorUpdate (CPU and CUDA).
#include "framework/optim/adafactor.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"

namespace fam {

Adafactor::Adafactor(std::vector<NamedParameter> params, const AdafactorOptions& options)
    : Optimizer(std::move(params)), options_(options) {
  FAM_CHECK(options.beta1 >= 0 && options.beta1 < 1, "adafactor: beta1 = ", options.beta1,
            " is outside [0, 1)");
  FAM_CHECK(options.beta2 > 0 && options.beta2 < 1, "adafactor: beta2 = ", options.beta2,
            " is outside (0, 1)");
  FAM_CHECK(options.eps1 > 0, "adafactor: eps1 = ", options.eps1, " must be > 0");
  FAM_CHECK(options.clip_threshold > 0, "adafactor: clip_threshold = ", options.clip_threshold,
            " must be > 0");
  FAM_CHECK(options.weight_decay >= 0, "adafactor: weight_decay = ", options.weight_decay,
            " must be >= 0");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = UpdateTarget(i);  // bf16 parameters: the f32 master, so the state is f32
    State s;
    s.factored = options.factored && t.dim() >= 2;
    if (s.factored) {
      Shape row_shape(t.shape().begin(), t.shape().end() - 1);
      Shape col_shape = row_shape;
      col_shape.back() = t.shape().back();
      s.row = Tensor::Zeros(row_shape, t.dtype(), t.device());
      s.col = Tensor::Zeros(col_shape, t.dtype(), t.device());
    } else {
      s.sq = Tensor::Zeros(t.shape(), t.dtype(), t.device());
    }
    if (options.beta1 > 0) s.exp_avg = Tensor::Zeros(t.shape(), t.dtype(), t.device());
    state_.push_back(std::move(s));
  }
}

void Adafactor::Step(double lr) {
  FAM_CHECK(lr >= 0, "adafactor: learning rate ", lr, " must be >= 0");
  AdvanceStep();
  NoGradGuard no_grad;
  const double t = static_cast<double>(step_count());
  const double beta2 = options_.beta2;
  AdafactorArgs a;
  a.decay = options_.bias_correction
                ? beta2 * (1.0 - std::pow(beta2, t - 1.0)) / (1.0 - std::pow(beta2, t))
                : beta2;
  a.eps1 = options_.eps1;
  a.clip_threshold = options_.clip_threshold;
  a.beta1 = options_.beta1;
  a.lr = lr;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor grad = GradientFor(i);
    if (!grad.defined() || grad.numel() == 0) continue;
    const NamedParameter& p = params_[i];
    const State& s = state_[i];
    const Tensor& target = UpdateTarget(i);
    a.param = target;
    a.grad = grad;
    a.row = s.row;
    a.col = s.col;
    a.sq = s.sq;
    a.exp_avg = s.exp_avg;
    a.weight_decay = p.weight_decay ? options_.weight_decay : 0.0;
    if (s.factored) {
      a.n = target.size(-2);
      a.m = target.size(-1);
      a.batch = target.numel() / (a.n * a.m);
    } else {
      a.batch = 1;
      a.n = 1;
      a.m = target.numel();
    }
    GetBackend(target.device()).AdafactorUpdate(a);
    WriteBackMaster(i);
  }
}

std::vector<std::pair<std::string, Tensor>> Adafactor::ParameterState() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const State& s = state_[i];
    const std::string& name = params_[i].name;
    if (s.exp_avg.defined()) out.emplace_back(name + ".exp_avg", s.exp_avg);
    if (s.factored) {
      out.emplace_back(name + ".exp_avg_sq_row", s.row);
      out.emplace_back(name + ".exp_avg_sq_col", s.col);
    } else {
      out.emplace_back(name + ".exp_avg_sq", s.sq);
    }
  }
  return out;
}

}  // namespace fam
