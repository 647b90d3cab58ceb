// Fused ops (RMSNorm, softmax, cross-entropy, RoPE, embedding): values against naive f64 loops
// written here, f64 gradchecks of every differentiable input, f32 and bf16 paths against f64, the
// error messages for bad input, and a proof that the gradcheck catches a wrong backward.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"

namespace fam {
namespace {

using testing::Gradcheck;
using testing::MaxAbsDiff;
using testing::RandomTensor;
using V = std::vector<Tensor>;
using Vec = std::vector<double>;

// ---------------------------------------------------------------------------------------------
// Naive references (f64 loops over flat row-major data).

Vec RmsNormRef(const Vec& x, const Vec& w, double eps) {
  const size_t d = w.size(), n = x.size() / d;
  Vec y(x.size());
  for (size_t r = 0; r < n; ++r) {
    double ms = 0;
    for (size_t j = 0; j < d; ++j) ms += x[r * d + j] * x[r * d + j];
    ms /= static_cast<double>(d);
    for (size_t j = 0; j < d; ++j) y[r * d + j] = x[r * d + j] / std::sqrt(ms + eps) * w[j];
  }
  return y;
}

Vec SoftmaxRef(const Vec& x, size_t d) {
  Vec y(x.size());
  for (size_t r = 0; r < x.size() / d; ++r) {
    double max = -std::numeric_limits<double>::infinity();
    for (size_t j = 0; j < d; ++j) max = std::max(max, x[r * d + j]);
    double sum = 0;
    for (size_t j = 0; j < d; ++j) sum += std::exp(x[r * d + j] - max);
    for (size_t j = 0; j < d; ++j) y[r * d + j] = std::exp(x[r * d + j] - max) / sum;
  }
  return y;
}

// Per-token losses; `grad` (if given) receives d(sum of losses)/d(logits).
Vec CrossEntropyRef(const Vec& logits, const std::vector<int64_t>& targets, const Vec& weights,
                    int64_t ignore_index, Vec* grad = nullptr) {
  const size_t n = targets.size(), v = logits.size() / n;
  Vec losses(n, 0.0);
  if (grad) grad->assign(logits.size(), 0.0);
  for (size_t r = 0; r < n; ++r) {
    if (targets[r] == ignore_index) continue;
    double sum = 0;
    for (size_t j = 0; j < v; ++j) sum += std::exp(logits[r * v + j]);
    const double w = weights.empty() ? 1.0 : weights[r];
    losses[r] = w * (std::log(sum) - logits[r * v + targets[r]]);
    if (grad) {
      for (size_t j = 0; j < v; ++j) (*grad)[r * v + j] = w * std::exp(logits[r * v + j]) / sum;
      (*grad)[r * v + targets[r]] -= w;
    }
  }
  return losses;
}

// x [B, H, T, D], positions [B * T] (one row per batch entry).
Vec RopeRef(const Vec& x, const std::vector<int64_t>& pos, int64_t b, int64_t h, int64_t t,
            int64_t d, double base) {
  Vec y(x.size());
  const int64_t half = d / 2;
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi)
      for (int64_t ti = 0; ti < t; ++ti)
        for (int64_t i = 0; i < half; ++i) {
          const double theta = static_cast<double>(pos[bi * t + ti]) *
                               std::pow(base, -2.0 * static_cast<double>(i) / d);
          const int64_t row = ((bi * h + hi) * t + ti) * d;
          const double a = x[row + i], bv = x[row + half + i];
          y[row + i] = a * std::cos(theta) - bv * std::sin(theta);
          y[row + half + i] = bv * std::cos(theta) + a * std::sin(theta);
        }
  return y;
}

double MaxDiff(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// Runs fn, expecting a fam::Error whose message contains every one of `parts`.
void ExpectErrorNaming(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
  }
}

// Positive weights for CE (|N(0,1)| + 0.2) as a contiguous f64 leaf.
Tensor PositiveTensor(const Shape& shape, uint64_t seed) {
  Vec v = RandomTensor(shape, DType::kF64, seed).ToDoubles();
  for (double& x : v) x = std::abs(x) + 0.2;
  return Tensor::FromVector(v, shape, DType::kF64);
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

TEST(RmsNorm, MatchesNaiveReference) {
  Tensor x = RandomTensor({2, 3, 8}, DType::kF64, 1);
  Tensor w = RandomTensor({8}, DType::kF64, 2);
  Tensor y = ops::RmsNorm(x, w, 1e-6);
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_LT(MaxDiff(y.ToDoubles(), RmsNormRef(x.ToDoubles(), w.ToDoubles(), 1e-6)), 1e-12);
  // eps matters for small rows.
  Tensor small = ops::Scale(x, 1e-3);
  EXPECT_LT(MaxDiff(ops::RmsNorm(small, w, 1e-4).ToDoubles(),
                    RmsNormRef(small.ToDoubles(), w.ToDoubles(), 1e-4)),
            1e-12);
}

TEST(RmsNorm, Gradcheck) {
  Tensor x = RandomTensor({2, 3, 5}, DType::kF64, 3, 1.0, true);
  Tensor w = RandomTensor({5}, DType::kF64, 4, 1.0, true);
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::RmsNorm(v[0], v[1], 1e-5); }, {x, w}));
  // A strided view as input.
  EXPECT_TRUE(Gradcheck(
      [](const V& v) { return ops::RmsNorm(ops::Transpose(v[0], 0, 1), v[1], 1e-5); }, {x, w}));
  // Only one input requiring grad.
  Tensor w_fixed = RandomTensor({5}, DType::kF64, 4);
  EXPECT_TRUE(Gradcheck([&](const V& v) { return ops::RmsNorm(v[0], w_fixed, 1e-5); }, {x}));
}

