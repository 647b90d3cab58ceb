// The backend interface: memory and the primitive kernels every device implements. framework/ops
// does shape/dtype checking and autograd, then calls the backend of the inputs' device. The CPU
// backend (OpenBLAS + OpenMP) is always built; the CUDA backend plugs in through the registry.
//
// Conventions for kernels: outputs are freshly allocated, contiguous and of the compute dtype (f32
// or f64) unless stated; inputs may be strided views where stated, otherwise contiguous.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "framework/backends/op_kinds.h"  // UnaryOp, BinaryOp and their formulas
#include "framework/backends/rope_spec.h"
#include "framework/core/tensor.h"

namespace fam {

// Batched C = alpha * op(A) · op(B) + beta * C, row-major, op = transpose when trans_* is set.
// A is [batch, M, K] (or [batch, K, M] when trans_a), B is [batch, K, N] (or [batch, N, K]),
// with leading dimensions and batch strides in elements. stride 0 broadcasts over the batch.
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
  Tensor a, b, c;  // a, b, c: f32 or f64, same dtype; data pointers are taken at their offsets
};

// How a query block sees one key/value segment.
//   kAll:    every query sees every key of the segment.
//   kCausal: bottom-right aligned: query r (of Tq) sees key c (of S) iff c <= r + (S - Tq).
enum class KeyMask : uint8_t { kAll, kCausal };

// Attention of one block of queries over a list of key/value segments (softmax over the union).
// q: [B, Hq, Tq, D]; k[j], v[j]: [B, Hkv, S_j, D] (strided views allowed, last dim contiguous);
// query head h uses kv head h * Hkv / Hq. out: [B, Hq, Tq, D] contiguous; lse: [B, Hq, Tq] (the
// log-sum-exp of the scaled scores, -inf for a row that sees no key; its output row is zero).
struct AttentionArgs {
  Tensor q;
  std::vector<Tensor> k, v;
  std::vector<KeyMask> masks;
  double scale = 1.0;
  Tensor out, lse;
  double softcap = 0;  // > 0: scores s become softcap·tanh(s / softcap) before the softmax
};
struct AttentionGradArgs {
  Tensor q;
  std::vector<Tensor> k, v;
  std::vector<KeyMask> masks;
  double scale = 1.0;
  Tensor out, lse, grad_out;           // grad_out contiguous like out
  Tensor grad_q;                       // [B, Hq, Tq, D] contiguous, overwritten
  std::vector<Tensor> grad_k, grad_v;  // [B, Hkv, S_j, D] contiguous, overwritten
  double softcap = 0;
};

// One Adafactor step of one parameter (the algorithm: framework/optim/adafactor.h). param, grad
// and the state are contiguous and of one float dtype. Factored (row defined): the parameter is
// viewed as [batch, n, m] with row [batch·n] and col [batch·m]; unfactored: sq is like the
// parameter. exp_avg is undefined when beta1 == 0. decay is this step's β̂2.
struct AdafactorArgs {
  Tensor param, grad;
  Tensor row, col, sq, exp_avg;
  int64_t batch = 1, n = 1, m = 1;
  double decay = 0, eps1 = 0, clip_threshold = 1, beta1 = 0, lr = 0, weight_decay = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceType type() const = 0;
  virtual std::string name() const = 0;

