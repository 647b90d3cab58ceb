// CudaBackend: embedding gather and its deterministic scatter-add backward (kernels in
// cuda_embedding.cu), as cpu_embedding.cc. Ids were range-checked by the op.
#include <algorithm>
#include <numeric>
#include <vector>

#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_backend_internal.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {

void CudaBackend::EmbeddingForward(const Tensor& table, const Tensor& ids, const Tensor& out) {
  FAM_CHECK(table.dim() == 2, "embedding on cuda: table must be [V, D], got ", table.Describe());
  CheckContiguous("embedding", table);
  CheckContiguous("embedding", out);
  const int64_t d = table.shape()[1];
  const int64_t n = ids.numel();
  FAM_CHECK(out.numel() == n * d && out.dtype() == table.dtype(), "embedding on cuda: output ",
            out.Describe(), " does not match table ", table.Describe(), " and ", n, " ids");
  DeviceGuard guard(device_);
  LaunchEmbeddingForward(static_cast<int>(DTypeSize(table.dtype())), table.raw_data(), ids.dtype(),
                         ids.raw_data(), out.raw_data(), n, d, stream_);
}

void CudaBackend::EmbeddingBackward(const Tensor& ids, const Tensor& grad_out,
                                    const Tensor& grad_table) {
  FAM_CHECK(grad_table.dim() == 2, "embedding backward on cuda: grad table must be [V, D], got ",
            grad_table.Describe());
  CheckFloat("embedding backward", grad_table);
  CheckContiguous("embedding backward", grad_table);
  CheckContiguous("embedding backward", grad_out);
  const int64_t d = grad_table.shape()[1];
  const int64_t n = ids.numel();
  FAM_CHECK(grad_out.numel() == n * d && grad_out.dtype() == grad_table.dtype(),
            "embedding backward on cuda: ", grad_out.Describe(), " does not match ",
            grad_table.Describe());
  if (n == 0) return;
  DeviceGuard guard(device_);
  const std::vector<int64_t> id = ReadIndices(ids);
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

}  // namespace fam::cuda
