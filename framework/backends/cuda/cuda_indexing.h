// Launch geometry and N-d strided indexing shared by the CUDA kernels and their host-side setup.
// Plain C++ (host/device annotations only under nvcc), so the index arithmetic is unit-tested on
// machines without a GPU (tests/cuda_launch_test.cc).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "framework/backends/host_device.h"

namespace fam::cuda {

constexpr int kMaxDims = 8;                // rank limit of strided kernels after merging dimensions
constexpr int kThreads = 256;              // threads per block of elementwise kernels
constexpr int64_t kMaxBlocks = 65535 * 8;  // grid-stride loops cover the rest

// Blocks for a grid-stride loop over n elements with `threads` per block (at least 1).
inline int64_t BlocksFor(int64_t n, int threads = kThreads, int64_t max_blocks = kMaxBlocks) {
  if (n <= 0) return 1;
  return std::min<int64_t>((n + threads - 1) / threads, max_blocks);
}

// Maps a linear (row-major) element index of a shape to element offsets in K operands with their
// own strides. Built on the host by MakeIndexer, passed to kernels by value.
template <int K>
struct NdIndexer {
  int rank = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[K][kMaxDims] = {};

  FAM_HOST_DEVICE void Offsets(int64_t linear, int64_t* out) const {
    for (int k = 0; k < K; ++k) out[k] = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t size = sizes[d];
      const int64_t i = linear % size;
      linear /= size;
      for (int k = 0; k < K; ++k) out[k] += i * strides[k][d];
    }
  }
};

// Builds an indexer for `shape` with one stride vector per operand. Drops size-1 dimensions and
// merges neighbours that are contiguous with each other in every operand. Returns false when more
// than kMaxDims dimensions remain (the caller reports the error).
template <int K>
bool MakeIndexer(const std::vector<int64_t>& shape, const std::vector<int64_t>* const (&strides)[K],
                 NdIndexer<K>* out) {
  std::vector<int64_t> sizes;
  std::vector<std::vector<int64_t>> st(K);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    const bool merge = !sizes.empty() && [&] {
      for (int k = 0; k < K; ++k)
        if (st[k].back() != (*strides[k])[d] * shape[d]) return false;
      return true;
    }();
    if (merge) {
      sizes.back() *= shape[d];
      for (int k = 0; k < K; ++k) st[k].back() = (*strides[k])[d];
    } else {
      sizes.push_back(shape[d]);
      for (int k = 0; k < K; ++k) st[k].push_back((*strides[k])[d]);
    }
  }
  if (sizes.size() > static_cast<size_t>(kMaxDims)) return false;
  *out = NdIndexer<K>{};
  out->rank = static_cast<int>(sizes.size());
  for (int d = 0; d < out->rank; ++d) {
    out->sizes[d] = sizes[d];
    for (int k = 0; k < K; ++k) out->strides[k][d] = st[k][d];
  }
  return true;
}

}  // namespace fam::cuda
