// CPU kernels: fused cross-entropy over logits rows. The forward keeps only the row log-sum-exp;
// the backward rebuilds softmax from logits and lse while writing grad_logits (no [N, V] buffer).
// f32 rows run on 256-bit vectors with the attention kernels' vector exp (relative error ~1e-7), in
// one pass over memory: chunk by chunk of kSumChunk logits, the chunk's max, then its exp sum in
// f32 lanes (each lane adds kSumChunk / 8 terms), the chunk sums added in double and rescaled when
// the running max grows; f64 rows stay scalar.
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

constexpr int64_t kParallelGrain = 1 << 15;
constexpr int64_t kSumChunk = 512;

float RowMax(const float* row, int64_t v) {
  using cpu::Vec;
  constexpr int L = cpu::kLanes<float>;
  float max = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  if (v >= L) {
    Vec<float> m = cpu::LoadVec(row);
    for (j = L; j + L <= v; j += L) {
      const Vec<float> x = cpu::LoadVec(row + j);
      m = x > m ? x : m;
    }
    for (int i = 0; i < L; ++i) max = std::max(max, m[i]);
  }
  for (; j < v; ++j) max = std::max(max, row[j]);
  return max;
}

// Σ exp(row[j] − shift) over [begin, end) in f32 lanes.
float ExpSum(const float* row, int64_t begin, int64_t end, float shift) {
  constexpr int L = cpu::kLanes<float>;
  cpu::Vec<float> acc{};
  int64_t j = begin;
  for (; j + L <= end; j += L) acc += cpu::ExpVec(cpu::LoadVec(row + j) - shift);
  float sum = 0;
  for (int i = 0; i < L; ++i) sum += acc[i];
  for (; j < end; ++j) sum += std::exp(row[j] - shift);
  return sum;
}

// The row's max and Σ exp(row[j] − max) in one pass over memory: chunk by chunk (each in L1
// after its max is taken), the running sum rescaled when a later chunk raises the max.
void MaxAndExpSum(const float* row, int64_t v, float* max_out, double* sum_out) {
  float max = -std::numeric_limits<float>::infinity();
  double sum = 0;
  for (int64_t begin = 0; begin < v; begin += kSumChunk) {
    const int64_t end = std::min(v, begin + kSumChunk);
    const float chunk_max = RowMax(row + begin, end - begin);
    if (chunk_max > max) {
      if (sum > 0) sum *= std::exp(static_cast<double>(max) - chunk_max);
      max = chunk_max;
    }
    if (max == -std::numeric_limits<float>::infinity()) continue;  // all -inf so far
    sum += ExpSum(row, begin, end, max);
  }
  *max_out = max;
  *sum_out = sum;
}

// out[j] = scale · exp(row[j] − shift).
void ScaledExp(const float* row, int64_t v, float shift, float scale, float* out) {
  constexpr int L = cpu::kLanes<float>;
  int64_t j = 0;
  for (; j + L <= v; j += L)
    cpu::StoreVec(out + j, cpu::ExpVec(cpu::LoadVec(row + j) - shift) * scale);
  for (; j < v; ++j) out[j] = scale * std::exp(row[j] - shift);
}

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
      double sum = 0;
      if constexpr (std::is_same_v<T, float>) {
        MaxAndExpSum(row, v, &max, &sum);
      } else {
        for (int64_t j = 0; j < v; ++j) max = std::max(max, row[j]);
        for (int64_t j = 0; j < v; ++j) sum += std::exp(row[j] - max);
      }
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
      if constexpr (std::is_same_v<T, float>) {
        ScaledExp(row, v, row_lse, scale, grow);
      } else {
        for (int64_t j = 0; j < v; ++j) grow[j] = scale * std::exp(row[j] - row_lse);
      }
      grow[t] -= scale;
    }
  });
}

}  // namespace fam
