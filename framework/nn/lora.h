// LoRA (Hu et al. 2021, "Low-Rank Adaptation"): a trainable low-rank update of a frozen Linear
// weight W [out, in]:  y = x·Wᵀ + s·dropout(x)·Aᵀ·Bᵀ,  A [r, in] small random, B [out, r] zero at
// the start (so attaching an adapter leaves the model's output unchanged), s = alpha / r.
// This file holds the adapter math: its initial A, the inverted-dropout mask of its input, the
// forward term (differentiable in x, A and B through ordinary ops) and the merge W + s·B·A.
// nn::Linear (module.h) owns the adapter tensors and calls these; models/fam/lora.h attaches
// adapters to a whole model by module name.
#pragma once

#include <cstdint>

#include "framework/core/rng.h"
#include "framework/core/tensor.h"

namespace fam::nn {

struct LoraOptions {
  int64_t rank = 8;      // r
  double alpha = 8.0;    // s = alpha / r
  double dropout = 0.0;  // probability of zeroing an element of the adapter's input (training only)
  double scale() const { return alpha / static_cast<double>(rank); }
};

// Throws fam::Error naming the option when rank < 1, alpha is not finite, or dropout is outside
// [0, 1).
void CheckLoraOptions(const LoraOptions& options);

// The initial A [rank, in] in `dtype`: U(-1/sqrt(in), 1/sqrt(in)) (the bound of PyTorch's default
// Linear init, as PEFT uses) from the Philox stream (seed, stream).
Tensor InitialLoraA(int64_t rank, int64_t in_features, DType dtype, uint64_t seed, uint64_t stream);

// Inverted-dropout mask of `shape` in `dtype` on `device`: each element 0 with probability p,
// otherwise 1/(1-p); element i is drawn from gen's value at gen.offset()+i (gen advances by numel).
Tensor DropoutMask(const Shape& shape, DType dtype, Device device, double p, Generator& gen);

// The adapter term s·((x ⊙ mask)·Aᵀ)·Bᵀ for x [..., in], A [r, in], B [out, r]; an undefined mask
// means no dropout. Differentiable in x, A and B.
Tensor LoraDelta(const Tensor& x, const Tensor& a, const Tensor& b, double scale,
                 const Tensor& mask = Tensor());

// W + s·B·A computed in W's compute dtype (f32, or f64 for f64 weights) and returned in W's dtype,
// without autograd. Shapes are checked and named in the error.
Tensor MergedLoraWeight(const Tensor& w, const Tensor& a, const Tensor& b, double scale);

}  // namespace fam::nn
