// CPU kernels: fused cross-entropy over logits rows. The forward keeps only the row log-sum-exp;
// the backward rebuilds softmax from logits and lse while writing grad_logits (no [N, V] buffer).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace

void CpuBackend::CrossEntropyForward(const Tensor& logits, const Tensor& targets,
                                     const Tensor& weights, int64_t ignore_index,
                                     const Tensor& losses, const Tensor& lse) {
  FAM_ASSERT(logits.dim() == 2 && logits.is_contiguous());
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  FAM_ASSERT(losses.numel() == n && lse.numel() == n);
  FAM_ASSERT(!weights.defined() || (weights.numel() == n && weights.is_contiguous() &&
                                    weights.dtype() == logits.dtype()));
  const std::vector<int64_t> tgt = cpu::IndicesAsInt64(targets, "cross_entropy");
  DispatchFloat(logits.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    const T* pl = logits.kernel_data<T>();
    const T* pw = weights.defined() ? weights.kernel_data<T>() : nullptr;
    T* ploss = losses.kernel_data<T>();
    T* plse = lse.kernel_data<T>();
#pragma omp parallel for if (n * v > kParallelGrain)
    for (int64_t r = 0; r < n; ++r) {
      const T* row = pl + r * v;
      T max = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < v; ++j) max = std::max(max, row[j]);
      double sum = 0;
      for (int64_t j = 0; j < v; ++j) sum += std::exp(row[j] - max);
      const double row_lse = static_cast<double>(max) + std::log(sum);
      plse[r] = static_cast<T>(row_lse);
      const int64_t t = tgt[r];
      if (t == ignore_index) {
        ploss[r] = T(0);
        continue;
      }
      const double weight = pw ? static_cast<double>(pw[r]) : 1.0;
      ploss[r] = static_cast<T>(weight * (row_lse - static_cast<double>(row[t])));
    }
  });
}

void CpuBackend::CrossEntropyBackward(const Tensor& logits, const Tensor& targets,
                                      const Tensor& weights, int64_t ignore_index,
                                      const Tensor& lse, const Tensor& grad_losses,
                                      const Tensor& grad_logits) {
  FAM_ASSERT(logits.dim() == 2 && logits.is_contiguous());
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  FAM_ASSERT(lse.numel() == n && grad_losses.numel() == n && grad_losses.is_contiguous());
  FAM_ASSERT(grad_logits.shape() == logits.shape() && grad_logits.is_contiguous());
  FAM_ASSERT(!weights.defined() || (weights.numel() == n && weights.is_contiguous()));
  const std::vector<int64_t> tgt = cpu::IndicesAsInt64(targets, "cross_entropy");
  DispatchFloat(logits.dtype(), "cross_entropy backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pl = logits.kernel_data<T>();
    const T* pw = weights.defined() ? weights.kernel_data<T>() : nullptr;
    const T* plse = lse.kernel_data<T>();
    const T* pg = grad_losses.kernel_data<T>();
    T* pgl = grad_logits.kernel_data<T>();
#pragma omp parallel for if (n * v > kParallelGrain)
    for (int64_t r = 0; r < n; ++r) {
      const T* row = pl + r * v;
      T* grow = pgl + r * v;
      const int64_t t = tgt[r];
      if (t == ignore_index) {
        std::fill(grow, grow + v, T(0));
        continue;
      }
      const T scale = pw ? pg[r] * pw[r] : pg[r];
      const T row_lse = plse[r];
      for (int64_t j = 0; j < v; ++j) grow[j] = scale * std::exp(row[j] - row_lse);
      grow[t] -= scale;
    }
  });
}

}  // namespace fam
