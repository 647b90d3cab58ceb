#include "framework/backends/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "framework/backends/cpu/cpu_dispatch.h"
#include "framework/backends/cuda/cuda_attention.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_gemm.h"
#include "framework/backends/cuda/cuda_indexing.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

#define FAM_SAME_ENUM(a, b) static_assert(static_cast<int>(a) == static_cast<int>(b))
FAM_SAME_ENUM(UOp::kNeg, UnaryOp::kNeg);
FAM_SAME_ENUM(UOp::kExp, UnaryOp::kExp);
FAM_SAME_ENUM(UOp::kLog, UnaryOp::kLog);
FAM_SAME_ENUM(UOp::kSilu, UnaryOp::kSilu);
FAM_SAME_ENUM(UOp::kGelu, UnaryOp::kGelu);
FAM_SAME_ENUM(UOp::kSqrt, UnaryOp::kSqrt);
FAM_SAME_ENUM(UOp::kRsqrt, UnaryOp::kRsqrt);
FAM_SAME_ENUM(UOp::kSquare, UnaryOp::kSquare);
FAM_SAME_ENUM(UOp::kTanh, UnaryOp::kTanh);
FAM_SAME_ENUM(UOp::kSigmoid, UnaryOp::kSigmoid);
FAM_SAME_ENUM(UOp::kRelu, UnaryOp::kRelu);
FAM_SAME_ENUM(UOp::kAbs, UnaryOp::kAbs);
FAM_SAME_ENUM(BOp::kAdd, BinaryOp::kAdd);
FAM_SAME_ENUM(BOp::kSub, BinaryOp::kSub);
FAM_SAME_ENUM(BOp::kMul, BinaryOp::kMul);
FAM_SAME_ENUM(BOp::kDiv, BinaryOp::kDiv);
FAM_SAME_ENUM(BOp::kMax, BinaryOp::kMax);
FAM_SAME_ENUM(BOp::kMin, BinaryOp::kMin);
#undef FAM_SAME_ENUM

namespace {

bool PoisonAllocations() {
  const char* v = std::getenv("FAM_POISON_ALLOC");
  return v != nullptr && v[0] == '1';
}

// f32 or f64 (the compute dtypes of every kernel but copy, fill and the embedding gather).
void CheckFloat(const char* what, const Tensor& t) {
  FAM_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kF64, what, " on cuda: unsupported ",
            t.Describe(), " (need f32 or f64)");
}

void CheckContiguous(const char* what, const Tensor& t) {
  FAM_CHECK(t.is_contiguous(), what, " on cuda: ", t.Describe(), " must be contiguous");
}

void CheckSame(const char* what, const Tensor& ref, const Tensor& t) {
  FAM_CHECK(t.dtype() == ref.dtype() && t.numel() == ref.numel(), what, " on cuda: ",
            t.Describe(), " does not match ", ref.Describe());
}

template <int K>
NdIndexer<K> IndexerFor(const char* what, const Shape& shape,
                        const std::vector<int64_t>* const (&strides)[K]) {
  NdIndexer<K> index;
  FAM_CHECK(MakeIndexer<K>(shape, strides, &index), what, " on cuda: shape ", ShapeString(shape),
            " has more than ", kMaxDims, " dimensions after merging contiguous ones");
  return index;
}

}  // namespace