TEST(RmsNorm, ParallelPathAndWeightGradMatchReference) {
  // 300 x 128 rows runs the OpenMP path and the chunked weight-gradient reduction.
  const int64_t n = 300, d = 128;
  Tensor x = RandomTensor({n, d}, DType::kF64, 5, 1.0, true);
  Tensor w = RandomTensor({d}, DType::kF64, 6, 1.0, true);
  Tensor g = RandomTensor({n, d}, DType::kF64, 7);
  Tensor y = ops::RmsNorm(x, w, 1e-6);
  EXPECT_LT(MaxDiff(y.ToDoubles(), RmsNormRef(x.ToDoubles(), w.ToDoubles(), 1e-6)), 1e-12);
  y.backward(g);
  // Reference grad_w[j] = Σ_r g·x/rms; grad_x by the closed form in loops.
  Vec xv = x.ToDoubles(), wv = w.ToDoubles(), gv = g.ToDoubles();
  Vec gw(d, 0.0), gx(n * d);
  for (int64_t r = 0; r < n; ++r) {
    double ms = 0, dot = 0;
    for (int64_t j = 0; j < d; ++j) ms += xv[r * d + j] * xv[r * d + j] / d;
    const double inv = 1.0 / std::sqrt(ms + 1e-6);
    for (int64_t j = 0; j < d; ++j) {
      gw[j] += gv[r * d + j] * xv[r * d + j] * inv;
      dot += gv[r * d + j] * wv[j] * xv[r * d + j];
    }
    for (int64_t j = 0; j < d; ++j)
      gx[r * d + j] = inv * gv[r * d + j] * wv[j] - inv * inv * inv * dot / d * xv[r * d + j];
  }
  EXPECT_LT(MaxDiff(w.grad().ToDoubles(), gw), 1e-10);
  EXPECT_LT(MaxDiff(x.grad().ToDoubles(), gx), 1e-12);
}

