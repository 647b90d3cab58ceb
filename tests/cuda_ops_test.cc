// Every CUDA backend op except attention against the CPU backend on the same random inputs (tiny
// shapes, strided and broadcast views, bf16 storage). Tolerances: f32 1e-5 relative, f64 1e-12
// relative (the kernels sum in a different order and may fuse multiply-adds); integer, copy and
// gather results exactly. Skips without a GPU; registered only in builds with the CUDA toolkit.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "framework/backends/registry.h"
#include "framework/core/tensor.h"
#ifdef FAM_HAVE_CUDA_BACKEND
#include "framework/backends/cuda/cuda_backend.h"
#endif

namespace fam {
namespace {

#define SKIP_WITHOUT_GPU()                                                      \
  do {                                                                          \
    std::string why;                                                            \
    if (!DeviceAvailable(Device::CUDA(), &why)) GTEST_SKIP() << "no GPU: " << why; \
  } while (0)

Backend& Cpu() { return GetBackend(Device::CPU()); }
Backend& Gpu() { return GetBackend(Device::CUDA()); }

// The same values on the CPU and on the GPU.
struct Pair {
  Tensor cpu, gpu;
};

Tensor ToGpu(const Tensor& cpu) {
  EXPECT_TRUE(cpu.is_contiguous());
  Tensor g = Tensor::Empty(cpu.shape(), cpu.dtype(), Device::CUDA());
  Gpu().CopyFromHost(g.raw_data(), cpu.raw_data(), cpu.nbytes());
  return g;
}

Tensor ToCpu(const Tensor& gpu) {
  EXPECT_TRUE(gpu.is_contiguous());
  Tensor c = Tensor::Empty(gpu.shape(), gpu.dtype(), Device::CPU());
  Gpu().CopyToHost(c.raw_data(), gpu.raw_data(), gpu.nbytes());
  return c;
}

Pair FromValues(const std::vector<double>& values, const Shape& shape, DType dtype) {
  Tensor cpu = Tensor::FromVector(values, shape, dtype);
  return {cpu, ToGpu(cpu)};
}

Pair Random(const Shape& shape, DType dtype, uint32_t seed, double lo = -2.0, double hi = 2.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> values(static_cast<size_t>(NumElements(shape)));
  for (double& v : values) v = dist(rng);
  if (dtype == DType::kI32 || dtype == DType::kI64)
    for (double& v : values) v = std::floor(v);
  return FromValues(values, shape, dtype);
}

// Fresh output tensors of the same shape on both devices.
Pair Empty(const Shape& shape, DType dtype) {
  return {Tensor::Empty(shape, dtype, Device::CPU()), Tensor::Empty(shape, dtype, Device::CUDA())};
}

Pair Zeros(const Shape& shape, DType dtype) {
  return {Tensor::Zeros(shape, dtype, Device::CPU()), Tensor::Zeros(shape, dtype, Device::CUDA())};
}

Pair View(const Pair& p, const Shape& shape, const Strides& strides, int64_t offset) {
  return {Tensor::MakeView(p.cpu.storage(), shape, strides, offset, p.cpu.dtype()),
          Tensor::MakeView(p.gpu.storage(), shape, strides, offset, p.gpu.dtype())};
}

struct Tol {
  double rtol, atol;
};
Tol TolFor(DType dtype) { return dtype == DType::kF64 ? Tol{1e-12, 1e-13} : Tol{1e-5, 1e-6}; }
constexpr Tol kExact{0, 0};

void ExpectNear(const Pair& p, Tol tol, const std::string& what) {
  const std::vector<double> want = p.cpu.ToDoubles();
  const std::vector<double> got = ToCpu(p.gpu).ToDoubles();
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i]) || std::isinf(want[i])) {
      ASSERT_TRUE(std::isnan(want[i]) ? std::isnan(got[i]) : got[i] == want[i])
          << what << " element " << i << ": cpu " << want[i] << " cuda " << got[i];
      continue;
    }
    ASSERT_LE(std::abs(want[i] - got[i]), tol.atol + tol.rtol * std::abs(want[i]))
        << what << " element " << i << ": cpu " << want[i] << " cuda " << got[i];
  }
}