class CudaBackend::Scratch {
 public:
  Scratch(CachingAllocator& allocator, size_t nbytes)
      : allocator_(allocator), ptr_(allocator.Allocate(nbytes)) {}
  ~Scratch() { allocator_.Free(ptr_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  CachingAllocator& allocator_;
  void* ptr_;
};

CudaBackend::CudaBackend(int device) : device_(device), poison_(PoisonAllocations()) {
  DeviceGuard guard(device_);
  FAM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  RawAllocator raw;
  raw.alloc = [this](size_t nbytes) -> void* {
    DeviceGuard guard(device_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, nbytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error state
      return nullptr;
    }
    FAM_CUDA_CHECK(err);
    return p;
  };
  raw.free = [this](void* p) {
    DeviceGuard guard(device_);
    // Blocks may still be in use by queued work; cudaFree waits for the device.
    cudaFree(p);
  };
  raw.describe_device = [this] { return DescribeDeviceMemory(device_); };
  allocator_ = std::make_unique<CachingAllocator>(std::move(raw));
  gemm_workspace_ = allocator_->Allocate(kGemmWorkspaceBytes);
  gemm_ = std::make_unique<GemmRunner>(stream_, gemm_workspace_, kGemmWorkspaceBytes);
}

CudaBackend::~CudaBackend() {
  // Teardown may run after the CUDA runtime began unloading: errors are ignored here.
  cudaStreamSynchronize(stream_);
  gemm_.reset();
  allocator_->Free(gemm_workspace_);
  allocator_.reset();
  for (int i = 0; i < 2; ++i) {
    if (staging_[i]) cudaFreeHost(staging_[i]);
    if (staging_done_[i]) cudaEventDestroy(staging_done_[i]);
  }
  cudaStreamDestroy(stream_);
}

std::string CudaBackend::name() const { return "cuda:" + std::to_string(device_); }

void CudaBackend::Synchronize() {
  DeviceGuard guard(device_);
  FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- Memory and copies ----

void* CudaBackend::Allocate(size_t nbytes) {
  DeviceGuard guard(device_);
  void* p = allocator_->Allocate(nbytes);
  if (poison_) FAM_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, CachingAllocator::RoundSize(nbytes),
                                              stream_));
  return p;
}

void CudaBackend::Free(void* data, size_t) { allocator_->Free(data); }

void CudaBackend::EnsureStaging() {
  if (staging_[0]) return;
  for (int i = 0; i < 2; ++i) {
    FAM_CUDA_CHECK(cudaMallocHost(&staging_[i], kStagingBytes));
    FAM_CUDA_CHECK(cudaEventCreateWithFlags(&staging_done_[i], cudaEventDisableTiming));
  }
}

void CudaBackend::CopyFromHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  DeviceGuard guard(device_);
  if (nbytes < kDirectCopyBytes) {
    FAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream_));
    FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  // Double-buffered: fill one pinned buffer while the other one's copy runs.
  std::lock_guard<std::mutex> lock(staging_mu_);
  EnsureStaging();
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  int buf = 0;
  for (size_t done = 0; done < nbytes; done += kStagingBytes, buf ^= 1) {
    const size_t chunk = std::min(kStagingBytes, nbytes - done);
    FAM_CUDA_CHECK(cudaEventSynchronize(staging_done_[buf]));
    std::memcpy(staging_[buf], s + done, chunk);
    FAM_CUDA_CHECK(
        cudaMemcpyAsync(d + done, staging_[buf], chunk, cudaMemcpyHostToDevice, stream_));
    FAM_CUDA_CHECK(cudaEventRecord(staging_done_[buf], stream_));
  }
  FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::CopyToHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  DeviceGuard guard(device_);
  if (nbytes < kDirectCopyBytes) {
    FAM_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream_));
    FAM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return;
  }
  // Double-buffered: the device copies chunk i+1 while the host copies chunk i out.
  std::lock_guard<std::mutex> lock(staging_mu_);
  EnsureStaging();
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  const size_t chunks = (nbytes + kStagingBytes - 1) / kStagingBytes;
  auto issue = [&](size_t i) {
    const size_t offset = i * kStagingBytes;
    const size_t chunk = std::min(kStagingBytes, nbytes - offset);
    FAM_CUDA_CHECK(cudaMemcpyAsync(staging_[i % 2], s + offset, chunk, cudaMemcpyDeviceToHost,
                                   stream_));
    FAM_CUDA_CHECK(cudaEventRecord(staging_done_[i % 2], stream_));
  };
  issue(0);
  for (size_t i = 0; i < chunks; ++i) {
    if (i + 1 < chunks) issue(i + 1);
    FAM_CUDA_CHECK(cudaEventSynchronize(staging_done_[i % 2]));
    const size_t offset = i * kStagingBytes;
    std::memcpy(d + offset, staging_[i % 2], std::min(kStagingBytes, nbytes - offset));
  }
}

