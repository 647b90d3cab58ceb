// CUDA kernels: fill, strided dtype-converting copy, unary/binary elementwise math (binary over
// strided, stride-0 broadcast views), affine, axpy (formulas: backends/op_kinds.h, as on the CPU),
// sums over axes (one block per output, double accumulation) and the sum of squares of a tensor
// (fixed partial sums, then one block). Reductions have a fixed shape: deterministic.
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

template <typename U>
__global__ void FillKernel(U* dst, int64_t n, U value) {
  FAM_CUDA_KERNEL_LOOP(i, n) dst[i] = value;
}

template <typename S, typename D>
__global__ void CopyKernel(const S* src, D* dst, int64_t n, NdIndexer<2> index) {
  FAM_CUDA_KERNEL_LOOP(i, n) {
    int64_t off[2];
    index.Offsets(i, off);
    dst[off[1]] = ConvertValue<S, D>(src[off[0]]);
  }
}

template <typename T>
__global__ void UnaryKernel(UnaryOp op, const T* x, T* out, int64_t n) {
  FAM_CUDA_KERNEL_LOOP(i, n) out[i] = formula::ApplyUnary(op, x[i]);
}

template <typename T>
__global__ void UnaryBackwardKernel(UnaryOp op, const T* x, const T* y, const T* g, T* gx,
                                    int64_t n) {
  FAM_CUDA_KERNEL_LOOP(i, n) gx[i] = g[i] * formula::UnaryDerivative(op, x[i], y[i]);
}

template <typename T>
__global__ void BinaryKernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n,
                             NdIndexer<3> index) {
  FAM_CUDA_KERNEL_LOOP(i, n) {
    int64_t off[3];
    index.Offsets(i, off);
    out[off[2]] = formula::ApplyBinary(op, a[off[0]], b[off[1]]);
  }
}

template <typename T>
__global__ void AffineKernel(const T* x, T alpha, T beta, T* out, int64_t n) {
  FAM_CUDA_KERNEL_LOOP(i, n) out[i] = x[i] * alpha + beta;
}

template <typename T>
__global__ void AxpyKernel(const T* src, T alpha, T* dst, int64_t n) {
  FAM_CUDA_KERNEL_LOOP(i, n) dst[i] += alpha * src[i];
}

template <typename T>
__global__ void ReduceSumKernel(const T* x, T* out, int64_t outputs, NdIndexer<1> kept,
                                int64_t reduced_count, NdIndexer<1> reduced) {
  __shared__ double shared[32];
  for (int64_t o = blockIdx.x; o < outputs; o += gridDim.x) {
    int64_t base;
    kept.Offsets(o, &base);
    double acc = 0;
    for (int64_t r = threadIdx.x; r < reduced_count; r += blockDim.x) {
      int64_t off;
      reduced.Offsets(r, &off);
      acc += static_cast<double>(x[base + off]);
    }
    acc = BlockSum(acc, shared);
    if (threadIdx.x == 0) out[o] = static_cast<T>(acc);
  }
}

template <typename T>
__global__ void SumSquaresPartialKernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[32];
  double acc = 0;
  FAM_CUDA_KERNEL_LOOP(i, n) {
    const double v = static_cast<double>(x[i]);
    acc += v * v;
  }
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void SumPartialsKernel(const double* partial, int count, double* result) {
  __shared__ double shared[32];
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) *result = acc;
}

}  // namespace

void LaunchFill(void* dst, int64_t n, int elem_size, uint64_t bits, cudaStream_t stream) {
  if (n == 0) return;
  const int64_t blocks = BlocksFor(n);
  switch (elem_size) {
    case 2:
      FillKernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint16_t*>(dst), n,
                                                  static_cast<uint16_t>(bits));
      break;
    case 4:
      FillKernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint32_t*>(dst), n,
                                                  static_cast<uint32_t>(bits));
      break;
    case 8:
      FillKernel<<<blocks, kThreads, 0, stream>>>(static_cast<uint64_t*>(dst), n, bits);
      break;
    default:
      LaunchFailure("fill (element size)", cudaErrorInvalidValue);
  }
  CheckLaunch("fill");
}

void LaunchCopy(DType src_dtype, const void* src, DType dst_dtype, void* dst, int64_t n,
                const NdIndexer<2>& index, cudaStream_t stream) {
  if (n == 0) return;
  bool ok = false;
  const bool src_ok = VisitStorage<Bf16Bits>(src_dtype, [&](auto s_tag) {
    using S = decltype(s_tag);
    ok = VisitStorage<Bf16Bits>(dst_dtype, [&](auto d_tag) {
      using D = decltype(d_tag);
      CopyKernel<S, D><<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<const S*>(src),
                                                              static_cast<D*>(dst), n, index);
    });
  });
  if (!src_ok) BadDType("copy source", src_dtype);
  if (!ok) BadDType("copy destination", dst_dtype);
  CheckLaunch("copy");
}

void LaunchUnary(UnaryOp op, DType dtype, const void* x, void* out, int64_t n,
                 cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    UnaryKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(op, static_cast<const T*>(x),
                                                          static_cast<T*>(out), n);
  });
  if (!ok) BadDType("unary", dtype);
  CheckLaunch("unary");
}

void LaunchUnaryBackward(UnaryOp op, DType dtype, const void* x, const void* y,
                         const void* grad_out, void* grad_x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    UnaryBackwardKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        op, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(grad_out),
        static_cast<T*>(grad_x), n);
  });
  if (!ok) BadDType("unary backward", dtype);
  CheckLaunch("unary backward");
}

void LaunchBinary(BinaryOp op, DType dtype, const void* a, const void* b, void* out, int64_t n,
                  const NdIndexer<3>& index, cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    BinaryKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        op, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n, index);
  });
  if (!ok) BadDType("binary", dtype);
  CheckLaunch("binary");
}

void LaunchAffine(DType dtype, const void* x, double alpha, double beta, void* out, int64_t n,
                  cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    AffineKernel<T>
        <<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T>(alpha),
                                                static_cast<T>(beta), static_cast<T*>(out), n);
  });
  if (!ok) BadDType("affine", dtype);
  CheckLaunch("affine");
}

void LaunchAxpy(DType dtype, const void* src, double alpha, void* dst, int64_t n,
                cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    AxpyKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        static_cast<const T*>(src), static_cast<T>(alpha), static_cast<T*>(dst), n);
  });
  if (!ok) BadDType("axpy", dtype);
  CheckLaunch("axpy");
}

void LaunchReduceSum(DType dtype, const void* x, void* out, int64_t outputs,
                     const NdIndexer<1>& kept, int64_t reduced_count, const NdIndexer<1>& reduced,
                     cudaStream_t stream) {
  if (outputs == 0) return;
  const int64_t blocks = std::min<int64_t>(outputs, kMaxBlocks);
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    ReduceSumKernel<T><<<blocks, kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), outputs, kept, reduced_count, reduced);
  });
  if (!ok) BadDType("sum", dtype);
  CheckLaunch("sum");
}

void LaunchSumSquares(DType dtype, const void* x, int64_t n, double* partial, double* result,
                      cudaStream_t stream) {
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    SumSquaresPartialKernel<T>
        <<<kSumSquaresBlocks, kThreads, 0, stream>>>(static_cast<const T*>(x), n, partial);
  });
  if (!ok) BadDType("sum of squares", dtype);
  CheckLaunch("sum of squares");
  SumPartialsKernel<<<1, kThreads, 0, stream>>>(partial, kSumSquaresBlocks, result);
  CheckLaunch("sum of squares (partials)");
}

}  // namespace fam::cuda
