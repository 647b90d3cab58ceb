// Autograd engine: backward from a scalar, accumulation, no-grad, detach, graph release, and
// gradchecks of the elementwise, reduction, view, concat and matmul ops.
#include "framework/autograd/node.h"
#include "framework/backends/cpu/cpu_gemm.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"

namespace fam {
namespace {

using testing::Gradcheck;
using testing::RandomTensor;
using V = std::vector<Tensor>;

TEST(Autograd, SimpleChainAndAccumulation) {
  Tensor x = Tensor::FromVector({1, 2, 3}, {3}, DType::kF64).set_requires_grad(true);
  Tensor y = ops::SumAll(ops::Mul(x, x));  // d/dx = 2x
  y.backward();
  EXPECT_EQ(x.grad().ToDoubles(), (std::vector<double>{2, 4, 6}));
  Tensor z = ops::SumAll(ops::Scale(x, 3.0));
  z.backward();  // accumulates
  EXPECT_EQ(x.grad().ToDoubles(), (std::vector<double>{5, 7, 9}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, DiamondGraphSumsBothPaths) {
  Tensor x = Tensor::FromVector({2}, {1}, DType::kF64).set_requires_grad(true);
  Tensor a = ops::Scale(x, 3.0);
  Tensor b = ops::Mul(a, a);      // 9x²
  Tensor c = ops::Add(a, b);      // 3x + 9x²  → 3 + 18x = 39
  ops::SumAll(c).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 39.0);
}

TEST(Autograd, NoGradAndDetach) {
  Tensor x = Tensor::FromVector({1, 2}, {2}).set_requires_grad(true);
  {
    NoGradGuard guard;
    Tensor y = ops::Mul(x, x);
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
  }
  Tensor d = ops::Mul(x, x).detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_THROW(ops::SumAll(d).backward(), Error);
}

TEST(Autograd, GraphIsReleasedAfterBackward) {
  Tensor x = Tensor::FromVector({1, 2}, {2}).set_requires_grad(true);
  Tensor y = ops::SumAll(ops::Exp(x));
  y.backward();
  EXPECT_THROW(y.backward(), Error);  // second backward through a consumed graph
  // Saved activations were freed: the Exp node holds nothing.
  std::weak_ptr<Storage> saved;
  {
    Tensor h = ops::Exp(x);
    saved = h.storage();
    Tensor l = ops::SumAll(ops::Mul(h, h));
    h = Tensor();
    EXPECT_FALSE(saved.expired());  // kept alive by the graph
    l.backward();
  }
  EXPECT_TRUE(saved.expired());
}

TEST(Autograd, BackwardNeedsScalarOrGradient) {
  Tensor x = Tensor::FromVector({1, 2}, {2}).set_requires_grad(true);
  Tensor y = ops::Scale(x, 2.0);
  EXPECT_THROW(y.backward(), Error);
  y.backward(Tensor::FromVector({1, 1}, {2}));
  EXPECT_EQ(x.grad().ToDoubles(), (std::vector<double>{2, 2}));
}

TEST(Gradcheck, BinaryWithBroadcasting) {
  Tensor a = RandomTensor({2, 3, 4}, DType::kF64, 1, 1.0, true);
  Tensor b = RandomTensor({3, 1}, DType::kF64, 2, 1.0, true);
  Tensor c = ops::AddScalar(ops::Square(RandomTensor({4}, DType::kF64, 3)), 0.5).detach();
  c.set_requires_grad(true);
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Add(v[0], v[1]); }, {a, b}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Sub(v[0], v[1]); }, {a, b}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Mul(v[0], v[1]); }, {a, b}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Div(v[0], v[1]); }, {a, c}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Scale(v[0], -1.5); }, {a}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::AddScalar(v[0], 2.0); }, {a}));
}

TEST(Gradcheck, Unary) {
  Tensor x = RandomTensor({3, 5}, DType::kF64, 4, 1.0, true);
  Tensor pos = ops::AddScalar(ops::Square(RandomTensor({3, 5}, DType::kF64, 5)), 0.3).detach();
  pos.set_requires_grad(true);
  for (UnaryOp op : {UnaryOp::kNeg, UnaryOp::kExp, UnaryOp::kSilu, UnaryOp::kGelu,
                     UnaryOp::kSquare, UnaryOp::kTanh, UnaryOp::kSigmoid})
    EXPECT_TRUE(Gradcheck([op](const V& v) { return ops::Unary(op, v[0]); }, {x}))
        << UnaryOpName(op);
  for (UnaryOp op : {UnaryOp::kLog, UnaryOp::kSqrt, UnaryOp::kRsqrt})
    EXPECT_TRUE(Gradcheck([op](const V& v) { return ops::Unary(op, v[0]); }, {pos}))
        << UnaryOpName(op);
}

TEST(Gradcheck, Reductions) {
  Tensor x = RandomTensor({2, 3, 4}, DType::kF64, 6, 1.0, true);
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Sum(v[0], {1}); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Sum(v[0], {0, 2}, true); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Mean(v[0], {-1}); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::MeanAll(v[0]); }, {x}));
  Tensor s = ops::Sum(Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3}), {0});
  EXPECT_EQ(s.ToDoubles(), (std::vector<double>{5, 7, 9}));
  Tensor m = ops::Mean(Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3}), {1}, true);
  EXPECT_EQ(m.shape(), (Shape{2, 1}));
  EXPECT_EQ(m.ToDoubles(), (std::vector<double>{2, 5}));
}