std::vector<int64_t> CudaBackend::ReadIndices(const Tensor& t) {
  FAM_CHECK(t.dtype() == DType::kI32 || t.dtype() == DType::kI64,
            "cuda: index tensor must be i32 or i64, got ", t.Describe());
  CheckContiguous("index read-back", t);
  const int64_t n = t.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (t.dtype() == DType::kI64) {
    CopyToHost(out.data(), t.raw_data(), t.nbytes());
  } else {
    std::vector<int32_t> tmp(static_cast<size_t>(n));
    CopyToHost(tmp.data(), t.raw_data(), t.nbytes());
    std::copy(tmp.begin(), tmp.end(), out.begin());
  }
  return out;
}

void CudaBackend::Copy(const Tensor& src, const Tensor& dst) {
  FAM_CHECK(src.shape() == dst.shape(), "copy between shapes ", ShapeString(src.shape()), " and ",
            ShapeString(dst.shape()));
  FAM_CHECK(src.device() == dst.device(), "copy on cuda: ", src.Describe(), " and ",
            dst.Describe(), " are on different devices");
  FAM_CHECK(src.dtype() != DType::kF16 && dst.dtype() != DType::kF16,
            "f16 tensors are converted to f32 on load and not computed on");
  if (src.numel() == 0) return;
  DeviceGuard guard(device_);
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    FAM_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(),
                                   cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  const std::vector<int64_t>* const strides[2] = {&src.strides(), &dst.strides()};
  const NdIndexer<2> index = IndexerFor<2>("copy", src.shape(), strides);
  LaunchCopy(src.dtype(), src.raw_data(), dst.dtype(), dst.raw_data(), src.numel(), index,
             stream_);
}

void CudaBackend::Fill(const Tensor& dst, double value) {
  CheckContiguous("fill", dst);
  if (dst.numel() == 0) return;
  uint64_t bits = 0;
  int elem_size = 0;
  cpu::DispatchAll(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = cpu::Convert<double, T>(value);
    static_assert(sizeof(T) <= sizeof(bits));
    std::memcpy(&bits, &v, sizeof(T));
    elem_size = static_cast<int>(sizeof(T));
  });
  DeviceGuard guard(device_);
  LaunchFill(dst.raw_data(), dst.numel(), elem_size, bits, stream_);
}

// ---- Elementwise and reductions ----

void CudaBackend::Unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  CheckFloat(UnaryOpName(op), x);
  CheckContiguous(UnaryOpName(op), x);
  CheckContiguous(UnaryOpName(op), out);
  CheckSame(UnaryOpName(op), x, out);
  DeviceGuard guard(device_);
  LaunchUnary(static_cast<UOp>(op), x.dtype(), x.raw_data(), out.raw_data(), x.numel(), stream_);
}

void CudaBackend::UnaryBackward(UnaryOp op, const Tensor& x, const Tensor& y,
                                const Tensor& grad_out, const Tensor& grad_x) {
  CheckFloat(UnaryOpName(op), x);
  for (const Tensor* t : {&x, &y, &grad_out, &grad_x}) {
    CheckContiguous(UnaryOpName(op), *t);
    CheckSame(UnaryOpName(op), x, *t);
  }
  DeviceGuard guard(device_);
  LaunchUnaryBackward(static_cast<UOp>(op), x.dtype(), x.raw_data(), y.raw_data(),
                      grad_out.raw_data(), grad_x.raw_data(), x.numel(), stream_);
}

