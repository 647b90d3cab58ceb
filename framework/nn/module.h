// Modules: named parameter containers. A Module owns parameters and child modules, and lists them
// with dotted names in registration order (e.g. "model.layers.0.self_attn.q_proj.weight"), which is
// what checkpoints, safetensors export and optimizers key on. A Linear may carry a LoRA adapter
// (framework/nn/lora.h) whose tensors are parameters of the Linear named "lora_A.weight" and
// "lora_B.weight" (the names PEFT uses below the module).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "framework/core/tensor.h"
#include "framework/nn/lora.h"

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
  // Moves every parameter to `device` in place: each parameter keeps its tensor object (so handles
  // held by layers, optimizers and LoRA stay valid) and gets a contiguous copy of its data there.
  // Gradients are dropped. A no-op for parameters already there.
  void To(Device device);
  // All descendant modules (not this one) with dotted names, depth-first in registration order.
  std::vector<std::pair<std::string, Module*>> NamedModules(const std::string& prefix = "");
  std::vector<std::pair<std::string, const Module*>> NamedModules(
      const std::string& prefix = "") const;

 protected:
  // Registers a leaf parameter (requires_grad is set) and returns it.
  Tensor RegisterParameter(const std::string& name, Tensor value);
  // Removes this module's own parameter `name` (no-op when absent).
  void RemoveParameter(const std::string& name);
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

// y = x · Wᵀ (+ b), W [out, in], optional bias b [out] ("bias", zeros; Qwen2's q/k/v projections
// have one); with a LoRA adapter attached, y = x·Wᵀ + b + s·dropout(x)·Aᵀ·Bᵀ (framework/nn/lora.h).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, DType dtype = DType::kF32, bool bias = false);
  Tensor Forward(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without a bias
  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }

  // Attaches an adapter: registers "lora_A.weight" [r, in] = InitialLoraA(seed, stream) and
  // "lora_B.weight" [out, r] = 0, both in W's dtype and on W's device, requiring grad. Throws when
  // one is attached already or the options are invalid. W is left as it is (freezing it is the
  // caller's choice).
  void AttachLora(const LoraOptions& options, uint64_t seed, uint64_t stream);
  bool has_lora() const { return lora_a_.defined(); }
  const Tensor& lora_a() const { return lora_a_; }
  const Tensor& lora_b() const { return lora_b_; }
  const LoraOptions& lora_options() const { return lora_; }
  // Folds s·B·A into W in place (no autograd) and removes the adapter.
  void MergeLora();
  // Removes the adapter without changing W.
  void DetachLora();
  // Adapter-input dropout is applied only while `training`. Its masks are a pure function of
  // (seed, key, the adapter's stream, the order of Forward calls since this call), so a trainer
  // that sets key = f(step, rank) before each step gets reproducible masks, also across a resume.
  void SetLoraDropout(bool training, uint64_t seed, uint64_t key);
  // Position of the dropout generator (values drawn since SetLoraDropout). Activation
  // recomputation rewinds it to replay a forward's masks, then puts it back.
  uint64_t lora_dropout_offset() const { return dropout_offset_; }
  void RewindLoraDropout(uint64_t offset) const { dropout_offset_ = offset; }

 private:
  Tensor weight_, bias_;
  Tensor lora_a_, lora_b_;
  LoraOptions lora_;
  uint64_t lora_stream_ = 0;
  bool lora_training_ = false;
  uint64_t dropout_seed_ = 0, dropout_key_ = 0;
  mutable uint64_t dropout_offset_ = 0;  // values drawn since SetLoraDropout
};

// RMSNorm with a learned scale w: y = x / rms(x) · (weight_offset + w), w initialised to
// 1 − weight_offset (an effective scale of 1). weight_offset 1 is Gemma's (1 + w) convention.
class RmsNorm : public Module {
 public:
  RmsNorm(int64_t dim, double eps, DType dtype = DType::kF32, double weight_offset = 0);
  Tensor Forward(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }
  double weight_offset() const { return weight_offset_; }

 private:
  Tensor weight_;
  double eps_;
  double weight_offset_;
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
