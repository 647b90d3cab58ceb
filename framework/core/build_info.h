// What this binary is and what it was built with: version, git commit, build type, compiler,
// the instruction sets it was compiled for and those the CPU has, OpenMP. `fam --version` prints
// it with the BLAS, CUDA, NCCL and MPI lines of the layers above (trainers/cli/version_command.cc).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace fam {

struct BuildInfo {
  std::string version;      // "0.1.0" (project(VERSION) in CMakeLists.txt)
  std::string commit;       // "3febd2c1a2b4", "... (with uncommitted changes)" or "unknown ..."
  std::string build_type;   // Release, RelWithDebInfo, Debug
  std::string compiler;     // "GCC 12.2.0"
  bool sanitizers = false;  // built with FAM_SANITIZE
};

const BuildInfo& GetBuildInfo();

// Instruction-set extensions the code was compiled to use ("avx2 fma f16c").
std::string CompiledIsa();
// Extensions this CPU reports, of those that matter to the kernels ("avx2 fma avx512f ...").
std::string CpuIsa();
// "OpenMP 4.5 (201511), 16 threads" or "OpenMP off".
std::string OpenMpDescription();

}  // namespace fam
