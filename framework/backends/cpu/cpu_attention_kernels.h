// The small dense kernels under the CPU attention (cpu_attention.cc): 256-bit vectors through the
// GCC/Clang vector extension, a register-blocked micro-GEMM over operands read through two strides
// (SmallGemm), and a vectorised exp with its shifted row sum (ExpShiftSum; ExpVec also serves the
// fused cross-entropy, cpu_cross_entropy.cc). Internal to the CPU
// backend; everything is inline so each kernel file compiles its own copy with its own flags.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

namespace fam::cpu {

// ---- vectors (GCC/Clang vector extension: 256-bit, two 128-bit halves without AVX) ----

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
typedef int32_t VecI32 __attribute__((vector_size(32)));

template <typename T>
constexpr int kLanes = 32 / static_cast<int>(sizeof(T));
template <typename T>
constexpr int kCols = 2 * kLanes<T>;  // columns of one micro-kernel tile: two vectors
constexpr int kRows = 6;              // rows of one micro-kernel tile

inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t CeilDiv(int64_t x, int64_t m) { return (x + m - 1) / m; }

template <typename T>
inline Vec<T> LoadVec(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void StoreVec(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

// ---- small dense kernels ----

// A matrix operand read through two strides: element (i, p) is at data[i·rs + p·cs].
template <typename T>
struct MatA {
  const T* data;
  int64_t rs, cs;
  MatA Rows(int64_t i0) const { return {data + i0 * rs, rs, cs}; }
};
template <typename T>
MatA<T> RowMajor(const T* data, int64_t ld) {
  return {data, ld, 1};
}
template <typename T>
MatA<T> Transposed(const T* data, int64_t ld) {
  return {data, 1, ld};
}

// c[i][0, kCols) (+)= sum_p a(i, p) · b[p·ldb + 0, kCols) for i < R; 2·R vector accumulators.
template <typename T, int R>
inline void MicroGemm(int64_t k, MatA<T> a, const T* b, int64_t ldb, T* c, int64_t ldc,
                      bool accumulate) {
  constexpr int L = kLanes<T>;
  Vec<T> acc0[R], acc1[R];
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = Vec<T>{};
  for (int64_t p = 0; p < k; ++p) {
    const Vec<T> b0 = LoadVec(b + p * ldb), b1 = LoadVec(b + p * ldb + L);
    const T* ap = a.data + p * a.cs;
    for (int i = 0; i < R; ++i) {
      const T av = ap[i * a.rs];
      acc0[i] += av * b0;
      acc1[i] += av * b1;
    }
  }
  for (int i = 0; i < R; ++i) {
    T* crow = c + i * ldc;
    if (accumulate) {
      acc0[i] += LoadVec(crow);
      acc1[i] += LoadVec(crow + L);
    }
    StoreVec(crow, acc0[i]);
    StoreVec(crow + L, acc1[i]);
  }
}

// MicroGemm for the last r < kRows rows.
template <typename T, int R = kRows - 1>
void MicroGemmTail(int64_t r, int64_t k, MatA<T> a, const T* b, int64_t ldb, T* c, int64_t ldc,
                   bool accumulate) {
  if constexpr (R > 0) {
    if (r == R) return MicroGemm<T, R>(k, a, b, ldb, c, ldc, accumulate);
    MicroGemmTail<T, R - 1>(r, k, a, b, ldb, c, ldc, accumulate);
  }
}

// The same for the last nc < kCols columns, in plain loops.
template <typename T>
void EdgeGemm(int64_t m, int64_t k, MatA<T> a, const T* b, int64_t ldb, T* c, int64_t ldc, int nc,
              bool accumulate) {
  T acc[kCols<T>];
  for (int64_t i = 0; i < m; ++i) {
    for (int j = 0; j < nc; ++j) acc[j] = T(0);
    for (int64_t p = 0; p < k; ++p) {
      const T av = a.data[i * a.rs + p * a.cs];
      const T* brow = b + p * ldb;
      for (int j = 0; j < nc; ++j) acc[j] += av * brow[j];
    }
    T* crow = c + i * ldc;
    for (int j = 0; j < nc; ++j) crow[j] = accumulate ? crow[j] + acc[j] : acc[j];
  }
}

// C[m × n] (+)= A[m × k] · B[k × n]; B and C row-major with leading dimensions ldb, ldc.
template <typename T>
void SmallGemm(int64_t m, int64_t n, int64_t k, MatA<T> a, const T* b, int64_t ldb, T* c,
               int64_t ldc, bool accumulate) {
  constexpr int C = kCols<T>;
  for (int64_t j0 = 0; j0 < n; j0 += C) {
    const int nc = static_cast<int>(std::min<int64_t>(C, n - j0));
    if (nc < C) {
      EdgeGemm(m, k, a, b + j0, ldb, c + j0, ldc, nc, accumulate);
      continue;
    }
    int64_t i0 = 0;
    for (; i0 + kRows <= m; i0 += kRows)
      MicroGemm<T, kRows>(k, a.Rows(i0), b + j0, ldb, c + i0 * ldc + j0, ldc, accumulate);
    if (i0 < m)
      MicroGemmTail<T>(m - i0, k, a.Rows(i0), b + j0, ldb, c + i0 * ldc + j0, ldc, accumulate);
  }
}

// exp of 8 floats: 2^k · poly(r), x = k·ln2 + r, |r| <= ln2/2, degree-7 Taylor polynomial
// (relative error ~1e-7). 0 below -87 (and for -inf).
inline Vec<float> ExpVec(Vec<float> x) {
  using V = Vec<float>;
  const V lo = V{} - 87.0f, hi = V{} + 88.0f;
  const VecI32 tiny = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V t = x * 1.44269504088896341f;
  const V kf = (t + 12582912.0f) - 12582912.0f;  // round to nearest
  const V r = (x - kf * 0.693359375f) - kf * -2.12194440e-4f;
  V p = V{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const VecI32 bits = (__builtin_convertvector(kf, VecI32) + 127) << 23;
  const V y = p * std::bit_cast<V>(bits);
  return tiny ? V{} : y;
}

// x[c] = exp(x[c] - shift) for c < n; returns their sum.
template <typename T>
T ExpShiftSum(T* x, int64_t n, T shift) {
  if constexpr (std::is_same_v<T, float>) {
    constexpr int L = kLanes<float>;
    Vec<float> acc{};
    int64_t c = 0;
    for (; c + L <= n; c += L) {
      const Vec<float> e = ExpVec(LoadVec(x + c) - shift);
      StoreVec(x + c, e);
      acc += e;
    }
    if (c < n) {
      float tail[L];
      for (int i = 0; i < L; ++i)
        tail[i] = c + i < n ? x[c + i] : -std::numeric_limits<float>::infinity();
      const Vec<float> e = ExpVec(LoadVec(tail) - shift);
      StoreVec(tail, e);
      for (int i = 0; c + i < n; ++i) x[c + i] = tail[i];
      acc += e;
    }
    float sum = 0;
    for (int i = 0; i < L; ++i) sum += acc[i];
    return sum;
  } else {
    T sum = 0;
    for (int64_t c = 0; c < n; ++c) sum += (x[c] = std::exp(x[c] - shift));
    return sum;
  }
}

}  // namespace fam::cpu
