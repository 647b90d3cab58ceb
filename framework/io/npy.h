// NumPy .npy files (format version 1.0 written; 1.0, 2.0 and 3.0 read): the interchange format of
// `fam forward` logits and of parity checks against other implementations. Little-endian f32, f64,
// i32 and i64 in C order; the data starts at a multiple of 64 bytes like NumPy's own writer.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/core/tensor.h"

namespace fam::io {

// Writes any-strided, any-device f32/f64/i32/i64 tensor as a C-order .npy file, atomically.
absl::Status WriteNpy(const std::string& path, const Tensor& tensor);

// Reads a C-order little-endian f32/f64/i32/i64 .npy file into a new CPU tensor. Errors name the
// file and what is wrong (magic, version, header, dtype, Fortran order, data size).
absl::StatusOr<Tensor> ReadNpy(const std::string& path);

}  // namespace fam::io
