#include <unordered_map>
#include <unordered_set>

#include "framework/autograd/node.h"

namespace fam {
namespace {
thread_local bool grad_enabled = true;

GradArithmetic g_arithmetic;  // installed by the ops layer before any backward runs

const GradArithmetic& Arithmetic() {
  if (g_arithmetic.add == nullptr)
    ThrowError(absl::StatusCode::kInternal,
               "autograd: no gradient arithmetic installed (framework/ops is not linked in)");
  return g_arithmetic;
}
}  // namespace

void InstallGradArithmetic(const GradArithmetic& arithmetic) { g_arithmetic = arithmetic; }

bool GradEnabled() { return grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(grad_enabled) { grad_enabled = false; }
NoGradGuard::~NoGradGuard() { grad_enabled = previous_; }
EnableGradGuard::EnableGradGuard() : previous_(grad_enabled) { grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { grad_enabled = previous_; }

std::vector<Tensor> AccumulateGrad::Backward(const Tensor& grad_output) {
  std::shared_ptr<TensorImpl> leaf = leaf_.lock();
  if (!leaf) return {};
  Tensor g = grad_output;
  if (g.shape() != leaf->shape) {
    ThrowError(absl::StatusCode::kInternal, "gradient of shape ", ShapeString(g.shape()),
               " for a leaf of shape ", ShapeString(leaf->shape));
  }
  if (const DType dtype = GradDType(leaf->dtype); g.dtype() != dtype)
    g = Arithmetic().cast(g, dtype);
  if (!leaf->grad) {
    leaf->grad = Arithmetic().clone(g).impl_ptr();
  } else {
    Arithmetic().add_in_place(Tensor(leaf->grad), g);
  }
  if (leaf->grad_ready_hook) leaf->grad_ready_hook();
  return {};
}

std::shared_ptr<Node> GradEdge(const Tensor& t) {
  if (!t.defined()) return nullptr;
  if (t.grad_fn()) return t.grad_fn();
  if (!t.requires_grad()) return nullptr;
  TensorImpl& impl = t.impl();
  if (!impl.grad_accumulator)
    impl.grad_accumulator = std::make_shared<AccumulateGrad>(t.impl_ptr());
  return impl.grad_accumulator;
}

bool AnyRequiresGrad(const std::vector<Tensor>& inputs) {
  for (const Tensor& t : inputs)
    if (t.defined() && (t.requires_grad() || t.grad_fn())) return true;
  return false;
}

bool RecordNode(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
                Tensor& output) {
  if (!GradEnabled() || !AnyRequiresGrad(inputs)) return false;
  node->next.clear();
  for (const Tensor& t : inputs) node->next.push_back(GradEdge(t));
  output.set_grad_fn(node);
  output.impl().requires_grad = true;
  return true;
}

void RunBackward(const Tensor& root, const Tensor& grad_root, GradCapture* capture) {
  FAM_CHECK(root.requires_grad() || root.grad_fn(),
            "backward() on a tensor that does not require grad (", root.Describe(), ")");
  Tensor grad = grad_root;
  if (!grad.defined()) {
    FAM_CHECK(root.numel() == 1, "backward() without a gradient needs a scalar, got ",
              root.Describe());
    grad = Tensor::Full(root.shape(), 1.0, root.dtype(), root.device());
  }
  FAM_CHECK(grad.shape() == root.shape(), "gradient ", grad.Describe(), " does not match ",
            root.Describe());
  std::shared_ptr<Node> start = GradEdge(root);

  // Count, for every node, how many edges point at it, so a node runs once all its gradient
  // contributions have arrived (topological order without recursion).
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack{start.get()};
  pending[start.get()] = 0;
  std::vector<std::shared_ptr<Node>> keep_alive{start};
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const std::shared_ptr<Node>& next : node->next) {
      if (!next) continue;
      auto [it, inserted] = pending.try_emplace(next.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(next.get());
    }
    if (capture) {
      if (auto* acc = dynamic_cast<AccumulateGrad*>(node)) {
        std::shared_ptr<TensorImpl> leaf = acc->leaf();
        if (leaf && !capture->contains(leaf.get())) {
          ThrowInvalid("backward with captured gradients (ops::Checkpoint) reached the leaf '",
                       leaf->name, "' ", ShapeString(leaf->shape),
                       " that is not captured: list it among the checkpoint's params");
        }
      }
    }
  }

  NoGradGuard no_grad;
  std::unordered_map<Node*, Tensor> grads;
  // Slots holding a buffer the engine allocated itself (safe to add into in place); other slots
  // may alias a tensor some node returned for several inputs.
  std::unordered_set<Node*> owned;
  grads[start.get()] = grad;
  std::vector<std::shared_ptr<Node>> ready{start};
  while (!ready.empty()) {
    std::shared_ptr<Node> node = std::move(ready.back());
    ready.pop_back();
    Tensor g;
    if (auto it = grads.find(node.get()); it != grads.end()) {
      g = std::move(it->second);
      grads.erase(it);
      owned.erase(node.get());
    }
    std::vector<Tensor> input_grads;
    GradRegion region;
    bool has_region = false;
    auto* acc = capture ? dynamic_cast<AccumulateGrad*>(node.get()) : nullptr;
    if (acc && g.defined()) {
      if (std::shared_ptr<TensorImpl> leaf = acc->leaf()) {
        Tensor& slot = (*capture)[leaf.get()];
        slot = slot.defined() ? Arithmetic().add(slot, g) : g;
      }
    } else if (g.defined()) {
      if (node->released) {
        ThrowInvalid("backward() through a graph that was already consumed by an earlier ",
                     "backward() (node ", node->name(), ")");
      }
      has_region = node->next.size() == 1 && node->BackwardRegion(g, &region);
      if (!has_region) input_grads = node->Backward(g);
    }
    g = Tensor();
    node->Release();
    // Leaf accumulators are reused by every graph; op nodes are consumed.
    if (!dynamic_cast<AccumulateGrad*>(node.get())) node->released = true;
    std::vector<std::shared_ptr<Node>> next = std::move(node->next);
    node->next.clear();
    for (size_t i = 0; i < next.size(); ++i) {
      if (!next[i]) continue;
      Node* target = next[i].get();
      if (has_region && i == 0) {
        Tensor& slot = grads[target];
        if (!slot.defined()) {
          slot =
              Arithmetic().zeros(region.input_shape, region.values.dtype(), region.values.device());
        } else if (!owned.count(target)) {
          slot = Arithmetic().clone(slot);
        }
        owned.insert(target);
        const int64_t end = region.start + region.values.shape()[region.axis];
        Arithmetic().add_in_place(Arithmetic().slice(slot, region.axis, region.start, end),
                                  region.values);
      } else if (i < input_grads.size() && input_grads[i].defined()) {
        Tensor& slot = grads[target];
        if (slot.defined()) {
          if (owned.count(target)) {
            Arithmetic().add_in_place(slot, input_grads[i]);
          } else {
            slot = Arithmetic().add(slot, input_grads[i]);
            owned.insert(target);
          }
        } else {
          slot = input_grads[i];
        }
      }
      if (--pending[target] == 0) ready.push_back(next[i]);
    }
  }
}

void Tensor::backward(const Tensor& grad_output) const { RunBackward(*this, grad_output); }

}  // namespace fam
