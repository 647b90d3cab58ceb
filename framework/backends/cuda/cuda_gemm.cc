#include "framework/backends/cuda/cuda_gemm.h"

#include <cstdint>

#include "framework/backends/cuda/cublas_library.h"
#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_gemm_layout.h"
#include "framework/backends/cuda/cuda_kernels.h"
#include "framework/core/error.h"

namespace fam::cuda {

void ThrowCublasError(cublasStatus_t status, const char* expr, const char* file, int line) {
  ThrowError(absl::StatusCode::kInternal, "cuBLAS error ", static_cast<int>(status), " (",
             Cublas().cublasGetStatusString(status), ") in ", expr, " at ", file, ":", line);
}

int PointerAlignment(const void* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && address % static_cast<uintptr_t>(align) != 0) align /= 2;
  return align;
}

struct GemmRunner::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  ~Plan() {
    if (a) Cublas().cublasLtMatrixLayoutDestroy(a);
    if (b) Cublas().cublasLtMatrixLayoutDestroy(b);
    if (c) Cublas().cublasLtMatrixLayoutDestroy(c);
    if (desc) Cublas().cublasLtMatmulDescDestroy(desc);
  }
};

GemmRunner::GemmRunner(cudaStream_t stream, void* workspace, size_t workspace_bytes)
    : stream_(stream), workspace_(workspace), workspace_bytes_(workspace_bytes) {
  FAM_CUBLAS_CHECK(Cublas().cublasLtCreate(&lt_));
  FAM_CUBLAS_CHECK(Cublas().cublasCreate(&blas_));
  FAM_CUBLAS_CHECK(Cublas().cublasSetStream(blas_, stream_));
  FAM_CUBLAS_CHECK(Cublas().cublasSetWorkspace(blas_, workspace_, workspace_bytes_));
}

GemmRunner::~GemmRunner() {
  plans_.clear();
  if (blas_) Cublas().cublasDestroy(blas_);
  if (lt_) Cublas().cublasLtDestroy(lt_);
}

namespace {

cudaDataType_t LtType(int dtype) {
  return static_cast<DType>(dtype) == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

void SetLayoutBatch(cublasLtMatrixLayout_t layout, int64_t batch, int64_t stride) {
  const int32_t count = static_cast<int32_t>(batch);
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatrixLayoutSetAttribute(
      layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
}

}  // namespace

// Column-major view of the row-major GEMM: see cuda_gemm_layout.h.
GemmRunner::Plan& GemmRunner::PlanFor(const GemmKey& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t type = LtType(key.dtype);
  const cublasComputeType_t compute = key.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatmulDescCreate(&plan->desc, compute, CUDA_R_32F));
  const ColumnMajorGemm cm =
      ToColumnMajor(key.trans_a, key.trans_b, key.m, key.n, key.k, key.lda, key.ldb, key.ldc,
                    key.stride_a, key.stride_b, key.stride_c);
  const cublasOperation_t op_first = cm.first.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = cm.second.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                           &op_first, sizeof(op_first)));
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                           &op_second, sizeof(op_second)));
  // cuBLASLt's A is the first operand (row-major B), its B the second (row-major A).
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatrixLayoutCreate(&plan->a, type, cm.first.rows, cm.first.cols,
                                                       cm.first.ld));
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatrixLayoutCreate(&plan->b, type, cm.second.rows,
                                                       cm.second.cols, cm.second.ld));
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatrixLayoutCreate(&plan->c, type, cm.m, cm.n, cm.ldc));
  if (key.batch > 1) {
    SetLayoutBatch(plan->a, key.batch, cm.first.batch_stride);
    SetLayoutBatch(plan->b, key.batch, cm.second.batch_stride);
    SetLayoutBatch(plan->c, key.batch, cm.stride_c);
  }
  cublasLtMatmulPreference_t pref = nullptr;
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  const uint32_t align_first = static_cast<uint32_t>(key.align_b);
  const uint32_t align_second = static_cast<uint32_t>(key.align_a);
  const uint32_t align_c = static_cast<uint32_t>(key.align_c);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t status = Cublas().cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = Cublas().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_first, sizeof(align_first));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = Cublas().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_second, sizeof(align_second));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = Cublas().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = Cublas().cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c));
  if (status == CUBLAS_STATUS_SUCCESS)
    status = Cublas().cublasLtMatmulAlgoGetHeuristic(lt_, plan->desc, plan->a, plan->b, plan->c,
                                                     plan->c, pref, 1, &result, &found);
  Cublas().cublasLtMatmulPreferenceDestroy(pref);
  FAM_CUBLAS_CHECK(status);
  FAM_CHECK(found > 0 && result.state == CUBLAS_STATUS_SUCCESS,
            "cuBLASLt has no algorithm for matmul m=", key.m, " n=", key.n, " k=", key.k,
            " batch=", key.batch, " dtype ", DTypeName(static_cast<DType>(key.dtype)));
  plan->algo = result.algo;
  plan->workspace = result.workspaceSize;
  Plan& ref = *plan;
  plans_.emplace(key, std::move(plan));
  return ref;
}

