// Host-callable launchers of the CUDA backend's kernels (defined in the cuda_*.cu files, one per
// family). Plain pointers and sizes only, so the .cu files need no Tensor or Abseil headers; the
// CudaBackend (cuda_backend.cc) checks shapes and dtypes, then calls these on its stream.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "framework/backends/cuda/cuda_indexing.h"
#include "framework/backends/op_kinds.h"
#include "framework/backends/rope_spec.h"
#include "framework/core/dtype.h"

namespace fam::cuda {

// Errors raised from the .cu files (defined in cuda_device.cc): throw fam::Error naming the kernel.
[[noreturn]] void LaunchFailure(const char* what, cudaError_t err);
[[noreturn]] void BadDType(const char* what, DType dtype);

// cuda_elementwise.cu. `dtype` is the compute dtype (f32 or f64) unless stated.
void LaunchFill(void* dst, int64_t n, int elem_size, uint64_t bits, cudaStream_t stream);
// dst[idx offsets 1] = convert(src[idx offsets 0]) for every dtype pair except f16.
void LaunchCopy(DType src_dtype, const void* src, DType dst_dtype, void* dst, int64_t n,
                const NdIndexer<2>& index, cudaStream_t stream);
void LaunchUnary(UnaryOp op, DType dtype, const void* x, void* out, int64_t n, cudaStream_t stream);
void LaunchUnaryBackward(UnaryOp op, DType dtype, const void* x, const void* y,
                         const void* grad_out, void* grad_x, int64_t n, cudaStream_t stream);
// out[offset 2] = a[offset 0] op b[offset 1].
void LaunchBinary(BinaryOp op, DType dtype, const void* a, const void* b, void* out, int64_t n,
                  const NdIndexer<3>& index, cudaStream_t stream);
void LaunchAffine(DType dtype, const void* x, double alpha, double beta, void* out, int64_t n,
                  cudaStream_t stream);
void LaunchAxpy(DType dtype, const void* src, double alpha, void* dst, int64_t n,
                cudaStream_t stream);

// cuda_reduce.cu. out[o] = sum over r of x[kept.Offsets(o) + reduced.Offsets(r)], in double.
void LaunchReduceSum(DType dtype, const void* x, void* out, int64_t outputs,
                     const NdIndexer<1>& kept, int64_t reduced_count, const NdIndexer<1>& reduced,
                     cudaStream_t stream);
constexpr int kSumSquaresBlocks = 240;
// *result (device double) = sum of x[i]^2; partial holds kSumSquaresBlocks doubles (device).
void LaunchSumSquares(DType dtype, const void* x, int64_t n, double* partial, double* result,
                      cudaStream_t stream);

// cuda_norm.cu. Rows of length d; one block per row.
void LaunchRmsNormForward(DType dtype, const void* x, const void* w, double eps, void* y,
                          void* rstd, int64_t rows, int64_t d, cudaStream_t stream);
void LaunchRmsNormBackwardX(DType dtype, const void* x, const void* w, const void* rstd,
                            const void* grad_y, void* grad_x, int64_t rows, int64_t d,
                            cudaStream_t stream);
// partial: chunks * d doubles (device scratch), chunk c covers rows [c*chunk_rows, ...).
void LaunchRmsNormBackwardW(DType dtype, const void* x, const void* rstd, const void* grad_y,
                            void* grad_w, int64_t rows, int64_t d, double* partial, int64_t chunks,
                            int64_t chunk_rows, cudaStream_t stream);

// cuda_softmax_ce.cu.
void LaunchSoftmaxForward(DType dtype, const void* x, void* y, int64_t rows, int64_t d,
                          cudaStream_t stream);
void LaunchSoftmaxBackward(DType dtype, const void* y, const void* grad_y, void* grad_x,
                           int64_t rows, int64_t d, cudaStream_t stream);
// targets: i32 or i64 (already validated); weights may be null.
void LaunchCrossEntropyForward(DType dtype, const void* logits, DType target_dtype,
                               const void* targets, const void* weights, int64_t ignore_index,
                               void* losses, void* lse, int64_t rows, int64_t v,
                               cudaStream_t stream);
void LaunchCrossEntropyBackward(DType dtype, const void* logits, DType target_dtype,
                                const void* targets, const void* weights, int64_t ignore_index,
                                const void* lse, const void* grad_losses, void* grad_logits,
                                int64_t rows, int64_t v, cudaStream_t stream);

// cuda_rope_embedding.cu.
void LaunchRope(DType dtype, const void* x, DType position_dtype, const void* positions,
                const RopeSpec& rope, bool inverse, void* out, int64_t b, int64_t h, int64_t t,
                int64_t d, cudaStream_t stream);
// Row gather of elem_size-byte elements; ids i32/i64 (already validated).
void LaunchEmbeddingForward(int elem_size, const void* table, DType id_dtype, const void* ids,
                            void* out, int64_t n, int64_t d, cudaStream_t stream);
// grad_table[group_row[g]] += rows order[group_start[g] .. group_start[g+1]) of grad_out, summed
// in that order (positions sorted by id on the host: deterministic, no atomics).
void LaunchEmbeddingBackward(DType dtype, const int64_t* order, const int64_t* group_start,
                             const int64_t* group_row, int64_t groups, const void* grad_out,
                             void* grad_table, int64_t d, cudaStream_t stream);

// cuda_optim.cu. Coefficients computed on the host in double exactly as the CPU backend does.
struct AdamWCoefficients {
  double beta1, beta2, one_minus_beta1, one_minus_beta2, decay, step_size, inv_sqrt_bias2, eps;
};
void LaunchAdamW(DType dtype, void* param, const void* grad, void* exp_avg, void* exp_avg_sq,
                 int64_t n, const AdamWCoefficients& c, cudaStream_t stream);

// Adafactor (framework/optim/adafactor.h): row/col (factored, [batch·n] and [batch·m]) or sq
// (unfactored, row == nullptr), exp_avg may be nullptr. Scratch on the device: u [numel] doubles,
// partial [kSumSquaresBlocks + 1] doubles (the last one receives sum u²), row_mean [batch] doubles.
// Deterministic: fixed-order reductions, no atomics; everything stays on the device (no sync).
struct AdafactorCoefficients {
  double decay, eps1, clip_threshold, beta1, lr, weight_decay;
};
void LaunchAdafactor(DType dtype, void* param, const void* grad, void* row, void* col, void* sq,
                     void* exp_avg, int64_t batch, int64_t n, int64_t m,
                     const AdafactorCoefficients& c, double* u, double* partial, double* row_mean,
                     cudaStream_t stream);

}  // namespace fam::cuda
