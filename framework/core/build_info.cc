#include "framework/core/build_info.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#include "absl/strings/str_cat.h"
#include "famtrain_build_commit.h"  // FAM_GIT_COMMIT, written at build time (cmake/build_info.cmake)

namespace fam {

const BuildInfo& GetBuildInfo() {
  static const BuildInfo info = [] {
    BuildInfo b;
    b.version = FAM_VERSION;
    b.commit = FAM_GIT_COMMIT;
    b.build_type = FAM_BUILD_TYPE;
#if defined(__clang__)
    b.compiler =
        absl::StrCat("Clang ", __clang_major__, ".", __clang_minor__, ".", __clang_patchlevel__);
#elif defined(__GNUC__)
    b.compiler = absl::StrCat("GCC ", __GNUC__, ".", __GNUC_MINOR__, ".", __GNUC_PATCHLEVEL__);
#else
    b.compiler = "unknown compiler";
#endif
#if defined(__SANITIZE_ADDRESS__)
    b.sanitizers = true;
#endif
    return b;
  }();
  return info;
}

std::string CompiledIsa() {
  std::string isa;
  auto add = [&](const char* name) { absl::StrAppend(&isa, isa.empty() ? "" : " ", name); };
#ifdef __SSE4_2__
  add("sse4.2");
#endif
#ifdef __AVX2__
  add("avx2");
#endif
#ifdef __FMA__
  add("fma");
#endif
#ifdef __F16C__
  add("f16c");
#endif
#ifdef __AVX512F__
  add("avx512f");
#endif
#ifdef __ARM_NEON
  add("neon");
#endif
  return isa.empty() ? "baseline" : isa;
}

std::string CpuIsa() {
  std::string isa;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  auto add = [&](bool has, const char* name) {
    if (has) absl::StrAppend(&isa, isa.empty() ? "" : " ", name);
  };
  add(__builtin_cpu_supports("sse4.2"), "sse4.2");
  add(__builtin_cpu_supports("avx"), "avx");
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("fma"), "fma");
  add(__builtin_cpu_supports("avx512f"), "avx512f");
  add(__builtin_cpu_supports("avx512bw"), "avx512bw");
  add(__builtin_cpu_supports("avx512vl"), "avx512vl");
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
  add(__builtin_cpu_supports("avx512bf16"), "avx512bf16");
#endif
#endif
  return isa.empty() ? "none detected" : isa;
}

std::string OpenMpDescription() {
#ifdef _OPENMP
  const int spec = _OPENMP;
  const char* version = spec >= 202011   ? "5.1"
                        : spec >= 201811 ? "5.0"
                        : spec >= 201511 ? "4.5"
                        : spec >= 201307 ? "4.0"
                                         : "3.x";
  return absl::StrCat("OpenMP ", version, " (", spec, "), ", omp_get_max_threads(), " threads");
#else
  return "OpenMP off";
#endif
}

}  // namespace fam
