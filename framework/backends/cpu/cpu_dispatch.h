// Helpers shared by the CPU kernels: value conversion between stored dtypes and strided N-d
// iteration (the dtype switches: backends/dtype_dispatch.h).
#pragma once

#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "framework/backends/dtype_dispatch.h"
#include "framework/core/tensor.h"

namespace fam::cpu {

template <typename T>
inline double LoadAsDouble(const T* p) {
  if constexpr (std::is_same_v<T, BF16>) {
    return static_cast<float>(*p);
  } else {
    return static_cast<double>(*p);
  }
}
template <typename Src, typename Dst>
inline Dst Convert(Src value) {
  if constexpr (std::is_same_v<Src, Dst>) {
    return value;
  } else if constexpr (std::is_same_v<Dst, BF16>) {
    return BF16(static_cast<float>(value));
  } else if constexpr (std::is_same_v<Src, BF16>) {
    return static_cast<Dst>(static_cast<float>(value));
  } else {
    return static_cast<Dst>(value);
  }
}

// The values of a contiguous i32/i64 index tensor as int64 (their range was checked by the op:
// ops::CheckIndexRange).
inline std::vector<int64_t> IndicesAsInt64(const Tensor& indices, const char* op) {
  FAM_ASSERT(indices.is_contiguous());
  std::vector<int64_t> out(static_cast<size_t>(indices.numel()));
  DispatchIndex(indices.dtype(), op, [&](auto tag) {
    using I = decltype(tag);
    const I* p = indices.kernel_data<I>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  });
  return out;
}

// Iterates over the elements of `shape`, giving for each "row" of the innermost dimension the
// element offsets of every operand. fn(offsets[], inner_len, inner_strides[]) is called per row.
template <int N, typename Fn>
void ForEachRow(const Shape& shape, const std::array<const Strides*, N>& strides, Fn&& fn) {
  const int rank = static_cast<int>(shape.size());
  std::array<int64_t, N> base{};
  if (rank == 0) {
    std::array<int64_t, N> inner{};
    fn(base, int64_t{1}, inner);
    return;
  }
  if (NumElements(shape) == 0) return;
  std::array<int64_t, N> inner;
  for (int k = 0; k < N; ++k) inner[k] = (*strides[k])[rank - 1];
  const int64_t inner_len = shape[rank - 1];
  std::vector<int64_t> index(rank, 0);
  int64_t rows = NumElements(shape) / inner_len;
  for (int64_t r = 0; r < rows; ++r) {
    fn(base, inner_len, inner);
    for (int d = rank - 2; d >= 0; --d) {
      ++index[d];
      for (int k = 0; k < N; ++k) base[k] += (*strides[k])[d];
      if (index[d] < shape[d]) break;
      for (int k = 0; k < N; ++k) base[k] -= (*strides[k])[d] * shape[d];
      index[d] = 0;
    }
  }
}

}  // namespace fam::cpu
