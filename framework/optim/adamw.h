// AdamW (Loshchilov & Hutter): Adam with bias-corrected moments and decoupled weight decay, through
// the backend's fused update. Per element, at step t (from 1) with learning rate lr:
//   p ← p·(1 − lr·wd)   (only for parameters with weight_decay set)
//   m ← β1·m + (1 − β1)·g,   v ← β2·v + (1 − β2)·g²
//   p ← p − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + eps)
// State per parameter: "<name>.exp_avg" (m) and "<name>.exp_avg_sq" (v), same shape and dtype (f32
// for a bf16 parameter, which is updated through its f32 master: optimizer.h).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "framework/optim/optimizer.h"

namespace fam {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW : public Optimizer {
 public:
  // Throws fam::Error naming the option when beta1/beta2 are outside [0, 1), eps <= 0 or
  // weight_decay < 0.
  AdamW(std::vector<NamedParameter> params, const AdamWOptions& options = {});

  void Step(double lr) override;
  const AdamWOptions& options() const { return options_; }

 protected:
  std::vector<std::pair<std::string, Tensor>> ParameterState() const override;

 private:
  AdamWOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // one per parameter
};

}  // namespace fam
