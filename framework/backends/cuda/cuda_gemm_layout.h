// How a row-major batched GEMM (GemmArgs) is expressed in cuBLAS's column-major convention:
// C^T [n x m] = op(B)^T [n x k] · op(A)^T [k x m], because a row-major matrix with leading
// dimension ld is the column-major matrix of its transpose with the same ld. Plain C++ so the
// mapping is unit-tested on machines without a GPU (tests/cuda_launch_test.cc emulates cuBLAS).
#pragma once

#include <cstdint>

namespace fam::cuda {

// One column-major operand as cuBLAS sees it: stored rows x cols with leading dimension ld,
// used transposed when `transpose`; batch_stride in elements.
struct ColumnMajorOperand {
  bool transpose = false;
  int64_t rows = 0, cols = 0, ld = 0, batch_stride = 0;
};

// D = op(first) · op(second): [m x k] · [k x n] -> [m x n] with leading dimension ldc.
// `first` reads the row-major B pointer, `second` the row-major A pointer.
struct ColumnMajorGemm {
  int64_t m = 0, n = 0, k = 0;
  ColumnMajorOperand first, second;
  int64_t ldc = 0, stride_c = 0;
};

inline ColumnMajorGemm ToColumnMajor(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                                     int64_t lda, int64_t ldb, int64_t ldc, int64_t stride_a,
                                     int64_t stride_b, int64_t stride_c) {
  ColumnMajorGemm g;
  g.m = n;
  g.n = m;
  g.k = k;
  // Row-major B is [k, n] (or [n, k] when trans_b): column-major that is [n, k] (or [k, n]).
  g.first.transpose = trans_b;
  g.first.rows = trans_b ? k : n;
  g.first.cols = trans_b ? n : k;
  g.first.ld = ldb;
  g.first.batch_stride = stride_b;
  // Row-major A is [m, k] (or [k, m] when trans_a): column-major [k, m] (or [m, k]).
  g.second.transpose = trans_a;
  g.second.rows = trans_a ? m : k;
  g.second.cols = trans_a ? k : m;
  g.second.ld = lda;
  g.second.batch_stride = stride_a;
  g.ldc = ldc;
  g.stride_c = stride_c;
  return g;
}

}  // namespace fam::cuda
