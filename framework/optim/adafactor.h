// Adafactor (Shazeer & Stern 2018) as TransformerFAM fine-tuning uses it: constant β2 (0.99) with
// the paper's bias-corrected decay β̂2ᵗ = β2·(1 − β2ᵗ⁻¹)/(1 − β2ᵗ), factored second moments for
// parameters of rank ≥ 2 (over the last two dims), update clipping at RMS d, optional momentum on
// the clipped update and optional decoupled weight decay. The learning rate is given per step (no
// relative step size, no parameter scaling). Per parameter with gradient G at step t:
//   factored [.., n, m]: R ← β̂·R + (1−β̂)·rowmean(G² + ε1),  C ← β̂·C + (1−β̂)·colmean(G² + ε1),
//                        V = (R / mean(R)) ⊗ C
//   unfactored:          V ← β̂·V + (1−β̂)·(G² + ε1)
//   U = G / sqrt(V);  U ← U / max(1, RMS(U)/d);  M ← β1·M + (1−β1)·U (when β1 > 0; U ← M)
//   p ← p·(1 − lr·wd) − lr·U
// State: "<name>.exp_avg_sq_row" [.., n] and "<name>.exp_avg_sq_col" [.., m] (factored) or
// "<name>.exp_avg_sq"; "<name>.exp_avg" when β1 > 0 (f32 for a bf16 parameter, which is updated
// through its f32 master: optimizer.h), on the parameter's device. The update is one fused backend
// call per parameter (Backend::AdafactorUpdate: CPU loops, CUDA kernels), accumulating in double.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "framework/optim/optimizer.h"

namespace fam {

struct AdafactorOptions {
  double beta1 = 0.9;           // momentum on the clipped update; 0 turns it off (no state)
  double beta2 = 0.99;          // constant second-moment decay
  double eps1 = 1e-30;          // regulariser added to G² before averaging
  double clip_threshold = 1.0;  // d: the update is scaled down to RMS ≤ d
  double weight_decay = 0.0;    // decoupled, only for parameters with weight_decay set
  bool factored = true;         // factor second moments of rank ≥ 2 parameters
  bool bias_correction = true;  // β̂2ᵗ as above; false uses β2 from the first step
};

class Adafactor : public Optimizer {
 public:
  // Throws fam::Error naming the option when it is out of range.
  Adafactor(std::vector<NamedParameter> params, const AdafactorOptions& options = {});

  void Step(double lr) override;
  const AdafactorOptions& options() const { return options_; }

 protected:
  std::vector<std::pair<std::string, Tensor>> ParameterState() const override;

 private:
  struct State {
    bool factored = false;
    Tensor row, col;  // factored: [.., n] and [.., m]
    Tensor sq;        // unfactored: like the parameter
    Tensor exp_avg;   // like the parameter, when beta1 > 0
  };
  AdafactorOptions options_;
  std::vector<State> state_;  // one per parameter
};

}  // namespace fam
