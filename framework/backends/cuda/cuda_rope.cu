// CUDA kernels: rotate-half RoPE (angles and their sin/cos in double, as cpu_rope.cc; frequencies
// from formula::RopeInverseFrequency).
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

// One thread per (b, h, t, i < D/2) pair of rotated elements.
template <typename T, typename P>
__global__ void RopeKernel(const T* x, const P* positions, RopeSpec rope, double sign, T* out,
                           int64_t b, int64_t h, int64_t t, int64_t d) {
  const int64_t half = d / 2;
  const int64_t total = b * h * t * half;
  FAM_CUDA_KERNEL_LOOP(idx, total) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // (bi * h + hi) * t + ti
    const int64_t ti = row % t;
    const int64_t bi = row / (h * t);
    const double pos = static_cast<double>(positions[bi * t + ti]);
    const double inv_freq = formula::RopeInverseFrequency(rope, i, d);
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

}  // namespace

void LaunchRope(DType dtype, const void* x, DType position_dtype, const void* positions,
                const RopeSpec& rope, bool inverse, void* out, int64_t b, int64_t h, int64_t t,
                int64_t d, cudaStream_t stream) {
  const int64_t total = b * h * t * (d / 2);
  if (total == 0) return;
  bool index_ok = false;
  const bool ok = VisitFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    index_ok = VisitIndex(position_dtype, [&](auto ptag) {
      using P = decltype(ptag);
      RopeKernel<T, P><<<BlocksFor(total), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const P*>(positions), rope, inverse ? -1.0 : 1.0,
          static_cast<T*>(out), b, h, t, d);
    });
  });
  if (!ok) BadDType("rope", dtype);
  if (!index_ok) BadDType("rope positions", position_dtype);
  CheckLaunch("rope");
}

}  // namespace fam::cuda
