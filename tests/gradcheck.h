// Test utilities: central-finite-difference gradient checks in f64 and random tensors.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "framework/core/tensor.h"
#include "gtest/gtest.h"

namespace fam::testing {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  uint64_t seed = 7;
};

// Checks d(sum(fn(inputs) * R))/d(input) for every input that requires grad, R a fixed random
// tensor, against central differences. Inputs must be contiguous f64 leaves.
::testing::AssertionResult Gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                     const std::vector<Tensor>& inputs,
                                     const GradcheckOptions& options = {});

// A leaf tensor with N(0, scale²) entries from a fixed seed, on `device` (the same values on every
// device: they are drawn on the CPU and copied).
Tensor RandomTensor(const Shape& shape, DType dtype = DType::kF64, uint64_t seed = 1,
                    double scale = 1.0, bool requires_grad = false, Device device = Device::CPU());

// An empty scratch directory <tmp>/<prefix><pid>_<current test name>, removed and recreated.
std::filesystem::path FreshTestDir(const std::string& prefix);

// Exit code (128 + signal when killed) and stdout + stderr of a shell command.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult RunCommand(const std::string& command);
// The `fam` binary of this build: $FAM_BINARY_DIR/fam (set by ctest), else build/fam.
std::string FamBinary();
// RunCommand("<fam> <args>").
CommandResult RunFam(const std::string& args);

// Max |a - b| over all elements (shapes must match).
double MaxAbsDiff(const Tensor& a, const Tensor& b);

}  // namespace fam::testing
