// CPU kernel: rotate-half rotary position embedding. Angles pos·RopeInverseFrequency(i) and their
// sin/cos are computed in double (positions may be negative or ~10^6), once per (batch, position)
// and shared by all heads.
#include <cmath>
#include <vector>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

constexpr int64_t kParallelGrain = 1 << 14;

int64_t PositionAt(const Tensor& positions, int64_t i) {
  if (positions.dtype() == DType::kI64) return positions.kernel_data<int64_t>()[i];
  return positions.kernel_data<int32_t>()[i];
}

}  // namespace

void CpuBackend::Rope(const Tensor& x, const Tensor& positions, const RopeSpec& rope, bool inverse,
                      const Tensor& out) {
  FAM_ASSERT(x.dim() == 4 && x.is_contiguous() && out.shape() == x.shape() && out.is_contiguous());
  const int64_t b = x.shape()[0], h = x.shape()[1], t = x.shape()[2], d = x.shape()[3];
  FAM_CHECK(d % 2 == 0, "rope: head dim must be even, got ", x.Describe());
  FAM_ASSERT(positions.dim() == 2 && positions.shape()[0] == b && positions.shape()[1] == t &&
             positions.is_contiguous());
  FAM_CHECK(positions.dtype() == DType::kI64 || positions.dtype() == DType::kI32,
            "rope: positions must be i32 or i64, got ", positions.Describe());
  const int64_t half = d / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[i] = formula::RopeInverseFrequency(rope, i, d);
  const double sign = inverse ? -1.0 : 1.0;
  DispatchFloat(x.dtype(), "rope", [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.kernel_data<T>();
    T* po = out.kernel_data<T>();
#pragma omp parallel if (x.numel() > kParallelGrain)
    {
      std::vector<T> cos_v(static_cast<size_t>(half)), sin_v(static_cast<size_t>(half));
#pragma omp for
      for (int64_t bt = 0; bt < b * t; ++bt) {
        const int64_t bi = bt / t, ti = bt % t;
        const double pos = static_cast<double>(PositionAt(positions, bt));
        for (int64_t i = 0; i < half; ++i) {
          const double angle = pos * inv_freq[i];
          cos_v[i] = static_cast<T>(std::cos(angle));
          sin_v[i] = static_cast<T>(sign * std::sin(angle));
        }
        for (int64_t hi = 0; hi < h; ++hi) {
          const int64_t row = ((bi * h + hi) * t + ti) * d;
          const T* a = px + row;
          const T* bh = a + half;
          T* oa = po + row;
          T* ob = oa + half;
          for (int64_t i = 0; i < half; ++i) {
            const T av = a[i], bv = bh[i];
            oa[i] = av * cos_v[i] - bv * sin_v[i];
            ob[i] = bv * cos_v[i] + av * sin_v[i];
          }
        }
      }
    }
  });
}

}  // namespace fam
