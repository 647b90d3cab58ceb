// CUDA kernels: embedding row gather (bytewise, any storage dtype) and the deterministic
// scatter-add backward (positions grouped by id on the host; one thread per (id, column) sums its
// rows in order), as cpu_embedding.cc.
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

template <typename U, typename I>
__global__ void EmbeddingForwardKernel(const U* table, const I* ids, U* out, int64_t n, int64_t d) {
  FAM_CUDA_KERNEL_LOOP(idx, n * d) {
    const int64_t row = idx / d, col = idx % d;
    out[idx] = table[static_cast<int64_t>(ids[row]) * d + col];
  }
}

template <typename T>
__global__ void EmbeddingBackwardKernel(const int64_t* order, const int64_t* group_start,
                                        const int64_t* group_row, int64_t groups, const T* g,
                                        T* table, int64_t d) {
  FAM_CUDA_KERNEL_LOOP(idx, groups * d) {
    const int64_t grp = idx / d, col = idx % d;
    T* dst = table + group_row[grp] * d + col;
    T acc = *dst;
    for (int64_t k = group_start[grp]; k < group_start[grp + 1]; ++k) acc += g[order[k] * d + col];
    *dst = acc;
  }
}

}  // namespace

void LaunchEmbeddingForward(int elem_size, const void* table, DType id_dtype, const void* ids,
                            void* out, int64_t n, int64_t d, cudaStream_t stream) {
  if (n * d == 0) return;
  auto launch = [&](auto unit_tag) {
    using U = decltype(unit_tag);
    return VisitIndex(id_dtype, [&](auto itag) {
      using I = decltype(itag);
      EmbeddingForwardKernel<U, I><<<BlocksFor(n * d), kThreads, 0, stream>>>(
          static_cast<const U*>(table), static_cast<const I*>(ids), static_cast<U*>(out), n, d);
    });
  };
  bool ok = false;
  switch (elem_size) {
    case 2:
      ok = launch(uint16_t{});
      break;
    case 4:
      ok = launch(uint32_t{});
      break;
    case 8:
      ok = launch(uint64_t{});
      break;
    default:
      LaunchFailure("embedding (element size)", cudaErrorInvalidValue);
  }
  if (!ok) BadDType("embedding ids", id_dtype);
  CheckLaunch("embedding");
}

void LaunchEmbeddingBackward(DType dtype, const int64_t* order, const int64_t* group_start,
                             const int64_t* group_row, int64_t groups, const void* grad_out,
                             void* grad_table, int64_t d, cudaStream_t stream) {
  if (groups * d == 0) return;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    EmbeddingBackwardKernel<T><<<BlocksFor(groups * d), kThreads, 0, stream>>>(
        order, group_start, group_row, groups, static_cast<const T*>(grad_out),
        static_cast<T*>(grad_table), d);
  });
  if (!ok) BadDType("embedding backward", dtype);
  CheckLaunch("embedding backward");
}

}  // namespace fam::cuda
