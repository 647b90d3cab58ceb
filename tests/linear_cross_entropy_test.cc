// The chunked LM head + cross-entropy (ops::LinearCrossEntropy, FamModel::LossFromHidden): equal to
// CrossEntropy(Linear(...)) and to a loop reference for any chunk size, gradients by finite
// differences, ignore index and weights, tied weights, errors.
#include <cmath>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "models/fam/model.h"
#include "tests/gradcheck.h"

namespace fam {
namespace {

using testing::Gradcheck;
using testing::MaxAbsDiff;
using testing::RandomTensor;
using V = std::vector<Tensor>;

// Loop reference: losses[r] = w[r] * (log Σ_j exp(h_r·W_j) - h_r·W_t), 0 for ignored rows.
std::vector<double> LossesRef(const Tensor& hidden, const Tensor& weight,
                              const std::vector<int64_t>& targets, const std::vector<double>& w) {
  const int64_t n = hidden.size(0), d = hidden.size(1), v = weight.size(0);
  const std::vector<double> h = hidden.ToDoubles(), wt = weight.ToDoubles();
  std::vector<double> out(n, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] == -100) continue;
    std::vector<double> z(v, 0.0);
    double max = -1e300;
    for (int64_t j = 0; j < v; ++j) {
      for (int64_t k = 0; k < d; ++k) z[j] += h[r * d + k] * wt[j * d + k];
      max = std::max(max, z[j]);
    }
    double sum = 0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(z[j] - max);
    out[r] = (w.empty() ? 1.0 : w[r]) * (max + std::log(sum) - z[targets[r]]);
  }
  return out;
}

double MaxDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

struct Grads {
  Tensor losses, hidden, weight;
};

// Losses and the gradients of sum(losses * r) for fixed random r, through the fused op
// (chunk_rows >= 0) or the unfused CrossEntropy(Linear(...)) (chunk_rows < 0).
Grads LossAndGrads(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                   const Tensor& weights, int64_t chunk_rows) {
  Tensor h = ops::Clone(hidden.detach()).set_requires_grad(true);
  Tensor w = ops::Clone(weight.detach()).set_requires_grad(true);
  Tensor losses = chunk_rows >= 0
                      ? ops::LinearCrossEntropy(h, w, targets, weights, chunk_rows)
                      : ops::CrossEntropy(ops::Linear(h, w), targets, weights);
  Tensor r = RandomTensor(losses.shape(), losses.dtype(), 99);
  ops::SumAll(ops::Mul(losses, r)).backward();
  return {losses.detach(), h.grad(), w.grad()};
}

TEST(LinearCrossEntropy, EqualsUnfusedPathForEveryChunkSize) {
  const int64_t n = 7, d = 5, v = 11;
  Tensor hidden = RandomTensor({n, d}, DType::kF64, 1, 1.0);
  Tensor weight = RandomTensor({v, d}, DType::kF64, 2, 0.8);
  const std::vector<int64_t> tv = {3, -100, 0, 10, 5, -100, 7};
  Tensor weights = ops::AddScalar(ops::Square(RandomTensor({n}, DType::kF64, 3)), 0.1);
  for (DType tdt : {DType::kI64, DType::kI32}) {
    Tensor targets = Tensor::FromInts(tv, {n}, tdt);
    for (const Tensor& wts : {Tensor(), weights}) {
      Grads ref = LossAndGrads(hidden, weight, targets, wts, -1);
      EXPECT_LT(MaxDiff(ref.losses.ToDoubles(),
                        LossesRef(hidden, weight, tv, wts.defined() ? wts.ToDoubles()
                                                                    : std::vector<double>{})),
                1e-12);
      // 1 and 3 do not divide 7; 7 = N; 10 > N; 0 = unchunked.
      for (int64_t chunk : {1, 3, 7, 10, 0}) {
        Grads got = LossAndGrads(hidden, weight, targets, wts, chunk);
        EXPECT_EQ(got.losses.shape(), (Shape{n}));
        EXPECT_LT(MaxAbsDiff(got.losses, ref.losses), 1e-12) << chunk;
        EXPECT_LT(MaxAbsDiff(got.hidden, ref.hidden), 1e-12) << chunk;
        EXPECT_LT(MaxAbsDiff(got.weight, ref.weight), 1e-12) << chunk;
        EXPECT_EQ(got.losses.ToDoubles()[1], 0.0);
      }
    }
  }
}