const DType kFloatTypes[] = {DType::kF32, DType::kF64};

TEST(CudaOpsTest, HostCopiesRoundTripIncludingStagedChunks) {
  SKIP_WITHOUT_GPU();
  for (int64_t n : {int64_t{5}, int64_t{3} << 20}) {  // direct, and 24 MiB through staging
    std::vector<double> values(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) values[i] = static_cast<double>(i) * 0.5 - 7;
    Pair p = FromValues(values, {n}, DType::kF64);
    ExpectNear(p, kExact, "round trip of " + std::to_string(n));
  }
}

TEST(CudaOpsTest, FillEveryDtype) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16, DType::kI32, DType::kI64}) {
    Pair p = Empty({3, 7}, dtype);
    Cpu().Fill(p.cpu, -2.7);
    Gpu().Fill(p.gpu, -2.7);
    ExpectNear(p, kExact, std::string("fill ") + DTypeName(dtype));
  }
}

TEST(CudaOpsTest, CopyConvertsEveryDtypePairThroughStridedViews) {
  SKIP_WITHOUT_GPU();
  const DType types[] = {DType::kF32, DType::kF64, DType::kBF16, DType::kI32, DType::kI64};
  uint32_t seed = 1;
  for (DType from : types) {
    for (DType to : types) {
      // src: a [4, 6, 5] tensor, sliced along dim 1 to 3 and permuted to [5, 4, 3].
      Pair base = Random({4, 6, 5}, from, seed++, -50, 50);
      Pair src = View(base, {5, 4, 3}, {1, 30, 5}, 5);
      Pair dst = Empty({5, 4, 3}, to);
      Cpu().Copy(src.cpu, dst.cpu);
      Gpu().Copy(src.gpu, dst.gpu);
      ExpectNear(dst, kExact, std::string("copy ") + DTypeName(from) + " -> " + DTypeName(to));
      // Into a strided destination: the transpose of a [3, 4, 5] buffer.
      Pair dst_base = Zeros({3, 4, 5}, to);
      Pair dst_view = View(dst_base, {5, 4, 3}, {1, 5, 20}, 0);
      Cpu().Copy(src.cpu, dst_view.cpu);
      Gpu().Copy(src.gpu, dst_view.gpu);
      ExpectNear(dst_base, kExact,
                 std::string("strided copy ") + DTypeName(from) + " -> " + DTypeName(to));
    }
  }
}

TEST(CudaOpsTest, UnaryForwardAndBackward) {
  SKIP_WITHOUT_GPU();
  const UnaryOp ops[] = {UnaryOp::kNeg,    UnaryOp::kExp,  UnaryOp::kLog,  UnaryOp::kSilu,
                         UnaryOp::kGelu,   UnaryOp::kSqrt, UnaryOp::kRsqrt, UnaryOp::kSquare,
                         UnaryOp::kTanh,   UnaryOp::kSigmoid, UnaryOp::kRelu, UnaryOp::kAbs};
  for (DType dtype : kFloatTypes) {
    for (UnaryOp op : ops) {
      const bool positive = op == UnaryOp::kLog || op == UnaryOp::kSqrt || op == UnaryOp::kRsqrt;
      Pair x = Random({7, 13}, dtype, 11, positive ? 0.1 : -3.0, 3.0);
      Pair y = Empty({7, 13}, dtype);
      Cpu().Unary(op, x.cpu, y.cpu);
      Gpu().Unary(op, x.gpu, y.gpu);
      const std::string what = std::string(UnaryOpName(op)) + " " + DTypeName(dtype);
      ExpectNear(y, TolFor(dtype), what);
      Pair g = Random({7, 13}, dtype, 12);
      Pair gx = Empty({7, 13}, dtype);
      Pair y_same = {y.cpu, ToGpu(y.cpu)};  // the same y on both sides
      Cpu().UnaryBackward(op, x.cpu, y_same.cpu, g.cpu, gx.cpu);
      Gpu().UnaryBackward(op, x.gpu, y_same.gpu, g.gpu, gx.gpu);
      ExpectNear(gx, TolFor(dtype), what + " backward");
    }
  }
}

