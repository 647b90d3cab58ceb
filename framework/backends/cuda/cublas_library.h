// cuBLAS and cuBLASLt, opened with dlopen the first time a GEMM needs them instead of being linked:
// loading libcublasLt costs ~150 MB of resident memory at process start (measured: a program
// linked with it starts at 153 MB RSS, 1.2 MB without), which every `fam` command paid, CPU runs
// and `fam --help` included. The library is found by its versioned name (LD_LIBRARY_PATH, the
// loader cache), then in the CUDA toolkit folder seen at configure time.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include <string>

namespace fam::cuda {

// Every cuBLAS / cuBLASLt entry point the backend calls.
#define FAM_CUBLASLT_ENTRY_POINTS(X)                                                \
  X(cublasLtGetVersion)                                                             \
  X(cublasLtCreate)                                                                 \
  X(cublasLtDestroy)                                                                \
  X(cublasLtMatmul) X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmulDescCreate)   \
      X(cublasLtMatmulDescDestroy) X(cublasLtMatmulDescSetAttribute)                \
          X(cublasLtMatmulPreferenceCreate) X(cublasLtMatmulPreferenceDestroy)      \
              X(cublasLtMatmulPreferenceSetAttribute) X(cublasLtMatrixLayoutCreate) \
                  X(cublasLtMatrixLayoutDestroy) X(cublasLtMatrixLayoutSetAttribute)
#define FAM_CUBLAS_ENTRY_POINTS(X)                                                            \
  X(cublasCreate_v2)                                                                          \
  X(cublasDestroy_v2) X(cublasSetStream_v2) X(cublasSetWorkspace_v2) X(cublasGetStatusString) \
      X(cublasDgemmStridedBatched_64)

// The resolved entry points, named as the functions are (so `Cublas().cublasLtMatmul(...)` reads
// like the direct call, and cublas_v2.h's macros such as cublasCreate -> cublasCreate_v2 apply).
struct CublasLibrary {
#define FAM_CUBLAS_DECLARE_ENTRY(name) decltype(&::name) name = nullptr;
  FAM_CUBLASLT_ENTRY_POINTS(FAM_CUBLAS_DECLARE_ENTRY)
  FAM_CUBLAS_ENTRY_POINTS(FAM_CUBLAS_DECLARE_ENTRY)
#undef FAM_CUBLAS_DECLARE_ENTRY
  std::string lt_path, blas_path;  // the files that were opened
};

// Loads both libraries once (thread-safe) and returns their entry points; throws fam::Error
// (failed precondition) naming the library and the loader's reason when one cannot be opened or
// lacks an entry point.
const CublasLibrary& Cublas();
// Like Cublas() but reports failure as nullptr with the reason in `why`.
const CublasLibrary* TryCublas(std::string* why);
// Whether the libraries have been opened by this process (loading happens on first use only).
bool CublasLoaded();

}  // namespace fam::cuda
