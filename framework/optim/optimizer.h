// The optimizer interface: a list of named parameters, one in-place update per Step(lr) (no
// autograd), and the optimizer state as named tensors for checkpoints. AdamW (adamw.h) and
// Adafactor (adafactor.h) implement it; learning-rate schedules (schedule.h) and gradient clipping
// (grad_clip.h) are separate so a trainer composes them.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "framework/core/tensor.h"

namespace fam {

// One trainable parameter. Its gradient is param.grad(); a parameter without a gradient at a step
// is skipped (its state is left as it was). Parameters are f32 (or f64) and contiguous. bf16
// parameters will come with the GPU backend together with an f32 `master` copy that the optimizer
// updates and casts back into `param`; until then they are rejected.
struct NamedParameter {
  std::string name;
  Tensor param;
  bool weight_decay = true;  // decoupled weight decay applies only where this is set
};

class Optimizer {
 public:
  // Checks that names are non-empty and unique and that every parameter is a defined, contiguous
  // f32/f64 tensor; throws fam::Error naming the parameter otherwise.
  explicit Optimizer(std::vector<NamedParameter> params);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Applies one update with learning rate `lr` to every parameter that has a gradient, in place
  // and without recording autograd. Increments step_count() first (bias corrections count from 1).
  virtual void Step(double lr) = 0;

  // Number of Step() calls so far (restored by LoadStateTensors).
  int64_t step_count() const { return step_; }

  // The state for checkpoints: "optimizer.step" (i64 [1], a fresh tensor) followed by the
  // per-parameter tensors named "<param>.<slot>" (e.g. "w.exp_avg"). The per-parameter tensors are
  // handles to the live state, not copies: copy them before the next Step() to save asynchronously.
  virtual std::vector<std::pair<std::string, Tensor>> StateTensors() const;

  // Restores the state saved by StateTensors(). Every expected name must be present with the same
  // shape (dtype is converted), and no other name may be present; on error nothing is changed and
  // the status names the offending tensor.
  virtual absl::Status LoadStateTensors(const std::map<std::string, Tensor>& tensors);

  // Drops every parameter's gradient (param.grad() becomes undefined).
  void ZeroGrad();

  const std::vector<NamedParameter>& params() const { return params_; }

 protected:
  // The live per-parameter state tensors in a fixed order (names "<param>.<slot>").
  virtual std::vector<std::pair<std::string, Tensor>> ParameterState() const = 0;

  // The gradient of params_[i] as a contiguous tensor of the parameter's dtype on its device, or an
  // undefined tensor when it has none. Throws naming the parameter when the shape differs.
  Tensor GradientFor(size_t i) const;

  // Increments the step counter (called at the start of Step()).
  void AdvanceStep() { ++step_; }

  std::vector<NamedParameter> params_;

 private:
  int64_t step_ = 0;
};

// Name of the step-counter entry in StateTensors().
inline constexpr const char kOptimizerStepName[] = "optimizer.step";

}  // namespace fam