TEST(CudaOpsTest, BinaryWithBroadcastAndTransposedViews) {
  SKIP_WITHOUT_GPU();
  const BinaryOp ops[] = {BinaryOp::kAdd, BinaryOp::kSub, BinaryOp::kMul,
                          BinaryOp::kDiv, BinaryOp::kMax, BinaryOp::kMin};
  for (DType dtype : kFloatTypes) {
    for (BinaryOp op : ops) {
      // a: [3, 1, 5] expanded to [3, 4, 5] (stride 0); b: a [5, 4] buffer transposed and
      // broadcast over the leading dim (strides {0, 1, 4}).
      Pair a_base = Random({3, 1, 5}, dtype, 21);
      Pair b_base = Random({5, 4}, dtype, 22, 0.5, 2.0);
      Pair a = View(a_base, {3, 4, 5}, {5, 0, 1}, 0);
      Pair b = View(b_base, {3, 4, 5}, {0, 1, 4}, 0);
      Pair out = Empty({3, 4, 5}, dtype);
      Cpu().Binary(op, a.cpu, b.cpu, out.cpu);
      Gpu().Binary(op, a.gpu, b.gpu, out.gpu);
      ExpectNear(out, TolFor(dtype), std::string(BinaryOpName(op)) + " " + DTypeName(dtype));
      // Both contiguous.
      Pair c = Random({3, 4, 5}, dtype, 23);
      Pair d = Random({3, 4, 5}, dtype, 24, 0.5, 2.0);
      Cpu().Binary(op, c.cpu, d.cpu, out.cpu);
      Gpu().Binary(op, c.gpu, d.gpu, out.gpu);
      ExpectNear(out, TolFor(dtype), std::string(BinaryOpName(op)) + " contiguous");
    }
  }
}

TEST(CudaOpsTest, AffineAndAxpy) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kFloatTypes) {
    Pair x = Random({17}, dtype, 31);
    Pair out = Empty({17}, dtype);
    Cpu().Affine(x.cpu, 0.3, -1.25, out.cpu);
    Gpu().Affine(x.gpu, 0.3, -1.25, out.gpu);
    ExpectNear(out, TolFor(dtype), "affine");
    Pair dst = Random({17}, dtype, 32);
    Cpu().Axpy(x.cpu, -0.7, dst.cpu);
    Gpu().Axpy(x.gpu, -0.7, dst.gpu);
    ExpectNear(dst, TolFor(dtype), "axpy");
  }
}

TEST(CudaOpsTest, ReduceSumOverAxesAndSumSquares) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::vector<int>> axes_list = {{}, {0}, {1}, {2}, {0, 2}, {1, 2}, {0, 1, 2}};
  for (DType dtype : kFloatTypes) {
    Pair x = Random({3, 4, 600}, dtype, 41);
    for (const auto& axes : axes_list) {
      Shape out_shape = x.cpu.shape();
      for (int a : axes) out_shape[a] = 1;
      Pair out = Empty(out_shape, dtype);
      Cpu().ReduceSum(x.cpu, axes, out.cpu);
      Gpu().ReduceSum(x.gpu, axes, out.gpu);
      ExpectNear(out, TolFor(dtype), "sum over " + std::to_string(axes.size()) + " axes");
    }
    const double want = Cpu().SumSquares(x.cpu);
    const double got = Gpu().SumSquares(x.gpu);
    EXPECT_NEAR(got, want, 1e-12 * want) << DTypeName(dtype);
  }
}

