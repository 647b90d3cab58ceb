// Gradient clipping by global norm and the non-finite-gradient check used to skip bad steps.
// All functions look at param.grad() of each parameter and ignore parameters without a gradient.
// The pieces (GradSumSquares, ScaleGrads) are exposed so a sharded (ZeRO) trainer can all-reduce
// the partial sums of squares between them.
#pragma once

#include <vector>

#include "framework/optim/optimizer.h"

namespace fam {

// Sum over all gradients of the squared elements, accumulated in double through
// Backend::SumSquares. NaN/Inf when some gradient element is not finite.
double GradSumSquares(const std::vector<NamedParameter>& params);

// Multiplies every gradient by `factor` in place.
void ScaleGrads(const std::vector<NamedParameter>& params, double factor);

// Returns the global L2 norm of the gradients before clipping. When it is finite and
// norm > max_norm > 0, scales every gradient by max_norm / norm (so the new norm is max_norm).
// max_norm <= 0 disables clipping; a non-finite norm leaves the gradients unchanged.
double ClipGradNorm(const std::vector<NamedParameter>& params, double max_norm);

// False when any gradient element is NaN or ±Inf.
bool AllGradsFinite(const std::vector<NamedParameter>& params);

}  // namespace fam
