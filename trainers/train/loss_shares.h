// How a training step weighs its micro-batches' losses so that its gradient is that of one batch
// holding every micro-batch of every rank, with or without per-token loss weights.
#pragma once

#include <functional>
#include <vector>

#include "framework/core/tensor.h"
#include "framework/data/loader.h"

namespace fam {

// The total loss weight of a (micro-)batch: the sum of `weights` over the targets that are not
// -100, or the count of those targets when `weights` is undefined (FamModel::Loss's normaliser).
double LossWeight(const Tensor& targets, const Tensor& weights);

// Each micro-batch's loss weight and the step's total over every micro-batch of every rank.
// Without weight shards every micro-batch weighs 1 (plain averaging); with them each one counts
// by LossWeight, so the result does not depend on how the weights fall into micro-batches.
struct LossShares {
  std::vector<double> micro_weight;
  double step_weight = 0;
  // The factor micro-batch m's weighted-mean loss is scaled by before backward: world x its share
  // of the step (the gradient synchronisation averages over the ranks).
  double BackwardScale(size_t m, int world) const {
    return step_weight > 0 ? world * micro_weight[m] / step_weight : 0.0;
  }
  // The step's loss from the sum over ranks of loss x micro_weight.
  double StepLoss(double weighted_loss_sum) const {
    return step_weight > 0 ? weighted_loss_sum / step_weight : 0.0;
  }
};

// `sum_over_ranks` adds a value over every rank (called by every rank, only when the batches carry
// weights).
LossShares ShareLoss(const std::vector<data::Batch>& micro, int world,
                     const std::function<double(double)>& sum_over_ranks);

}  // namespace fam
