// Fused cross-entropy over logits rows with integer targets, optional per-token weights and an
// ignore_index. The forward saves only the row log-sum-exp (and the unweighted losses when the
// weights need a gradient); the backward writes grad_logits straight from logits and lse.
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

class CrossEntropyBackward : public Node {
 public:
  CrossEntropyBackward(Tensor logits, Tensor targets, Tensor weights, Tensor weights_stored,
                       int64_t ignore_index, Tensor lse, Tensor nll)
      : logits_(std::move(logits)),
        targets_(std::move(targets)),
        weights_(std::move(weights)),
        weights_stored_(std::move(weights_stored)),
        ignore_index_(ignore_index),
        lse_(std::move(lse)),
        nll_(std::move(nll)) {}

  std::vector<Tensor> Backward(const Tensor& g) override {
    Backend& backend = GetBackend(lse_.device());
    Tensor gc = ForCompute(g);
    Tensor grad_logits, grad_weights;
    if (next[0]) {
      Tensor lc = ForCompute(logits_);
      grad_logits = Tensor::Empty(lc.shape(), lc.dtype(), lc.device());
      backend.CrossEntropyBackward(lc, targets_, weights_, ignore_index_, lse_, gc, grad_logits);
      grad_logits = FromCompute(grad_logits, logits_.dtype());
    }
    if (next.size() > 2 && next[2] && nll_.defined()) {
      grad_weights = Tensor::Empty(nll_.shape(), nll_.dtype(), nll_.device());
      backend.Binary(BinaryOp::kMul, gc, nll_, grad_weights);
      grad_weights = FromCompute(grad_weights, weights_stored_.dtype());
    }
    return {grad_logits, Tensor(), grad_weights};
  }
  void Release() override {
    logits_ = targets_ = weights_ = weights_stored_ = lse_ = nll_ = Tensor();
  }
  std::string name() const override { return "CrossEntropy"; }

 private:
  Tensor logits_;          // as given (storage dtype); converted again in the backward
  Tensor targets_;         // contiguous i32/i64 [N]
  Tensor weights_;         // compute dtype [N] or undefined
  Tensor weights_stored_;  // as given, for the gradient's dtype
  int64_t ignore_index_;
  Tensor lse_;  // [N], compute dtype
  Tensor nll_;  // unweighted losses [N] when the weights need a gradient
};

}  // namespace

Tensor CrossEntropy(const Tensor& logits, const Tensor& targets, const Tensor& weights,
                    int64_t ignore_index) {
  Backend& backend = BackendFor("cross_entropy", {logits, targets, weights});
  CheckSameFloatDType("cross_entropy", {logits, weights});
  FAM_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, V], got ", logits.Describe());
  const int64_t n = logits.shape()[0], vocab = logits.shape()[1];
  CheckCrossEntropyInputs("cross_entropy", "logits " + logits.Describe(), targets, weights, n,
                          vocab, ignore_index);

  Tensor lc = ForCompute(logits);
  Tensor tc = ContiguousIndices(targets);
  Tensor nll = Tensor::Empty({n}, lc.dtype(), lc.device());
  Tensor lse = Tensor::Empty({n}, lc.dtype(), lc.device());
  Tensor wc = weights.defined() ? ForCompute(weights) : Tensor();
  const bool weights_need_grad = weights.defined() && AnyRequiresGrad({weights});
  Tensor losses = nll;
  if (weights_need_grad) {
    // Keep the unweighted losses for grad_weights; weight them with one elementwise product.
    backend.CrossEntropyForward(lc, tc, Tensor(), ignore_index, nll, lse);
    losses = Tensor::Empty({n}, lc.dtype(), lc.device());
    backend.Binary(BinaryOp::kMul, nll, wc, losses);
  } else {
    backend.CrossEntropyForward(lc, tc, wc, ignore_index, nll, lse);
  }
  if (GradEnabled() && AnyRequiresGrad({logits, weights})) {
    auto node = std::make_shared<CrossEntropyBackward>(
        logits.detach(), tc, wc, weights.defined() ? weights.detach() : Tensor(), ignore_index, lse,
        weights_need_grad ? nll : Tensor());
    RecordNode(node, {logits, targets, weights}, losses);
  }
  return losses;
}

}  // namespace fam::ops
