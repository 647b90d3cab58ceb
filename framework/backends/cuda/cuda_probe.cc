#include "framework/backends/cuda/cuda_probe.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#ifdef FAM_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "framework/backends/cuda/cublas_library.h"
#endif

namespace fam {

int CudaDeviceCount() {
#ifdef FAM_HAVE_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return count;
#else
  return 0;
#endif
}

int64_t CudaDeviceMemoryBytes(int index) {
#ifdef FAM_HAVE_CUDA
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) return 0;
  return static_cast<int64_t>(prop.totalGlobalMem);
#else
  (void)index;
  return 0;
#endif
}

std::string CudaDeviceName(int index) {
#ifdef FAM_HAVE_CUDA
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) return "";
  return prop.name;
#else
  (void)index;
  return "";
#endif
}

std::string CudaUnavailableReason(int index) {
#ifdef FAM_HAVE_CUDA
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess)
    return std::string("no CUDA device present (") + cudaGetErrorString(err) + ")";
  if (index < 0 || index >= count)
    return "CUDA device index " + std::to_string(index) + " out of range (" +
           std::to_string(count) + " visible)";
  return "";
#else
  (void)index;
  return "this build has no CUDA support (no CUDA toolkit was found at configure time)";
#endif
}

#ifdef FAM_HAVE_CUDA
namespace {

std::string CudaVersionString(int v) { return absl::StrCat(v / 1000, ".", (v % 1000) / 10); }

// "9.19.0" from cuDNN's and cuBLAS's encoding, major*10000 + minor*100 + patch.
std::string MajorMinorPatch(size_t v) {
  return absl::StrCat(v / 10000, ".", (v % 10000) / 100, ".", v % 100);
}

// cuDNN is not linked (nothing in the backend calls it yet); report whether one can be opened.
std::string CudnnDescription() {
  for (const char* name : {"libcudnn.so.9", "libcudnn.so"}) {
    void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) continue;
    using GetVersion = size_t (*)();
    auto get = reinterpret_cast<GetVersion>(dlsym(handle, "cudnnGetVersion"));
    const size_t v = get ? get() : 0;
    dlclose(handle);  // only asked for its version
    return v == 0 ? absl::StrCat(name, " found (version unknown), not used by this build")
                  : absl::StrCat(MajorMinorPatch(v), " (", name, "), not used by this build");
  }
  return "not found (not used by this build)";
}

}  // namespace
#endif  // FAM_HAVE_CUDA

std::vector<std::pair<std::string, std::string>> CudaStackReport() {
  std::vector<std::pair<std::string, std::string>> lines;
#ifdef FAM_HAVE_CUDA
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  lines.emplace_back("CUDA runtime", absl::StrCat(CudaVersionString(runtime), " (built against ",
                                                  CudaVersionString(CUDART_VERSION), ")"));
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0) {
    lines.emplace_back("CUDA driver", absl::StrCat("supports CUDA ", CudaVersionString(driver)));
  } else {
    lines.emplace_back("CUDA driver", "none found");
  }
  std::string why;
  if (const cuda::CublasLibrary* blas = cuda::TryCublas(&why)) {
    const size_t v = blas->cublasLtGetVersion();
    lines.emplace_back("cuBLASLt", absl::StrCat(MajorMinorPatch(v), " (", blas->lt_path, ")"));
  } else {
    lines.emplace_back("cuBLASLt", why);
  }
  lines.emplace_back("cuDNN", CudnnDescription());
  const int count = CudaDeviceCount();
  if (count == 0) lines.emplace_back("GPUs", absl::StrCat("none (", CudaUnavailableReason(0), ")"));
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    lines.emplace_back(absl::StrCat("GPU ", i),
                       absl::StrFormat("%s, %.1f GiB, sm_%d%d", prop.name,
                                       static_cast<double>(prop.totalGlobalMem) / (1 << 30),
                                       prop.major, prop.minor));
  }
#else
  lines.emplace_back("CUDA", CudaUnavailableReason(0));
#endif
  return lines;
}

}  // namespace fam
