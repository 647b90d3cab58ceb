// Autograd graph nodes. Every differentiable op output holds a Node (its grad_fn) that knows how to
// turn the output's gradient into its inputs' gradients; edges point at the inputs' nodes (or at
// AccumulateGrad nodes for leaves). backward() lives next to forward in each op's own file.
#pragma once

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/core/tensor.h"

namespace fam {

// A gradient that covers only part of a node's single input: `values` belongs at
// [start, start + values.size(axis)) along `axis` of an input of shape `input_shape`, zero
// elsewhere.
struct GradRegion {
  Tensor values;
  int axis = 0;
  int64_t start = 0;
  Shape input_shape;
};

class Node {
 public:
  virtual ~Node() = default;
  // Gradients w.r.t. each input (one per edge; an undefined Tensor means "no gradient").
  virtual std::vector<Tensor> Backward(const Tensor& grad_output) = 0;
  // A node with one input whose gradient is nonzero on a region only (a slice) may describe it
  // here instead: the engine then adds `values` into that region of one gradient buffer per
  // input, so n slices of one tensor cost their own sizes plus one zero fill, not n whole-tensor
  // gradients. Returns false to use Backward.
  virtual bool BackwardRegion(const Tensor& grad_output, GradRegion* region) { return false; }
  virtual std::string name() const = 0;
  // Frees saved tensors once Backward has run (retain-free backward).
  virtual void Release() {}

  std::vector<std::shared_ptr<Node>> next;  // one per input; null when the input needs no grad
  bool released = false;                    // set once backward has consumed this node
};

// The dtype of a leaf's accumulated gradient (leaf.grad): the leaf's own, except f32 for a bf16
// leaf, so that the sum over backward passes (micro-batches) and its all-reduce do not round to
// bf16 at every addition (mixed precision's "main grad"; each pass's contribution is bf16).
inline DType GradDType(DType leaf_dtype) {
  return leaf_dtype == DType::kBF16 ? DType::kF32 : leaf_dtype;
}

// The tensor arithmetic the engine sums gradients with. Autograd sits below the ops layer
// (docs/layers.txt), which installs these when it is linked in (framework/ops/op_util.cc); the
// engine itself names no op.
struct GradArithmetic {
  Tensor (*add)(const Tensor& a, const Tensor& b) = nullptr;             // a + b, a new tensor
  void (*add_in_place)(const Tensor& dst, const Tensor& src) = nullptr;  // dst += src
  Tensor (*cast)(const Tensor& x, DType dtype) = nullptr;
  Tensor (*clone)(const Tensor& x) = nullptr;
  Tensor (*zeros)(const Shape& shape, DType dtype, Device device) = nullptr;
  Tensor (*slice)(const Tensor& x, int axis, int64_t start, int64_t end) = nullptr;  // a view
};
void InstallGradArithmetic(const GradArithmetic& arithmetic);

// Sink for a leaf tensor: adds the incoming gradient into leaf.grad (in GradDType(leaf dtype)).
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::weak_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::vector<Tensor> Backward(const Tensor& grad_output) override;
  std::string name() const override { return "AccumulateGrad"; }
  void Release() override {}
  // The leaf, or null once it is gone.
  std::shared_ptr<TensorImpl> leaf() const { return leaf_.lock(); }

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

// True when gradients are being recorded (thread-local; off inside a NoGradGuard).
bool GradEnabled();

class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Turns gradient recording back on inside a NoGradGuard (e.g. to recompute a forward during
// backward), restoring the previous mode on destruction.
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

// The node a gradient for `t` should flow into: its grad_fn, its leaf accumulator, or null.
std::shared_ptr<Node> GradEdge(const Tensor& t);

// Whether an op with these inputs must record a node.
bool AnyRequiresGrad(const std::vector<Tensor>& inputs);

// Attaches `node` as grad_fn of `output` with edges to `inputs` when recording is on and any input
// requires grad; returns whether it did. Inputs may be undefined tensors (no edge).
bool RecordNode(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                Tensor& output);

// Gradients captured by a backward pass instead of being accumulated into leaves, keyed by leaf.
// The caller lists the leaves (entries with undefined tensors); the pass fills them in.
using GradCapture = std::unordered_map<const TensorImpl*, Tensor>;

// Runs backpropagation from `root` with gradient `grad_root` (defaults to 1 for scalars). With a
// `capture`, the gradient reaching each listed leaf is stored there (its grad and grad_ready_hook
// are left alone), and reaching a leaf that is not listed is an error raised before any node runs.
// A node's Backward may itself call RunBackward (activation recomputation does).
void RunBackward(const Tensor& root, const Tensor& grad_root, GradCapture* capture = nullptr);

}  // namespace fam
