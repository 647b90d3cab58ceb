#include "framework/nn/module.h"

#include <algorithm>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"

namespace fam::nn {
namespace {

// splitmix64 finaliser: spreads a step key over all bits before it is mixed into a stream id.
uint64_t MixKey(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::vector<std::pair<std::string, Tensor>> Module::NamedParameters(
    const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : params_) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_) {
    auto sub = child->NamedParameters(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<Tensor> Module::Parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : NamedParameters()) out.push_back(t);
  return out;
}

int64_t Module::ParameterCount() const {
  int64_t n = 0;
  for (auto& [name, t] : NamedParameters()) n += t.numel();
  return n;
}

Tensor Module::FindParameter(const std::string& name) const {
  for (auto& [n, t] : NamedParameters())
    if (n == name) return t;
  return Tensor();
}

void Module::ZeroGrad() {
  for (auto& [name, t] : NamedParameters()) t.zero_grad();
}

void Module::To(Device device) {
  NoGradGuard no_grad;
  for (auto& [name, t] : NamedParameters()) {
    if (t.device() == device) continue;
    Tensor moved = ops::To(t.detach(), device);
    TensorImpl& impl = t.impl();
    impl.storage = moved.storage();
    impl.strides = moved.strides();
    impl.offset = moved.offset();
    impl.grad.reset();
  }
}

std::vector<std::pair<std::string, Module*>> Module::NamedModules(const std::string& prefix) {
  std::vector<std::pair<std::string, Module*>> out;
  for (auto& [name, child] : children_) {
    out.emplace_back(prefix + name, child.get());
    auto sub = child->NamedModules(prefix + name + ".");
    out.insert(out.end(), sub.begin(), sub.end());
  }
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::NamedModules(
    const std::string& prefix) const {
  std::vector<std::pair<std::string, const Module*>> out;
  for (auto& [name, module] : const_cast<Module*>(this)->NamedModules(prefix))
    out.emplace_back(name, module);
  return out;
}

void Module::RemoveParameter(const std::string& name) {
  params_.erase(std::remove_if(params_.begin(), params_.end(),
                               [&](const auto& entry) { return entry.first == name; }),
                params_.end());
}

Tensor Module::RegisterParameter(const std::string& name, Tensor value) {
  value.set_requires_grad(true);
  value.set_name(name);
  params_.emplace_back(name, value);
  return value;
}

Linear::Linear(int64_t in_features, int64_t out_features, DType dtype, bool bias) {
  weight_ = RegisterParameter("weight", Tensor::Zeros({out_features, in_features}, dtype));
  if (bias) bias_ = RegisterParameter("bias", Tensor::Zeros({out_features}, dtype));
}

Tensor Linear::Forward(const Tensor& x) const {
  Tensor y = ops::Linear(x, weight_);
  if (bias_.defined()) y = ops::Add(y, bias_);
  if (!has_lora()) return y;
  Tensor mask;
  if (lora_training_ && lora_.dropout > 0) {
    Generator gen(dropout_seed_, lora_stream_ ^ MixKey(dropout_key_), dropout_offset_);
    mask = DropoutMask(x.shape(), x.dtype(), x.device(), lora_.dropout, gen);
    dropout_offset_ = gen.offset();
  }
  return ops::Add(y, LoraDelta(x, lora_a_, lora_b_, lora_.scale(), mask));
}

void Linear::AttachLora(const LoraOptions& options, uint64_t seed, uint64_t stream) {
  FAM_CHECK(!has_lora(), "lora: this Linear ", ShapeString(weight_.shape()),
            " has an adapter already");
  CheckLoraOptions(options);
  NoGradGuard no_grad;
  Tensor a = InitialLoraA(options.rank, in_features(), weight_.dtype(), seed, stream);
  Tensor b = Tensor::Zeros({out_features(), options.rank}, weight_.dtype(), weight_.device());
  if (!weight_.device().is_cpu()) a = ops::To(a, weight_.device());
  lora_ = options;
  lora_stream_ = stream;
  lora_a_ = RegisterParameter("lora_A.weight", a);
  lora_b_ = RegisterParameter("lora_B.weight", b);
}

void Linear::MergeLora() {
  if (!has_lora()) return;
  ops::CopyInPlace(weight_, MergedLoraWeight(weight_, lora_a_, lora_b_, lora_.scale()));
  DetachLora();
}

void Linear::DetachLora() {
  RemoveParameter("lora_A.weight");
  RemoveParameter("lora_B.weight");
  lora_a_ = Tensor();
  lora_b_ = Tensor();
  lora_training_ = false;
}

void Linear::SetLoraDropout(bool training, uint64_t seed, uint64_t key) {
  lora_training_ = training;
  dropout_seed_ = seed;
  dropout_key_ = key;
  dropout_offset_ = 0;
}

RmsNorm::RmsNorm(int64_t dim, double eps, DType dtype, double weight_offset)
    : eps_(eps), weight_offset_(weight_offset) {
  weight_ = RegisterParameter("weight", Tensor::Full({dim}, 1.0 - weight_offset, dtype));
}

Tensor RmsNorm::Forward(const Tensor& x) const {
  if (weight_offset_ == 0) return ops::RmsNorm(x, weight_, eps_);
  return ops::RmsNorm(x, ops::AddScalar(weight_, weight_offset_), eps_);
}

Embedding::Embedding(int64_t vocab, int64_t dim, DType dtype) {
  weight_ = RegisterParameter("weight", Tensor::Zeros({vocab, dim}, dtype));
}

Tensor Embedding::Forward(const Tensor& ids) const { return ops::Embedding(weight_, ids); }

}  // namespace fam::nn
