// CPU kernels: embedding row gather and its scatter-add backward. The gather copies rows bytewise,
// so it serves every storage dtype (bf16 tables are gathered without an f32 copy of the table).
// The backward groups positions by id and lets one thread sum each id's rows in position order:
// race-free and deterministic.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace

void CpuBackend::EmbeddingForward(const Tensor& table, const Tensor& ids, const Tensor& out) {
  FAM_ASSERT(table.dim() == 2 && table.is_contiguous() && out.is_contiguous());
  const int64_t d = table.shape()[1];
  const int64_t n = ids.numel();
  FAM_ASSERT(out.numel() == n * d && out.dtype() == table.dtype());
  const std::vector<int64_t> id = cpu::IndicesAsInt64(ids, "embedding");
  const size_t row_bytes = static_cast<size_t>(d) * DTypeSize(table.dtype());
  const char* src = static_cast<const char*>(table.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
#pragma omp parallel for if (n * d > kParallelGrain)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(dst + i * row_bytes, src + id[i] * row_bytes, row_bytes);
}

void CpuBackend::EmbeddingBackward(const Tensor& ids, const Tensor& grad_out,
                                   const Tensor& grad_table) {
  FAM_ASSERT(grad_table.dim() == 2 && grad_table.is_contiguous() && grad_out.is_contiguous());
  const int64_t d = grad_table.shape()[1];
  const int64_t n = ids.numel();
  FAM_ASSERT(grad_out.numel() == n * d && grad_out.dtype() == grad_table.dtype());
  const std::vector<int64_t> id = cpu::IndicesAsInt64(ids, "embedding");
  // Positions sorted by (id, position); groups of equal ids are summed by one thread each.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return id[a] < id[b]; });
  std::vector<int64_t> group_start;
  for (int64_t i = 0; i < n; ++i)
    if (i == 0 || id[order[i]] != id[order[i - 1]]) group_start.push_back(i);
  const int64_t groups = static_cast<int64_t>(group_start.size());
  group_start.push_back(n);
  DispatchFloat(grad_table.dtype(), "embedding backward", [&](auto tag) {
    using T = decltype(tag);
    const T* pg = grad_out.kernel_data<T>();
    T* pt = grad_table.kernel_data<T>();
#pragma omp parallel for schedule(dynamic, 16) if (n * d > kParallelGrain)
    for (int64_t g = 0; g < groups; ++g) {
      T* dst = pt + id[order[group_start[g]]] * d;
      for (int64_t k = group_start[g]; k < group_start[g + 1]; ++k) {
        const T* src = pg + order[k] * d;
        for (int64_t j = 0; j < d; ++j) dst[j] += src[j];
      }
    }
  });
}

}  // namespace fam
