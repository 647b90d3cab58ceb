// Activation checkpointing (recomputation): the forward of a function runs without recording, so
// none of its intermediate activations are kept; its backward runs the function again with
// recording on and backpropagates through that fresh graph. The parameters the function uses are
// edges of the checkpoint node, and the gradients they receive in the inner pass are captured and
// returned as this node's input gradients: the outer backward sums them with any other use of the
// same parameter and accumulates each parameter exactly once (one grad_ready_hook call).
#include <utility>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/ops/ops.h"

namespace fam::ops {
namespace {

bool NeedsGrad(const Tensor& t) { return t.defined() && (t.requires_grad() || t.grad_fn()); }

class CheckpointNode : public Node {
 public:
  CheckpointNode(CheckpointFn fn, const std::vector<Tensor>& inputs,
                 const std::vector<Tensor>& params)
      : fn_(std::move(fn)), params_(params) {
    // The inputs are kept as graph-free views of their storage: the recomputation starts from them
    // as fresh leaves, so the inner backward stops at this node's boundary.
    for (const Tensor& t : inputs) {
      inputs_.push_back(t.defined() ? t.detach() : Tensor());
      input_needs_grad_.push_back(NeedsGrad(t));
    }
  }

  std::vector<Tensor> Backward(const Tensor& grad_output) override {
    EnableGradGuard grad_on;  // the outer backward runs nodes with recording off
    GradCapture capture;
    std::vector<Tensor> leaves;
    for (size_t i = 0; i < inputs_.size(); ++i) {
      Tensor leaf = inputs_[i].defined() ? inputs_[i].detach() : Tensor();
      if (leaf.defined() && input_needs_grad_[i]) {
        leaf.set_requires_grad(true);
        capture[leaf.impl_ptr().get()] = Tensor();
      }
      leaves.push_back(leaf);
    }
    for (const Tensor& p : params_)
      if (p.defined() && p.requires_grad()) capture[p.impl_ptr().get()] = Tensor();

    Tensor output = fn_(leaves);
    FAM_CHECK(output.defined() && output.shape() == grad_output.shape(),
              "Checkpoint: the recomputed output ",
              output.defined() ? output.Describe() : std::string("(undefined)"),
              " does not match its gradient ", grad_output.Describe(),
              " (the function must be deterministic)");
    if (NeedsGrad(output)) RunBackward(output, grad_output, &capture);

    std::vector<Tensor> grads;
    for (size_t i = 0; i < leaves.size(); ++i) {
      const bool captured = leaves[i].defined() && input_needs_grad_[i];
      grads.push_back(captured ? capture[leaves[i].impl_ptr().get()] : Tensor());
    }
    for (const Tensor& p : params_) {
      const bool captured = p.defined() && p.requires_grad();
      grads.push_back(captured ? capture[p.impl_ptr().get()] : Tensor());
    }
    return grads;
  }

  std::string name() const override { return "Checkpoint"; }

  void Release() override {
    fn_ = nullptr;
    inputs_.clear();
    params_.clear();
  }

 private:
  CheckpointFn fn_;
  std::vector<Tensor> inputs_;
  std::vector<bool> input_needs_grad_;
  std::vector<Tensor> params_;
};

}  // namespace

Tensor Checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                  const std::vector<Tensor>& params) {
  for (size_t i = 0; i < params.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      FAM_CHECK(!params[i].defined() || !params[i].same(params[j]), "Checkpoint: parameter '",
                params[i].name(), "' is listed twice");
  std::vector<Tensor> edges = inputs;
  edges.insert(edges.end(), params.begin(), params.end());
  if (!GradEnabled() || !AnyRequiresGrad(edges)) return fn(inputs);
  Tensor output;
  {
    NoGradGuard no_grad;
    output = fn(inputs);
    FAM_CHECK(output.defined(), "Checkpoint: the function returned an undefined tensor");
    // The node is attached to the output's TensorImpl: never to one the caller already owns.
    for (const Tensor& t : edges)
      if (output.same(t)) output = Clone(output);
  }
  auto node = std::make_shared<CheckpointNode>(fn, inputs, params);
  RecordNode(node, edges, output);
  return output;
}

}  // namespace fam::ops
