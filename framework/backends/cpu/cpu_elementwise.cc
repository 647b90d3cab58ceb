// CPU kernels: unary/binary elementwise math, affine, axpy and sum reductions.
#include <cmath>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kGeluA = 0.044715;

template <typename T>
inline T ApplyUnary(UnaryOp op, T x) {
  switch (op) {
    case UnaryOp::kNeg: return -x;
    case UnaryOp::kExp: return std::exp(x);
    case UnaryOp::kLog: return std::log(x);
    case UnaryOp::kSilu: return x / (T(1) + std::exp(-x));
    case UnaryOp::kGelu: {
      T inner = T(kGeluC) * (x + T(kGeluA) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(inner));
    }
    case UnaryOp::kSqrt: return std::sqrt(x);
    case UnaryOp::kRsqrt: return T(1) / std::sqrt(x);
    case UnaryOp::kSquare: return x * x;
    case UnaryOp::kTanh: return std::tanh(x);
    case UnaryOp::kSigmoid: return T(1) / (T(1) + std::exp(-x));
    case UnaryOp::kRelu: return x > T(0) ? x : T(0);
    case UnaryOp::kAbs: return std::abs(x);
  }
  return x;
}

// d op(x) / dx, given x and y = op(x).
template <typename T>
inline T UnaryDerivative(UnaryOp op, T x, T y) {
  switch (op) {
    case UnaryOp::kNeg: return T(-1);
    case UnaryOp::kExp: return y;
    case UnaryOp::kLog: return T(1) / x;
    case UnaryOp::kSilu: {
      T s = T(1) / (T(1) + std::exp(-x));
      return s * (T(1) + x * (T(1) - s));
    }
    case UnaryOp::kGelu: {
      T inner = T(kGeluC) * (x + T(kGeluA) * x * x * x);
      T t = std::tanh(inner);
      return T(0.5) * (T(1) + t) +
             T(0.5) * x * (T(1) - t * t) * T(kGeluC) * (T(1) + T(3 * kGeluA) * x * x);
    }
    case UnaryOp::kSqrt: return T(0.5) / y;
    case UnaryOp::kRsqrt: return T(-0.5) * y * y * y;
    case UnaryOp::kSquare: return T(2) * x;
    case UnaryOp::kTanh: return T(1) - y * y;
    case UnaryOp::kSigmoid: return y * (T(1) - y);
    case UnaryOp::kRelu: return x > T(0) ? T(1) : T(0);
    case UnaryOp::kAbs: return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  }
  return T(0);
}

template <typename T>
inline T ApplyBinary(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::kAdd: return a + b;
    case BinaryOp::kSub: return a - b;
    case BinaryOp::kMul: return a * b;
    case BinaryOp::kDiv: return a / b;
    case BinaryOp::kMax: return a > b ? a : b;
    case BinaryOp::kMin: return a < b ? a : b;
  }
  return a;
}

constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace

void CpuBackend::Unary(UnaryOp op, const Tensor& x, const Tensor& out) {
  FAM_ASSERT(x.is_contiguous() && out.is_contiguous());
  cpu::DispatchFloat(x.dtype(), UnaryOpName(op), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) po[i] = ApplyUnary(op, px[i]);
  });
}

void CpuBackend::UnaryBackward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& grad_out,
                               const Tensor& grad_x) {
  cpu::DispatchFloat(x.dtype(), UnaryOpName(op), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    const T* pg = grad_out.data<T>();
    T* pgx = grad_x.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) pgx[i] = pg[i] * UnaryDerivative(op, px[i], py[i]);
  });
}

void CpuBackend::Binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  FAM_ASSERT(out.is_contiguous() && a.shape() == out.shape() && b.shape() == out.shape());
  cpu::DispatchFloat(out.dtype(), BinaryOpName(op), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    T* po = out.data<T>();
    const int64_t n = out.numel();
    if (a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for if (n > kParallelGrain)
      for (int64_t i = 0; i < n; ++i) po[i] = ApplyBinary(op, pa[i], pb[i]);
      return;
    }
    cpu::ForEachRow<3>(out.shape(), {&a.strides(), &b.strides(), &out.strides()},
                       [&](const auto& base, int64_t len, const auto& inner) {
                         const T* ra = pa + base[0];
                         const T* rb = pb + base[1];
                         T* ro = po + base[2];
                         for (int64_t i = 0; i < len; ++i)
                           ro[i] = ApplyBinary(op, ra[i * inner[0]], rb[i * inner[1]]);
                       });
  });
}

void CpuBackend::Affine(const Tensor& x, double alpha, double beta, const Tensor& out) {
  FAM_ASSERT(x.is_contiguous() && out.is_contiguous());
  cpu::DispatchFloat(x.dtype(), "affine", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    const int64_t n = x.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) po[i] = px[i] * a + b;
  });
}

void CpuBackend::Axpy(const Tensor& src, double alpha, const Tensor& dst) {
  FAM_ASSERT(src.is_contiguous() && dst.is_contiguous() && src.numel() == dst.numel());
  cpu::DispatchFloat(dst.dtype(), "axpy", [&](auto tag) {
    using T = decltype(tag);
    const T* ps = src.data<T>();
    T* pd = dst.data<T>();
    const T a = static_cast<T>(alpha);
    const int64_t n = dst.numel();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) pd[i] += a * ps[i];
  });
}

void CpuBackend::ReduceSum(const Tensor& x, const std::vector<int>& axes, const Tensor& out) {
  FAM_ASSERT(x.is_contiguous() && out.is_contiguous() && out.dim() == x.dim());
  cpu::DispatchFloat(x.dtype(), "sum", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
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
  cpu::DispatchFloat(x.dtype(), "sum of squares", [&](auto tag) {
    using T = decltype(tag);
    const T* p = x.data<T>();
    const int64_t n = x.numel();
    double acc = 0;
#pragma omp parallel for reduction(+ : acc) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(p[i]) * p[i];
    total = acc;
  });
  return total;
}

}  // namespace fam
