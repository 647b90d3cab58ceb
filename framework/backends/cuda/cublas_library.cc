#include "framework/backends/cuda/cublas_library.h"

#include <dlfcn.h>

#include <atomic>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "framework/core/error.h"

namespace fam::cuda {
namespace {

std::atomic<bool> g_loaded{false};

// Opens `soname` (the loader's search path), else the same file in the configure-time toolkit
// folder. Returns the handle and sets `path` to what was opened, or nullptr with `why` set.
void* OpenLibrary(const std::string& soname, std::string* path, std::string* why) {
  std::vector<std::string> candidates = {soname};
#ifdef FAM_CUDA_LIBRARY_DIR
  candidates.push_back(std::string(FAM_CUDA_LIBRARY_DIR) + "/" + soname);
#endif
  std::string reasons;
  for (const std::string& candidate : candidates) {
    if (void* handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      *path = candidate;
      return handle;
    }
    const char* error = dlerror();
    absl::StrAppend(&reasons, reasons.empty() ? "" : "; ", error ? error : candidate);
  }
  *why = absl::StrCat("cannot load ", soname, " (", reasons,
                      "); install the CUDA toolkit's cuBLAS or add its folder to LD_LIBRARY_PATH");
  return nullptr;
}

struct LoadResult {
  CublasLibrary library;
  std::string error;
};

LoadResult Load() {
  LoadResult result;
  CublasLibrary& lib = result.library;
  const std::string major = std::to_string(CUBLAS_VER_MAJOR);
  void* lt = OpenLibrary("libcublasLt.so." + major, &lib.lt_path, &result.error);
  if (lt == nullptr) return result;
  void* blas = OpenLibrary("libcublas.so." + major, &lib.blas_path, &result.error);
  if (blas == nullptr) return result;
  std::string missing;
  auto resolve = [&](void* handle, const char* name, auto& slot) {
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(dlsym(handle, name));
    if (slot == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
  };
#define FAM_CUBLAS_RESOLVE_LT(name) resolve(lt, #name, lib.name);
#define FAM_CUBLAS_RESOLVE_BLAS(name) resolve(blas, #name, lib.name);
  FAM_CUBLASLT_ENTRY_POINTS(FAM_CUBLAS_RESOLVE_LT)
  FAM_CUBLAS_ENTRY_POINTS(FAM_CUBLAS_RESOLVE_BLAS)
#undef FAM_CUBLAS_RESOLVE_LT
#undef FAM_CUBLAS_RESOLVE_BLAS
  if (!missing.empty())
    result.error = absl::StrCat(lib.lt_path, " / ", lib.blas_path, " lack ", missing,
                                " (built against cuBLAS ", CUBLAS_VER_MAJOR, ".", CUBLAS_VER_MINOR,
                                "; is an older cuBLAS first on the library path?)");
  return result;
}

const LoadResult& Loaded() {
  static const LoadResult* result = [] {
    auto* r = new LoadResult(Load());
    g_loaded.store(r->error.empty());
    return r;
  }();
  return *result;
}

}  // namespace

const CublasLibrary* TryCublas(std::string* why) {
  const LoadResult& r = Loaded();
  if (!r.error.empty()) {
    if (why != nullptr) *why = r.error;
    return nullptr;
  }
  return &r.library;
}

const CublasLibrary& Cublas() {
  std::string why;
  const CublasLibrary* lib = TryCublas(&why);
  if (lib == nullptr) ThrowError(absl::StatusCode::kFailedPrecondition, "cuda: ", why);
  return *lib;
}

bool CublasLoaded() { return g_loaded.load(); }

}  // namespace fam::cuda
