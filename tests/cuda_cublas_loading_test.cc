// cuBLAS/cuBLASLt are opened on first use (framework/backends/cuda/cublas_library.h): a process
// that never multiplies on a GPU never maps them, and the first use finds the toolkit's copies.
// Runs without a GPU (opening the libraries and asking their version needs no device).
#include <fstream>
#include <string>

#include "framework/backends/cuda/cublas_library.h"
#include "framework/backends/cuda/cuda_probe.h"
#include "gtest/gtest.h"

namespace fam {
namespace {

bool Mapped(const std::string& library) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(library) != std::string::npos) return true;
  return false;
}

TEST(CublasLoadingTest, OpenedAtFirstUseOnly) {
  // Nothing in this process has asked for a GEMM yet (static initialisers included).
  EXPECT_FALSE(cuda::CublasLoaded());
  EXPECT_FALSE(Mapped("libcublasLt.so"));
  EXPECT_FALSE(Mapped("libcublas.so"));

  std::string why;
  const cuda::CublasLibrary* lib = cuda::TryCublas(&why);
  ASSERT_NE(lib, nullptr) << why;
  EXPECT_TRUE(cuda::CublasLoaded());
  EXPECT_TRUE(Mapped("libcublasLt.so"));
  EXPECT_TRUE(Mapped("libcublas.so"));
  // The opened library is the major version the backend was compiled against.
  const size_t version = lib->cublasLtGetVersion();
  EXPECT_GE(version, static_cast<size_t>(CUBLAS_VER_MAJOR) * 10000);
  EXPECT_LT(version, static_cast<size_t>(CUBLAS_VER_MAJOR + 1) * 10000);
  const char* status = lib->cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED);
  ASSERT_NE(status, nullptr);
  EXPECT_NE(std::string(status), std::string(lib->cublasGetStatusString(CUBLAS_STATUS_SUCCESS)));
  // A second call returns the same table without reopening.
  EXPECT_EQ(cuda::TryCublas(nullptr), lib);
  EXPECT_EQ(&cuda::Cublas(), lib);
}

TEST(CublasLoadingTest, StackReportNamesTheLibraries) {
  const auto lines = CudaStackReport();
  bool runtime = false, blas = false, gpus = false;
  for (const auto& [name, text] : lines) {
    runtime |= name == "CUDA runtime" && !text.empty();
    blas |= name == "cuBLASLt" && text.find("libcublasLt.so") != std::string::npos;
    gpus |= name == "GPUs" || name.rfind("GPU ", 0) == 0;
  }
  EXPECT_TRUE(runtime);
  EXPECT_TRUE(blas);
  EXPECT_TRUE(gpus);
}

}  // namespace
}  // namespace fam
