// One table of op cases run on every device present: the CPU, the host-emulated CUDA device
// (FAM_CUDA_EMULATION=host) and, in a child process without emulation, a real GPU when there is
// one. Per row, dtype and device: (1) forward against the op on the CPU in f64, (2) autograd
// gradients of sum(out * R) against the CPU f64 gradients, (3) a finite-difference gradcheck in f64
// on the device. A new op is one new row in Rows().
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "framework/backends/registry.h"
#ifdef FAM_HAVE_CUDA_BACKEND
#include "framework/backends/cuda/cuda_backend.h"
#endif
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
std::function<Tensor(const V&)> AttentionOf(std::vector<KeyMask> masks, double scale,
                                            double softcap = 0) {
  return [masks, scale, softcap](const V& in) {
    const size_t n = masks.size();
    V k(in.begin() + 1, in.begin() + 1 + n), v(in.begin() + 1 + n, in.end());
    return ops::Attention(in[0], k, v, masks, scale, softcap);
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
      {"sum_to_shape",
       [](const V& x) {
         return SumToShape(x[0], {3, 1});
       },
       {F({2, 3, 5})}},
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
      {"rope_llama3_scaling",  // pairs kept, blended and divided by the factor
       [](const V& x) {
         return Rope(x[0], x[1], RopeSpec{10000.0, RopeScaling::kLlama3, 8.0, 1.0, 4.0, 64.0});
       },
       {F({1, 2, 3, 8}), Idx({3}, 100)}},
      {"rope_linear_scaling",
       [](const V& x) {
         return Rope(x[0], x[1], RopeSpec{500.0, RopeScaling::kLinear, 4.0});
       },
       {F({2, 1, 3, 6}), Idx({2, 3}, 50)}},
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
      {"attention_softcap",  // scores of magnitude ~cap: tanh far from linear
       AttentionOf({all, causal}, 2.0, 1.5),
       {F({1, 2, 4, 4}), F({1, 1, 2, 4}), F({1, 1, 6, 4}), F({1, 1, 2, 4}), F({1, 1, 6, 4})}},
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

// ---- Backend rows
// -------------------------------------------------------------------------------- The Backend
// methods that ops reach with too few layouts, dtypes or arguments for the table above: host copies
// (staged and direct), fills and copies between every stored dtype pair through strided views, GEMM
// with padded leading dimensions, alpha/beta and a stride-0 batch, the bf16 GEMM, softmax rows of
// -inf, i32 indices, RoPE at large positions, optimizer updates over steps and batched sums of
// squares. Each row runs its method calls on the device's backend and on the CPU backend with the
// same inputs (or against its own reference) and compares every output.

// Inputs made the same way on any device (values drawn on the host, then copied there).
struct Io {
  Device device;
  Tensor Values(const std::vector<double>& v, const Shape& shape, DType dtype) const {
    Tensor cpu = Tensor::FromVector(v, shape, dtype);
    return device == Device::CPU() ? cpu : ops::To(cpu, device).detach();
  }
  Tensor Random(const Shape& shape, DType dtype, uint32_t seed, double lo = -2,
                double hi = 2) const {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> dist(lo, hi);
    std::vector<double> v(static_cast<size_t>(NumElements(shape)));
    for (double& x : v)
      x = dtype == DType::kI32 || dtype == DType::kI64 ? std::floor(dist(rng)) : dist(rng);
    return Values(v, shape, dtype);
  }
  Tensor Zeros(const Shape& shape, DType dtype) const {
    return Tensor::Zeros(shape, dtype, device);
  }
  Tensor Empty(const Shape& shape, DType dtype) const {
    return Tensor::Empty(shape, dtype, device);
  }
  Tensor View(const Tensor& t, const Shape& shape, const Strides& strides, int64_t offset) const {
    return Tensor::MakeView(t.storage(), shape, strides, offset, t.dtype());
  }
};

using BackendFn = std::function<V(Backend&, const Io&, DType)>;
struct BackendCase {
  std::string name;
  BackendFn run;
  std::vector<DType> dtypes = kF32F64;
  bool exact = false;   // else relative 1e-5 (f32), 1e-12 (f64)
  BackendFn reference;  // default: `run` on the CPU backend
};

const std::vector<DType> kStored = {DType::kF32, DType::kF64, DType::kBF16, DType::kI32,
                                    DType::kI64};

GemmArgs PaddedGemm(int trans, bool broadcast_b) {
  GemmArgs g;
  g.trans_a = trans & 1;
  g.trans_b = trans & 2;
  g.batch = 3, g.m = 5, g.n = 7, g.k = 9;
  g.lda = (g.trans_a ? g.m : g.k) + 2;
  g.ldb = (g.trans_b ? g.k : g.n) + 1;
  g.ldc = g.n + 3;
  g.stride_a = (g.trans_a ? g.k : g.m) * g.lda + 4;
  g.stride_b = broadcast_b ? 0 : (g.trans_b ? g.n : g.k) * g.ldb;
  g.stride_c = g.m * g.ldc + 1;
  g.alpha = 0.7, g.beta = 0.3;
  return g;
}

GemmArgs Bf16Gemm() {
  GemmArgs g;
  g.trans_b = true;
  g.batch = 2, g.m = 16, g.n = 24, g.k = 32;
  g.lda = g.k, g.ldb = g.k, g.ldc = g.n;
  g.stride_a = g.m * g.k, g.stride_b = g.n * g.k, g.stride_c = g.m * g.n;
  return g;
}

// Three Adafactor steps on a [2, 5, 7] parameter (factored as 2 x (5 x 7) or unfactored).
V AdafactorSteps(Backend& be, const Io& io, DType dtype, bool factored, double beta1) {
  Tensor p = io.Random({2, 5, 7}, dtype, 141), m = io.Zeros({2, 5, 7}, dtype);
  Tensor row = io.Zeros({10}, dtype), col = io.Zeros({14}, dtype), sq = io.Zeros({2, 5, 7}, dtype);
  for (int64_t step = 1; step <= 3; ++step) {
    AdafactorArgs a;
    a.param = p;
    a.grad = io.Random({2, 5, 7}, dtype, 142 + static_cast<uint32_t>(step));
    if (factored) {
      a.row = row, a.col = col, a.batch = 2, a.n = 5, a.m = 7;
    } else {
      a.sq = sq, a.m = 70;
    }
    if (beta1 > 0) a.exp_avg = m;
    a.decay = 0.99 * (1 - std::pow(0.99, step - 1.0)) / (1 - std::pow(0.99, step));
    a.eps1 = 1e-30, a.clip_threshold = 1.0, a.beta1 = beta1, a.lr = 0.05, a.weight_decay = 0.1;
    be.AdafactorUpdate(a);
  }
  return factored ? V{p, row, col, m} : V{p, sq, m};
}

std::vector<BackendCase> BackendRows() {
  const double inf = std::numeric_limits<double>::infinity();
  return {
      {"host_copies_direct_and_staged",
       [](Backend&, const Io& io, DType dtype) {
         V out;
         for (int64_t n : {int64_t{5}, int64_t{3} << 20}) {  // direct; 24 MiB through staging
           std::vector<double> v(static_cast<size_t>(n));
           for (int64_t i = 0; i < n; ++i) v[i] = static_cast<double>(i) * 0.5 - 7;
           out.push_back(io.Values(v, {n}, dtype));
         }
         return out;
       },
       {DType::kF64},
       /*exact=*/true},
      {"fill",
       [](Backend& be, const Io& io, DType dtype) {
         Tensor t = io.Empty({3, 7}, dtype);
         be.Fill(t, -2.7);
         return V{t};
       },
       kStored,
       /*exact=*/true},
      {"copy_to_every_dtype_through_strided_views",
       [](Backend& be, const Io& io, DType from) {
         V out;
         for (DType to : kStored) {
           // src: a [4, 6, 5] buffer sliced along dim 1 to 3 and permuted to [5, 4, 3].
           Tensor src = io.View(io.Random({4, 6, 5}, from, 7, -50, 50), {5, 4, 3}, {1, 30, 5}, 5);
           Tensor dst = io.Empty({5, 4, 3}, to);
           be.Copy(src, dst);
           // Into a strided destination: the transpose of a [3, 4, 5] buffer.
           Tensor dst_base = io.Zeros({3, 4, 5}, to);
           be.Copy(src, io.View(dst_base, {5, 4, 3}, {1, 5, 20}, 0));
           out.push_back(dst);
           out.push_back(dst_base);
         }
         return out;
       },
       kStored,
       /*exact=*/true},
      {"gemm_padded_every_transpose_and_batch_broadcast",
       [](Backend& be, const Io& io, DType dtype) {
         V out;
         for (int trans = 0; trans < 4; ++trans) {
           for (bool broadcast_b : {false, true}) {
             GemmArgs g = PaddedGemm(trans, broadcast_b);
             const int64_t b_len = (g.trans_b ? g.n : g.k) * g.ldb;
             g.a = io.Random({g.batch * g.stride_a}, dtype, 51);
             g.b = io.Random({g.batch * std::max<int64_t>(g.stride_b, b_len)}, dtype, 52);
             g.c = io.Random({g.batch * g.stride_c}, dtype, 53);
             be.Gemm(g);
             out.push_back(g.c);
           }
         }
         return out;
       }},
      // bf16 A/B/C with f32 accumulation, against the f32 GEMM of the same bf16 values on the CPU
      // rounded once to bf16. Backends without a bf16 GEMM (the CPU's) decline the row.
      {"gemm_bf16_mixed_precision",
       [](Backend& be, const Io& io, DType) {
         GemmArgs g = Bf16Gemm();
         g.a = io.Random({g.batch * g.stride_a}, DType::kBF16, 61);
         g.b = io.Random({g.batch * g.stride_b}, DType::kBF16, 62);
         g.c = io.Empty({g.batch * g.stride_c}, DType::kBF16);
         be.Gemm(g);
         return V{g.c};
       },
       {DType::kBF16},
       false,
       [](Backend& cpu, const Io& io, DType) {
         GemmArgs g = Bf16Gemm();
         g.a = ops::Cast(io.Random({g.batch * g.stride_a}, DType::kBF16, 61), DType::kF32);
         g.b = ops::Cast(io.Random({g.batch * g.stride_b}, DType::kBF16, 62), DType::kF32);
         g.c = io.Zeros({g.batch * g.stride_c}, DType::kF32);
         cpu.Gemm(g);
         return V{ops::Cast(g.c, DType::kBF16)};
       }},
      {"softmax_with_rows_of_minus_infinity",
       [inf](Backend& be, const Io& io, DType dtype) {
         std::vector<double> v =
             Io{Device::CPU()}.Random({4, 300}, DType::kF64, 81, -5, 5).ToDoubles();
         for (int j = 0; j < 300; ++j) v[2 * 300 + j] = -inf;  // row 2 sees nothing
         v[5] = -inf;                                          // one masked entry in row 0
         Tensor x = io.Values(v, {4, 300}, dtype), y = io.Empty({4, 300}, dtype);
         be.SoftmaxForward(x, y);
         Tensor gx = io.Empty({4, 300}, dtype);
         be.SoftmaxBackward(y, io.Random({4, 300}, dtype, 82), gx);
         return V{y, gx};
       }},
      {"cross_entropy_i32_and_i64_targets_weighted",
       [](Backend& be, const Io& io, DType dtype) {
         V out;
         const int64_t n = 6, v = 500, ignore = -100;
         for (DType target_dtype : {DType::kI64, DType::kI32}) {
           for (bool weighted : {false, true}) {
             Tensor logits = io.Random({n, v}, dtype, 91, -8, 8);
             Tensor targets = io.Values({3, 499, -100, 0, 250, 3}, {n}, target_dtype);
             Tensor weights = weighted ? io.Random({n}, dtype, 92, 0, 2) : Tensor();
             Tensor losses = io.Empty({n}, dtype), lse = io.Empty({n}, dtype);
             be.CrossEntropyForward(logits, targets, weights, ignore, losses, lse);
             Tensor grad = io.Empty({n, v}, dtype);
             be.CrossEntropyBackward(logits, targets, weights, ignore, lse,
                                     io.Random({n}, dtype, 93), grad);
             out.insert(out.end(), {losses, lse, grad});
           }
         }
         return out;
       }},
      {"rope_i32_i64_large_positions_and_inverse",
       [](Backend& be, const Io& io, DType dtype) {
         V out;
         for (DType pos_dtype : {DType::kI64, DType::kI32}) {
           for (bool inverse : {false, true}) {
             Tensor pos = io.Values({0, 1, 2, 100000, -3, 7, 7, 65535}, {2, 4}, pos_dtype);
             Tensor y = io.Empty({2, 3, 4, 8}, dtype);
             be.Rope(io.Random({2, 3, 4, 8}, dtype, 101), pos, RopeSpec{10000.0}, inverse, y);
             out.push_back(y);
           }
         }
         return out;
       }},
      {"embedding_gather_every_dtype_and_i32_ids",
       [](Backend& be, const Io& io, DType dtype) {
         V out;
         for (DType id_dtype : {DType::kI32, DType::kI64}) {
           Tensor ids = io.Values({3, 0, 9, 3, 3, 7, 0}, {7}, id_dtype);
           Tensor y = io.Empty({7, 6}, dtype);
           be.EmbeddingForward(io.Random({10, 6}, dtype, 111), ids, y);
           out.push_back(y);
           if (dtype == DType::kBF16) continue;
           Tensor grad_table = io.Zeros({10, 6}, dtype);  // same summation order: bitwise
           be.EmbeddingBackward(ids, io.Random({7, 6}, dtype, 112), grad_table);
           out.push_back(grad_table);
         }
         return out;
       },
       kAllFloat,
       /*exact=*/true},
      {"adamw_three_steps",
       [](Backend& be, const Io& io, DType dtype) {
         Tensor p = io.Random({33}, dtype, 121), m = io.Zeros({33}, dtype),
                v = io.Zeros({33}, dtype);
         for (int64_t step = 1; step <= 3; ++step)
           be.AdamWUpdate(p, io.Random({33}, dtype, 122 + static_cast<uint32_t>(step)), m, v, 1e-2,
                          0.9, 0.95, 1e-8, 0.1, step);
         return V{p, m, v};
       }},
      {"adafactor_factored_with_momentum",
       [](Backend& be, const Io& io, DType dtype) {
         return AdafactorSteps(be, io, dtype, true, 0.9);
       }},
      {"adafactor_factored_no_momentum",
       [](Backend& be, const Io& io, DType dtype) {
         return AdafactorSteps(be, io, dtype, true, 0.0);
       }},
      {"adafactor_unfactored",
       [](Backend& be, const Io& io, DType dtype) {
         return AdafactorSteps(be, io, dtype, false, 0.9);
       }},
      // Sums of squares come back as doubles: each in a one-element f64 tensor on the device.
      // SumSquaresEach must equal SumSquares one by one.
      {"sum_squares_each",
       [](Backend& be, const Io& io, DType dtype) {
         V xs, out;
         for (int64_t n : {1, 33, 100000, 7})
           xs.push_back(io.Random({n}, dtype, 151 + static_cast<uint32_t>(n)));
         const std::vector<double> each = be.SumSquaresEach(xs);
         EXPECT_EQ(each.size(), xs.size());
         for (size_t i = 0; i < xs.size(); ++i) {
           EXPECT_EQ(each[i], be.SumSquares(xs[i])) << i;
           out.push_back(io.Values({each[i]}, {1}, DType::kF64));
         }
         return out;
       }},
  };
}

class BackendHarness : public ::testing::TestWithParam<size_t> {};

TEST_P(BackendHarness, DeviceMatchesTheCpuBackend) {
  ASSERT_TRUE(kEmulationSet);
  const BackendCase row = BackendRows()[GetParam()];
  const std::vector<DeviceCase> devices = Devices();
  if (devices.empty()) GTEST_SKIP() << "no CUDA device";
  Backend& cpu = GetBackend(Device::CPU());
  for (const DeviceCase& dev : devices) {
    for (DType dtype : row.dtypes) {
      if (dtype == DType::kF64 && !dev.f64) continue;
      SCOPED_TRACE(row.name + " " + DTypeName(dtype) + " on " + dev.name);
      const Io io{dev.device}, host_io{Device::CPU()};
      V got;
      try {
        got = row.run(GetBackend(dev.device), io, dtype);
      } catch (const Error& e) {
        if (!row.reference) throw;
        std::printf("[ NOTE ] %s declined on %s: %s\n", row.name.c_str(), dev.name.c_str(),
                    e.what());
        continue;
      }
      const V want =
          row.reference ? row.reference(cpu, host_io, dtype) : row.run(cpu, host_io, dtype);
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) {
        const std::string what = "output " + std::to_string(i);
        ASSERT_EQ(got[i].device(), dev.device) << what;
        const std::vector<double> g = HostValues(got[i]), w = want[i].ToDoubles();
        ASSERT_EQ(g.size(), w.size()) << what;
        const double rtol = row.exact               ? 0
                            : dtype == DType::kF64  ? 1e-12
                            : dtype == DType::kBF16 ? 1.0 / 128
                                                    : 1e-5;
        for (size_t j = 0; j < w.size(); ++j) {
          if (std::isnan(w[j])) {
            ASSERT_TRUE(std::isnan(g[j])) << what << " element " << j;
          } else if (std::isinf(w[j])) {
            ASSERT_EQ(g[j], w[j]) << what << " element " << j;
          } else {
            ASSERT_LE(std::abs(g[j] - w[j]), rtol * (1e-1 + std::abs(w[j])))
                << what << " element " << j << ": got " << g[j] << ", want " << w[j];
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, BackendHarness, ::testing::Range<size_t>(0, BackendRows().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return BackendRows()[info.param].name;
                         });

// Kernels refuse dtypes they do not compute in, on every device, with an error (not a fault).
TEST(BackendHarnessErrors, UnsupportedDtypesAreErrors) {
  for (const DeviceCase& dev : Devices()) {
    SCOPED_TRACE(dev.name);
    const Io io{dev.device};
    Tensor x = io.Random({4}, DType::kBF16, 131), y = io.Empty({4}, DType::kBF16);
    Backend& be = GetBackend(dev.device);
    EXPECT_THROW(be.Unary(UnaryOp::kExp, x, y), Error);
    EXPECT_THROW(be.Affine(x, 1.0, 0.0, y), Error);
  }
}

#ifdef FAM_HAVE_CUDA_BACKEND
// The caching allocator of a real GPU serves a freed block again and gives it back on EmptyCache.
TEST(BackendHarnessRealGpu, CachingAllocatorReusesDeviceMemory) {
  if (!DeviceAvailable(Device::CUDA()) || TraitsOf(Device::CUDA()).emulated)
    GTEST_SKIP() << "needs a real GPU (runs in the real-GPU child)";
  auto& backend = dynamic_cast<cuda::CudaBackend&>(GetBackend(Device::CUDA()));
  backend.Synchronize();
  const cuda::AllocatorStats before = backend.allocator().stats();
  {
    Tensor t = Tensor::Empty({1000, 1000}, DType::kF32, Device::CUDA());  // 4 MB: 4 MiB class
    EXPECT_EQ(backend.allocator().stats().allocated, before.allocated + (size_t{4} << 20));
  }
  const int64_t raw_allocs = backend.allocator().stats().raw_allocs;
  Tensor again = Tensor::Empty({1000, 1000}, DType::kF32, Device::CUDA());
  EXPECT_EQ(backend.allocator().stats().raw_allocs, raw_allocs) << "served from the cache";
  again = Tensor();
  backend.allocator().EmptyCache();
  EXPECT_LE(backend.allocator().stats().reserved, before.reserved + (size_t{4} << 20));
  EXPECT_EQ(backend.allocator().stats().reserved, backend.allocator().stats().allocated);
}
#endif

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
                          "' --gtest_brief=1 --gtest_filter='Ops/*:BackendHarness*'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  if (r.output.find("no CUDA device") != std::string::npos)
    GTEST_SKIP() << "no real GPU: rows ran on the CPU and the emulated device only";
}

}  // namespace
}  // namespace fam
