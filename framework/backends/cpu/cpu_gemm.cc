// CPU GEMM kernels.
#include "framework/backends/cpu/cpu_gemm.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

#ifdef FAM_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace fam::cpu {
namespace {

template <typename T>
void GemmTiledTyped(const GemmArgs& g) {
  const T* A = g.a.kernel_data<T>();
  const T* B = g.b.kernel_data<T>();
  T* C = g.c.kernel_data<T>();
  constexpr int64_t kTileM = 64, kTileN = 256, kTileK = 256;
  const T alpha = static_cast<T>(g.alpha), beta = static_cast<T>(g.beta);
  const int64_t tiles_m = (g.m + kTileM - 1) / kTileM;
  const int64_t tiles_n = (g.n + kTileN - 1) / kTileN;
#pragma omp parallel
  {
    // Packed copies of the current A and B tiles in (i,k) and (k,j) order make the inner loop a
    // unit-stride, vectorisable axpy whatever the transposes.
    std::vector<T> a_tile(kTileM * kTileK), b_tile(kTileK * kTileN), c_tile(kTileM * kTileN);
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t bt = 0; bt < g.batch; ++bt) {
      for (int64_t t = 0; t < tiles_m * tiles_n; ++t) {
        const T* a = A + bt * g.stride_a;
        const T* b = B + bt * g.stride_b;
        T* c = C + bt * g.stride_c;
        const int64_t i0 = (t / tiles_n) * kTileM, j0 = (t % tiles_n) * kTileN;
        const int64_t mi = std::min(kTileM, g.m - i0), nj = std::min(kTileN, g.n - j0);
        std::fill(c_tile.begin(), c_tile.end(), T(0));
        for (int64_t k0 = 0; k0 < g.k; k0 += kTileK) {
          const int64_t kk = std::min(kTileK, g.k - k0);
          for (int64_t i = 0; i < mi; ++i)
            for (int64_t p = 0; p < kk; ++p)
              a_tile[i * kTileK + p] =
                  g.trans_a ? a[(k0 + p) * g.lda + (i0 + i)] : a[(i0 + i) * g.lda + (k0 + p)];
          for (int64_t p = 0; p < kk; ++p)
            for (int64_t j = 0; j < nj; ++j)
              b_tile[p * kTileN + j] =
                  g.trans_b ? b[(j0 + j) * g.ldb + (k0 + p)] : b[(k0 + p) * g.ldb + (j0 + j)];
          for (int64_t i = 0; i < mi; ++i) {
            T* crow = c_tile.data() + i * kTileN;
            for (int64_t p = 0; p < kk; ++p) {
              const T av = a_tile[i * kTileK + p];
              const T* brow = b_tile.data() + p * kTileN;
#pragma omp simd
              for (int64_t j = 0; j < nj; ++j) crow[j] += av * brow[j];
            }
          }
        }
        for (int64_t i = 0; i < mi; ++i) {
          T* crow = c + (i0 + i) * g.ldc + j0;
          for (int64_t j = 0; j < nj; ++j)
            crow[j] = alpha * c_tile[i * kTileN + j] + (beta == T(0) ? T(0) : beta * crow[j]);
        }
      }
    }
  }
}

}  // namespace

void GemmTiled(const GemmArgs& args) {
  DispatchFloat(args.c.dtype(), "matmul", [&](auto tag) { GemmTiledTyped<decltype(tag)>(args); });
}

bool HaveBlas() {
#ifdef FAM_HAVE_OPENBLAS
  return true;
#else
  return false;
#endif
}

std::string BlasDescription() {
#ifdef FAM_HAVE_OPENBLAS
  std::string config = openblas_get_config();
  while (!config.empty() && config.back() == ' ') config.pop_back();
  return absl::StrCat(config, " (core ", openblas_get_corename(), ", ", openblas_get_num_threads(),
                      " threads)");
#else
  return "built-in tiled GEMM (OpenBLAS off at build time: FAM_USE_OPENBLAS=OFF)";
#endif
}

void GemmBlas(const GemmArgs& g) {
#ifdef FAM_HAVE_OPENBLAS
  const CBLAS_TRANSPOSE ta = g.trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = g.trans_b ? CblasTrans : CblasNoTrans;
  if (g.c.dtype() == DType::kF32) {
    const float* a = g.a.kernel_data<float>();
    const float* b = g.b.kernel_data<float>();
    float* c = g.c.kernel_data<float>();
    for (int64_t i = 0; i < g.batch; ++i)
      cblas_sgemm(CblasRowMajor, ta, tb, g.m, g.n, g.k, static_cast<float>(g.alpha),
                  a + i * g.stride_a, g.lda, b + i * g.stride_b, g.ldb, static_cast<float>(g.beta),
                  c + i * g.stride_c, g.ldc);
  } else {
    FAM_CHECK(g.c.dtype() == DType::kF64, "matmul: unsupported dtype ", DTypeName(g.c.dtype()));
    const double* a = g.a.kernel_data<double>();
    const double* b = g.b.kernel_data<double>();
    double* c = g.c.kernel_data<double>();
    for (int64_t i = 0; i < g.batch; ++i)
      cblas_dgemm(CblasRowMajor, ta, tb, g.m, g.n, g.k, g.alpha, a + i * g.stride_a, g.lda,
                  b + i * g.stride_b, g.ldb, g.beta, c + i * g.stride_c, g.ldc);
  }
#else
  ThrowError(absl::StatusCode::kUnavailable, "this build has no OpenBLAS (FAM_USE_OPENBLAS=OFF)");
#endif
}

}  // namespace fam::cpu

namespace fam {

void CpuBackend::Gemm(const GemmArgs& args) {
  if (args.m == 0 || args.n == 0 || args.batch == 0) return;
  if (cpu::HaveBlas()) {
    cpu::GemmBlas(args);
  } else {
    cpu::GemmTiled(args);
  }
}

}  // namespace fam
