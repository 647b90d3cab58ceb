// FAM_HOST_DEVICE marks a function that nvcc compiles for both the host and the GPU (the shared
// op formulas, the strided indexer); plain C++ compilers see nothing.
#pragma once

#ifdef __CUDACC__
#define FAM_HOST_DEVICE __host__ __device__
#else
#define FAM_HOST_DEVICE
#endif