TEST(RmsNorm, F32AndBF16CloseToF64) {
  Tensor x = RandomTensor({4, 64}, DType::kF64, 8, 1.0, true);
  Tensor w = RandomTensor({64}, DType::kF64, 9, 1.0, true);
  Tensor g = RandomTensor({4, 64}, DType::kF64, 10);
  Tensor y = ops::RmsNorm(x, w, 1e-6);
  y.backward(g);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    const double tol = dt == DType::kF32 ? 1e-5 : 5e-2;
    Tensor xl = x.detach().to(dt).set_requires_grad(true);
    Tensor wl = w.detach().to(dt).set_requires_grad(true);
    Tensor yl = ops::RmsNorm(xl, wl, 1e-6);
    EXPECT_EQ(yl.dtype(), dt);
    EXPECT_LT(MaxAbsDiff(yl, y), tol * 4) << DTypeName(dt);
    yl.backward(g.to(dt));
    EXPECT_EQ(xl.grad().dtype(), GradDType(dt));  // a bf16 leaf accumulates in f32
    EXPECT_LT(MaxAbsDiff(xl.grad(), x.grad()), tol * 4) << DTypeName(dt);
    EXPECT_LT(MaxAbsDiff(wl.grad(), w.grad()), tol * 16) << DTypeName(dt);
  }
}

TEST(RmsNorm, ShapeErrorsNameTheOperands) {
  ExpectErrorNaming(
      [] {
        ops::RmsNorm(Tensor::Zeros({2, 4}), Tensor::Ones({3}), 1e-6);
      },
      {"f32[2, 4]", "f32[3]"});
  ExpectErrorNaming(
      [] {
        ops::RmsNorm(Tensor::Zeros({2, 4}), Tensor::Ones({4}, DType::kF64), 1e-6);
      },
      {"dtype mismatch"});
}

// ---------------------------------------------------------------------------------------------
// Softmax

TEST(Softmax, MatchesReferenceAndIsStable) {
  Tensor x = RandomTensor({3, 2, 7}, DType::kF64, 11, 3.0);
  EXPECT_LT(MaxDiff(ops::Softmax(x).ToDoubles(), SoftmaxRef(x.ToDoubles(), 7)), 1e-14);
  // Huge logits do not overflow (the row max is subtracted).
  Tensor big = Tensor::FromVector({1000, 1001, 999, -1000, -1001, -1002}, {2, 3}, DType::kF32);
  Vec expect = SoftmaxRef(big.ToDoubles(), 3);
  EXPECT_LT(MaxDiff(ops::Softmax(big).ToDoubles(), expect), 1e-6);
  // A fully masked row gives zeros, not NaN; a partly masked row ignores -inf entries.
  const double inf = std::numeric_limits<double>::infinity();
  Tensor masked = Tensor::FromVector({-inf, -inf, -inf, 0.0, -inf, 0.0}, {2, 3});
  EXPECT_EQ(ops::Softmax(masked).ToDoubles(), (Vec{0, 0, 0, 0.5, 0, 0.5}));
}

TEST(Softmax, GradcheckAndLowPrecision) {
  Tensor x = RandomTensor({2, 3, 4}, DType::kF64, 12, 1.0, true);
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Softmax(v[0]); }, {x}));
  EXPECT_TRUE(Gradcheck([](const V& v) { return ops::Softmax(ops::Transpose(v[0], 1, 2)); }, {x}));
  // Parallel path (rows x cols above the grain), f32 and bf16 against f64.
  Tensor xl = RandomTensor({64, 600}, DType::kF64, 13, 2.0, true);
  Tensor g = RandomTensor({64, 600}, DType::kF64, 14);
  Tensor y = ops::Softmax(xl);
  EXPECT_LT(MaxDiff(y.ToDoubles(), SoftmaxRef(xl.ToDoubles(), 600)), 1e-14);
  y.backward(g);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Tensor xd = xl.detach().to(dt).set_requires_grad(true);
    Tensor yd = ops::Softmax(xd);
    EXPECT_EQ(yd.dtype(), dt);
    const double tol = dt == DType::kF32 ? 1e-6 : 2e-2;
    EXPECT_LT(MaxAbsDiff(yd, y), tol) << DTypeName(dt);
    yd.backward(g.to(dt));
    EXPECT_LT(MaxAbsDiff(xd.grad(), xl.grad()), tol * 4) << DTypeName(dt);
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

