// Internal to the CUDA backend's method files (cuda_backend.cc and the cuda_<family>.cc files that
// mirror the CPU backend's cpu_<family>.cc): argument checks with the backend's messages, the
// strided indexer with its dimension check, and the scratch memory type.
#pragma once

#include <vector>

#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_indexing.h"
#include "framework/core/tensor.h"

namespace fam::cuda {

// f32 or f64 (the compute dtypes of every kernel but copy, fill and the embedding gather).
inline void CheckFloat(const char* what, const Tensor& t) {
  FAM_CHECK(t.dtype() == DType::kF32 || t.dtype() == DType::kF64, what, " on cuda: unsupported ",
            t.Describe(), " (need f32 or f64)");
}

inline void CheckContiguous(const char* what, const Tensor& t) {
  FAM_CHECK(t.is_contiguous(), what, " on cuda: ", t.Describe(), " must be contiguous");
}

inline void CheckSame(const char* what, const Tensor& ref, const Tensor& t) {
  FAM_CHECK(t.dtype() == ref.dtype() && t.numel() == ref.numel(), what, " on cuda: ", t.Describe(),
            " does not match ", ref.Describe());
}

template <int K>
inline NdIndexer<K> IndexerFor(const char* what, const Shape& shape,
                               const std::vector<int64_t>* const (&strides)[K]) {
  NdIndexer<K> index;
  FAM_CHECK(MakeIndexer<K>(shape, strides, &index), what, " on cuda: shape ", ShapeString(shape),
            " has more than ", kMaxDims, " dimensions after merging contiguous ones");
  return index;
}

// A contiguous [N, D] f32/f64 tensor: *rows = N, *cols = D.
inline void RowsOf(const char* what, const Tensor& x, int64_t* rows, int64_t* cols) {
  FAM_CHECK(x.dim() == 2, what, " on cuda: expected a [N, D] tensor, got ", x.Describe());
  CheckContiguous(what, x);
  CheckFloat(what, x);
  *rows = x.shape()[0];
  *cols = x.shape()[1];
}

// Device memory that returns to the allocator when it goes out of scope (after the kernels using it
// are queued: the single stream orders any reuse after them).
class CudaBackend::Scratch {
 public:
  Scratch(CachingAllocator& allocator, size_t nbytes)
      : allocator_(allocator), ptr_(allocator.Allocate(nbytes)) {}
  ~Scratch() { allocator_.Free(ptr_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  CachingAllocator& allocator_;
  void* ptr_;
};

}  // namespace fam::cuda