TEST(LinearCrossEntropy, IgnoredRowsGetNoGradientAndWeightsScale) {
  const int64_t n = 4, d = 3, v = 6;
  Tensor hidden = RandomTensor({n, d}, DType::kF64, 4);
  Tensor weight = RandomTensor({v, d}, DType::kF64, 5);
  Tensor targets = Tensor::FromInts({2, -100, 5, 0}, {n});
  Grads plain = LossAndGrads(hidden, weight, targets, Tensor(), 3);
  const std::vector<double> gh = plain.hidden.ToDoubles();
  for (int k = 0; k < d; ++k) EXPECT_EQ(gh[d + k], 0.0);
  // Weight 2 on row 0 doubles its loss; weight 0 on row 2 zeroes it.
  Tensor w = Tensor::FromVector({2.0, 1.0, 0.0, 1.0}, {n}, DType::kF64);
  const std::vector<double> a = plain.losses.ToDoubles();
  const std::vector<double> b = ops::LinearCrossEntropy(hidden, weight, targets, w, 3).ToDoubles();
  EXPECT_NEAR(b[0], 2 * a[0], 1e-14);
  EXPECT_EQ(b[1], 0.0);
  EXPECT_EQ(b[2], 0.0);
  EXPECT_NEAR(b[3], a[3], 1e-14);
  EXPECT_GT(a[2], 0.0);
}

TEST(LinearCrossEntropy, Gradcheck) {
  Tensor hidden = RandomTensor({5, 4}, DType::kF64, 6, 1.0, true);
  Tensor weight = RandomTensor({7, 4}, DType::kF64, 7, 0.7, true);
  Tensor weights = ops::AddScalar(ops::Square(RandomTensor({5}, DType::kF64, 8)), 0.2);
  weights.set_requires_grad(true);
  Tensor targets = Tensor::FromInts({6, 0, -100, 3, 1}, {5});
  for (int64_t chunk : {2, 0}) {
    EXPECT_TRUE(Gradcheck(
        [&](const V& x) { return ops::LinearCrossEntropy(x[0], x[1], targets, x[2], chunk); },
        {hidden, weight, weights}))
        << chunk;
    EXPECT_TRUE(Gradcheck(
        [&](const V& x) { return ops::LinearCrossEntropy(x[0], x[1], targets, Tensor(), chunk); },
        {hidden, weight}))
        << chunk;
  }
}

TEST(LinearCrossEntropy, TiedWeightAccumulatesBothUses) {
  // hidden = Embedding(W, ids) (as with tied embeddings): W's gradient sums the two uses.
  const int64_t v = 9, d = 4;
  Tensor table = RandomTensor({v, d}, DType::kF64, 9, 0.9);
  Tensor ids = Tensor::FromInts({1, 4, 4, 8, 0, 2}, {6});
  Tensor targets = Tensor::FromInts({4, 4, 8, 0, 2, -100}, {6});
  auto grad = [&](int64_t chunk) {
    Tensor w = ops::Clone(table).set_requires_grad(true);
    Tensor h = ops::Embedding(w, ids);
    Tensor losses = chunk >= 0 ? ops::LinearCrossEntropy(h, w, targets, Tensor(), chunk)
                               : ops::CrossEntropy(ops::Linear(h, w), targets);
    ops::SumAll(losses).backward();
    return w.grad();
  };
  EXPECT_LT(MaxAbsDiff(grad(4), grad(-1)), 1e-12);
  EXPECT_TRUE(Gradcheck(
      [&](const V& x) {
        return ops::LinearCrossEntropy(ops::Embedding(x[0], ids), x[0], targets, Tensor(), 4);
      },
      {ops::Clone(table).set_requires_grad(true)}));
}