// Batched GEMM with padded leading dimensions, alpha/beta, every transpose combination and a
// stride-0 broadcast of B.
TEST(CudaOpsTest, GemmMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t batch = 3, m = 5, n = 7, k = 9;
  for (DType dtype : kFloatTypes) {
    for (int trans = 0; trans < 4; ++trans) {
      for (bool broadcast_b : {false, true}) {
        GemmArgs g;
        g.trans_a = trans & 1;
        g.trans_b = trans & 2;
        g.batch = batch;
        g.m = m;
        g.n = n;
        g.k = k;
        g.lda = (g.trans_a ? m : k) + 2;
        g.ldb = (g.trans_b ? k : n) + 1;
        g.ldc = n + 3;
        g.stride_a = (g.trans_a ? k : m) * g.lda + 4;
        g.stride_b = broadcast_b ? 0 : (g.trans_b ? n : k) * g.ldb;
        g.stride_c = m * g.ldc + 1;
        g.alpha = 0.7;
        g.beta = 0.3;
        Pair a = Random({batch * g.stride_a}, dtype, 51);
        Pair b = Random({batch * std::max<int64_t>(g.stride_b, (g.trans_b ? n : k) * g.ldb)},
                        dtype, 52);
        Pair c = Random({batch * g.stride_c}, dtype, 53);
        GemmArgs cpu_args = g, gpu_args = g;
        cpu_args.a = a.cpu, cpu_args.b = b.cpu, cpu_args.c = c.cpu;
        gpu_args.a = a.gpu, gpu_args.b = b.gpu, gpu_args.c = c.gpu;
        Cpu().Gemm(cpu_args);
        Gpu().Gemm(gpu_args);
        ExpectNear(c, TolFor(dtype),
                   std::string("gemm ") + DTypeName(dtype) + " trans " + std::to_string(trans) +
                       (broadcast_b ? " broadcast" : ""));
      }
    }
  }
}

// bf16 A/B/C with f32 accumulation against the CPU f32 GEMM of the same (bf16-rounded) values;
// the result is rounded to bf16 once (relative 2^-8).
TEST(CudaOpsTest, GemmBf16MixedPrecision) {
  SKIP_WITHOUT_GPU();
  GemmArgs g;
  g.trans_b = true;
  g.batch = 2, g.m = 16, g.n = 24, g.k = 32;
  g.lda = g.k, g.ldb = g.k, g.ldc = g.n;
  g.stride_a = g.m * g.k, g.stride_b = g.n * g.k, g.stride_c = g.m * g.n;
  Pair a16 = Random({g.batch * g.stride_a}, DType::kBF16, 61);
  Pair b16 = Random({g.batch * g.stride_b}, DType::kBF16, 62);
  Pair c16 = Empty({g.batch * g.stride_c}, DType::kBF16);
  Pair a32 = Empty(a16.cpu.shape(), DType::kF32), b32 = Empty(b16.cpu.shape(), DType::kF32);
  Pair c32 = Zeros(c16.cpu.shape(), DType::kF32);
  Cpu().Copy(a16.cpu, a32.cpu);
  Cpu().Copy(b16.cpu, b32.cpu);
  GemmArgs cpu_args = g, gpu_args = g;
  cpu_args.a = a32.cpu, cpu_args.b = b32.cpu, cpu_args.c = c32.cpu;
  gpu_args.a = a16.gpu, gpu_args.b = b16.gpu, gpu_args.c = c16.gpu;
  Cpu().Gemm(cpu_args);
  Gpu().Gemm(gpu_args);
  const std::vector<double> want = c32.cpu.ToDoubles();
  const std::vector<double> got = ToCpu(c16.gpu).ToDoubles();
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 1e-5 + std::abs(want[i]) / 128) << "element " << i;
}