TEST(CrossEntropy, MatchesReferenceWithWeightsAndIgnoredTargets) {
  Tensor logits = RandomTensor({5, 7}, DType::kF64, 15, 2.0);
  std::vector<int64_t> tv = {3, -100, 0, 6, -100};
  Tensor weights = PositiveTensor({5}, 16);
  for (DType tdt : {DType::kI64, DType::kI32}) {
    Tensor targets = Tensor::FromInts(tv, {5}, tdt);
    Tensor plain = ops::CrossEntropy(logits, targets);
    EXPECT_EQ(plain.shape(), (Shape{5}));
    EXPECT_LT(MaxDiff(plain.ToDoubles(), CrossEntropyRef(logits.ToDoubles(), tv, {}, -100)), 1e-13);
    Tensor weighted = ops::CrossEntropy(logits, targets, weights);
    EXPECT_LT(MaxDiff(weighted.ToDoubles(),
                      CrossEntropyRef(logits.ToDoubles(), tv, weights.ToDoubles(), -100)),
              1e-13);
    EXPECT_EQ(weighted.ToDoubles()[1], 0.0);
  }
  // A custom ignore_index inside the vocabulary.
  Tensor t2 = Tensor::FromInts({2, 2, 5, 1, 0}, {5});
  EXPECT_LT(MaxDiff(ops::CrossEntropy(logits, t2, Tensor(), 2).ToDoubles(),
                    CrossEntropyRef(logits.ToDoubles(), {2, 2, 5, 1, 0}, {}, 2)),
            1e-13);
}

TEST(CrossEntropy, GradcheckLogitsAndWeights) {
  Tensor logits = RandomTensor({4, 5}, DType::kF64, 17, 1.5, true);
  Tensor weights = PositiveTensor({4}, 18).set_requires_grad(true);
  Tensor targets = Tensor::FromInts({1, -100, 4, 0}, {4});
  EXPECT_TRUE(Gradcheck([&](const V& v) { return ops::CrossEntropy(v[0], targets, v[1]); },
                        {logits, weights}));
  EXPECT_TRUE(Gradcheck([&](const V& v) { return ops::CrossEntropy(v[0], targets); }, {logits}));
  // Weights that do not need a gradient take the fused-weight kernel path.
  Tensor fixed = PositiveTensor({4}, 19);
  EXPECT_TRUE(
      Gradcheck([&](const V& v) { return ops::CrossEntropy(v[0], targets, fixed); }, {logits}));
  // Ignored rows get exactly zero gradient.
  logits.zero_grad();
  ops::SumAll(ops::CrossEntropy(logits, targets, weights)).backward();
  Vec gl = logits.grad().ToDoubles();
  for (int j = 0; j < 5; ++j) EXPECT_EQ(gl[5 + j], 0.0);
  EXPECT_EQ(weights.grad().ToDoubles()[1], 0.0);
}