void CudaBackend::Binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* what = BinaryOpName(op);
  FAM_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), what, " on cuda: shapes ",
            ShapeString(a.shape()), ", ", ShapeString(b.shape()), " -> ",
            ShapeString(out.shape()));
  CheckFloat(what, out);
  CheckContiguous(what, out);
  FAM_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), what, " on cuda: dtypes of ",
            a.Describe(), ", ", b.Describe(), " and ", out.Describe(), " differ");
  if (out.numel() == 0) return;
  const std::vector<int64_t>* const strides[3] = {&a.strides(), &b.strides(), &out.strides()};
  const NdIndexer<3> index = IndexerFor<3>(what, out.shape(), strides);
  DeviceGuard guard(device_);
  LaunchBinary(static_cast<BOp>(op), out.dtype(), a.raw_data(), b.raw_data(), out.raw_data(),
               out.numel(), index, stream_);
}

void CudaBackend::Affine(const Tensor& x, double alpha, double beta, const Tensor& out) {
  CheckFloat("affine", x);
  CheckContiguous("affine", x);
  CheckContiguous("affine", out);
  CheckSame("affine", x, out);
  DeviceGuard guard(device_);
  LaunchAffine(x.dtype(), x.raw_data(), alpha, beta, out.raw_data(), x.numel(), stream_);
}

void CudaBackend::Axpy(const Tensor& src, double alpha, const Tensor& dst) {
  CheckFloat("axpy", dst);
  CheckContiguous("axpy", src);
  CheckContiguous("axpy", dst);
  CheckSame("axpy", dst, src);
  DeviceGuard guard(device_);
  LaunchAxpy(dst.dtype(), src.raw_data(), alpha, dst.raw_data(), dst.numel(), stream_);
}

void CudaBackend::ReduceSum(const Tensor& x, const std::vector<int>& axes, const Tensor& out) {
  CheckFloat("sum", x);
  CheckContiguous("sum", x);
  CheckContiguous("sum", out);
  FAM_CHECK(out.dim() == x.dim() && out.dtype() == x.dtype(), "sum on cuda: output ",
            out.Describe(), " does not match input ", x.Describe());
  const int rank = static_cast<int>(x.dim());
  std::vector<bool> reduced(rank, false);
  for (int a : axes) {
    FAM_CHECK(a >= 0 && a < rank, "sum on cuda: axis ", a, " out of range for ", x.Describe());
    reduced[a] = true;
  }
  Shape kept_shape = x.shape(), reduced_shape = x.shape();
  int64_t reduced_count = 1;
  for (int d = 0; d < rank; ++d) {
    if (reduced[d]) {
      kept_shape[d] = 1;
      reduced_count *= x.shape()[d];
    } else {
      reduced_shape[d] = 1;
    }
    FAM_CHECK(out.shape()[d] == kept_shape[d], "sum on cuda: output ", out.Describe(),
              " is not ", x.Describe(), " reduced over the given axes");
  }
  if (out.numel() == 0) return;
  const std::vector<int64_t>* const x_strides[1] = {&x.strides()};
  const NdIndexer<1> kept = IndexerFor<1>("sum", kept_shape, x_strides);
  const NdIndexer<1> red = IndexerFor<1>("sum", reduced_shape, x_strides);
  DeviceGuard guard(device_);
  LaunchReduceSum(x.dtype(), x.raw_data(), out.raw_data(), out.numel(), kept, reduced_count, red,
                  stream_);
}

double CudaBackend::SumSquares(const Tensor& x) {
  CheckFloat("sum of squares", x);
  CheckContiguous("sum of squares", x);
  DeviceGuard guard(device_);
  Scratch scratch(*allocator_, (kSumSquaresBlocks + 1) * sizeof(double));
  double* partial = scratch.as<double>();
  double* result = partial + kSumSquaresBlocks;
  LaunchSumSquares(x.dtype(), x.raw_data(), x.numel(), partial, result, stream_);
  double host = 0;
  CopyToHost(&host, result, sizeof(double));
  return host;
}

