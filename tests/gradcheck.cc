#include "tests/gradcheck.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>

#include "framework/autograd/node.h"
#include "framework/core/rng.h"
#include "framework/ops/ops.h"

namespace fam::testing {

Tensor RandomTensor(const Shape& shape, DType dtype, uint64_t seed, double scale,
                    bool requires_grad, Device device) {
  Tensor t = Tensor::Empty(shape, dtype);
  Generator gen(seed, 12345);
  gen.FillNormal(t, 0.0, scale);
  if (device != Device::CPU()) {
    NoGradGuard no_grad;
    t = ops::To(t, device).detach();
  }
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

std::filesystem::path FreshTestDir(const std::string& prefix) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / (prefix + std::to_string(::getpid()) + "_" +
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  std::vector<double> x = a.ToDoubles(), y = b.ToDoubles();
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

::testing::AssertionResult Gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                                     const std::vector<Tensor>& inputs,
                                     const GradcheckOptions& options) {
  for (const Tensor& t : inputs) {
    if (!t.defined() || !t.requires_grad()) continue;
    if (t.dtype() != DType::kF64 || !t.is_contiguous() || !t.is_leaf())
      return ::testing::AssertionFailure() << "gradcheck inputs must be contiguous f64 leaves";
  }
  Tensor out = fn(inputs);
  Tensor weights = RandomTensor(out.shape(), DType::kF64, options.seed);
  auto loss_of = [&](const Tensor& y) { return ops::SumAll(ops::Mul(y, weights)); };
  for (const Tensor& t : inputs)
    if (t.defined()) t.impl().grad.reset();
  Tensor loss = loss_of(out);
  loss.backward();

  NoGradGuard no_grad;
  for (size_t idx = 0; idx < inputs.size(); ++idx) {
    const Tensor& t = inputs[idx];
    if (!t.defined() || !t.requires_grad()) continue;
    Tensor analytic = t.grad();
    if (!analytic.defined()) analytic = Tensor::Zeros(t.shape(), DType::kF64);
    std::vector<double> a = analytic.ToDoubles();
    double* p = t.data<double>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double saved = p[i];
      p[i] = saved + options.eps;
      double plus = loss_of(fn(inputs)).item();
      p[i] = saved - options.eps;
      double minus = loss_of(fn(inputs)).item();
      p[i] = saved;
      double numeric = (plus - minus) / (2 * options.eps);
      double tolerance = options.atol + options.rtol * std::abs(numeric);
      if (!(std::abs(numeric - a[i]) <= tolerance)) {
        return ::testing::AssertionFailure()
               << "gradient mismatch for input " << idx << " (" << t.Describe() << ") element " << i
               << ": analytic " << a[i] << ", numeric " << numeric;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

CommandResult RunCommand(const std::string& command) {
  CommandResult r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string FamBinary() {
  const char* dir = std::getenv("FAM_BINARY_DIR");
  return std::string(dir ? dir : "build") + "/fam";
}

CommandResult RunFam(const std::string& args) { return RunCommand(FamBinary() + " " + args); }

}  // namespace fam::testing
