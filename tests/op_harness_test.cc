// One table of op cases run on every device present: the CPU, the host-emulated CUDA device
// (FAM_CUDA_EMULATION=host) and, in a child process without emulation, a real GPU when there is
// one. Per row, dtype and device: (1) forward against the op on the CPU in f64, (2) autograd
// gradients of sum(out * R) against the CPU f64 gradients, (3) a finite-difference gradcheck in f64
// on the device. A new op is one new row in Rows().
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "framework/backends/registry.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"

namespace fam {
namespace {

using V = std::vector<Tensor>;

// The child process that checks a real GPU runs with this set and without emulation.
constexpr char kRealGpuEnv[] = "FAM_OP_HARNESS_REAL_GPU";
bool RealGpuChild() { return std::getenv(kRealGpuEnv) != nullptr; }

// Before main (and the first backend lookup, which reads it once): cuda:0 is the emulated device,
// except in the real-GPU child.
const bool kEmulationSet = [] {
  return RealGpuChild() || ::setenv("FAM_CUDA_EMULATION", "host", 1) == 0;
}();

// How an input's values are drawn.
enum class Kind {
  kFloat,        // N(0, 1), requires grad
  kPositive,     // 0.5 + |N(0, 1)| (log, sqrt, divisors), requires grad
  kConst,        // uniform in [0.5, 1.5], no grad (per-token weights)
  kIndex,        // i64 in [0, range)
  kIndexIgnore,  // i64 in [0, range), every third one -100 (ignore_index)
};
struct In {
  Shape shape;
  Kind kind = Kind::kFloat;
  int64_t range = 0;
};
In F(Shape s) { return {std::move(s), Kind::kFloat}; }
In Pos(Shape s) { return {std::move(s), Kind::kPositive}; }
In Const(Shape s) { return {std::move(s), Kind::kConst}; }
In Idx(Shape s, int64_t range) { return {std::move(s), Kind::kIndex, range}; }
In IdxIgnore(Shape s, int64_t range) { return {std::move(s), Kind::kIndexIgnore, range}; }
bool IsFloat(const In& in) { return in.kind == Kind::kFloat || in.kind == Kind::kPositive; }

const std::vector<DType> kF32F64 = {DType::kF32, DType::kF64};
const std::vector<DType> kAllFloat = {DType::kF32, DType::kF64, DType::kBF16};

struct OpCase {
  std::string name;
  std::function<Tensor(const V&)> fn;
  std::vector<In> inputs;
  std::vector<DType> dtypes = kF32F64;
  double tol = 1e-5;  // f32 (relative to 1 + |reference|); f64 uses 1e-10, bf16 bf16_tol
  double bf16_tol = 5e-2;
  bool gradcheck = true;  // false for ops whose f64 result is not smooth (rounding casts)
};

// Attention over {q, k0.., v0..} with one mask per segment.
std::function<Tensor(const V&)> AttentionOf(std::vector<KeyMask> masks, double scale) {
  return [masks, scale](const V& in) {
    const size_t n = masks.size();
    V k(in.begin() + 1, in.begin() + 1 + n), v(in.begin() + 1 + n, in.end());
    return ops::Attention(in[0], k, v, masks, scale);
  };
}

Tensor U(UnaryOp op, const Tensor& x) { return ops::Unary(op, x); }

std::vector<OpCase> Rows() {
  using namespace ops;  // NOLINT: the table reads as the op names
  const KeyMask all = KeyMask::kAll, causal = KeyMask::kCausal;
  return {
      // ---- elementwise unary ----
      {"neg", [](const V& x) { return Neg(x[0]); }, {F({3, 4})}, kAllFloat},
      {"exp", [](const V& x) { return Exp(x[0]); }, {F({3, 4})}},
      {"log", [](const V& x) { return Log(x[0]); }, {Pos({3, 4})}},
      {"silu", [](const V& x) { return Silu(x[0]); }, {F({3, 4})}},
      {"gelu", [](const V& x) { return Gelu(x[0]); }, {F({3, 4})}},
      {"sqrt", [](const V& x) { return Sqrt(x[0]); }, {Pos({3, 4})}},
      {"rsqrt", [](const V& x) { return Rsqrt(x[0]); }, {Pos({3, 4})}},
      {"square", [](const V& x) { return Square(x[0]); }, {F({3, 4})}},
      {"tanh", [](const V& x) { return Tanh(x[0]); }, {F({3, 4})}},
      {"sigmoid", [](const V& x) { return Sigmoid(x[0]); }, {F({3, 4})}},
      {"relu", [](const V& x) { return Relu(x[0]); }, {F({3, 4})}},
      {"abs", [](const V& x) { return U(UnaryOp::kAbs, x[0]); }, {F({3, 4})}},
      {"softplus", [](const V& x) { return Softplus(x[0]); }, {F({3, 4})}},
      {"exp_transposed", [](const V& x) { return Exp(Transpose(x[0], 0, 1)); }, {F({3, 5})}},
      {"silu_sliced", [](const V& x) { return Silu(Slice(x[0], 1, 1, 4)); }, {F({2, 5, 3})}},
      {"scale", [](const V& x) { return Scale(x[0], -1.5); }, {F({3, 4})}, kAllFloat},
      {"add_scalar", [](const V& x) { return AddScalar(x[0], 0.25); }, {F({3, 4})}},
      // ---- elementwise binary, broadcasting and views ----
      {"add", [](const V& x) { return Add(x[0], x[1]); }, {F({3, 4}), F({3, 4})}, kAllFloat},
      {"add_broadcast_row", [](const V& x) { return Add(x[0], x[1]); }, {F({3, 4}), F({4})}},
      {"sub_broadcast_both", [](const V& x) { return Sub(x[0], x[1]); }, {F({2, 1, 4}), F({3, 1})}},
      {"mul", [](const V& x) { return Mul(x[0], x[1]); }, {F({3, 4}), F({3, 4})}, kAllFloat},
      {"mul_transposed",
       [](const V& x) { return Mul(Transpose(x[0], 0, 1), x[1]); },
       {F({4, 3}), F({3, 4})}},
      {"mul_expanded",
       [](const V& x) {
         return Mul(Expand(x[0], {2, 3, 4}), x[1]);
       },
       {F({3, 1}), F({2, 3, 4})}},
      {"div", [](const V& x) { return Div(x[0], x[1]); }, {F({3, 4}), Pos({3, 4})}},
      {"div_broadcast", [](const V& x) { return Div(x[0], x[1]); }, {F({2, 3, 4}), Pos({3, 1})}},
      // ---- reductions ----
      {"sum_axis", [](const V& x) { return Sum(x[0], {1}); }, {F({3, 4, 2})}, kAllFloat},
      {"sum_axes_keepdim",
       [](const V& x) {
         return Sum(x[0], {0, 2}, true);
       },
       {F({3, 4, 2})}},
      {"sum_transposed", [](const V& x) { return Sum(Transpose(x[0], 0, 1), {1}); }, {F({5, 3})}},
      {"mean_axis", [](const V& x) { return Mean(x[0], {-1}); }, {F({3, 5})}},
      {"sum_all", [](const V& x) { return SumAll(x[0]); }, {F({3, 5})}},
      {"mean_all", [](const V& x) { return MeanAll(x[0]); }, {F({3, 5})}},
      // ---- matrix products ----
      {"matmul", [](const V& x) { return Matmul(x[0], x[1]); }, {F({3, 4}), F({4, 5})}, kAllFloat},
      {"matmul_batched_broadcast",
       [](const V& x) { return Matmul(x[0], x[1]); },
       {F({2, 3, 4}), F({4, 5})}},
      {"matmul_transposed_b",
       [](const V& x) { return Matmul(x[0], Transpose(x[1], 0, 1)); },
       {F({3, 4}), F({5, 4})}},
      {"matmul_transposed_a",
       [](const V& x) { return Matmul(Transpose(x[0], -1, -2), x[1]); },
       {F({2, 4, 3}), F({2, 4, 2})}},
      {"matmul_vector", [](const V& x) { return Matmul(x[0], x[1]); }, {F({3, 4}), F({4})}},
      {"linear",
       [](const V& x) { return Linear(x[0], x[1]); },
       {F({2, 3, 4}), F({5, 4})},
       kAllFloat},
      // ---- fused ----
      {"softmax", [](const V& x) { return Softmax(x[0]); }, {F({3, 5})}, kAllFloat},
      {"softmax_transposed",
       [](const V& x) { return Softmax(Transpose(x[0], 0, 1)); },
       {F({5, 3})}},
      {"rmsnorm",
       [](const V& x) { return RmsNorm(x[0], x[1], 1e-5); },
       {F({2, 3, 6}), F({6})},
       kAllFloat},
      {"rmsnorm_sliced",
       [](const V& x) { return RmsNorm(Slice(x[0], 0, 1, 3), x[1], 1e-5); },
       {F({4, 6}), F({6})}},
      {"cross_entropy",
       [](const V& x) { return CrossEntropy(x[0], x[1]); },
       {F({6, 5}), Idx({6}, 5)}},
      {"cross_entropy_weights_ignore",
       [](const V& x) { return CrossEntropy(x[0], x[1], x[2]); },
       {F({6, 5}), IdxIgnore({6}, 5), Const({6})}},
      {"linear_cross_entropy_chunked",
       [](const V& x) { return LinearCrossEntropy(x[0], x[1], x[2], x[3], 2); },
       {F({5, 4}), F({7, 4}), IdxIgnore({5}, 7), Const({5})}},
      {"linear_cross_entropy_whole",
       [](const V& x) { return LinearCrossEntropy(x[0], x[1], x[2], Tensor(), 0); },
       {F({4, 3}), F({6, 3}), Idx({4}, 6)}},
      {"rope_positions_t",
       [](const V& x) { return Rope(x[0], x[1], 10000.0); },
       {F({1, 2, 3, 4}), Idx({3}, 16)}},
      {"rope_positions_bt",
       [](const V& x) { return Rope(x[0], x[1], 100.0); },
       {F({2, 2, 3, 4}), Idx({2, 3}, 16)}},
      {"embedding", [](const V& x) { return Embedding(x[0], x[1]); }, {F({7, 3}), Idx({2, 4}, 7)}},
      {"attention_full_causal",
       AttentionOf({causal}, 0.5),
       {F({2, 2, 4, 3}), F({2, 2, 4, 3}), F({2, 2, 4, 3})}},
      {"attention_bswa",
       AttentionOf({causal}, 0.5),
       {F({1, 2, 4, 4}), F({1, 2, 8, 4}), F({1, 2, 8, 4})}},
      {"attention_fam_block",
       AttentionOf({all, causal}, 0.5),
       {F({1, 2, 4, 4}), F({1, 1, 2, 4}), F({1, 1, 8, 4}), F({1, 1, 2, 4}), F({1, 1, 8, 4})}},
      {"attention_fam_rows",
       AttentionOf({all, all}, 0.5),
       {F({2, 2, 2, 4}), F({2, 2, 2, 4}), F({2, 2, 4, 4}), F({2, 2, 2, 4}), F({2, 2, 4, 4})}},
      {"attention_gqa",
       AttentionOf({all, causal}, 0.5),
       {F({1, 4, 3, 4}), F({1, 2, 2, 4}), F({1, 2, 3, 4}), F({1, 2, 2, 4}), F({1, 2, 3, 4})}},
      {"attention_strided_kv",
       [](const V& x) {
         return Attention(x[0], {Slice(x[1], 2, 1, 4)}, {Slice(x[2], 2, 1, 4)}, {KeyMask::kAll},
                          0.5);
       },
       {F({1, 2, 3, 4}), F({1, 2, 5, 4}), F({1, 2, 5, 4})}},
      // ---- views, copies, concatenation ----
      {"reshape",
       [](const V& x) {
         return Mul(Reshape(x[0], {4, -1}), x[1]);
       },
       {F({2, 6}), F({4, 3})}},
      {"reshape_of_transposed",
       [](const V& x) { return Reshape(Transpose(x[0], 0, 1), {-1}); },
       {F({3, 4})}},
      {"permute_contiguous",
       [](const V& x) {
         return Contiguous(Permute(x[0], {2, 0, 1}));
       },
       {F({2, 3, 4})}},
      {"unsqueeze_squeeze", [](const V& x) { return Squeeze(Unsqueeze(x[0], 1), 0); }, {F({1, 3})}},
      {"clone_sliced", [](const V& x) { return Clone(Slice(x[0], 1, 1, 3)); }, {F({3, 4})}},
      {"concat",
       [](const V& x) {
         return Concat({x[0], Transpose(x[1], 0, 1)}, 1);
       },
       {F({3, 2}), F({4, 3})}},
      {"split",
       [](const V& x) {
         return Mul(Split(x[0], {1, 3}, 1)[1], x[1]);
       },
       {F({2, 4}), F({2, 3})}},
      {"cast_to_f64",
       [](const V& x) { return Mul(Cast(x[0], DType::kF64), Cast(x[1], DType::kF64)); },
       {F({3, 4}), F({3, 4})}},
      {"cast_through_bf16",
       [](const V& x) { return Cast(Cast(x[0], DType::kBF16), x[0].dtype()); },
       {F({3, 4})},
       kF32F64,
       1e-5,
       5e-2,
       /*gradcheck=*/false},
      {"checkpoint",
       [](const V& x) {
         return Checkpoint([](const V& in) { return Silu(Mul(in[0], in[1])); }, {x[0], x[1]}, {});
       },
       {F({3, 4}), F({3, 4})}},
  };
}

struct DeviceCase {
  std::string name;
  Device device;
  bool f64 = true;  // runs f64 (and so the gradcheck)
};

std::vector<DeviceCase> Devices() {
  if (RealGpuChild()) {
    if (!DeviceAvailable(Device::CUDA())) return {};
    return {{"cuda", Device::CUDA()}};
  }
  std::vector<DeviceCase> devices = {{"cpu", Device::CPU()}};
  if (DeviceAvailable(Device::CUDA())) devices.push_back({"emulated_cuda", Device::CUDA()});
  return devices;
}

// The input values of `in` (seeded by row and position).
std::vector<double> InputValues(const In& in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.5, 1.5);
  std::vector<double> v(static_cast<size_t>(NumElements(in.shape)));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (in.kind) {
      case Kind::kFloat:
        v[i] = normal(rng);
        break;
      case Kind::kPositive:
        v[i] = 0.5 + std::abs(normal(rng));
        break;
      case Kind::kConst:
        v[i] = uniform(rng);
        break;
      case Kind::kIndex:
      case Kind::kIndexIgnore:
        v[i] = static_cast<double>(rng() % static_cast<uint32_t>(in.range));
        if (in.kind == Kind::kIndexIgnore && i % 3 == 1) v[i] = -100;
        break;
    }
  }
  return v;
}