std::vector<double> CudaBackend::SumSquaresEach(const std::vector<Tensor>& xs) {
  std::vector<double> out(xs.size(), 0.0);
  if (xs.empty()) return out;
  for (const Tensor& x : xs) {
    CheckFloat("sum of squares", x);
    CheckContiguous("sum of squares", x);
  }
  DeviceGuard guard(device_);
  // One partial buffer reused in stream order, one result slot per tensor, one copy back.
  Scratch partial(*allocator_, kSumSquaresBlocks * sizeof(double));
  Scratch results(*allocator_, xs.size() * sizeof(double));
  for (size_t i = 0; i < xs.size(); ++i)
    LaunchSumSquares(xs[i].dtype(), xs[i].raw_data(), xs[i].numel(), partial.as<double>(),
                     results.as<double>() + i, stream_);
  CopyToHost(out.data(), results.as<double>(), xs.size() * sizeof(double));
  return out;
}

void CudaBackend::Gemm(const GemmArgs& args) {
  DeviceGuard guard(device_);
  gemm_->Run(args, allow_tf32_);
}

// ---- Normalisation, softmax, cross-entropy ----

namespace {

void RowsOf(const char* what, const Tensor& x, int64_t* rows, int64_t* cols) {
  FAM_CHECK(x.dim() == 2, what, " on cuda: expected a [N, D] tensor, got ", x.Describe());
  CheckContiguous(what, x);
  CheckFloat(what, x);
  *rows = x.shape()[0];
  *cols = x.shape()[1];
}

}  // namespace

void CudaBackend::RmsNormForward(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                                 const Tensor& rstd) {
  int64_t n, d;
  RowsOf("rmsnorm", x, &n, &d);
  FAM_CHECK(w.numel() == d && w.dtype() == x.dtype() && w.is_contiguous(),
            "rmsnorm on cuda: weight ", w.Describe(), " does not match ", x.Describe());
  CheckContiguous("rmsnorm", y);
  CheckSame("rmsnorm", x, y);
  FAM_CHECK(rstd.numel() == n && rstd.dtype() == x.dtype() && rstd.is_contiguous(),
            "rmsnorm on cuda: rstd ", rstd.Describe(), " does not match ", x.Describe());
  DeviceGuard guard(device_);
  LaunchRmsNormForward(x.dtype(), x.raw_data(), w.raw_data(), eps, y.raw_data(), rstd.raw_data(),
                       n, d, stream_);
}

void CudaBackend::RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                  const Tensor& grad_y, const Tensor& grad_x,
                                  const Tensor& grad_w) {
  int64_t n, d;
  RowsOf("rmsnorm backward", x, &n, &d);
  FAM_CHECK(w.numel() == d && w.dtype() == x.dtype() && w.is_contiguous() && rstd.numel() == n &&
                rstd.dtype() == x.dtype() && rstd.is_contiguous(),
            "rmsnorm backward on cuda: weight ", w.Describe(), " or rstd ", rstd.Describe(),
            " does not match ", x.Describe());
  CheckContiguous("rmsnorm backward", grad_y);
  CheckSame("rmsnorm backward", x, grad_y);
  DeviceGuard guard(device_);
  if (grad_x.defined()) {
    CheckContiguous("rmsnorm backward", grad_x);
    CheckSame("rmsnorm backward", x, grad_x);
    LaunchRmsNormBackwardX(x.dtype(), x.raw_data(), w.raw_data(), rstd.raw_data(),
                           grad_y.raw_data(), grad_x.raw_data(), n, d, stream_);
  }
  if (grad_w.defined()) {
    CheckContiguous("rmsnorm backward", grad_w);
    CheckSame("rmsnorm backward", w, grad_w);
    constexpr int64_t kWeightGradChunks = 32;
    const int64_t chunk_rows =
        std::max<int64_t>(1, (n + kWeightGradChunks - 1) / kWeightGradChunks);
    const int64_t chunks = n == 0 ? 0 : (n + chunk_rows - 1) / chunk_rows;
    Scratch partial(*allocator_, static_cast<size_t>(std::max<int64_t>(1, chunks * d)) *
                                     sizeof(double));
    LaunchRmsNormBackwardW(x.dtype(), x.raw_data(), rstd.raw_data(), grad_y.raw_data(),
                           grad_w.raw_data(), n, d, partial.as<double>(), chunks, chunk_rows,
                           stream_);
  }
}

