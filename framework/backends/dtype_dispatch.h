// From a runtime dtype to the C++ type a kernel is instantiated for, one switch per family, shared
// by the CPU kernels and the CUDA launchers (plain C++17: nvcc compiles it too).
//   VisitFloat   f32, f64             the compute dtypes
//   VisitIndex   i32, i64             ids, targets, positions
//   VisitStorage every stored dtype   (bf16 as the caller's 16-bit type: fam::BF16 on the host,
//                                     cuda::Bf16Bits on the device)
// Each calls fn(T{}) and returns false for a dtype outside its family. Host code uses the
// Dispatch* forms, which throw fam::Error naming the operation instead.
#pragma once

#include <cstdint>

#include "framework/core/dtype.h"

#if !defined(__CUDACC__)
#include "framework/core/error.h"
#endif

namespace fam {

template <typename Fn>
bool VisitFloat(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      fn(float{});
      return true;
    case DType::kF64:
      fn(double{});
      return true;
    default:
      return false;
  }
}

template <typename Fn>
bool VisitIndex(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kI32:
      fn(int32_t{});
      return true;
    case DType::kI64:
      fn(int64_t{});
      return true;
    default:
      return false;
  }
}

template <typename Bf16, typename Fn>
bool VisitStorage(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      fn(float{});
      return true;
    case DType::kF64:
      fn(double{});
      return true;
    case DType::kBF16:
      fn(Bf16{});
      return true;
    case DType::kI32:
      fn(int32_t{});
      return true;
    case DType::kI64:
      fn(int64_t{});
      return true;
    case DType::kF16:
      return false;  // converted to f32 on load, never computed on
  }
  return false;
}

#if !defined(__CUDACC__)
template <typename Fn>
void DispatchFloat(DType dtype, const char* what, Fn&& fn) {
  if (!VisitFloat(dtype, fn))
    ThrowInvalid(what, ": unsupported dtype ", DTypeName(dtype), " (need f32 or f64)");
}

template <typename Fn>
void DispatchIndex(DType dtype, const char* what, Fn&& fn) {
  if (!VisitIndex(dtype, fn))
    ThrowInvalid(what, ": index dtype ", DTypeName(dtype), " is not i32 or i64");
}

template <typename Fn>
void DispatchStorage(DType dtype, Fn&& fn) {
  if (!VisitStorage<BF16>(dtype, fn))
    ThrowInvalid("f16 tensors are converted to f32 on load and not computed on");
}
#endif

}  // namespace fam