void GemmRunner::RunLt(const GemmKey& key, const void* a, const void* b, void* c, double alpha,
                       double beta) {
  Plan& plan = PlanFor(key);
  const float alpha_f = static_cast<float>(alpha), beta_f = static_cast<float>(beta);
  FAM_CUBLAS_CHECK(Cublas().cublasLtMatmul(lt_, plan.desc, &alpha_f, b, plan.a, a, plan.b, &beta_f,
                                           c, plan.c, c, plan.c, &plan.algo, workspace_,
                                           plan.workspace, stream_));
}

void GemmRunner::RunF64(const GemmArgs& g, const double* a, const double* b, double* c,
                        int64_t batch) {
  const ColumnMajorGemm cm = ToColumnMajor(g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, g.ldc,
                                           g.stride_a, g.stride_b, g.stride_c);
  const cublasOperation_t op_first = cm.first.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = cm.second.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  FAM_CUBLAS_CHECK(Cublas().cublasDgemmStridedBatched_64(
      blas_, op_first, op_second, cm.m, cm.n, cm.k, &g.alpha, b, cm.first.ld, cm.first.batch_stride,
      a, cm.second.ld, cm.second.batch_stride, &g.beta, c, cm.ldc, cm.stride_c, batch));
}

void GemmRunner::Run(const GemmArgs& g, bool allow_tf32) {
  std::lock_guard<std::mutex> lock(mu_);
  const DType dtype = g.c.dtype();
  FAM_CHECK(g.a.dtype() == dtype && g.b.dtype() == dtype,
            "matmul on cuda: operands must share a dtype, got ", g.a.Describe(), ", ",
            g.b.Describe(), ", ", g.c.Describe());
  FAM_CHECK(dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kBF16,
            "matmul on cuda: unsupported dtype ", DTypeName(dtype), " (need f32, f64 or bf16)");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  const size_t elem = DTypeSize(dtype);
  const char* a = static_cast<const char*>(g.a.raw_data());
  const char* b = static_cast<const char*>(g.b.raw_data());
  char* c = static_cast<char*>(g.c.raw_data());
  if (g.k == 0) {
    // C = beta * C, row by row (only the first n of every ldc elements belong to C); beta = 0
    // writes zeros without reading C, as BLAS does.
    FAM_CHECK(dtype != DType::kBF16 || g.beta == 0.0,
              "matmul on cuda: k = 0 with beta != 0 and bf16 output is not supported");
    for (int64_t bt = 0; bt < g.batch; ++bt)
      for (int64_t i = 0; i < g.m; ++i) {
        void* row = c + (bt * g.stride_c + i * g.ldc) * elem;
        if (g.beta == 0.0) {
          LaunchFill(row, g.n, static_cast<int>(elem), 0, stream_);
        } else {
          LaunchAffine(dtype, row, g.beta, 0.0, row, g.n, stream_);
        }
      }
    return;
  }
  // Stride-0 broadcast of A or B over the batch: one call per batch entry (cuBLAS does not
  // document stride 0).
  const bool broadcast = g.batch > 1 && (g.stride_a == 0 || g.stride_b == 0);
  const int64_t calls = broadcast ? g.batch : 1;
  const int64_t batch_per_call = broadcast ? 1 : g.batch;
  for (int64_t i = 0; i < calls; ++i) {
    const char* ai = a + i * g.stride_a * elem;
    const char* bi = b + i * g.stride_b * elem;
    char* ci = c + i * g.stride_c * elem;
    if (dtype == DType::kF64) {
      RunF64(g, reinterpret_cast<const double*>(ai), reinterpret_cast<const double*>(bi),
             reinterpret_cast<double*>(ci), batch_per_call);
      continue;
    }
    GemmKey key;
    key.dtype = static_cast<int>(dtype);
    key.trans_a = g.trans_a;
    key.trans_b = g.trans_b;
    key.tf32 = allow_tf32 && dtype == DType::kF32;
    key.batch = batch_per_call;
    key.m = g.m;
    key.n = g.n;
    key.k = g.k;
    key.lda = g.lda;
    key.ldb = g.ldb;
    key.ldc = g.ldc;
    if (batch_per_call > 1) {
      key.stride_a = g.stride_a;
      key.stride_b = g.stride_b;
      key.stride_c = g.stride_c;
    }
    key.align_a = PointerAlignment(ai);
    key.align_b = PointerAlignment(bi);
    key.align_c = PointerAlignment(ci);
    RunLt(key, ai, bi, ci, g.alpha, g.beta);
  }
}

void CudaBackend::Gemm(const GemmArgs& args) {
  DeviceGuard guard(device_);
  gemm_->Run(args, allow_tf32_);
}

}  // namespace fam::cuda
