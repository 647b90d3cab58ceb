// CUDA kernels: rotate-half RoPE (angles and their sin/cos in double, as cpu_rope.cc), embedding
// row gather (bytewise, any storage dtype) and the deterministic embedding scatter-add backward
// (positions grouped by id on the host; one thread per (id, column) sums its rows in order).
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

// One thread per (b, h, t, i < D/2) pair of rotated elements.
template <typename T, typename P>
__global__ void RopeKernel(const T* x, const P* positions, double base, double sign, T* out,
                           int64_t b, int64_t h, int64_t t, int64_t d) {
  const int64_t half = d / 2;
  const int64_t total = b * h * t * half;
  FAM_CUDA_KERNEL_LOOP(idx, total) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // (bi * h + hi) * t + ti
    const int64_t ti = row % t;
    const int64_t bi = row / (h * t);
    const double pos = static_cast<double>(positions[bi * t + ti]);
    const double inv_freq = pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    const double angle = pos * inv_freq;
    const T c = static_cast<T>(cos(angle));
    const T s = static_cast<T>(sign * sin(angle));
    const T* a = x + row * d;
    T* o = out + row * d;
    const T av = a[i], bv = a[i + half];
    o[i] = av * c - bv * s;
    o[i + half] = bv * c + av * s;
  }
}

template <typename U, typename I>
__global__ void EmbeddingForwardKernel(const U* table, const I* ids, U* out, int64_t n,
                                       int64_t d) {
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

template <typename Fn>
bool DispatchIndex(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kI32: fn(int32_t{}); return true;
    case DType::kI64: fn(int64_t{}); return true;
    default: return false;
  }
}

}  // namespace

void LaunchRope(DType dtype, const void* x, DType position_dtype, const void* positions,
                double base, bool inverse, void* out, int64_t b, int64_t h, int64_t t, int64_t d,
                cudaStream_t stream) {
  const int64_t total = b * h * t * (d / 2);
  if (total == 0) return;
  bool index_ok = false;
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    index_ok = DispatchIndex(position_dtype, [&](auto ptag) {
      using P = decltype(ptag);
      RopeKernel<T, P><<<BlocksFor(total), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const P*>(positions), base,
          inverse ? -1.0 : 1.0, static_cast<T*>(out), b, h, t, d);
    });
  });
  if (!ok) BadDType("rope", dtype);
  if (!index_ok) BadDType("rope positions", position_dtype);
  CheckLaunch("rope");
}

void LaunchEmbeddingForward(int elem_size, const void* table, DType id_dtype, const void* ids,
                            void* out, int64_t n, int64_t d, cudaStream_t stream) {
  if (n * d == 0) return;
  auto launch = [&](auto unit_tag) {
    using U = decltype(unit_tag);
    return DispatchIndex(id_dtype, [&](auto itag) {
      using I = decltype(itag);
      EmbeddingForwardKernel<U, I><<<BlocksFor(n * d), kThreads, 0, stream>>>(
          static_cast<const U*>(table), static_cast<const I*>(ids), static_cast<U*>(out), n, d);
    });
  };
  bool ok = false;
  switch (elem_size) {
    case 2: ok = launch(uint16_t{}); break;
    case 4: ok = launch(uint32_t{}); break;
    case 8: ok = launch(uint64_t{}); break;
    default: LaunchFailure("embedding (element size)", cudaErrorInvalidValue);
  }
  if (!ok) BadDType("embedding ids", id_dtype);
  CheckLaunch("embedding");
}

void LaunchEmbeddingBackward(DType dtype, const int64_t* order, const int64_t* group_start,
                             const int64_t* group_row, int64_t groups, const void* grad_out,
                             void* grad_table, int64_t d, cudaStream_t stream) {
  if (groups * d == 0) return;
  const bool ok = DispatchFloatDevice(dtype, [&](auto tag) {
    using T = decltype(tag);
    EmbeddingBackwardKernel<T><<<BlocksFor(groups * d), kThreads, 0, stream>>>(
        order, group_start, group_row, groups, static_cast<const T*>(grad_out),
        static_cast<T*>(grad_table), d);
  });
  if (!ok) BadDType("embedding backward", dtype);
  CheckLaunch("embedding backward");
}

}  // namespace fam::cuda