TEST(CrossEntropy, ParallelPathAndLowPrecision) {
  const int64_t n = 40, v = 1000;  // n * v above the parallel grain
  Tensor logits = RandomTensor({n, v}, DType::kF64, 20, 3.0, true);
  std::vector<int64_t> tv(n);
  for (int64_t i = 0; i < n; ++i) tv[i] = i % 7 == 3 ? -100 : (i * 37) % v;
  Tensor targets = Tensor::FromInts(tv, {n});
  Tensor losses = ops::CrossEntropy(logits, targets);
  Vec ref_grad;
  Vec ref = CrossEntropyRef(logits.ToDoubles(), tv, {}, -100, &ref_grad);
  EXPECT_LT(MaxDiff(losses.ToDoubles(), ref), 1e-12);
  ops::SumAll(losses).backward();
  EXPECT_LT(MaxDiff(logits.grad().ToDoubles(), ref_grad), 1e-14);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Tensor ld = logits.detach().to(dt).set_requires_grad(true);
    Tensor lo = ops::CrossEntropy(ld, targets);
    EXPECT_EQ(lo.dtype(), DType::kF32);  // losses are computed and returned in f32
    // bf16 rounds the logits themselves; compare against the reference on the rounded logits.
    Vec rg;
    Vec r = CrossEntropyRef(ld.ToDoubles(), tv, {}, -100, &rg);
    EXPECT_LT(MaxDiff(lo.ToDoubles(), r), 1e-4) << DTypeName(dt);
    ops::SumAll(lo).backward();
    EXPECT_EQ(ld.grad().dtype(), GradDType(dt));  // a bf16 leaf accumulates in f32
    EXPECT_LT(MaxDiff(ld.grad().ToDoubles(), rg), dt == DType::kF32 ? 1e-6 : 1e-2) << DTypeName(dt);
  }
}

TEST(CrossEntropy, BadTargetsAreErrorsNamingValuePositionAndVocab) {
  Tensor logits = Tensor::Zeros({4, 5});
  ExpectErrorNaming(
      [&] {
        ops::CrossEntropy(logits, Tensor::FromInts({0, 1, 7, 2}, {4}));
      },
      {"target 7", "position 2", "[0, 5)"});
  ExpectErrorNaming(
      [&] {
        ops::CrossEntropy(logits, Tensor::FromInts({0, -3, 1, 2}, {4}, DType::kI32));
      },
      {"target -3", "position 1", "[0, 5)"});
  ExpectErrorNaming(
      [&] {
        ops::CrossEntropy(logits, Tensor::FromInts({0, 1, 2}, {3}));
      },
      {"i64[3]", "f32[4, 5]"});
  ExpectErrorNaming([&] { ops::CrossEntropy(logits, Tensor::Zeros({4})); }, {"f32[4]"});
}

// ---------------------------------------------------------------------------------------------
// RoPE

TEST(Rope, MatchesReferenceForPositiveNegativeAndLargePositions) {
  const int64_t b = 2, h = 3, t = 4, d = 6;
  Tensor x = RandomTensor({b, h, t, d}, DType::kF64, 21);
  std::vector<int64_t> pos = {0, 1, 2, 3, -4, -3, -2, -1};
  Tensor p2 = Tensor::FromInts(pos, {b, t});
  EXPECT_LT(MaxDiff(ops::Rope(x, p2, 10000.0).ToDoubles(),
                    RopeRef(x.ToDoubles(), pos, b, h, t, d, 10000.0)),
            1e-13);
  // [T] positions are shared by the batch; i32 positions.
  std::vector<int64_t> big = {999997, 999998, 999999, 1000000};
  Tensor p1 = Tensor::FromInts(big, {t}, DType::kI32);
  std::vector<int64_t> both = big;
  both.insert(both.end(), big.begin(), big.end());
  Vec ref = RopeRef(x.ToDoubles(), both, b, h, t, d, 500000.0);
  EXPECT_LT(MaxDiff(ops::Rope(x, p1, 500000.0).ToDoubles(), ref), 1e-9);
  // f32 at position ~10^6 stays accurate (angles are computed in double).
  EXPECT_LT(MaxDiff(ops::Rope(x.to(DType::kF32), p1, 500000.0).ToDoubles(), ref), 1e-5);
  // Position 0 is the identity.
  Tensor zero = Tensor::FromInts({0, 0, 0, 0}, {t});
  EXPECT_LT(MaxAbsDiff(ops::Rope(x, zero, 10000.0), x), 1e-15);
}