std::vector<double> HostValues(const Tensor& t) { return ops::To(t, Device::CPU()).ToDoubles(); }

// Leaves on `device`: float inputs in `dtype` (requiring grad unless kConst), indices in i64.
V MakeInputs(const OpCase& row, DType dtype, Device device) {
  V xs;
  for (size_t i = 0; i < row.inputs.size(); ++i) {
    const In& in = row.inputs[i];
    const bool index = in.kind == Kind::kIndex || in.kind == Kind::kIndexIgnore;
    Tensor cpu = Tensor::FromVector(InputValues(in, static_cast<uint32_t>(17 * i + 3)), in.shape,
                                    index ? DType::kI64 : dtype);
    Tensor t = device == Device::CPU() ? cpu : ops::To(cpu, device).detach();
    if (IsFloat(in)) t.set_requires_grad(true);
    xs.push_back(t);
  }
  return xs;
}

// The same leaves as f64 copies on the CPU (indices kept).
V ToF64Cpu(const V& xs) {
  V out;
  for (const Tensor& x : xs) {
    const bool index = x.dtype() == DType::kI64;
    Tensor t = Tensor::FromVector(HostValues(x), x.shape(), index ? DType::kI64 : DType::kF64);
    if (x.requires_grad()) t.set_requires_grad(true);
    out.push_back(t);
  }
  return out;
}