void CudaBackend::SoftmaxForward(const Tensor& x, const Tensor& y) {
  int64_t n, d;
  RowsOf("softmax", x, &n, &d);
  CheckContiguous("softmax", y);
  CheckSame("softmax", x, y);
  DeviceGuard guard(device_);
  LaunchSoftmaxForward(x.dtype(), x.raw_data(), y.raw_data(), n, d, stream_);
}

void CudaBackend::SoftmaxBackward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x) {
  int64_t n, d;
  RowsOf("softmax backward", y, &n, &d);
  CheckContiguous("softmax backward", grad_y);
  CheckContiguous("softmax backward", grad_x);
  CheckSame("softmax backward", y, grad_y);
  CheckSame("softmax backward", y, grad_x);
  DeviceGuard guard(device_);
  LaunchSoftmaxBackward(y.dtype(), y.raw_data(), grad_y.raw_data(), grad_x.raw_data(), n, d,
                        stream_);
}

namespace {

// Same check and message as the CPU backend.
void CheckTargets(const std::vector<int64_t>& targets, int64_t v, int64_t ignore_index) {
  for (size_t i = 0; i < targets.size(); ++i) {
    const int64_t t = targets[i];
    FAM_CHECK(t == ignore_index || (t >= 0 && t < v), "cross_entropy: target ", t,
              " at position ", i, " is outside [0, ", v, ") and is not ignore_index ",
              ignore_index);
  }
}

}  // namespace

void CudaBackend::CrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                      const Tensor& weights, int64_t ignore_index,
                                      const Tensor& losses, const Tensor& lse) {
  int64_t n, v;
  RowsOf("cross_entropy", logits, &n, &v);
  FAM_CHECK(targets.numel() == n, "cross_entropy on cuda: targets ", targets.Describe(),
            " do not match logits ", logits.Describe());
  FAM_CHECK(!weights.defined() || (weights.numel() == n && weights.is_contiguous() &&
                                   weights.dtype() == logits.dtype()),
            "cross_entropy on cuda: weights ", weights.defined() ? weights.Describe() : "",
            " do not match logits ", logits.Describe());
  for (const Tensor* t : {&losses, &lse}) {
    CheckContiguous("cross_entropy", *t);
    FAM_CHECK(t->numel() == n && t->dtype() == logits.dtype(), "cross_entropy on cuda: ",
              t->Describe(), " does not match logits ", logits.Describe());
  }
  DeviceGuard guard(device_);
  CheckTargets(ReadIndices(targets), v, ignore_index);
  LaunchCrossEntropyForward(logits.dtype(), logits.raw_data(), targets.dtype(),
                            targets.raw_data(), weights.defined() ? weights.raw_data() : nullptr,
                            ignore_index, losses.raw_data(), lse.raw_data(), n, v, stream_);
}

void CudaBackend::CrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                       const Tensor& weights, int64_t ignore_index,
                                       const Tensor& lse, const Tensor& grad_losses,
                                       const Tensor& grad_logits) {
  int64_t n, v;
  RowsOf("cross_entropy backward", logits, &n, &v);
  FAM_CHECK(targets.numel() == n, "cross_entropy backward on cuda: targets ", targets.Describe(),
            " do not match logits ", logits.Describe());
  FAM_CHECK(!weights.defined() || (weights.numel() == n && weights.is_contiguous() &&
                                   weights.dtype() == logits.dtype()),
            "cross_entropy backward on cuda: weights do not match logits ", logits.Describe());
  for (const Tensor* t : {&lse, &grad_losses}) {
    CheckContiguous("cross_entropy backward", *t);
    FAM_CHECK(t->numel() == n && t->dtype() == logits.dtype(), "cross_entropy backward on cuda: ",
              t->Describe(), " does not match logits ", logits.Describe());
  }
  CheckContiguous("cross_entropy backward", grad_logits);
  CheckSame("cross_entropy backward", logits, grad_logits);
  DeviceGuard guard(device_);
  CheckTargets(ReadIndices(targets), v, ignore_index);
  LaunchCrossEntropyBackward(logits.dtype(), logits.raw_data(), targets.dtype(),
                             targets.raw_data(), weights.defined() ? weights.raw_data() : nullptr,
                             ignore_index, lse.raw_data(), grad_losses.raw_data(),
                             grad_logits.raw_data(), n, v, stream_);
}

