// CPU kernels: unary/binary elementwise math, affine, axpy and sum reductions.
#include <cmath>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"
#include "framework/backends/op_kinds.h"

namespace fam {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace

void CpuBackend::Unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  FAM_ASSERT(x.is_contiguous() && out.is_contiguous());
  DispatchFloat(x.dtype(), UnaryOpName(op), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    T* po = out.kernel_data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) po[i] = formula::ApplyUnary(op, px[i]);
  });
}

void CpuBackend::UnaryBackward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& grad_out,
                               const Tensor& grad_x) {
  DispatchFloat(x.dtype(), UnaryOpName(op), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    const T* py = y.kernel_data<T>();
    const T* pg = grad_out.kernel_data<T>();
    T* pgx = grad_x.kernel_data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) pgx[i] = pg[i] * formula::UnaryDerivative(op, px[i], py[i]);
  });
}

void CpuBackend::Binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  FAM_ASSERT(out.is_contiguous() && a.shape() == out.shape() && b.shape() == out.shape());
  DispatchFloat(out.dtype(), BinaryOpName(op), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.kernel_data<T>();
    const T* pb = b.kernel_data<T>();
    T* po = out.kernel_data<T>();
    const int64_t n = out.numel();
    if (a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for if (n > kParallelGrain)
      for (int64_t i = 0; i < n; ++i) po[i] = formula::ApplyBinary(op, pa[i], pb[i]);
      return;
    }
    cpu::ForEachRow<3>(out.shape(), {&a.strides(), &b.strides(), &out.strides()},
                       [&](const auto& base, int64_t len, const auto& inner) {
                         const T* ra = pa + base[0];
                         const T* rb = pb + base[1];
                         T* ro = po + base[2];
                         for (int64_t i = 0; i < len; ++i)
                           ro[i] = formula::ApplyBinary(op, ra[i * inner[0]], rb[i * inner[1]]);
                       });
  });
}

void CpuBackend::Affine(const Tensor& x, double alpha, double beta, const Tensor& out) {
  FAM_ASSERT(x.is_contiguous() && out.is_contiguous());
  DispatchFloat(x.dtype(), "affine", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    T* po = out.kernel_data<T>();
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    const int64_t n = x.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) po[i] = px[i] * a + b;
  });
}

void CpuBackend::Axpy(const Tensor& src, double alpha, const Tensor& dst) {
  FAM_ASSERT(src.is_contiguous() && dst.is_contiguous() && src.numel() == dst.numel());
  DispatchFloat(dst.dtype(), "axpy", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = src.kernel_data<T>();
    T* pd = dst.kernel_data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = dst.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) pd[i] += a * ps[i];
  });
}

void CpuBackend::ReduceSum(const Tensor& x, const std::vector<int>& axes, const Tensor& out) {
  FAM_ASSERT(x.is_contiguous() && out.is_contiguous() && out.dim() == x.dim());
  DispatchFloat(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    T* po = out.kernel_data<T>();
    const int rank = static_cast<int>(x.dim());
    std::vector<bool> reduced(rank, false);
    for (int a : axes) reduced[a] = true;
    // Fast path: reducing only trailing axes → one dot-like sum per output element.
    int first_reduced = rank;
    while (first_reduced > 0 && reduced[first_reduced - 1]) --first_reduced;
    bool trailing_only = true;
    for (int d = 0; d < first_reduced; ++d) trailing_only &= !reduced[d];
    if (trailing_only) {
      const int64_t outer = out.numel();
      const int64_t inner = outer == 0 ? 0 : x.numel() / outer;
#pragma omp parallel for if (x.numel() > kParallelGrain)
      for (int64_t o = 0; o < outer; ++o) {
        double acc = 0;
        const T* row = px + o * inner;
        for (int64_t i = 0; i < inner; ++i) acc += row[i];
        po[o] = static_cast<T>(acc);
      }
      return;
    }
    // General path: accumulate in double through out's strides with 0 on reduced axes.
    Strides out_strides = ContiguousStrides(out.shape());
    for (int d = 0; d < rank; ++d)
      if (reduced[d]) out_strides[d] = 0;
    std::vector<double> acc(out.numel(), 0.0);
    Strides x_strides = x.strides();
    cpu::ForEachRow<2>(x.shape(), {&x_strides, &out_strides},
                       [&](const auto& base, int64_t len, const auto& inner) {
                         const T* rx = px + base[0];
                         double* ra = acc.data() + base[1];
                         for (int64_t i = 0; i < len; ++i) ra[i * inner[1]] += rx[i * inner[0]];
                       });
    for (int64_t i = 0; i < out.numel(); ++i) po[i] = static_cast<T>(acc[i]);
  });
}

double CpuBackend::SumSquares(const Tensor& x) {
  FAM_ASSERT(x.is_contiguous());
  double total = 0;
  DispatchFloat(x.dtype(), "sum of squares", [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.kernel_data<T>();
    const int64_t n = x.numel();
    double acc = 0;
#pragma omp parallel for reduction(+ : acc) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]) * p[i];
    total = acc;
  });
  return total;
}

}  // namespace fam
