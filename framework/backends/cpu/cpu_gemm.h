// CPU GEMM: OpenBLAS sgemm/dgemm when built with it, and a cache-tiled OpenMP fallback that is also
// exposed so tests can check the two against each other.
#pragma once

#include <string>

#include "framework/backends/backend.h"

namespace fam::cpu {

// The built-in tiled kernel (used when OpenBLAS is not built in).
void GemmTiled(const GemmArgs& args);
// The OpenBLAS path; throws Unavailable when the build has no OpenBLAS.
void GemmBlas(const GemmArgs& args);
bool HaveBlas();
// "OpenBLAS 0.3.21 DYNAMIC_ARCH ... (core Haswell, 2 threads)" or why the tiled kernel is used.
std::string BlasDescription();

}  // namespace fam::cpu