// ---- RoPE, embedding ----

void CudaBackend::Rope(const Tensor& x, const Tensor& positions, double base, bool inverse,
                       const Tensor& out) {
  FAM_CHECK(x.dim() == 4, "rope on cuda: expected [B, H, T, D], got ", x.Describe());
  CheckFloat("rope", x);
  CheckContiguous("rope", x);
  CheckContiguous("rope", out);
  CheckSame("rope", x, out);
  const int64_t b = x.shape()[0], h = x.shape()[1], t = x.shape()[2], d = x.shape()[3];
  FAM_CHECK(d % 2 == 0, "rope: head dim must be even, got ", x.Describe());
  FAM_CHECK(positions.dim() == 2 && positions.shape()[0] == b && positions.shape()[1] == t &&
                positions.is_contiguous(),
            "rope on cuda: positions ", positions.Describe(), " do not match ", x.Describe());
  FAM_CHECK(positions.dtype() == DType::kI64 || positions.dtype() == DType::kI32,
            "rope: positions must be i32 or i64, got ", positions.Describe());
  DeviceGuard guard(device_);
  LaunchRope(x.dtype(), x.raw_data(), positions.dtype(), positions.raw_data(), base, inverse,
             out.raw_data(), b, h, t, d, stream_);
}

namespace {

void CheckIds(const std::vector<int64_t>& ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i)
    FAM_CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: id ", ids[i], " at position ", i,
              " is outside [0, ", vocab, ")");
}

}  // namespace

void CudaBackend::EmbeddingForward(const Tensor& table, const Tensor& ids, const Tensor& out) {
  FAM_CHECK(table.dim() == 2, "embedding on cuda: table must be [V, D], got ", table.Describe());
  CheckContiguous("embedding", table);
  CheckContiguous("embedding", out);
  const int64_t vocab = table.shape()[0], d = table.shape()[1];
  const int64_t n = ids.numel();
  FAM_CHECK(out.numel() == n * d && out.dtype() == table.dtype(), "embedding on cuda: output ",
            out.Describe(), " does not match table ", table.Describe(), " and ", n, " ids");
  DeviceGuard guard(device_);
  CheckIds(ReadIndices(ids), vocab);
  LaunchEmbeddingForward(static_cast<int>(DTypeSize(table.dtype())), table.raw_data(),
                         ids.dtype(), ids.raw_data(), out.raw_data(), n, d, stream_);
}

void CudaBackend::EmbeddingBackward(const Tensor& ids, const Tensor& grad_out,
                                    const Tensor& grad_table) {
  FAM_CHECK(grad_table.dim() == 2, "embedding backward on cuda: grad table must be [V, D], got ",
            grad_table.Describe());
  CheckFloat("embedding backward", grad_table);
  CheckContiguous("embedding backward", grad_table);
  CheckContiguous("embedding backward", grad_out);
  const int64_t vocab = grad_table.shape()[0], d = grad_table.shape()[1];
  const int64_t n = ids.numel();
  FAM_CHECK(grad_out.numel() == n * d && grad_out.dtype() == grad_table.dtype(),
            "embedding backward on cuda: ", grad_out.Describe(), " does not match ",
            grad_table.Describe());
  if (n == 0) return;
  DeviceGuard guard(device_);
  const std::vector<int64_t> id = ReadIndices(ids);
  CheckIds(id, vocab);
  // Positions sorted by (id, position); each group of equal ids is summed in position order.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return id[a] < id[b]; });
  std::vector<int64_t> group_start, group_row;
  for (int64_t i = 0; i < n; ++i) {
    if (i == 0 || id[order[i]] != id[order[i - 1]]) {
      group_start.push_back(i);
      group_row.push_back(id[order[i]]);
    }
  }
  const int64_t groups = static_cast<int64_t>(group_row.size());
  group_start.push_back(n);
  // One upload: order | group_start | group_row.
  std::vector<int64_t> packed;
  packed.reserve(order.size() + group_start.size() + group_row.size());
  packed.insert(packed.end(), order.begin(), order.end());
  packed.insert(packed.end(), group_start.begin(), group_start.end());
  packed.insert(packed.end(), group_row.begin(), group_row.end());
  Scratch device_index(*allocator_, packed.size() * sizeof(int64_t));
  CopyFromHost(device_index.as<void>(), packed.data(), packed.size() * sizeof(int64_t));
  const int64_t* dev = device_index.as<int64_t>();
  LaunchEmbeddingBackward(grad_table.dtype(), dev, dev + n, dev + n + groups + 1, groups,
                          grad_out.raw_data(), grad_table.raw_data(), d, stream_);
}

