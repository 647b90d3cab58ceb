// GEMM of the CUDA backend. f32 and bf16 (f32 accumulation, the mixed-precision path) go through
// cuBLASLt with cached matmul plans (descriptors + heuristic algorithm) keyed by shape, layout and
// pointer alignment; f64 goes through cublasDgemmStridedBatched. Row-major GemmArgs are mapped to
// cuBLAS's column-major convention by computing C^T = op(B)^T · op(A)^T.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "framework/backends/backend.h"

namespace fam::cuda {

// Throws fam::Error naming the failed cuBLAS call, its status string and the call site.
[[noreturn]] void ThrowCublasError(cublasStatus_t status, const char* expr, const char* file,
                                   int line);
#define FAM_CUBLAS_CHECK(expr)                                                 \
  do {                                                                         \
    const cublasStatus_t fam_cublas_status_ = (expr);                          \
    if (fam_cublas_status_ != CUBLAS_STATUS_SUCCESS)                           \
      ::fam::cuda::ThrowCublasError(fam_cublas_status_, #expr, __FILE__, __LINE__); \
  } while (0)

// What identifies one cuBLASLt plan (everything but the pointers' values and alpha/beta).
struct GemmKey {
  int dtype = 0;
  bool trans_a = false, trans_b = false, tf32 = false;
  int64_t batch = 1, m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  int align_a = 0, align_b = 0, align_c = 0;
  auto operator<=>(const GemmKey&) const = default;
};

// Largest power of two (at most 256) dividing the address.
int PointerAlignment(const void* p);

class GemmRunner {
 public:
  // workspace: device memory owned by the caller, used by both cuBLASLt and cuBLAS.
  GemmRunner(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // a, b, c: all f32, all bf16 or all f64 device tensors. allow_tf32: f32 inputs may be rounded
  // to TF32 inside the multiply (faster, ~1e-3 relative error); off by default.
  void Run(const GemmArgs& args, bool allow_tf32);
  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan;
  Plan& PlanFor(const GemmKey& key);
  // One call with pointers at the given element offsets (batch as in `key`).
  void RunLt(const GemmKey& key, const void* a, const void* b, void* c, double alpha,
             double beta);
  void RunF64(const GemmArgs& g, const double* a, const double* b, double* c, int64_t batch);

  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::mutex mu_;  // guards plans_ (and keeps calls from several threads in order)
  std::map<GemmKey, std::unique_ptr<Plan>> plans_;
};

}  // namespace fam::cuda