TEST(CudaOpsTest, RmsNormForwardAndBackward) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kFloatTypes) {
    for (int64_t rows : {int64_t{5}, int64_t{70}}) {  // 70 rows: several weight-grad chunks
      const int64_t d = 37;
      Pair x = Random({rows, d}, dtype, 71);
      Pair w = Random({d}, dtype, 72);
      Pair y = Empty({rows, d}, dtype), rstd = Empty({rows}, dtype);
      Cpu().RmsNormForward(x.cpu, w.cpu, 1e-5, y.cpu, rstd.cpu);
      Gpu().RmsNormForward(x.gpu, w.gpu, 1e-5, y.gpu, rstd.gpu);
      ExpectNear(y, TolFor(dtype), "rmsnorm y");
      ExpectNear(rstd, TolFor(dtype), "rmsnorm rstd");
      Pair r = {rstd.cpu, ToGpu(rstd.cpu)};
      Pair gy = Random({rows, d}, dtype, 73);
      Pair gx = Empty({rows, d}, dtype), gw = Empty({d}, dtype);
      Cpu().RmsNormBackward(x.cpu, w.cpu, r.cpu, gy.cpu, gx.cpu, gw.cpu);
      Gpu().RmsNormBackward(x.gpu, w.gpu, r.gpu, gy.gpu, gx.gpu, gw.gpu);
      ExpectNear(gx, TolFor(dtype), "rmsnorm grad_x");
      ExpectNear(gw, TolFor(dtype), "rmsnorm grad_w");
    }
  }
}

TEST(CudaOpsTest, SoftmaxForwardAndBackwardWithAMaskedRow) {
  SKIP_WITHOUT_GPU();
  const double inf = std::numeric_limits<double>::infinity();
  for (DType dtype : kFloatTypes) {
    std::mt19937 rng(81);
    std::uniform_real_distribution<double> dist(-5, 5);
    std::vector<double> values(4 * 300);
    for (double& v : values) v = dist(rng);
    for (int j = 0; j < 300; ++j) values[2 * 300 + j] = -inf;  // row 2 sees nothing
    values[5] = -inf;                                          // one masked entry in row 0
    Pair x = FromValues(values, {4, 300}, dtype);
    Pair y = Empty({4, 300}, dtype);
    Cpu().SoftmaxForward(x.cpu, y.cpu);
    Gpu().SoftmaxForward(x.gpu, y.gpu);
    ExpectNear(y, TolFor(dtype), "softmax");
    Pair ys = {y.cpu, ToGpu(y.cpu)};
    Pair gy = Random({4, 300}, dtype, 82);
    Pair gx = Empty({4, 300}, dtype);
    Cpu().SoftmaxBackward(ys.cpu, gy.cpu, gx.cpu);
    Gpu().SoftmaxBackward(ys.gpu, gy.gpu, gx.gpu);
    ExpectNear(gx, TolFor(dtype), "softmax backward");
  }
}

TEST(CudaOpsTest, CrossEntropyWithIgnoreIndexAndWeights) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 6, v = 500, ignore = -100;
  for (DType dtype : kFloatTypes) {
    for (DType target_dtype : {DType::kI64, DType::kI32}) {
      for (bool weighted : {false, true}) {
        Pair logits = Random({n, v}, dtype, 91, -8, 8);
        Pair targets = FromValues({3, 499, ignore, 0, 250, 3}, {n}, target_dtype);
        Pair weights = weighted ? Random({n}, dtype, 92, 0, 2) : Pair{};
        Pair losses = Empty({n}, dtype), lse = Empty({n}, dtype);
        Cpu().CrossEntropyForward(logits.cpu, targets.cpu, weights.cpu, ignore, losses.cpu,
                                  lse.cpu);
        Gpu().CrossEntropyForward(logits.gpu, targets.gpu, weights.gpu, ignore, losses.gpu,
                                  lse.gpu);
        ExpectNear(losses, TolFor(dtype), "cross_entropy losses");
        ExpectNear(lse, TolFor(dtype), "cross_entropy lse");
        Pair l = {lse.cpu, ToGpu(lse.cpu)};
        Pair gl = Random({n}, dtype, 93);
        Pair grad = Empty({n, v}, dtype);
        Cpu().CrossEntropyBackward(logits.cpu, targets.cpu, weights.cpu, ignore, l.cpu, gl.cpu,
                                   grad.cpu);
        Gpu().CrossEntropyBackward(logits.gpu, targets.gpu, weights.gpu, ignore, l.gpu, gl.gpu,
                                   grad.gpu);
        ExpectNear(grad, TolFor(dtype), "cross_entropy backward");
      }
    }
  }
  // A target outside the vocabulary is a clear error, not a device fault.
  Pair logits = Random({2, 5}, DType::kF32, 94);
  Pair bad = FromValues({1, 5}, {2}, DType::kI64);
  Pair losses = Empty({2}, DType::kF32), lse = Empty({2}, DType::kF32);
  EXPECT_THROW(Gpu().CrossEntropyForward(logits.gpu, bad.gpu, Tensor(), ignore, losses.gpu,
                                         lse.gpu),
               Error);
}

