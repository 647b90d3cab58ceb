// CUDA kernels: fill, strided dtype-converting copy, unary/binary elementwise math (binary over
// strided, stride-0 broadcast views), affine and axpy. Formulas mirror cpu_elementwise.cc.
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluA = 0.044715;

template <typename T>
__device__ __forceinline__ T ApplyUnary(UOp op, T x) {
  switch (op) {
    case UOp::kNeg: return -x;
    case UOp::kExp: return DExp(x);
    case UOp::kLog: return DLog(x);
    case UOp::kSilu: return x / (T(1) + DExp(-x));
    case UOp::kGelu: {
      const T inner = T(kGeluC) * (x + T(kGeluA) * x * x * x);
      return T(0.5) * x * (T(1) + DTanh(inner));
    }
    case UOp::kSqrt: return DSqrt(x);
    case UOp::kRsqrt: return T(1) / DSqrt(x);
    case UOp::kSquare: return x * x;
    case UOp::kTanh: return DTanh(x);
    case UOp::kSigmoid: return T(1) / (T(1) + DExp(-x));
    case UOp::kRelu: return x > T(0) ? x : T(0);
    case UOp::kAbs: return DAbs(x);
  }
  return x;
}

template <typename T>
__device__ __forceinline__ T UnaryDerivative(UOp op, T x, T y) {
  switch (op) {
    case UOp::kNeg: return T(-1);
    case UOp::kExp: return y;
    case UOp::kLog: return T(1) / x;
    case UOp::kSilu: {
      const T s = T(1) / (T(1) + DExp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
    case UOp::kGelu: {
      const T inner = T(kGeluC) * (x + T(kGeluA) * x * x * x);
      const T t = DTanh(inner);
      return T(0.5) * (T(1) + t) +
             T(0.5) * x * (T(1) - t * t) * T(kGeluC) * (T(1) + T(3 * kGeluA) * x * x);
    }
    case UOp::kSqrt: return T(0.5) / y;
    case UOp::kRsqrt: return T(-0.5) * y * y * y;
    case UOp::kSquare: return T(2) * x;
    case UOp::kTanh: return T(1) - y * y;
    case UOp::kSigmoid: return y * (T(1) - y);
    case UOp::kRelu: return x > T(0) ? T(1) : T(0);
    case UOp::kAbs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  }
  return T(0);
}

template <typename T>
__device__ __forceinline__ T ApplyBinary(BOp op, T a, T b) {
  switch (op) {
    case BOp::kAdd: return a + b;
    case BOp::kSub: return a - b;
    case BOp::kMul: return a * b;
    case BOp::kDiv: return a / b;
    case BOp::kMax: return a > b ? a : b;
    case BOp::kMin: return a < b ? a : b;
  }
  return a;
}

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
__global__ void UnaryKernel(UOp op, const T* x, T* out, int64_t n) {
  FAM_CUDA_KERNEL_LOOP(i, n) out[i] = ApplyUnary(op, x[i]);
}

template <typename T>
__global__ void UnaryBackwardKernel(UOp op, const T* x, const T* y, const T* g, T* gx,
                                    int64_t n) {
  FAM_CUDA_KERNEL_LOOP(i, n) gx[i] = g[i] * UnaryDerivative(op, x[i], y[i]);
}

template <typename T>
__global__ void BinaryKernel(BOp op, const T* a, const T* b, T* out, int64_t n,
                             NdIndexer<3> index) {
  FAM_CUDA_KERNEL_LOOP(i, n) {
    int64_t off[3];
    index.Offsets(i, off);
    out[off[2]] = ApplyBinary(op, a[off[0]], b[off[1]]);
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

// Calls fn(T{}) for every storage dtype the copy kernel handles.
template <typename Fn>
bool DispatchStorage(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32: fn(float{}); return true;
    case DType::kF64: fn(double{}); return true;
    case DType::kBF16: fn(Bf16Bits{}); return true;
    case DType::kI32: fn(int32_t{}); return true;
    case DType::kI64: fn(int64_t{}); return true;
    default: return false;
  }
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
    default: LaunchFailure("fill (element size)", cudaErrorInvalidValue);
  }
  CheckLaunch("fill");
}

void LaunchCopy(DType src_dtype, const void* src, DType dst_dtype, void* dst, int64_t n,
                const NdIndexer<2>& index, cudaStream_t stream) {
  if (n == 0) return;
  bool ok = false;
  const bool src_ok = DispatchStorage(src_dtype, [&](auto s_tag) {
    using S = decltype(s_tag);
    ok = DispatchStorage(dst_dtype, [&](auto d_tag) {
      using D = decltype(d_tag);
      CopyKernel<S, D><<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<const S*>(src),
                                                              static_cast<D*>(dst), n, index);
    });
  });
  if (!src_ok) BadDType("copy source", src_dtype);
  if (!ok) BadDType("copy destination", dst_dtype);
  CheckLaunch("copy");
}

void LaunchUnary(UOp op, DType dtype, const void* x, void* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    UnaryKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(op, static_cast<const T*>(x),
                                                          static_cast<T*>(out), n);
  });
  if (!ok) BadDType("unary", dtype);
  CheckLaunch("unary");
}

void LaunchUnaryBackward(UOp op, DType dtype, const void* x, const void* y, const void* grad_out,
                         void* grad_x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    UnaryBackwardKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        op, static_cast<const T*>(x), static_cast<const T*>(y), static_cast<const T*>(grad_out),
        static_cast<T*>(grad_x), n);
  });
  if (!ok) BadDType("unary backward", dtype);
  CheckLaunch("unary backward");
}

void LaunchBinary(BOp op, DType dtype, const void* a, const void* b, void* out, int64_t n,
                  const NdIndexer<3>& index, cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
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
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    AffineKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T>(alpha), static_cast<T>(beta),
        static_cast<T*>(out), n);
  });
  if (!ok) BadDType("affine", dtype);
  CheckLaunch("affine");
}

void LaunchAxpy(DType dtype, const void* src, double alpha, void* dst, int64_t n,
                cudaStream_t stream) {
  if (n == 0) return;
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    AxpyKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        static_cast<const T*>(src), static_cast<T>(alpha), static_cast<T*>(dst), n);
  });
  if (!ok) BadDType("axpy", dtype);
  CheckLaunch("axpy");
}

}  // namespace fam::cuda