// ---- Attention (cuda_attention.cu), optimizer ----

void CudaBackend::AttentionForward(const AttentionArgs& args) {
  DeviceGuard guard(device_);
  cuda::AttentionForward(args, stream_);
}

void CudaBackend::AttentionBackward(const AttentionGradArgs& args) {
  DeviceGuard guard(device_);
  cuda::AttentionBackward(args, stream_);
}

void CudaBackend::AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                              const Tensor& exp_avg_sq, double lr, double beta1, double beta2,
                              double eps, double weight_decay, int64_t step) {
  for (const Tensor* t : {&grad, &exp_avg, &exp_avg_sq}) {
    FAM_CHECK(t->shape() == param.shape() && t->dtype() == param.dtype(), "adamw update: ",
              t->Describe(), " does not match parameter ", param.Describe());
  }
  for (const Tensor* t : {&param, &grad, &exp_avg, &exp_avg_sq}) {
    FAM_CHECK(t->is_contiguous(), "adamw update: ", t->Describe(), " is not contiguous");
  }
  CheckFloat("adamw update", param);
  FAM_CHECK(step >= 1, "adamw update: step counts from 1, got ", step);
  const double bias1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  AdamWCoefficients c;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.one_minus_beta1 = 1.0 - beta1;
  c.one_minus_beta2 = 1.0 - beta2;
  c.decay = 1.0 - lr * weight_decay;
  c.step_size = lr / bias1;
  c.inv_sqrt_bias2 = 1.0 / std::sqrt(bias2);
  c.eps = eps;
  DeviceGuard guard(device_);
  LaunchAdamW(param.dtype(), param.raw_data(), grad.raw_data(), exp_avg.raw_data(),
              exp_avg_sq.raw_data(), param.numel(), c, stream_);
}

void CudaBackend::AdafactorUpdate(const AdafactorArgs& a) {
  CheckAdafactorArgs(a);
  const int64_t numel = a.param.numel();
  if (numel == 0) return;
  DeviceGuard guard(device_);
  const bool factored = a.row.defined();
  Scratch u(*allocator_, static_cast<size_t>(numel) * sizeof(double));
  Scratch partial(*allocator_, (kSumSquaresBlocks + 1) * sizeof(double));
  Scratch row_mean(*allocator_, static_cast<size_t>(factored ? a.batch : 1) * sizeof(double));
  AdafactorCoefficients c{a.decay, a.eps1, a.clip_threshold, a.beta1, a.lr, a.weight_decay};
  LaunchAdafactor(a.param.dtype(), a.param.raw_data(), a.grad.raw_data(),
                  factored ? a.row.raw_data() : nullptr, factored ? a.col.raw_data() : nullptr,
                  factored ? nullptr : a.sq.raw_data(),
                  a.exp_avg.defined() ? a.exp_avg.raw_data() : nullptr, factored ? a.batch : 1,
                  factored ? a.n : 1, factored ? a.m : numel, c, u.as<double>(),
                  partial.as<double>(), row_mean.as<double>(), stream_);
}

}  // namespace fam::cuda