TEST(Gradcheck, ViewsAndConcat) {
  Tensor x = RandomTensor({2, 3, 4}, DType::kF64, 7, 1.0, true);
  Tensor y = RandomTensor({2, 2, 4}, DType::kF64, 8, 1.0, true);
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Transpose(v[0], 0, 2); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Permute(v[0], {1, 2, 0}); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Reshape(v[0], {4, -1}); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Slice(v[0], 1, 1, 3); }, {x}));
  EXPECT_TRUE(Gradcheck(
      [](const V& v) { return ops::Expand(ops::Slice(v[0], 1, 0, 1), {3, 2, 3, 4}); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Concat({v[0], v[1]}, 1); }, {x, y}));
  EXPECT_TRUE(Gradcheck(
      [](const V& v) {
        auto parts = ops::Split(v[0], {1, 2}, 1);
        return ops::Mul(parts[0], ops::Sum(parts[1], {1}, true));
      },
      {x}));
}

TEST(Gradcheck, Matmul) {
  Tensor a = RandomTensor({2, 3, 4}, DType::kF64, 9, 1.0, true);
  Tensor b = RandomTensor({2, 4, 5}, DType::kF64, 10, 1.0, true);
  Tensor w = RandomTensor({5, 4}, DType::kF64, 11, 1.0, true);
  Tensor b2 = RandomTensor({4, 5}, DType::kF64, 12, 1.0, true);
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Matmul(v[0], v[1]); }, {a, b}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Matmul(v[0], v[1]); }, {a, b2}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Linear(v[0], v[1]); }, {a, w}));
  EXPECT_TRUE(Gradcheck(
      [](const V& v) { return ops::Matmul(ops::Transpose(v[0], 1, 2), ops::Transpose(v[0], 1, 2)
                                                                          .transpose(1, 2)); },
      {a}));
}

TEST(Matmul, MatchesNaiveLoopsAndTiledFallback) {
  for (auto [m, k, n] : {std::tuple{1, 1, 1}, {7, 13, 5}, {65, 300, 257}}) {
    Tensor a = RandomTensor({2, m, k}, DType::kF32, 20);
    Tensor b = RandomTensor({k, n}, DType::kF32, 21);
    Tensor c = ops::Matmul(a, b);
    std::vector<double> av = a.ToDoubles(), bv = b.ToDoubles(), cv = c.ToDoubles();
    double max_err = 0;
    for (int bt = 0; bt < 2; ++bt)
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double ref = 0;
          for (int p = 0; p < k; ++p) ref += av[(bt * m + i) * k + p] * bv[p * n + j];
          max_err = std::max(max_err, std::abs(ref - cv[(bt * m + i) * n + j]));
        }
    EXPECT_LT(max_err, 1e-3) << m << "x" << k << "x" << n;

    // The tiled fallback against the default path, with transposed operands and beta.
    Tensor bt_ = RandomTensor({n, k}, DType::kF32, 22);
    Tensor expect = ops::Matmul(a, ops::Transpose(bt_, 0, 1));
    GemmArgs g;
    g.trans_a = false;
    g.trans_b = true;
    g.batch = 2;
    g.m = m;
    g.n = n;
    g.k = k;
    g.lda = k;
    g.ldb = k;
    g.ldc = n;
    g.stride_a = m * k;
    g.stride_b = 0;
    g.stride_c = m * n;
    g.a = a;
    g.b = bt_;
    g.c = Tensor::Zeros({2, m, n});
    cpu::GemmTiled(g);
    EXPECT_LT(testing::MaxAbsDiff(g.c, expect), 1e-3);
  }
}

TEST(Ops, ShapeAndDTypeErrorsNameTheOperands) {
  Tensor a = Tensor::Zeros({2, 3});
  Tensor b = Tensor::Zeros({4, 5});
  try {
    ops::Matmul(a, b);
    FAIL();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("f32[2, 3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("f32[4, 5]"), std::string::npos) << msg;
  }
  try {
    ops::Add(a, Tensor::Zeros({2, 3}, DType::kF64));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dtype mismatch"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::Add(a, Tensor::Zeros({3, 2})), Error);
  EXPECT_THROW(ops::Exp(Tensor::Zeros({2}, DType::kI64)), Error);
}

TEST(Ops, BF16StorageComputesInF32) {
  Tensor a = Tensor::FromVector({1.5, 2.0, -3.0}, {3}).to(DType::kBF16);
  Tensor b = Tensor::FromVector({0.5, 0.25, 1.0}, {3}).to(DType::kBF16);
  Tensor c = ops::Mul(a, b);
  EXPECT_EQ(c.dtype(), DType::kBF16);
  EXPECT_EQ(c.ToDoubles(), (std::vector<double>{0.75, 0.5, -3.0}));
  Tensor m = ops::Matmul(Tensor::Ones({2, 3}).to(DType::kBF16), Tensor::Ones({3, 2}).to(DType::kBF16));
  EXPECT_EQ(m.dtype(), DType::kBF16);
  EXPECT_EQ(m.ToDoubles(), (std::vector<double>{3, 3, 3, 3}));
}

}  // namespace
}  // namespace fam
