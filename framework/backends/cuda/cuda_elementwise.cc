// CudaBackend: unary/binary elementwise math, affine, axpy, sums over axes and sums of squares
// (kernels in cuda_elementwise.cu), as cpu_elementwise.cc on the CPU.
#include <algorithm>
#include <numeric>
#include <vector>

#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_backend_internal.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

void CudaBackend::Unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  CheckFloat(UnaryOpName(op), x);
  CheckContiguous(UnaryOpName(op), x);
  CheckContiguous(UnaryOpName(op), out);
  CheckSame(UnaryOpName(op), x, out);
  DeviceGuard guard(device_);
  LaunchUnary(op, x.dtype(), x.raw_data(), out.raw_data(), x.numel(), stream_);
}

void CudaBackend::UnaryBackward(UnaryOp op, const Tensor& x, const Tensor& y,
                                const Tensor& grad_out, const Tensor& grad_x) {
  CheckFloat(UnaryOpName(op), x);
  for (const Tensor* t : {&x, &y, &grad_out, &grad_x}) {
    CheckContiguous(UnaryOpName(op), *t);
    CheckSame(UnaryOpName(op), x, *t);
  }
  DeviceGuard guard(device_);
  LaunchUnaryBackward(op, x.dtype(), x.raw_data(), y.raw_data(), grad_out.raw_data(),
                      grad_x.raw_data(), x.numel(), stream_);
}

void CudaBackend::Binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  const char* what = BinaryOpName(op);
  FAM_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), what, " on cuda: shapes ",
            ShapeString(a.shape()), ", ", ShapeString(b.shape()), " -> ", ShapeString(out.shape()));
  CheckFloat(what, out);
  CheckContiguous(what, out);
  FAM_CHECK(a.dtype() == out.dtype() && b.dtype() == out.dtype(), what, " on cuda: dtypes of ",
            a.Describe(), ", ", b.Describe(), " and ", out.Describe(), " differ");
  if (out.numel() == 0) return;
  const std::vector<int64_t>* const strides[3] = {&a.strides(), &b.strides(), &out.strides()};
  const NdIndexer<3> index = IndexerFor<3>(what, out.shape(), strides);
  DeviceGuard guard(device_);
  LaunchBinary(op, out.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), out.numel(), index,
               stream_);
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
    FAM_CHECK(out.shape()[d] == kept_shape[d], "sum on cuda: output ", out.Describe(), " is not ",
              x.Describe(), " reduced over the given axes");
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

}  // namespace fam::cuda
