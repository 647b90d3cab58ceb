#include "framework/backends/cpu/cpu_backend.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {

namespace {

// FAM_POISON_ALLOC=1 fills new host memory with 0xFF bytes (NaN for floats) so a kernel that reads
// memory it never wrote shows up in tests as NaNs instead of lucky zeros. The test suite sets it.
bool PoisonAllocations() {
  static const bool poison = [] {
    const char* v = std::getenv("FAM_POISON_ALLOC");
    return v != nullptr && v[0] == '1';
  }();
  return poison;
}

}  // namespace

CpuBackend::CpuBackend() {
  // Keep freed activation buffers in the heap instead of returning them to the kernel with munmap:
  // training allocates and frees the same large sizes every step, and fresh pages cost a page fault
  // and a kernel-side clear each (measured: ~12% of a tiny-model training step).
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

void* CpuBackend::Allocate(size_t nbytes) {
  // 64-byte alignment for vector loads. Memory is not initialised: Tensor::Zeros fills explicitly.
  size_t rounded = (nbytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) {
    ThrowError(absl::StatusCode::kResourceExhausted, "out of host memory allocating ", nbytes,
               " bytes");
  }
  if (PoisonAllocations()) std::memset(p, 0xFF, rounded);
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
  DispatchStorage(src.dtype(), [&](auto src_tag) {
    using S = decltype(src_tag);
    DispatchStorage(dst.dtype(), [&](auto dst_tag) {
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
  DispatchStorage(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T v = cpu::Convert<double, T>(value);
    T* p = static_cast<T*>(dst.raw_data());
    const int64_t n = dst.numel();
#pragma omp parallel for if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) p[i] = v;
  });
}

}  // namespace fam
