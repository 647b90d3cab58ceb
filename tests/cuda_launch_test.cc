// Host-side launch geometry and N-d strided indexing of the CUDA kernels (cuda_indexing.h), and
// the row-major -> column-major GEMM mapping given to cuBLAS (cuda_gemm_layout.h), checked on any
// machine against direct enumeration / an emulation of cuBLAS's column-major semantics.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "framework/backends/cuda/cuda_gemm_layout.h"
#include "framework/backends/cuda/cuda_indexing.h"

namespace fam::cuda {
namespace {

TEST(CudaLaunchTest, BlocksForGridStrideLoops) {
  EXPECT_EQ(BlocksFor(0), 1);
  EXPECT_EQ(BlocksFor(1), 1);
  EXPECT_EQ(BlocksFor(256), 1);
  EXPECT_EQ(BlocksFor(257), 2);
  EXPECT_EQ(BlocksFor(int64_t{1} << 40), kMaxBlocks);
  EXPECT_EQ(BlocksFor(1000, 100, 7), 7);
}

// Row-major enumeration of `shape` with per-operand strides, the reference for the indexer.
std::vector<std::vector<int64_t>> Enumerate(const std::vector<int64_t>& shape,
                                            const std::vector<std::vector<int64_t>>& strides) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<std::vector<int64_t>> out;
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> off(strides.size(), 0);
    for (size_t k = 0; k < strides.size(); ++k)
      for (size_t d = 0; d < shape.size(); ++d) off[k] += idx[d] * strides[k][d];
    out.push_back(off);
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

template <int K>
void ExpectMatches(const std::vector<int64_t>& shape,
                   const std::vector<std::vector<int64_t>>& strides, int expected_rank) {
  const std::vector<int64_t>* ptrs[K];
  for (int k = 0; k < K; ++k) ptrs[k] = &strides[k];
  NdIndexer<K> index;
  ASSERT_TRUE(MakeIndexer<K>(shape, ptrs, &index));
  EXPECT_EQ(index.rank, expected_rank);
  const auto expected = Enumerate(shape, strides);
  for (size_t i = 0; i < expected.size(); ++i) {
    int64_t off[K];
    index.Offsets(static_cast<int64_t>(i), off);
    for (int k = 0; k < K; ++k) ASSERT_EQ(off[k], expected[i][k]) << "element " << i << " op " << k;
  }
}

TEST(CudaLaunchTest, ContiguousDimensionsMerge) {
  ExpectMatches<2>({2, 3, 4}, {{12, 4, 1}, {12, 4, 1}}, 1);
}

TEST(CudaLaunchTest, TransposedSourceKeepsDimensions) {
  // src is a [4, 3] tensor viewed transposed as [3, 4]; dst contiguous.
  ExpectMatches<2>({3, 4}, {{1, 3}, {4, 1}}, 2);
}

TEST(CudaLaunchTest, BroadcastAndSizeOneDimensions) {
  // a: [2, 1, 5] expanded to [2, 3, 5] (stride 0), b: row vector [5] expanded, out contiguous.
  ExpectMatches<3>({2, 3, 1, 5}, {{5, 0, 7, 1}, {0, 0, 0, 1}, {15, 5, 5, 1}}, 3);
}

TEST(CudaLaunchTest, PermutedSlice) {
  // A [4, 6, 5] tensor sliced to [4, 3, 5] with an offset handled outside, then permuted (2, 0, 1).
  ExpectMatches<2>({5, 4, 3}, {{1, 30, 5}, {12, 3, 1}}, 3);
}

TEST(CudaLaunchTest, ScalarAndEmptyRank) {
  const std::vector<int64_t> none;
  const std::vector<int64_t>* ptrs[1] = {&none};
  NdIndexer<1> index;
  ASSERT_TRUE(MakeIndexer<1>({}, ptrs, &index));
  int64_t off = -1;
  index.Offsets(0, &off);
  EXPECT_EQ(off, 0);
}

TEST(CudaLaunchTest, TooManyDimensionsIsReported) {
  // Nine dimensions of size 2 whose strides never line up: nothing can merge.
  std::vector<int64_t> shape(9, 2), strides;
  for (int d = 0; d < 9; ++d) strides.push_back(int64_t{3} << (2 * (8 - d)));
  const std::vector<int64_t>* ptrs[1] = {&strides};
  NdIndexer<1> index;
  EXPECT_FALSE(MakeIndexer<1>(shape, ptrs, &index));
  // Eight such dimensions fit.
  shape.pop_back();
  strides.pop_back();
  EXPECT_TRUE(MakeIndexer<1>(shape, ptrs, &index));
}

// Element (r, c) of op(X) for a column-major operand starting at x[base].
double OpAt(const std::vector<double>& x, int64_t base, const ColumnMajorOperand& o, int64_t r,
            int64_t c) {
  return o.transpose ? x[base + c + r * o.ld] : x[base + r + c * o.ld];
}

// The row-major GEMM through the column-major mapping, computed as cuBLAS defines it, equals the
// row-major product computed directly.
TEST(CudaLaunchTest, GemmColumnMajorMappingMatchesRowMajorProduct) {
  const int64_t batch = 2, m = 3, n = 5, k = 4;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> dist(-1, 1);
  for (int trans = 0; trans < 4; ++trans) {
    const bool ta = trans & 1, tb = trans & 2;
    const int64_t lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 2, ldc = n + 3;
    const int64_t sa = (ta ? k : m) * lda + 1, sb = (tb ? n : k) * ldb, sc = m * ldc + 2;
    std::vector<double> a(batch * sa), b(batch * sb), c(batch * sc, 0.0);
    for (double& v : a) v = dist(rng);
    for (double& v : b) v = dist(rng);
    const ColumnMajorGemm g = ToColumnMajor(ta, tb, m, n, k, lda, ldb, ldc, sa, sb, sc);
    // cuBLAS's own requirements on the description.
    ASSERT_EQ(g.first.transpose ? g.first.cols : g.first.rows, g.m);
    ASSERT_EQ(g.first.transpose ? g.first.rows : g.first.cols, g.k);
    ASSERT_EQ(g.second.transpose ? g.second.cols : g.second.rows, g.k);
    ASSERT_EQ(g.second.transpose ? g.second.rows : g.second.cols, g.n);
    ASSERT_GE(g.first.ld, g.first.rows);
    ASSERT_GE(g.second.ld, g.second.rows);
    ASSERT_GE(g.ldc, g.m);
    // Column-major D[i + j*ldc] = sum_p op(first)(i, p) * op(second)(p, j); first reads B.
    for (int64_t bt = 0; bt < batch; ++bt)
      for (int64_t i = 0; i < g.m; ++i)
        for (int64_t j = 0; j < g.n; ++j) {
          double acc = 0;
          for (int64_t p = 0; p < g.k; ++p)
            acc += OpAt(b, bt * g.first.batch_stride, g.first, i, p) *
                   OpAt(a, bt * g.second.batch_stride, g.second, p, j);
          c[bt * g.stride_c + i + j * g.ldc] = acc;
        }
    // Row-major reference: C[i, j] = sum_p A(i, p) B(p, j).
    for (int64_t bt = 0; bt < batch; ++bt)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double want = 0;
          for (int64_t p = 0; p < k; ++p) {
            const double av = ta ? a[bt * sa + p * lda + i] : a[bt * sa + i * lda + p];
            const double bv = tb ? b[bt * sb + j * ldb + p] : b[bt * sb + p * ldb + j];
            want += av * bv;
          }
          ASSERT_NEAR(c[bt * sc + i * ldc + j], want, 1e-12)
              << "trans " << trans << " batch " << bt << " (" << i << ", " << j << ")";
        }
  }
}

}  // namespace
}  // namespace fam::cuda
