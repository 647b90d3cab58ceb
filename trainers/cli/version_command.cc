// `fam version` (also `fam --version`): what this binary is and what it can use on this machine,
// the lines to paste into a bug report. The CUDA part opens cuBLAS for the report (other commands
// load it only at the first GPU matrix multiply).
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "framework/backends/cpu/cpu_gemm.h"
#include "framework/backends/cuda/cuda_probe.h"
#include "framework/core/build_info.h"
#include "framework/core/host_memory.h"
#include "framework/dist/mpi_communicator.h"
#include "framework/dist/nccl_communicator.h"
#include "trainers/cli/commands.h"

#ifndef FAM_CUDA_ARCHITECTURES
#define FAM_CUDA_ARCHITECTURES "(CMAKE_CUDA_ARCHITECTURES unset)"
#endif

namespace fam {
namespace {

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
  }
  return "unknown CPU";
}

std::string CudaBackendDescription() {
#ifdef FAM_HAVE_CUDA_BACKEND
  return absl::StrCat("built (kernels for sm_", FAM_CUDA_ARCHITECTURES,
                      "); FAM_CUDA_EMULATION=host runs its code paths on the CPU");
#else
  return "not built (no CUDA toolkit at configure time, or FAM_BUILD_CUDA_BACKEND=OFF)";
#endif
}

}  // namespace

std::vector<std::pair<std::string, std::string>> VersionReport() {
  const BuildInfo& b = GetBuildInfo();
  std::vector<std::pair<std::string, std::string>> lines = {
      {"famtrain", absl::StrCat(b.version, ", commit ", b.commit)},
      {"build", absl::StrCat(b.build_type, ", ", b.compiler, ", compiled for ", CompiledIsa(),
                             b.sanitizers ? ", with sanitizers" : "")},
      {"CPU", absl::StrCat(CpuModelName(), ", ", sysconf(_SC_NPROCESSORS_ONLN),
                           " logical cores: ", CpuIsa())},
      {"host memory", FormatByteSize(static_cast<double>(HostMemoryBytes()))},
      {"OpenMP", OpenMpDescription()},
      {"BLAS", cpu::BlasDescription()},
      {"MPI", dist::MpiLibraryDescription()},
      {"NCCL", dist::NcclDescription()},
      {"CUDA backend", CudaBackendDescription()},
  };
  for (auto& line : CudaStackReport()) lines.push_back(std::move(line));
  return lines;
}

Command VersionCommand() {
  Command c;
  c.name = "version";
  c.synopsis = "";
  c.summary = "version, commit, build and what this binary can use here (also fam --version)";
  c.run = [](const cli::Args&) -> absl::Status {
    size_t width = 0;
    const auto lines = VersionReport();
    for (const auto& [name, text] : lines) width = std::max(width, name.size());
    for (const auto& [name, text] : lines)
      std::cout << name << std::string(width + 2 - name.size(), ' ') << text << "\n";
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