TEST(Rope, ParallelPathAndBackwardAreRotations) {
  const int64_t b = 2, h = 4, t = 64, d = 64;  // above the parallel grain
  Tensor x = RandomTensor({b, h, t, d}, DType::kF32, 34, 1.0, true);
  std::vector<int64_t> pos(b * t);
  for (int64_t i = 0; i < b * t; ++i) pos[i] = i * 7919 - 300;
  Tensor p = Tensor::FromInts(pos, {b, t});
  Tensor y = ops::Rope(x, p, 10000.0);
  EXPECT_LT(MaxDiff(y.ToDoubles(), RopeRef(x.ToDoubles(), pos, b, h, t, d, 10000.0)), 1e-5);
  // The backward of a rotation is its inverse: feeding y back as the gradient returns x.
  y.backward(y.detach());
  EXPECT_LT(MaxAbsDiff(x.grad(), x), 1e-5);
}

TEST(Rope, DotProductsDependOnlyOnRelativePosition) {
  Tensor q = RandomTensor({1, 1, 1, 8}, DType::kF64, 22);
  Tensor k = RandomTensor({1, 1, 1, 8}, DType::kF64, 23);
  auto dot = [&](int64_t m, int64_t n) {
    Vec a = ops::Rope(q, Tensor::FromInts({m}, {1}), 10000.0).ToDoubles();
    Vec c = ops::Rope(k, Tensor::FromInts({n}, {1}), 10000.0).ToDoubles();
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * c[i];
    return s;
  };
  const double base = dot(7, 3);
  EXPECT_NEAR(dot(-60, -64), base, 1e-12);
  EXPECT_NEAR(dot(1000004, 1000000), base, 1e-9);
  EXPECT_GT(std::abs(dot(3, 7) - base), 1e-6);  // and it does depend on it
}

TEST(Rope, GradcheckAndStridedInput) {
  Tensor x = RandomTensor({2, 2, 3, 4}, DType::kF64, 24, 1.0, true);
  Tensor p1 = Tensor::FromInts({-3, -2, -1}, {3});
  Tensor p2 = Tensor::FromInts({5, 6, 7, 999998, 999999, 1000000}, {2, 3});
  EXPECT_TRUE(Gradcheck([&](const V& v) { return ops::Rope(v[0], p1, 10000.0); }, {x}));
  EXPECT_TRUE(Gradcheck([&](const V& v) { return ops::Rope(v[0], p2, 10000.0); }, {x}));
  // x as a [B, T, H, D] tensor permuted to [B, H, T, D] (a strided view).
  Tensor xt = RandomTensor({2, 3, 2, 4}, DType::kF64, 25, 1.0, true);
  EXPECT_TRUE(Gradcheck(
      [&](const V& v) {
        return ops::Rope(ops::Permute(v[0], {0, 2, 1, 3}), p2, 10000.0);
      },
      {xt}));
  Tensor view = ops::Permute(xt, {0, 2, 1, 3});
  Tensor copy = ops::Contiguous(view);
  EXPECT_LT(MaxAbsDiff(ops::Rope(view, p2, 10000.0), ops::Rope(copy, p2, 10000.0)), 1e-15);
}

TEST(Rope, BF16AndErrors) {
  Tensor x = RandomTensor({1, 2, 3, 8}, DType::kF64, 26);
  Tensor p = Tensor::FromInts({-2, 40, 70000}, {3});
  Tensor y = ops::Rope(x, p, 10000.0);
  Tensor yb = ops::Rope(x.to(DType::kBF16), p, 10000.0);
  EXPECT_EQ(yb.dtype(), DType::kBF16);
  EXPECT_LT(MaxAbsDiff(yb, y), 4e-2);
  ExpectErrorNaming(
      [] {
        ops::Rope(Tensor::Zeros({1, 1, 2, 3}), Tensor::FromInts({0, 1}, {2}), 10000.0);
      },
      {"even", "f32[1, 1, 2, 3]"});
  ExpectErrorNaming(
      [] {
        ops::Rope(Tensor::Zeros({1, 1, 2, 4}), Tensor::FromInts({0, 1, 2}, {3}), 10000.0);
      },
      {"i64[3]", "f32[1, 1, 2, 4]"});
  ExpectErrorNaming(
      [] {
        ops::Rope(Tensor::Zeros({1, 1, 2, 4}), Tensor::Zeros({2}), 10000.0);
      },
      {"positions f32[2]"});
}