TEST(LinearCrossEntropy, F32MatchesUnfusedOnTheParallelPath) {
  const int64_t n = 300, d = 16, v = 700;
  Tensor hidden = RandomTensor({n, d}, DType::kF32, 10, 1.0);
  Tensor weight = RandomTensor({v, d}, DType::kF32, 11, 0.5);
  std::vector<int64_t> tv(n);
  for (int64_t i = 0; i < n; ++i) tv[i] = i % 11 == 5 ? -100 : (i * 53) % v;
  Tensor targets = Tensor::FromInts(tv, {n});
  Grads ref = LossAndGrads(hidden, weight, targets, Tensor(), -1);
  Grads got = LossAndGrads(hidden, weight, targets, Tensor(), 128);
  EXPECT_EQ(got.losses.dtype(), DType::kF32);
  EXPECT_LT(MaxAbsDiff(got.losses, ref.losses), 2e-5);
  EXPECT_LT(MaxAbsDiff(got.hidden, ref.hidden), 2e-5);
  EXPECT_LT(MaxAbsDiff(got.weight, ref.weight), 2e-5);
}

TEST(LinearCrossEntropy, BadInputsAreErrors) {
  Tensor hidden = RandomTensor({3, 4}, DType::kF64, 12);
  Tensor weight = RandomTensor({5, 4}, DType::kF64, 13);
  Tensor targets = Tensor::FromInts({1, 2, 3}, {3});
  EXPECT_THROW(ops::LinearCrossEntropy(hidden, weight, Tensor::FromInts({1, 5, 0}, {3}), Tensor(),
                                       2),
               Error);  // target 5 outside [0, 5)
  EXPECT_THROW(ops::LinearCrossEntropy(hidden, RandomTensor({5, 3}, DType::kF64, 14), targets,
                                       Tensor(), 2),
               Error);  // d differs
  EXPECT_THROW(ops::LinearCrossEntropy(hidden, weight, Tensor::FromInts({1, 2}, {2}), Tensor(), 2),
               Error);  // N differs
  EXPECT_THROW(ops::LinearCrossEntropy(hidden, ops::Cast(weight, DType::kF32), targets, Tensor(),
                                       2),
               Error);  // dtypes differ
}

TEST(LinearCrossEntropy, ModelLossFromHiddenEqualsLoss) {
  ModelConfig c;
  c.vocab_size = 23;
  c.d_model = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.ffn_dim = 12;
  c.init_std = 0.3;
  c.attention.type = AttentionType::kFam;
  c.attention.block_size = 4;
  c.attention.memory_segments = 1;
  c.attention.fam_length = 2;
  for (bool tied : {false, true}) {
    c.tie_embeddings = tied;
    FamModel model(c, DType::kF64);
    model.InitializeWeights(5);
    std::vector<int64_t> ids(2 * 10), tv(2 * 10);
    std::vector<double> wv(2 * 10);
    for (size_t i = 0; i < ids.size(); ++i) {
      ids[i] = (i * 7 + 3) % c.vocab_size;
      tv[i] = i % 6 == 4 ? -100 : (i * 5 + 1) % c.vocab_size;
      wv[i] = 0.25 + (i % 3);
    }
    Tensor tokens = Tensor::FromInts(ids, {2, 10});
    Tensor targets = Tensor::FromInts(tv, {2, 10});
    Tensor weights = Tensor::FromVector(wv, {2, 10}, DType::kF64);
    for (const Tensor& w : {Tensor(), weights}) {
      auto run = [&](bool chunked) {
        for (Tensor& p : model.Parameters()) p.zero_grad();
        ForwardOptions fo;
        fo.compute_logits = !chunked;
        ForwardResult out = model.Forward(tokens, fo);
        EXPECT_EQ(out.logits.defined(), !chunked);
        Tensor loss = chunked ? model.LossFromHidden(out.hidden, targets, w, 7)
                              : model.Loss(out.logits, targets, w);
        loss.backward();
        std::vector<Tensor> grads = {loss.detach()};
        for (Tensor& p : model.Parameters())
          if (p.grad().defined()) grads.push_back(ops::Clone(p.grad()));
        return grads;
      };
      std::vector<Tensor> a = run(false), b = run(true);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_GT(a[0].item(), 0.5);
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_LT(MaxAbsDiff(a[i], b[i]), 1e-12) << "tied " << tied << " tensor " << i;
    }
  }
}

}  // namespace
}  // namespace fam
