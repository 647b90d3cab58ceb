#include "framework/nn/lora.h"

#include <cmath>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"

namespace fam::nn {

void CheckLoraOptions(const LoraOptions& options) {
  FAM_CHECK(options.rank >= 1, "lora.rank: must be at least 1, got ", options.rank);
  FAM_CHECK(std::isfinite(options.alpha) && options.alpha != 0,
            "lora.alpha: must be finite and non-zero, got ", options.alpha);
  FAM_CHECK(options.dropout >= 0 && options.dropout < 1, "lora.dropout: must be in [0, 1), got ",
            options.dropout);
}

Tensor InitialLoraA(int64_t rank, int64_t in_features, DType dtype, uint64_t seed,
                    uint64_t stream) {
  FAM_CHECK(rank >= 1 && in_features >= 1, "lora: A needs rank >= 1 and in_features >= 1, got [",
            rank, ", ", in_features, "]");
  Tensor a = Tensor::Empty({rank, in_features}, dtype);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  Generator gen(seed, stream);
  gen.FillUniform(a, -bound, bound);
  return a;
}

Tensor DropoutMask(const Shape& shape, DType dtype, Device device, double p, Generator& gen) {
  FAM_CHECK(p >= 0 && p < 1, "dropout: probability must be in [0, 1), got ", p);
  const int64_t n = NumElements(shape);
  const double keep = 1.0 / (1.0 - p);
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[i] = gen.Uniform() < p ? 0.0 : keep;
  NoGradGuard no_grad;
  Tensor mask = Tensor::FromVector(values, shape, dtype);
  return device.is_cpu() ? mask : ops::To(mask, device);
}

Tensor LoraDelta(const Tensor& x, const Tensor& a, const Tensor& b, double scale,
                 const Tensor& mask) {
  FAM_CHECK(a.dim() == 2 && b.dim() == 2 && b.size(1) == a.size(0),
            "lora: A must be [r, in] and B [out, r], got A ", a.Describe(), " and B ",
            b.Describe());
  FAM_CHECK(x.dim() >= 1 && x.shape().back() == a.size(1), "lora: input ", x.Describe(),
            " does not match A ", a.Describe());
  Tensor input = x;
  if (mask.defined()) {
    FAM_CHECK(mask.shape() == x.shape(), "lora: dropout mask ", mask.Describe(),
              " does not match the input ", x.Describe());
    input = ops::Mul(x, mask);
  }
  return ops::Scale(ops::Linear(ops::Linear(input, a), b), scale);
}

Tensor MergedLoraWeight(const Tensor& w, const Tensor& a, const Tensor& b, double scale) {
  FAM_CHECK(w.dim() == 2 && a.dim() == 2 && b.dim() == 2 && a.size(1) == w.size(1) &&
                b.size(0) == w.size(0) && b.size(1) == a.size(0),
            "lora merge: W ", w.Describe(), ", A ", a.Describe(), " and B ", b.Describe(),
            " do not fit W [out, in], A [r, in], B [out, r]");
  NoGradGuard no_grad;
  const DType compute = w.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  Tensor delta = ops::Scale(ops::Matmul(ops::Cast(b, compute), ops::Cast(a, compute)), scale);
  return ops::Cast(ops::Add(ops::Cast(w, compute), delta), w.dtype());
}

}  // namespace fam::nn
