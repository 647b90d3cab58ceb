// Loss weights of micro-batches (LossWeight) and their shares of a training step.
#include "trainers/train/loss_shares.h"

#include <algorithm>

#include "framework/core/error.h"

namespace fam {

double LossWeight(const Tensor& targets, const Tensor& weights) {
  const std::vector<int64_t> t = targets.ToInts();
  if (!weights.defined()) {
    return static_cast<double>(
        std::count_if(t.begin(), t.end(), [](int64_t x) { return x != -100; }));
  }
  FAM_CHECK(weights.numel() == targets.numel(), "LossWeight: weights ", weights.Describe(),
            " do not match targets ", targets.Describe());
  const std::vector<double> w = weights.ToDoubles();
  double total = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] != -100) total += w[i];
  }
  return total;
}

LossShares ShareLoss(const std::vector<data::Batch>& micro, int world,
                     const std::function<double(double)>& sum_over_ranks) {
  LossShares shares;
  shares.micro_weight.assign(micro.size(), 1.0);
  shares.step_weight = static_cast<double>(micro.size()) * world;
  if (micro.empty() || !micro[0].weights.defined()) return shares;
  shares.step_weight = 0;
  for (size_t m = 0; m < micro.size(); ++m) {
    shares.micro_weight[m] = LossWeight(micro[m].targets, micro[m].weights);
    shares.step_weight += shares.micro_weight[m];
  }
  if (world > 1) shares.step_weight = sum_over_ranks(shares.step_weight);
  return shares;
}

}  // namespace fam
