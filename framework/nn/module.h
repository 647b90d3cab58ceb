// Modules: named parameter containers. A Module owns parameters and child modules, and lists them
// with dotted names in registration order (e.g. "model.layers.0.self_attn.q_proj.weight"), which is
// what checkpoints, safetensors export and optimizers key on.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "framework/core/tensor.h"

namespace fam::nn {

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // All parameters of this module and its children, depth-first in registration order.
  std::vector<std::pair<std::string, Tensor>> NamedParameters(const std::string& prefix = "") const;
  std::vector<Tensor> Parameters() const;
  int64_t ParameterCount() const;
  // The parameter with this dotted name, or an undefined tensor.
  Tensor FindParameter(const std::string& name) const;
  void ZeroGrad();

 protected:
  // Registers a leaf parameter (requires_grad is set) and returns it.
  Tensor RegisterParameter(const std::string& name, Tensor value);
  template <typename M>
  M* RegisterModule(const std::string& name, std::unique_ptr<M> module) {
    M* raw = module.get();
    children_.emplace_back(name, std::move(module));
    return raw;
  }

 private:
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, std::unique_ptr<Module>>> children_;
};

// y = x · Wᵀ, W [out, in], no bias (the FAM model has none).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, DType dtype = DType::kF32);
  Tensor Forward(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
};

// RMSNorm with a learned scale, initialised to 1.
class RmsNorm : public Module {
 public:
  RmsNorm(int64_t dim, double eps, DType dtype = DType::kF32);
  Tensor Forward(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
  double eps_;
};

// Token embedding table [vocab, dim].
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, DType dtype = DType::kF32);
  Tensor Forward(const Tensor& ids) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
};

}  // namespace fam::nn
