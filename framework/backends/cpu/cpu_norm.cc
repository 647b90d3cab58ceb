// CPU kernels: fused RMSNorm and row softmax (forward and backward), OpenMP-parallel over rows.
// Row statistics are accumulated in double (f32 rows: in f32 vector lanes over chunks of
// kDotChunk elements, the chunk sums in double); the weight gradient of RMSNorm is summed in fixed
// row chunks and then across chunks in order, so it is race-free and independent of thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "framework/backends/cpu/cpu_attention_kernels.h"
#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // elements below which a kernel runs serially
constexpr int64_t kWeightGradChunks = 32;    // row chunks for the RMSNorm weight gradient

constexpr int64_t kDotChunk = 512;

// Σ a[j]·b[j]·c[j] (c null: Σ a[j]·b[j]) in double; f32 on vectors, chunk sums in double.
template <typename T>
double Dot3(const T* a, const T* b, const T* c, int64_t n) {
  double sum = 0;
  int64_t j = 0;
  if constexpr (std::is_same_v<T, float>) {
    constexpr int L = cpu::kLanes<float>;
    while (j + L <= n) {
      const int64_t end = std::min(n, j + kDotChunk);
      cpu::Vec<float> acc{};
      for (; j + L <= end; j += L) {
        cpu::Vec<float> p = cpu::LoadVec(a + j) * cpu::LoadVec(b + j);
        if (c) p *= cpu::LoadVec(c + j);
        acc += p;
      }
      float chunk = 0;
      for (int i = 0; i < L; ++i) chunk += acc[i];
      sum += chunk;
    }
  }
  for (; j < n; ++j) sum += static_cast<double>(a[j]) * b[j] * (c ? c[j] : T(1));
  return sum;
}

// Rows and row length of a [N, D] kernel operand.
void RowsOf(const Tensor& x, int64_t* rows, int64_t* cols) {
  FAM_ASSERT(x.dim() == 2 && x.is_contiguous());
  *rows = x.shape()[0];
  *cols = x.shape()[1];
}

}  // namespace

void CpuBackend::RmsNormForward(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                                const Tensor& rstd) {
  int64_t n, d;
  RowsOf(x, &n, &d);
  FAM_ASSERT(w.numel() == d && w.is_contiguous() && y.shape() == x.shape() && y.is_contiguous());
  FAM_ASSERT(rstd.numel() == n && rstd.is_contiguous());
  DispatchFloat(x.dtype(), "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    const T* pw = w.kernel_data<T>();
    T* py = y.kernel_data<T>();
    T* pr = rstd.kernel_data<T>();
#pragma omp parallel for if (n * d > kParallelGrain)
    for (int64_t r = 0; r < n; ++r) {
      const T* xr = px + r * d;
      T* yr = py + r * d;
      const double sum_sq = Dot3<T>(xr, xr, nullptr, d);
      const double inv = 1.0 / std::sqrt(sum_sq / static_cast<double>(d) + eps);
      const T s = static_cast<T>(inv);
      int64_t j = 0;
      if constexpr (std::is_same_v<T, float>) {
        constexpr int L = cpu::kLanes<float>;
        for (; j + L <= d; j += L)
          cpu::StoreVec(yr + j, cpu::LoadVec(xr + j) * s * cpu::LoadVec(pw + j));
      }
      for (; j < d; ++j) yr[j] = xr[j] * s * pw[j];
      pr[r] = s;
    }
  });
}