// ---------------------------------------------------------------------------------------------
// Embedding

TEST(Embedding, GatherMatchesReference) {
  Tensor table = RandomTensor({6, 4}, DType::kF64, 27);
  std::vector<int64_t> idv = {5, 0, 5, 2, 2, 2};
  for (DType idt : {DType::kI64, DType::kI32}) {
    Tensor ids = Tensor::FromInts(idv, {2, 3}, idt);
    Tensor out = ops::Embedding(table, ids);
    EXPECT_EQ(out.shape(), (Shape{2, 3, 4}));
    Vec tv = table.ToDoubles(), ov = out.ToDoubles();
    for (size_t i = 0; i < idv.size(); ++i)
      for (int j = 0; j < 4; ++j) EXPECT_EQ(ov[i * 4 + j], tv[idv[i] * 4 + j]);
  }
  // Strided ids; bf16 tables gather exactly.
  Tensor ids_t = ops::Transpose(Tensor::FromInts(idv, {2, 3}), 0, 1);
  Tensor out_t = ops::Embedding(table, ids_t);
  EXPECT_EQ(out_t.shape(), (Shape{3, 2, 4}));
  EXPECT_EQ(ops::Slice(out_t, 0, 1, 2).ToDoubles(),
            ops::Embedding(table, Tensor::FromInts({0, 2}, {2})).ToDoubles());
  Tensor tb = table.to(DType::kBF16);
  Tensor ob = ops::Embedding(tb, Tensor::FromInts(idv, {6}));
  EXPECT_EQ(ob.dtype(), DType::kBF16);
  EXPECT_EQ(ops::Slice(ob, 0, 0, 1).ToDoubles(), ops::Slice(tb, 0, 5, 6).ToDoubles());
}

TEST(Embedding, GradcheckWithRepeatedIds) {
  Tensor table = RandomTensor({5, 3}, DType::kF64, 28, 1.0, true);
  Tensor ids = Tensor::FromInts({4, 1, 4, 4, 0, 1}, {3, 2});
  EXPECT_TRUE(Gradcheck([&](const V& v) { return ops::Embedding(v[0], ids); }, {table}));
}

TEST(Embedding, ParallelScatterMatchesReference) {
  const int64_t vocab = 50, d = 64, n = 1200;  // n * d above the parallel grain
  Tensor table = RandomTensor({vocab, d}, DType::kF32, 29, 1.0, true);
  std::vector<int64_t> idv(n);
  for (int64_t i = 0; i < n; ++i) idv[i] = (i * i + 3 * i) % vocab;
  Tensor g = RandomTensor({n, d}, DType::kF32, 30);
  ops::Embedding(table, Tensor::FromInts(idv, {n})).backward(g);
  Vec gv = g.ToDoubles(), ref(vocab * d, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) ref[idv[i] * d + j] += gv[i * d + j];
  EXPECT_EQ(table.grad().dtype(), DType::kF32);
  EXPECT_LT(MaxDiff(table.grad().ToDoubles(), ref), 1e-4);
  // bf16 table: gradient computed in bf16, accumulated into an f32 leaf gradient, close to the
  // reference.
  Tensor tb = table.detach().to(DType::kBF16).set_requires_grad(true);
  ops::Embedding(tb, Tensor::FromInts(idv, {n})).backward(g.to(DType::kBF16));
  EXPECT_EQ(tb.grad().dtype(), DType::kF32);
  Vec gb = tb.grad().ToDoubles();
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(gb[i], ref[i], 0.05 * (1 + std::abs(ref[i])));
}

