// Adafactor: factored/unfactored second moments, update clipping, momentum and weight decay, as
// plain loops over CPU tensors (f32 or f64), accumulating in double.
#include "framework/optim/adafactor.h"

#include <algorithm>
#include <cmath>

#include "framework/autograd/node.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr int64_t kParallelGrain = 1 << 14;

struct Hyper {
  double decay;  // β̂2 for this step
  double eps1;
  double clip_threshold;
  double beta1;
  double lr;
  double weight_decay;
};

// U = G / sqrt(V) for every element, with V from the factored (row, col) or unfactored state,
// after updating that state with G. Returns U in double.
template <typename T>
std::vector<double> RawUpdateFactored(const T* g, T* row, T* col, int64_t batch, int64_t n,
                                      int64_t m, const Hyper& h) {
  std::vector<double> u(static_cast<size_t>(batch * n * m));
  for (int64_t b = 0; b < batch; ++b) {
    const T* gb = g + b * n * m;
    T* rb = row + b * n;
    T* cb = col + b * m;
    std::vector<double> col_sum(m, 0.0);
    double row_state_sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      double row_sum = 0;
      for (int64_t j = 0; j < m; ++j) {
        const double sq = static_cast<double>(gb[i * m + j]) * gb[i * m + j] + h.eps1;
        row_sum += sq;
        col_sum[j] += sq;
      }
      rb[i] = static_cast<T>(h.decay * rb[i] + (1.0 - h.decay) * (row_sum / m));
      row_state_sum += rb[i];
    }
    for (int64_t j = 0; j < m; ++j) {
      cb[j] = static_cast<T>(h.decay * cb[j] + (1.0 - h.decay) * (col_sum[j] / n));
    }
    const double row_mean = row_state_sum / n;
    double* ub = u.data() + b * n * m;
#pragma omp parallel for if (n * m > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
      const double r = rb[i] / row_mean;
      for (int64_t j = 0; j < m; ++j) {
        ub[i * m + j] = gb[i * m + j] / std::sqrt(r * cb[j]);
      }
    }
  }
  return u;
}

template <typename T>
std::vector<double> RawUpdateUnfactored(const T* g, T* sq, int64_t n, const Hyper& h) {
  std::vector<double> u(static_cast<size_t>(n));
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const double gi = g[i];
    const double v = h.decay * sq[i] + (1.0 - h.decay) * (gi * gi + h.eps1);
    sq[i] = static_cast<T>(v);
    u[i] = gi / std::sqrt(static_cast<double>(sq[i]));
  }
  return u;
}

// Clips U to RMS ≤ d, applies momentum when exp_avg is given, and updates the parameter.
template <typename T>
void ApplyUpdate(std::vector<double>& u, T* param, T* exp_avg, const Hyper& h) {
  const int64_t n = static_cast<int64_t>(u.size());
  double sum_sq = 0;
#pragma omp parallel for reduction(+ : sum_sq) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) sum_sq += u[i] * u[i];
  const double rms = std::sqrt(sum_sq / static_cast<double>(n));
  const double scale = 1.0 / std::max(1.0, rms / h.clip_threshold);
  const double decay = 1.0 - h.lr * h.weight_decay;
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    double update = u[i] * scale;
    if (exp_avg != nullptr) {
      const double mi = h.beta1 * exp_avg[i] + (1.0 - h.beta1) * update;
      exp_avg[i] = static_cast<T>(mi);
      update = mi;
    }
    param[i] = static_cast<T>(param[i] * decay - h.lr * update);
  }
}

}  // namespace

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
    const NamedParameter& p = params_[i];
    const Tensor& t = UpdateTarget(i);  // bf16 parameters: the f32 master, so the state is f32
    FAM_CHECK(t.device().is_cpu(), "adafactor: parameter '", p.name, "' is on ",
              t.device().ToString(), "; the Adafactor update runs on the CPU only for now");
    State s;
    s.factored = options.factored && t.dim() >= 2;
    if (s.factored) {
      Shape row_shape(t.shape().begin(), t.shape().end() - 1);
      Shape col_shape = row_shape;
      col_shape.back() = t.shape().back();
      s.row = Tensor::Zeros(row_shape, t.dtype());
      s.col = Tensor::Zeros(col_shape, t.dtype());
    } else {
      s.sq = Tensor::Zeros(t.shape(), t.dtype());
    }
    if (options.beta1 > 0) s.exp_avg = Tensor::Zeros(t.shape(), t.dtype());
    state_.push_back(std::move(s));
  }
}

void Adafactor::Step(double lr) {
  FAM_CHECK(lr >= 0, "adafactor: learning rate ", lr, " must be >= 0");
  AdvanceStep();
  NoGradGuard no_grad;
  const double t = static_cast<double>(step_count());
  const double beta2 = options_.beta2;
  Hyper h;
  h.decay = options_.bias_correction
                ? beta2 * (1.0 - std::pow(beta2, t - 1.0)) / (1.0 - std::pow(beta2, t))
                : beta2;
  h.eps1 = options_.eps1;
  h.clip_threshold = options_.clip_threshold;
  h.beta1 = options_.beta1;
  h.lr = lr;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor grad = GradientFor(i);
    if (!grad.defined() || grad.numel() == 0) continue;
    const NamedParameter& p = params_[i];
    State& s = state_[i];
    h.weight_decay = p.weight_decay ? options_.weight_decay : 0.0;
    const Tensor& target = UpdateTarget(i);
    cpu::DispatchFloat(target.dtype(), "adafactor", [&](auto tag) {
      using T = decltype(tag);
      std::vector<double> u;
      if (s.factored) {
        const int64_t n = target.size(-2), m = target.size(-1);
        const int64_t batch = target.numel() / (n * m);
        u = RawUpdateFactored<T>(grad.data<T>(), s.row.data<T>(), s.col.data<T>(), batch, n, m, h);
      } else {
        u = RawUpdateUnfactored<T>(grad.data<T>(), s.sq.data<T>(), target.numel(), h);
      }
      ApplyUpdate<T>(u, target.data<T>(), s.exp_avg.defined() ? s.exp_avg.data<T>() : nullptr, h);
    });
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