// y = x·r·w with r = (mean(x²) + eps)^(-1/2):
//   grad_x = r·(g∘w) − x·r³/D · Σ(g∘w∘x),   grad_w = Σ_rows g∘x·r.
void CpuBackend::RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                 const Tensor& grad_y, const Tensor& grad_x, const Tensor& grad_w) {
  int64_t n, d;
  RowsOf(x, &n, &d);
  FAM_ASSERT(w.numel() == d && rstd.numel() == n && grad_y.shape() == x.shape());
  FAM_ASSERT(grad_y.is_contiguous());
  FAM_ASSERT(!grad_x.defined() || (grad_x.shape() == x.shape() && grad_x.is_contiguous()));
  FAM_ASSERT(!grad_w.defined() || (grad_w.numel() == d && grad_w.is_contiguous()));
  DispatchFloat(x.dtype(), "rmsnorm backward", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    const T* pw = w.kernel_data<T>();
    const T* pr = rstd.kernel_data<T>();
    const T* pg = grad_y.kernel_data<T>();
    const bool parallel = n * d > kParallelGrain;
    if (grad_x.defined()) {
      T* pgx = grad_x.kernel_data<T>();
#pragma omp parallel for if (parallel)
      for (int64_t r = 0; r < n; ++r) {
        const T* xr = px + r * d;
        const T* gr = pg + r * d;
        T* gxr = pgx + r * d;
        const double dot = Dot3<T>(gr, pw, xr, d);
        const double inv = pr[r];
        const T a = static_cast<T>(inv);
        const T b = static_cast<T>(inv * inv * inv * dot / static_cast<double>(d));
        int64_t j = 0;
        if constexpr (std::is_same_v<T, float>) {
          constexpr int L = cpu::kLanes<float>;
          for (; j + L <= d; j += L) {
            const cpu::Vec<float> g = cpu::LoadVec(gr + j), x = cpu::LoadVec(xr + j);
            cpu::StoreVec(gxr + j, a * g * cpu::LoadVec(pw + j) - b * x);
          }
        }
        for (; j < d; ++j) gxr[j] = a * gr[j] * pw[j] - b * xr[j];
      }
    }
    if (grad_w.defined()) {
      T* pgw = grad_w.kernel_data<T>();
      const int64_t chunk_rows =
          std::max<int64_t>(1, (n + kWeightGradChunks - 1) / kWeightGradChunks);
      const int64_t chunks = n == 0 ? 0 : (n + chunk_rows - 1) / chunk_rows;
      std::vector<double> partial(static_cast<size_t>(chunks * d), 0.0);
#pragma omp parallel for if (parallel)
      for (int64_t c = 0; c < chunks; ++c) {
        double* acc = partial.data() + c * d;
        const int64_t end = std::min(n, (c + 1) * chunk_rows);
        if constexpr (std::is_same_v<T, float>) {
          // The chunk's rows summed in f32 vectors (≤ chunk_rows terms each), then into double.
          constexpr int L = cpu::kLanes<float>;
          std::vector<float> chunk(static_cast<size_t>(d), 0.0f);
          for (int64_t r = c * chunk_rows; r < end; ++r) {
            const float* xr = px + r * d;
            const float* gr = pg + r * d;
            const float inv = pr[r];
            int64_t j = 0;
            for (; j + L <= d; j += L)
              cpu::StoreVec(chunk.data() + j,
                            cpu::LoadVec(chunk.data() + j) +
                                cpu::LoadVec(gr + j) * cpu::LoadVec(xr + j) * inv);
            for (; j < d; ++j) chunk[j] += gr[j] * xr[j] * inv;
          }
          for (int64_t j = 0; j < d; ++j) acc[j] = chunk[j];
        } else {
          for (int64_t r = c * chunk_rows; r < end; ++r) {
            const T* xr = px + r * d;
            const T* gr = pg + r * d;
            const double inv = pr[r];
            for (int64_t j = 0; j < d; ++j) acc[j] += static_cast<double>(gr[j]) * xr[j] * inv;
          }
        }
      }
#pragma omp parallel for if (chunks * d > kParallelGrain)
      for (int64_t j = 0; j < d; ++j) {
        double total = 0;
        for (int64_t c = 0; c < chunks; ++c) total += partial[c * d + j];
        pgw[j] = static_cast<T>(total);
      }
    }
  });
}

// A row whose entries are all -inf (nothing to attend to) gets all-zero probabilities.
void CpuBackend::SoftmaxForward(const Tensor& x, const Tensor& y) {
  int64_t n, d;
  RowsOf(x, &n, &d);
  FAM_ASSERT(y.shape() == x.shape() && y.is_contiguous());
  DispatchFloat(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    T* py = y.kernel_data<T>();
#pragma omp parallel for if (n * d > kParallelGrain)
    for (int64_t r = 0; r < n; ++r) {
      const T* xr = px + r * d;
      T* yr = py + r * d;
      T max = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < d; ++j) max = std::max(max, xr[j]);
      if (max == -std::numeric_limits<T>::infinity()) {
        for (int64_t j = 0; j < d; ++j) yr[j] = T(0);
        continue;
      }
      double sum = 0;
      for (int64_t j = 0; j < d; ++j) {
        yr[j] = std::exp(xr[j] - max);
        sum += yr[j];
      }
      const T inv = static_cast<T>(1.0 / sum);
      for (int64_t j = 0; j < d; ++j) yr[j] *= inv;
    }
  });
}

// grad_x = y ∘ (g − Σ g∘y) per row.
void CpuBackend::SoftmaxBackward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x) {
  int64_t n, d;
  RowsOf(y, &n, &d);
  FAM_ASSERT(grad_y.shape() == y.shape() && grad_y.is_contiguous());
  FAM_ASSERT(grad_x.shape() == y.shape() && grad_x.is_contiguous());
  DispatchFloat(y.dtype(), "softmax backward", [&](auto tag) {
    using T = decltype(tag);
    const T* py = y.kernel_data<T>();
    const T* pg = grad_y.kernel_data<T>();
    T* pgx = grad_x.kernel_data<T>();
#pragma omp parallel for if (n * d > kParallelGrain)
    for (int64_t r = 0; r < n; ++r) {
      const T* yr = py + r * d;
      const T* gr = pg + r * d;
      T* gxr = pgx + r * d;
      double dot = 0;
      for (int64_t j = 0; j < d; ++j) dot += static_cast<double>(gr[j]) * yr[j];
      const T s = static_cast<T>(dot);
      for (int64_t j = 0; j < d; ++j) gxr[j] = yr[j] * (gr[j] - s);
    }
  });
}

}  // namespace fam