TEST(CudaOpsTest, RopeForwardAndInverse) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kFloatTypes) {
    for (DType pos_dtype : {DType::kI64, DType::kI32}) {
      for (bool inverse : {false, true}) {
        Pair x = Random({2, 3, 4, 8}, dtype, 101);
        Pair pos = FromValues({0, 1, 2, 100000, -3, 7, 7, 65535}, {2, 4}, pos_dtype);
        Pair out = Empty({2, 3, 4, 8}, dtype);
        Cpu().Rope(x.cpu, pos.cpu, 10000.0, inverse, out.cpu);
        Gpu().Rope(x.gpu, pos.gpu, 10000.0, inverse, out.gpu);
        // Device sin/cos/pow differ from glibc by an ulp or two of the angle's double value.
        ExpectNear(out, dtype == DType::kF64 ? Tol{1e-10, 1e-12} : TolFor(dtype), "rope");
      }
    }
  }
}

TEST(CudaOpsTest, EmbeddingGatherAndDeterministicScatter) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    for (DType id_dtype : {DType::kI32, DType::kI64}) {
      Pair table = Random({10, 6}, dtype, 111);
      Pair ids = FromValues({3, 0, 9, 3, 3, 7, 0}, {7}, id_dtype);
      Pair out = Empty({7, 6}, dtype);
      Cpu().EmbeddingForward(table.cpu, ids.cpu, out.cpu);
      Gpu().EmbeddingForward(table.gpu, ids.gpu, out.gpu);
      ExpectNear(out, kExact, std::string("embedding ") + DTypeName(dtype));
      if (dtype == DType::kBF16) continue;
      Pair g = Random({7, 6}, dtype, 112);
      Pair grad_table = Zeros({10, 6}, dtype);
      Cpu().EmbeddingBackward(ids.cpu, g.cpu, grad_table.cpu);
      Gpu().EmbeddingBackward(ids.gpu, g.gpu, grad_table.gpu);
      // Same summation order as the CPU backend: bit-identical.
      ExpectNear(grad_table, kExact, std::string("embedding backward ") + DTypeName(dtype));
    }
  }
  Pair table = Random({4, 2}, DType::kF32, 113);
  Pair bad = FromValues({1, 4}, {2}, DType::kI64);
  Pair out = Empty({2, 2}, DType::kF32);
  EXPECT_THROW(Gpu().EmbeddingForward(table.gpu, bad.gpu, out.gpu), Error);
}

TEST(CudaOpsTest, AdamWUpdateOverSteps) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kFloatTypes) {
    Pair p = Random({33}, dtype, 121);
    Pair m = Zeros({33}, dtype), v = Zeros({33}, dtype);
    for (int64_t step = 1; step <= 3; ++step) {
      Pair g = Random({33}, dtype, 122 + static_cast<uint32_t>(step));
      Cpu().AdamWUpdate(p.cpu, g.cpu, m.cpu, v.cpu, 1e-2, 0.9, 0.95, 1e-8, 0.1, step);
      Gpu().AdamWUpdate(p.gpu, g.gpu, m.gpu, v.gpu, 1e-2, 0.9, 0.95, 1e-8, 0.1, step);
    }
    ExpectNear(p, TolFor(dtype), "adamw param");
    ExpectNear(m, TolFor(dtype), "adamw exp_avg");
    ExpectNear(v, TolFor(dtype), "adamw exp_avg_sq");
  }
}

