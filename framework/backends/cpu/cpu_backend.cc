#include "framework/backends/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

void* CpuBackend::Allocate(size_t nbytes) {
  // 64-byte alignment for vector loads; calloc-like zeroing so Zeros() is free of a second pass.
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) {
    ThrowError(absl::StatusCode::kResourceExhausted, "out of host memory allocating ", nbytes,
               " bytes");
  }
  std::memset(p, 0, rounded);
  return p;
}

void CpuBackend::Free(void* data, size_t) { std::free(data); }
void CpuBackend::CopyFromHost(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
void CpuBackend::CopyToHost(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }

void CpuBackend::Copy(const Tensor& src, const Tensor& dst) {
  FAM_CHECK(src.shape() == dst.shape(), "copy between shapes ", ShapeString(src.shape()), " and ",
            ShapeString(dst.shape()));
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());
    return;
  }
  cpu::DispatchAll(src.dtype(), [&](auto src_tag) {
    using S = decltype(src_tag);
    cpu::DispatchAll(dst.dtype(), [&](auto dst_tag) {
      using D = decltype(dst_tag);
      const S* s = static_cast<const S*>(src.raw_data());
      D* d = static_cast<D*>(dst.raw_data());
      cpu::ForEachRow<2>(src.shape(), {&src.strides(), &dst.strides()},
                         [&](const auto& base, int64_t n, const auto& inner) {
                           const S* sp = s + base[0];
                           D* dp = d + base[1];
                           for (int64_t i = 0; i < n; ++i)
                             dp[i * inner[1]] = cpu::Convert<S, D>(sp[i * inner[0]]);
                         });
    });
  });
}

void CpuBackend::Fill(const Tensor& dst, double value) {
  FAM_ASSERT(dst.is_contiguous());
  cpu::DispatchAll(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T v = cpu::Convert<double, T>(value);
    T* p = static_cast<T*>(dst.raw_data());
    const int64_t n = dst.numel();
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

}  // namespace fam