  // Memory.
  virtual void* Allocate(size_t nbytes) = 0;
  virtual void Free(void* data, size_t nbytes) = 0;
  virtual void CopyFromHost(void* dst, const void* src, size_t nbytes) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t nbytes) = 0;

  // dst[i] = src[i] for same-shaped, possibly strided tensors; converts dtype when they differ.
  virtual void Copy(const Tensor& src, const Tensor& dst) = 0;
  virtual void Fill(const Tensor& dst, double value) = 0;  // dst contiguous

  // out = op(x); x contiguous.
  virtual void Unary(UnaryOp op, const Tensor& x, const Tensor& out) = 0;
  // grad_x = grad_out * op'(x), given x and y = op(x) (whichever the derivative needs).
  virtual void UnaryBackward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& grad_out,
                             const Tensor& grad_x) = 0;
  // out = a op b; a and b are views already expanded to out's shape (stride 0 where broadcast).
  virtual void Binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) = 0;
  // out = x * alpha + beta (contiguous).
  virtual void Affine(const Tensor& x, double alpha, double beta, const Tensor& out) = 0;
  // dst += alpha * src (both contiguous, same shape and dtype). Used for gradient accumulation.
  virtual void Axpy(const Tensor& src, double alpha, const Tensor& dst) = 0;
  // out (shape of x with reduced axes kept as 1) = sum of x over axes; x contiguous.
  virtual void ReduceSum(const Tensor& x, const std::vector<int>& axes, const Tensor& out) = 0;
  // Largest |x| and sum of squares of a contiguous tensor (for grad clipping and checks).
  virtual double SumSquares(const Tensor& x) = 0;
  // SumSquares of each tensor, in order. The default calls SumSquares per tensor; a device backend
  // computes them all and then synchronises once (gradient clipping over every parameter).
  virtual std::vector<double> SumSquaresEach(const std::vector<Tensor>& xs);

  virtual void Gemm(const GemmArgs& args) = 0;

  // Fused RMSNorm over the last dim: x [N, D], w [D]; y [N, D], rstd [N].
  virtual void RmsNormForward(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                              const Tensor& rstd) = 0;
  virtual void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& grad_y, const Tensor& grad_x,
                               const Tensor& grad_w) = 0;
  // Numerically stable softmax over the last dim of x [N, D].
  virtual void SoftmaxForward(const Tensor& x, const Tensor& y) = 0;
  virtual void SoftmaxBackward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x) = 0;
  // Fused cross-entropy: logits [N, V] (f32/f64), targets [N] (i32/i64), weights [N] or undefined.
  // losses [N] = weight * (lse - logit[target]); 0 where target == ignore_index. lse [N] saved.
  virtual void CrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                   const Tensor& weights, int64_t ignore_index,
                                   const Tensor& losses, const Tensor& lse) = 0;
  // grad_logits [N, V] = grad_losses[n] * weight * (softmax - onehot). grad_logits may be logits
  // itself (in place; ops::LinearCrossEntropy relies on it).
  virtual void CrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                    const Tensor& weights, int64_t ignore_index, const Tensor& lse,
                                    const Tensor& grad_losses, const Tensor& grad_logits) = 0;
  // Rotate-half RoPE on x [B, H, T, D] with positions [B, T] (i64) and the frequencies of `rope`
  // (formula::RopeInverseFrequency); inverse rotates by -angle (the backward). x contiguous.
  virtual void Rope(const Tensor& x, const Tensor& positions, const RopeSpec& rope, bool inverse,
                    const Tensor& out) = 0;
  // out [N, D] = table[ids[n]]; ids [N] i32/i64 checked against the vocab by the op.
  virtual void EmbeddingForward(const Tensor& table, const Tensor& ids, const Tensor& out) = 0;
  // grad_table (zeroed by the caller) [V, D] += scatter of grad_out rows.
  virtual void EmbeddingBackward(const Tensor& ids, const Tensor& grad_out,
                                 const Tensor& grad_table) = 0;

  virtual void AttentionForward(const AttentionArgs& args) = 0;
  virtual void AttentionBackward(const AttentionGradArgs& args) = 0;

  // Fused AdamW update of one parameter tensor (all contiguous f32; param may be bf16 with f32
  // master handled by the caller). step counts from 1.
  virtual void AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                           const Tensor& exp_avg_sq, double lr, double beta1, double beta2,
                           double eps, double weight_decay, int64_t step) = 0;
  // Fused Adafactor update (AdafactorArgs); accumulates row/column means and the update's RMS in
  // double.
  virtual void AdafactorUpdate(const AdafactorArgs& args) = 0;
};

// The checks every backend's AdamWUpdate runs first (shapes, dtypes, contiguity, step >= 1).
void CheckAdamWArgs(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                    const Tensor& exp_avg_sq, int64_t step);
// The checks every backend's AdafactorUpdate runs first (shapes, dtypes, contiguity).
void CheckAdafactorArgs(const AdafactorArgs& args);

}  // namespace fam
