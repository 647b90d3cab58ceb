// The differentiable operations of the runtime (one .cc file per op family, backward next to
// forward). Each op checks shapes/dtypes/devices and throws fam::Error naming them, dispatches to
// the backend of its inputs' device, and records an autograd node when gradients are on.
//
// Floating dtypes: f32 and f64 compute natively; bf16 inputs are computed in f32 and the result is
// cast back to bf16 (bf16 storage, f32 compute).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "framework/backends/backend.h"
#include "framework/core/tensor.h"

namespace fam::ops {

// ---- copies and conversions (copy.cc) ----
Tensor Cast(const Tensor& x, DType dtype);  // differentiable between floating dtypes
Tensor Clone(const Tensor& x);              // contiguous copy, differentiable
Tensor Contiguous(const Tensor& x);         // x itself when already contiguous
Tensor To(const Tensor& x, Device device);  // copy to another device, differentiable
// In-place helpers for optimizers and gradient accumulation (never recorded by autograd).
void AddInPlace(const Tensor& dst, const Tensor& src, double alpha = 1.0);
void CopyInPlace(const Tensor& dst, const Tensor& src);  // any devices; converts the dtype
void FillInPlace(const Tensor& dst, double value);

// ---- views (view.cc): share storage, no copy ----
Tensor Reshape(const Tensor& x, Shape shape);  // one dim may be -1; copies if x is not viewable
Tensor Transpose(const Tensor& x, int64_t a, int64_t b);
Tensor Permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor Slice(const Tensor& x, int64_t axis, int64_t start, int64_t end);
Tensor Unsqueeze(const Tensor& x, int64_t axis);
Tensor Squeeze(const Tensor& x, int64_t axis);
Tensor Expand(const Tensor& x, const Shape& shape);  // broadcast view (stride 0)
// Sums `grad` down to `shape` (the reverse of broadcasting).
Tensor SumToShape(const Tensor& grad, const Shape& shape);

// ---- concatenation (concat.cc) ----
Tensor Concat(const std::vector<Tensor>& xs, int64_t axis);
std::vector<Tensor> Split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis);

// ---- elementwise (elementwise.cc), NumPy broadcasting ----
Tensor Add(const Tensor& a, const Tensor& b);
Tensor Sub(const Tensor& a, const Tensor& b);
Tensor Mul(const Tensor& a, const Tensor& b);
Tensor Div(const Tensor& a, const Tensor& b);
Tensor Scale(const Tensor& x, double alpha);      // x * alpha
Tensor AddScalar(const Tensor& x, double value);  // x + value
Tensor Unary(UnaryOp op, const Tensor& x);
inline Tensor Neg(const Tensor& x) { return Unary(UnaryOp::kNeg, x); }
inline Tensor Exp(const Tensor& x) { return Unary(UnaryOp::kExp, x); }
inline Tensor Log(const Tensor& x) { return Unary(UnaryOp::kLog, x); }
inline Tensor Silu(const Tensor& x) { return Unary(UnaryOp::kSilu, x); }
inline Tensor Gelu(const Tensor& x) { return Unary(UnaryOp::kGelu, x); }  // tanh approximation
inline Tensor Sqrt(const Tensor& x) { return Unary(UnaryOp::kSqrt, x); }
inline Tensor Rsqrt(const Tensor& x) { return Unary(UnaryOp::kRsqrt, x); }
inline Tensor Square(const Tensor& x) { return Unary(UnaryOp::kSquare, x); }
inline Tensor Tanh(const Tensor& x) { return Unary(UnaryOp::kTanh, x); }
inline Tensor Sigmoid(const Tensor& x) { return Unary(UnaryOp::kSigmoid, x); }
inline Tensor Relu(const Tensor& x) { return Unary(UnaryOp::kRelu, x); }
inline Tensor Softplus(const Tensor& x) { return Unary(UnaryOp::kSoftplus, x); }  // log(1 + e^x)

// ---- reductions (reduce.cc) ----
Tensor Sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
Tensor Mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim = false);
Tensor SumAll(const Tensor& x);   // scalar
Tensor MeanAll(const Tensor& x);  // scalar

// ---- matrix products (matmul.cc) ----
// a [..., M, K] · b [..., K, N] with broadcasting of the leading (batch) dims; 1-D b is a vector.
Tensor Matmul(const Tensor& a, const Tensor& b);
// x [..., in] · wᵀ with w [out, in] (the Linear layer convention; weights stored [out, in]).
Tensor Linear(const Tensor& x, const Tensor& w);

// ---- fused ops ----
// RMSNorm over the last dim: x / sqrt(mean(x²) + eps) * w (rmsnorm.cc).
Tensor RmsNorm(const Tensor& x, const Tensor& w, double eps);
// Numerically stable softmax over the last dim (softmax.cc).
Tensor Softmax(const Tensor& x);
// Fused cross-entropy (cross_entropy.cc): logits [N, V], targets [N] (i32/i64 in [0, V) or
// ignore_index), optional per-token weights [N]. Returns per-token losses [N] (f32/f64):
// weight * (logsumexp(logits) - logits[target]), 0 for ignored tokens.
Tensor CrossEntropy(const Tensor& logits, const Tensor& targets, const Tensor& weights = Tensor(),
                    int64_t ignore_index = -100);
// Chunked LM head + cross-entropy (linear_cross_entropy.cc): the per-row losses of
// CrossEntropy(Linear(hidden [N, d], weight [V, d]), targets, weights) computed chunk_rows rows at
// a time (chunk_rows <= 0: all rows at once). Never holds more than [chunk_rows, V] logits: the
// forward keeps the row log-sum-exp, the backward recomputes each chunk's logits.
Tensor LinearCrossEntropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                          const Tensor& weights, int64_t chunk_rows, int64_t ignore_index = -100);
// Rotate-half RoPE (rope.cc): x [B, H, T, D] (D even); positions [B, T] or [T] (i32/i64); the
// frequencies of `rope` (base and rescaling, backends/rope_spec.h).
Tensor Rope(const Tensor& x, const Tensor& positions, const RopeSpec& rope);
inline Tensor Rope(const Tensor& x, const Tensor& positions, double base) {
  return Rope(x, positions, RopeSpec{base});
}
// Embedding gather (embedding.cc): table [V, D], ids [...] (i32/i64) → [..., D]; ids checked < V.
Tensor Embedding(const Tensor& table, const Tensor& ids);
// Blockwise masked attention (attention.cc): see AttentionArgs in backend.h. Returns [B, Hq, Tq,
// D]. softcap > 0 soft-caps every score s = scale·q·k to softcap·tanh(s / softcap) before the
// softmax.
Tensor Attention(const Tensor& q, const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                 const std::vector<KeyMask>& masks, double scale, double softcap = 0);

// ---- activation recomputation (checkpoint.cc) ----
using CheckpointFn = std::function<Tensor(const std::vector<Tensor>&)>;
// fn(inputs) computed without keeping its intermediate activations: the forward runs with recording
// off; backward runs fn again (recording on) from the saved inputs and backpropagates through it.
// `params` lists every tensor requiring grad that fn uses besides `inputs` (a layer's trainable
// parameters); their gradients flow out through this op, so each is accumulated once per backward.
// fn must be deterministic (replay any randomness itself) and is called again in backward; a leaf
// requiring grad that fn reaches and is in neither list is an error in backward, and fn must not
// use tensors carrying a graph other than through `inputs`. `params` must not repeat a tensor.
Tensor Checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                  const std::vector<Tensor>& params);

}  // namespace fam::ops