TEST(CudaOpsTest, SumSquaresEachMatchesOneByOne) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kFloatTypes) {
    std::vector<Tensor> cpu, gpu;
    for (int64_t n : {1, 33, 100000, 7}) {
      Pair x = Random({n}, dtype, 151 + static_cast<uint32_t>(n));
      cpu.push_back(x.cpu);
      gpu.push_back(x.gpu);
    }
    const std::vector<double> each = Gpu().SumSquaresEach(gpu);
    ASSERT_EQ(each.size(), gpu.size());
    for (size_t i = 0; i < gpu.size(); ++i) {
      EXPECT_EQ(each[i], Gpu().SumSquares(gpu[i])) << i;  // the same kernels, bitwise
      EXPECT_NEAR(each[i], Cpu().SumSquares(cpu[i]), 1e-9 * Cpu().SumSquares(cpu[i])) << i;
    }
  }
}

TEST(CudaOpsTest, AdafactorUpdateOverSteps) {
  SKIP_WITHOUT_GPU();
  for (DType dtype : kFloatTypes) {
    for (bool factored : {true, false}) {
      for (double beta1 : {0.0, 0.9}) {
        SCOPED_TRACE(std::string(factored ? "factored" : "unfactored") + " beta1 " +
                     std::to_string(beta1));
        // [2, 5, 7] factored as 2 x (5 x 7); unfactored over all 70 elements.
        Pair p = Random({2, 5, 7}, dtype, 141);
        Pair row = Zeros({10}, dtype), col = Zeros({14}, dtype), sq = Zeros({2, 5, 7}, dtype);
        Pair m = Zeros({2, 5, 7}, dtype);
        for (int64_t step = 1; step <= 3; ++step) {
          Pair g = Random({2, 5, 7}, dtype, 142 + static_cast<uint32_t>(step));
          for (bool on_gpu : {false, true}) {
            AdafactorArgs a;
            a.param = on_gpu ? p.gpu : p.cpu;
            a.grad = on_gpu ? g.gpu : g.cpu;
            if (factored) {
              a.row = on_gpu ? row.gpu : row.cpu;
              a.col = on_gpu ? col.gpu : col.cpu;
              a.batch = 2, a.n = 5, a.m = 7;
            } else {
              a.sq = on_gpu ? sq.gpu : sq.cpu;
              a.m = 70;
            }
            if (beta1 > 0) a.exp_avg = on_gpu ? m.gpu : m.cpu;
            a.decay = 0.99 * (1 - std::pow(0.99, step - 1.0)) / (1 - std::pow(0.99, step));
            a.eps1 = 1e-30, a.clip_threshold = 1.0, a.beta1 = beta1, a.lr = 0.05;
            a.weight_decay = 0.1;
            (on_gpu ? Gpu() : Cpu()).AdafactorUpdate(a);
          }
        }
        ExpectNear(p, TolFor(dtype), "adafactor param");
        if (factored) {
          ExpectNear(row, TolFor(dtype), "adafactor row");
          ExpectNear(col, TolFor(dtype), "adafactor col");
        } else {
          ExpectNear(sq, TolFor(dtype), "adafactor sq");
        }
        if (beta1 > 0) ExpectNear(m, TolFor(dtype), "adafactor exp_avg");
      }
    }
  }
}

TEST(CudaOpsTest, UnsupportedDtypesAreErrorsNotCrashes) {
  SKIP_WITHOUT_GPU();
  Pair x = Random({4}, DType::kBF16, 131);
  Pair y = Empty({4}, DType::kBF16);
  EXPECT_THROW(Gpu().Unary(UnaryOp::kExp, x.gpu, y.gpu), Error);
  EXPECT_THROW(Gpu().Affine(x.gpu, 1.0, 0.0, y.gpu), Error);
}

#ifdef FAM_HAVE_CUDA_BACKEND
TEST(CudaOpsTest, CachingAllocatorReusesDeviceMemory) {
  SKIP_WITHOUT_GPU();
  auto& backend = dynamic_cast<cuda::CudaBackend&>(Gpu());
  backend.Synchronize();
  const cuda::AllocatorStats before = backend.allocator().stats();
  {
    Tensor t = Tensor::Empty({1000, 1000}, DType::kF32, Device::CUDA());  // 4 MB -> 4 MiB class
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

}  // namespace
}  // namespace fam