double TolFor(const OpCase& row, DType dtype) {
  return dtype == DType::kF64 ? 1e-10 : dtype == DType::kBF16 ? row.bf16_tol : row.tol;
}

void ExpectClose(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_LE(std::abs(got[i] - want[i]), tol * (1 + std::abs(want[i])))
        << what << " element " << i << ": got " << got[i] << ", want " << want[i];
}

class OpHarness : public ::testing::TestWithParam<size_t> {};

TEST_P(OpHarness, ForwardBackwardGradcheck) {
  ASSERT_TRUE(kEmulationSet);
  const OpCase row = Rows()[GetParam()];
  const std::vector<DeviceCase> devices = Devices();
  if (devices.empty()) GTEST_SKIP() << "no CUDA device";
  for (const DeviceCase& dev : devices) {
    for (DType dtype : row.dtypes) {
      if (dtype == DType::kF64 && !dev.f64) continue;
      SCOPED_TRACE(row.name + " " + DTypeName(dtype) + " on " + dev.name);
      const double tol = TolFor(row, dtype);
      V xs = MakeInputs(row, dtype, dev.device);
      V ref_xs = ToF64Cpu(xs);
      Tensor ref = row.fn(ref_xs);
      Tensor out = row.fn(xs);
      ASSERT_EQ(out.device(), dev.device);
      ASSERT_EQ(out.shape(), ref.shape());
      ExpectClose(HostValues(out), ref.ToDoubles(), tol, "forward");
      // R in the output dtype of each side, from the same seed: bf16 outputs see R rounded.
      Tensor r = testing::RandomTensor(out.shape(), out.dtype(), 99, 1.0, false, dev.device);
      ops::SumAll(ops::Mul(out, r)).backward();
      Tensor ref_r = Tensor::FromVector(HostValues(r), r.shape(), DType::kF64);
      ops::SumAll(ops::Mul(ref, ref_r)).backward();
      for (size_t i = 0; i < xs.size(); ++i) {
        if (!xs[i].requires_grad()) continue;
        const std::string what = "gradient of input " + std::to_string(i);
        ASSERT_TRUE(ref_xs[i].grad().defined()) << what;
        ASSERT_TRUE(xs[i].grad().defined()) << what;
        ASSERT_EQ(xs[i].grad().device(), dev.device) << what;
        ExpectClose(HostValues(xs[i].grad()), ref_xs[i].grad().ToDoubles(), tol, what);
      }
    }
    if (!row.gradcheck) continue;
    SCOPED_TRACE(row.name + " gradcheck on " + dev.name);
    if (!dev.f64) {
      std::printf("[ NOTE ] %s: no f64 on %s, gradcheck skipped\n", row.name.c_str(),
                  dev.name.c_str());
      continue;
    }
    // CPU f64 leaves moved to the device inside fn: differences and autograd run on the device.
    V leaves = ToF64Cpu(MakeInputs(row, DType::kF64, Device::CPU()));
    const Device device = dev.device;
    auto on_device = [&row, device](const V& in) {
      V moved;
      for (const Tensor& t : in) moved.push_back(ops::To(t, device));
      return ops::To(row.fn(moved), Device::CPU());
    };
    EXPECT_TRUE(testing::Gradcheck(on_device, leaves));
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpHarness, ::testing::Range<size_t>(0, Rows().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return Rows()[info.param].name;
                         });

// The real GPU: the emulation is process-wide, so the rows run again in a child process without
// it, on cuda:0 when DeviceAvailable reports one.
TEST(OpHarnessRealGpu, RowsOnTheRealGpu) {
  if (RealGpuChild()) GTEST_SKIP() << "this is the child";
  std::string self(4096, '\0');
  const ssize_t n = ::readlink("/proc/self/exe", self.data(), self.size() - 1);
  ASSERT_GT(n, 0);
  self.resize(static_cast<size_t>(n));
  const testing::CommandResult r =
      testing::RunCommand(std::string("env -u FAM_CUDA_EMULATION ") + kRealGpuEnv + "=1 '" + self +
                          "' --gtest_brief=1 --gtest_filter='Ops/OpHarness.*'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  if (r.output.find("no CUDA device") != std::string::npos)
    GTEST_SKIP() << "no real GPU: rows ran on the CPU and the emulated device only";
}

}  // namespace
}  // namespace fam
