// The optimizer interface: a list of named parameters, one in-place update per Step(lr) (no
// autograd), and the optimizer state as named tensors for checkpoints. AdamW (adamw.h) and
// Adafactor (adafactor.h) implement it; learning-rate schedules (schedule.h) and gradient clipping
// (grad_clip.h) are separate so a trainer composes them. Mixed precision lives here, once for every
// optimizer: a bf16 parameter gets an f32 master copy that the update (and the optimizer state,
// also f32) works on, after which the parameter is set to bf16(master).
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
// is skipped (its state is left as it was). Parameters are f32, f64 or bf16, and contiguous. A bf16
// parameter's gradient may be f32 (autograd accumulates it so: GradDType) or bf16.
struct NamedParameter {
  std::string name;
  Tensor param;
  bool weight_decay = true;  // decoupled weight decay applies only where this is set
};

class Optimizer {
 public:
  // Checks that names are non-empty and unique and that every parameter is a defined, contiguous
  // f32/f64/bf16 tensor; throws fam::Error naming the parameter otherwise. With `masters` (the
  // default), every bf16 parameter gets an f32 master copy, initialised from its value; a wrapper
  // that delegates the update to an inner optimizer (dist::Zero1Optimizer) passes false.
  explicit Optimizer(std::vector<NamedParameter> params, bool masters = true);
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Applies one update with learning rate `lr` to every parameter that has a gradient, in place
  // and without recording autograd. Increments step_count() first (bias corrections count from 1).
  virtual void Step(double lr) = 0;

  // Number of Step() calls so far (restored by LoadStateTensors).
  int64_t step_count() const { return step_; }

  // The state for checkpoints: "optimizer.step" (i64 [1], a fresh tensor) followed by the
  // per-parameter tensors named "<param>.<slot>" (e.g. "w.exp_avg"), then the f32 master copies
  // "<param>.master" of bf16 parameters. The per-parameter tensors are handles to the live state,
  // not copies: copy them before the next Step() to save asynchronously.
  virtual std::vector<std::pair<std::string, Tensor>> StateTensors() const;

  // Restores the state saved by StateTensors(). Every expected name must be present with the same
  // shape (dtype is converted), and no other name may be present; on error nothing is changed and
  // the status names the offending tensor. Each bf16 parameter is then set to bf16(its master).
  virtual absl::Status LoadStateTensors(const std::map<std::string, Tensor>& tensors);

  // Every parameter that has an f32 master copy, with that copy (a handle to the live tensor):
  // {param, master}. Checkpoints store the masters as the model weights.
  virtual std::vector<std::pair<Tensor, Tensor>> MasterWeights() const;

  // Drops every parameter's gradient (param.grad() becomes undefined).
  void ZeroGrad();

  const std::vector<NamedParameter>& params() const { return params_; }

 protected:
  // The live per-parameter state tensors in a fixed order (names "<param>.<slot>").
  virtual std::vector<std::pair<std::string, Tensor>> ParameterState() const = 0;

  // The gradient of params_[i] as a contiguous tensor of UpdateTarget(i)'s dtype on its device, or
  // an undefined tensor when it has none. Throws naming the parameter when the shape differs.
  Tensor GradientFor(size_t i) const;

  // What the update of params_[i] writes, and the dtype and shape its state takes: the f32 master
  // of a bf16 parameter, else the parameter itself.
  const Tensor& UpdateTarget(size_t i) const {
    return masters_[i].defined() ? masters_[i] : params_[i].param;
  }
  // Call after updating UpdateTarget(i): a parameter with a master becomes bf16(master).
  void WriteBackMaster(size_t i);

  // Increments the step counter (called at the start of Step()).
  void AdvanceStep() { ++step_; }

  std::vector<NamedParameter> params_;

 private:
  std::vector<Tensor> masters_;  // per parameter: its f32 master copy, or undefined
  int64_t step_ = 0;
};

// Name of the step-counter entry in StateTensors(), and the slot of master copies
// ("<param>.master").
inline constexpr const char kOptimizerStepName[] = "optimizer.step";
inline constexpr const char kMasterSlot[] = "master";

}  // namespace fam