TEST(Embedding, BadIdsAreErrorsNamingIdPositionAndVocab) {
  Tensor table = Tensor::Zeros({10, 2});
  ExpectErrorNaming(
      [&] {
        ops::Embedding(table, Tensor::FromInts({1, 2, 3, -1}, {2, 2}));
      },
      {"id -1", "position 3", "[0, 10)"});
  ExpectErrorNaming(
      [&] {
        ops::Embedding(table, Tensor::FromInts({10, 2}, {2}, DType::kI32));
      },
      {"id 10", "position 0", "[0, 10)"});
  ExpectErrorNaming([&] { ops::Embedding(table, Tensor::Zeros({2})); }, {"f32[2]"});
}

// ---------------------------------------------------------------------------------------------
// The gradchecks can fail: a wrapper node scales one input's gradient of a correct op.

class PerturbedBackward : public Node {
 public:
  PerturbedBackward(std::shared_ptr<Node> inner, size_t input, double factor)
      : inner_(std::move(inner)), input_(input), factor_(factor) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    std::vector<Tensor> grads = inner_->Backward(g);
    if (input_ < grads.size() && grads[input_].defined())
      grads[input_] = ops::Scale(grads[input_], factor_);
    return grads;
  }
  void Release() override { inner_->Release(); }
  std::string name() const override { return "Perturbed" + inner_->name(); }

 private:
  std::shared_ptr<Node> inner_;
  size_t input_;
  double factor_;
};

// `out` with its backward replaced by the perturbed one (no-op when no graph was recorded).
Tensor Perturb(Tensor out, size_t input, double factor) {
  std::shared_ptr<Node> inner = out.grad_fn();
  if (!inner) return out;
  auto node = std::make_shared<PerturbedBackward>(inner, input, factor);
  node->next = inner->next;
  out.set_grad_fn(node);
  return out;
}

TEST(GradcheckCatches, WrongBackwards) {
  Tensor x = RandomTensor({2, 4}, DType::kF64, 31, 1.0, true);
  Tensor w = RandomTensor({4}, DType::kF64, 32, 1.0, true);
  Tensor weights = PositiveTensor({2}, 33).set_requires_grad(true);
  Tensor targets = Tensor::FromInts({3, 1}, {2});
  Tensor pos = Tensor::FromInts({-1, 1000000}, {2});
  Tensor ids = Tensor::FromInts({1, 1}, {2});
  // Factor 1 leaves the gradient unchanged: the wrapper itself is sound.
  EXPECT_TRUE(Gradcheck([](const V& v) { return Perturb(ops::RmsNorm(v[0], v[1], 1e-6), 0, 1.0); },
                        {x, w}));
  EXPECT_FALSE(Gradcheck(
      [](const V& v) { return Perturb(ops::RmsNorm(v[0], v[1], 1e-6), 0, 1.01); }, {x, w}));
  EXPECT_FALSE(Gradcheck(
      [](const V& v) { return Perturb(ops::RmsNorm(v[0], v[1], 1e-6), 1, 0.99); }, {x, w}));
  EXPECT_FALSE(Gradcheck([](const V& v) { return Perturb(ops::Softmax(v[0]), 0, 1.01); }, {x}));
  EXPECT_FALSE(Gradcheck(
      [&](const V& v) { return Perturb(ops::CrossEntropy(v[0], targets, v[1]), 2, 1.01); },
      {x, weights}));
  EXPECT_FALSE(Gradcheck(
      [&](const V& v) {
        return Perturb(ops::Rope(ops::Reshape(v[0], {1, 1, 2, 4}), pos, 10000.0), 0, -1.0);
      },
      {x}));
  EXPECT_FALSE(
      Gradcheck([&](const V& v) { return Perturb(ops::Embedding(v[0], ids), 0, 1.01); }, {x}));
}

}  // namespace
}  // namespace fam
