// Blockwise masked attention (ops::Attention and the CPU kernels): forward and backward against a
// naive f64 reference written here (explicit visibility mask, full softmax) for full causal, BSWA,
// FAM block tokens, FAM rows, GQA/MQA, rows that see nothing, strided and empty segments; f64
// gradchecks of q and every segment; a gradcheck that must fail; bf16; bad-input errors.
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"

namespace fam {
namespace {

using testing::Gradcheck;
using testing::MaxAbsDiff;
using testing::RandomTensor;
using V = std::vector<Tensor>;
using Masks = std::vector<KeyMask>;
constexpr KeyMask kAll = KeyMask::kAll;
constexpr KeyMask kCausal = KeyMask::kCausal;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// ---- naive reference (f64 loops over an explicit visibility mask) ----

struct Reference {
  std::vector<double> out, lse, dq;
  std::vector<std::vector<double>> dk, dv;
};

// Row-major index of [b, h, t, d] in a [*, H, T, D] tensor.
int64_t At(int64_t b, int64_t h, int64_t t, int64_t d, int64_t heads, int64_t len, int64_t dim) {
  return ((b * heads + h) * len + t) * dim + d;
}

// Forward, and the gradients for an upstream gradient `dout` when given; softcap > 0 caps every
// score s to softcap·tanh(s / softcap).
Reference Naive(const Tensor& q, const V& k, const V& v, const Masks& masks, double scale,
                const std::vector<double>* dout = nullptr, double softcap = 0) {
  const int64_t batch = q.size(0), hq = q.size(1), tq = q.size(2), dim = q.size(3);
  const int64_t hkv = k.empty() ? 1 : k[0].size(1);
  const std::vector<double> qv = q.ToDoubles();
  std::vector<std::vector<double>> kv, vv;
  Reference ref;
  for (size_t j = 0; j < k.size(); ++j) {
    kv.push_back(k[j].ToDoubles());
    vv.push_back(v[j].ToDoubles());
    ref.dk.emplace_back(kv.back().size(), 0.0);
    ref.dv.emplace_back(vv.back().size(), 0.0);
  }
  ref.out.assign(qv.size(), 0.0);
  ref.dq.assign(qv.size(), 0.0);
  ref.lse.assign(batch * hq * tq, kNegInf);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t r = 0; r < tq; ++r) {
        const int64_t g = h * hkv / hq;
        // Visible keys as (segment, key row in the flat segment tensor).
        std::vector<std::pair<size_t, int64_t>> keys;
        for (size_t j = 0; j < k.size(); ++j) {
          const int64_t s = k[j].size(2);
          for (int64_t c = 0; c < s; ++c) {
            const bool visible = masks[j] == kAll || c <= r + (s - tq);
            if (visible) keys.push_back({j, At(b, g, c, 0, hkv, s, dim)});
          }
        }
        if (keys.empty()) continue;
        const int64_t qi = At(b, h, r, 0, hq, tq, dim);
        std::vector<double> p(keys.size()), cap_grad(keys.size(), 1.0);
        double mx = kNegInf;
        for (size_t i = 0; i < keys.size(); ++i) {
          double dot = 0;
          for (int64_t d = 0; d < dim; ++d)
            dot += qv[qi + d] * kv[keys[i].first][keys[i].second + d];
          p[i] = scale * dot;
          if (softcap > 0) {
            const double t = std::tanh(p[i] / softcap);
            p[i] = softcap * t;
            cap_grad[i] = 1 - t * t;
          }
          mx = std::max(mx, p[i]);
        }
        double sum = 0;
        for (double& x : p) sum += (x = std::exp(x - mx));
        for (double& x : p) x /= sum;
        ref.lse[(b * hq + h) * tq + r] = mx + std::log(sum);
        for (size_t i = 0; i < keys.size(); ++i)
          for (int64_t d = 0; d < dim; ++d)
            ref.out[qi + d] += p[i] * vv[keys[i].first][keys[i].second + d];
        if (!dout) continue;
        std::vector<double> dp(keys.size());
        double delta = 0;
        for (size_t i = 0; i < keys.size(); ++i) {
          dp[i] = 0;
          for (int64_t d = 0; d < dim; ++d)
            dp[i] += (*dout)[qi + d] * vv[keys[i].first][keys[i].second + d];
          delta += p[i] * dp[i];
        }
        for (size_t i = 0; i < keys.size(); ++i) {
          const double ds = p[i] * (dp[i] - delta) * cap_grad[i];
          const auto [j, ki] = keys[i];
          for (int64_t d = 0; d < dim; ++d) {
            ref.dq[qi + d] += scale * ds * kv[j][ki + d];
            ref.dk[j][ki + d] += scale * ds * qv[qi + d];
            ref.dv[j][ki + d] += p[i] * (*dout)[qi + d];
          }
        }
      }
  return ref;
}

double MaxDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

// ---- test cases: one layout each ----

struct Case {
  std::string name;
  Tensor q;
  V k, v;
  Masks masks;
  double scale = 0.5;
  double softcap = 0;
};

// q [B, Hq, Tq, D]; segment j of length lens[j] with masks[j]; values N(0, 1).
Case MakeCase(std::string name, int64_t batch, int64_t hq, int64_t hkv, int64_t tq, int64_t dim,
              const std::vector<int64_t>& lens, Masks masks, DType dtype = DType::kF64,
              uint64_t seed = 1) {
  Case c;
  c.name = std::move(name);
  c.q = RandomTensor({batch, hq, tq, dim}, dtype, seed);
  for (size_t j = 0; j < lens.size(); ++j) {
    c.k.push_back(RandomTensor({batch, hkv, lens[j], dim}, dtype, seed + 10 + 2 * j));
    c.v.push_back(RandomTensor({batch, hkv, lens[j], dim}, dtype, seed + 11 + 2 * j));
  }
  c.masks = std::move(masks);
  c.scale = 1.0 / std::sqrt(static_cast<double>(dim));
  return c;
}

// The layouts of FAM_SPEC.md §2 (tiny shapes, f64 unless told).
std::vector<Case> Layouts(DType dtype = DType::kF64) {
  const int64_t tq = 4, mem = 4, fam = 2;
  return {
      MakeCase("full_causal", 2, 2, 2, tq, 3, {tq}, {kCausal}, dtype, 1),
      MakeCase("bswa", 1, 2, 2, tq, 4, {mem + tq}, {kCausal}, dtype, 2),
      MakeCase("fam_block_tokens", 1, 2, 1, tq, 4, {fam, mem + tq}, {kAll, kCausal}, dtype, 3),
      MakeCase("fam_rows", 2, 2, 2, fam, 4, {fam, tq}, {kAll, kAll}, dtype, 4),
      MakeCase("gqa", 1, 4, 2, 3, 4, {2, 3}, {kAll, kCausal}, dtype, 5),
      MakeCase("mqa", 1, 4, 1, 3, 4, {3}, {kCausal}, dtype, 6),
      MakeCase("short_segment", 1, 2, 1, 5, 3, {2}, {kCausal}, dtype, 7),
      MakeCase("short_causal_plus_all", 1, 2, 2, 5, 3, {1, 2}, {kAll, kCausal}, dtype, 8),
      MakeCase("empty_segment", 1, 2, 2, 3, 4, {0, 3}, {kAll, kCausal}, dtype, 9),
  };
}

std::vector<double> RandomValues(const Shape& shape, uint64_t seed) {
  return RandomTensor(shape, DType::kF64, seed).ToDoubles();
}

// Forward values (and lse through the backend) against the reference.
void ExpectForward(const Case& c, double tol) {
  SCOPED_TRACE(c.name);
  Reference ref = Naive(c.q, c.k, c.v, c.masks, c.scale, nullptr, c.softcap);
  Tensor out = ops::Attention(c.q, c.k, c.v, c.masks, c.scale, c.softcap);
  ASSERT_EQ(out.shape(), c.q.shape());
  EXPECT_EQ(out.dtype(), c.q.dtype());
  EXPECT_LE(MaxDiff(out.ToDoubles(), ref.out), tol);
  if (c.q.dtype() == DType::kBF16) return;
  AttentionArgs args;
  args.q = c.q;
  args.k = c.k;
  args.v = c.v;
  args.masks = c.masks;
  args.scale = c.scale;
  args.softcap = c.softcap;
  args.out = Tensor::Empty(c.q.shape(), c.q.dtype());
  args.lse = Tensor::Empty({c.q.size(0), c.q.size(1), c.q.size(2)}, c.q.dtype());
  GetBackend(Device::CPU()).AttentionForward(args);
  EXPECT_LE(MaxDiff(args.lse.ToDoubles(), ref.lse), tol);
}

// Gradients from out.backward(dO) against the reference; returns q's gradient.
Tensor ExpectBackward(const Case& c, double tol) {
  SCOPED_TRACE(c.name);
  Tensor q = c.q.detach().set_requires_grad(true);
  V k, v;
  for (size_t j = 0; j < c.k.size(); ++j) {
    k.push_back(c.k[j].detach().set_requires_grad(true));
    v.push_back(c.v[j].detach().set_requires_grad(true));
  }
  std::vector<double> dout = RandomValues(c.q.shape(), 99);
  Reference ref = Naive(c.q, c.k, c.v, c.masks, c.scale, &dout, c.softcap);
  Tensor out = ops::Attention(q, k, v, c.masks, c.scale, c.softcap);
  out.backward(Tensor::FromVector(dout, c.q.shape(), c.q.dtype()));
  EXPECT_EQ(q.grad().dtype(), GradDType(c.q.dtype()));  // a bf16 leaf accumulates in f32
  EXPECT_LT(MaxDiff(q.grad().ToDoubles(), ref.dq), tol);
  for (size_t j = 0; j < k.size(); ++j) {
    // A segment no query sees gets no gradient entry from the engine; treat it as zero.
    std::vector<double> gk = k[j].grad().defined() ? k[j].grad().ToDoubles()
                                                   : std::vector<double>(ref.dk[j].size(), 0.0);
    std::vector<double> gv = v[j].grad().defined() ? v[j].grad().ToDoubles()
                                                   : std::vector<double>(ref.dv[j].size(), 0.0);
    EXPECT_LT(MaxDiff(gk, ref.dk[j]), tol) << "segment " << j;
    EXPECT_LT(MaxDiff(gv, ref.dv[j]), tol) << "segment " << j;
  }
  return q.grad();
}

// ops::Attention over gradcheck inputs laid out as {q, k0.., v0..}.
std::function<Tensor(const V&)> AttentionOf(const Masks& masks, double scale) {
  return [masks, scale](const V& in) {
    const size_t n = masks.size();
    V k(in.begin() + 1, in.begin() + 1 + n), v(in.begin() + 1 + n, in.end());
    return ops::Attention(in[0], k, v, masks, scale);
  };
}

// Leaves sharing the case's data; empty segments (nothing to check) do not require grad.
V GradInputs(const Case& c) {
  V in{c.q};
  in.insert(in.end(), c.k.begin(), c.k.end());
  in.insert(in.end(), c.v.begin(), c.v.end());
  for (Tensor& t : in) t = t.detach().set_requires_grad(t.numel() > 0);
  return in;
}

// ---- forward ----

TEST(Attention, ForwardMatchesNaiveOnEveryLayout) {
  for (const Case& c : Layouts()) ExpectForward(c, 1e-12);
  for (const Case& c : Layouts(DType::kF32)) ExpectForward(c, 1e-5);
}

TEST(Attention, SoftCappedScoresMatchNaive) {
  // Gemma 2's cap·tanh(s / cap) on the scores: with cap 0.7 and scores ~N(0, 1) most scores sit in
  // tanh's curved part, so a forgotten cap or a missing (1 − tanh²) in backward shows.
  for (DType dtype : {DType::kF64, DType::kF32}) {
    for (Case c : Layouts(dtype)) {
      c.softcap = 0.7;
      ExpectForward(c, dtype == DType::kF64 ? 1e-12 : 1e-5);
      ExpectBackward(c, dtype == DType::kF64 ? 1e-11 : 1e-4);
    }
    Case big = MakeCase("large_capped", 1, 4, 2, 40, 32, {3, 300}, {kAll, kCausal}, dtype, 23);
    big.softcap = 0.5;
    ExpectForward(big, dtype == DType::kF64 ? 1e-12 : 2e-5);
    ExpectBackward(big, dtype == DType::kF64 ? 1e-11 : 1e-4);
  }
}

TEST(Attention, RowsThatSeeNothingGiveZeroAndMinusInfLse) {
  Case c = MakeCase("short", 1, 2, 1, 5, 3, {2}, {kCausal});
  Reference ref = Naive(c.q, c.k, c.v, c.masks, c.scale);
  // Row r sees key 0 iff 0 <= r - 3: rows 0..2 see nothing.
  for (int64_t r = 0; r < 3; ++r) EXPECT_EQ(ref.lse[r], kNegInf);
  EXPECT_NE(ref.lse[3], kNegInf);
  Tensor out = ops::Attention(c.q, c.k, c.v, c.masks, c.scale);
  std::vector<double> o = out.ToDoubles();
  for (int64_t i = 0; i < 3 * 3; ++i) EXPECT_EQ(o[i], 0.0);
  // Only empty segments: every row sees nothing.
  Case e = MakeCase("only_empty", 1, 2, 2, 3, 4, {0, 0}, {kAll, kCausal});
  EXPECT_EQ(ops::Attention(e.q, e.k, e.v, e.masks, e.scale).ToDoubles(),
            std::vector<double>(e.q.numel(), 0.0));
  ExpectForward(e, 0.0);
}

TEST(Attention, SplitSegmentsEqualOneConcatenatedSegment) {
  // BSWA: [memory kAll, block kCausal] is one causal segment over memory+block.
  Case c = MakeCase("bswa_split", 2, 2, 1, 4, 4, {3, 4}, {kAll, kCausal});
  Tensor k = ops::Concat(c.k, 2), v = ops::Concat(c.v, 2);
  Tensor split = ops::Attention(c.q, c.k, c.v, c.masks, c.scale);
  Tensor joined = ops::Attention(c.q, {k}, {v}, {kCausal}, c.scale);
  EXPECT_LT(MaxAbsDiff(split, joined), 1e-13);
  // Full causal with S == Tq is ordinary causal: row 0 returns v[0] exactly.
  Case f = MakeCase("causal", 1, 1, 1, 3, 2, {3}, {kCausal});
  std::vector<double> o = ops::Attention(f.q, f.k, f.v, f.masks, f.scale).ToDoubles();
  std::vector<double> v0 = f.v[0].ToDoubles();
  EXPECT_DOUBLE_EQ(o[0], v0[0]);
  EXPECT_DOUBLE_EQ(o[1], v0[1]);
}

TEST(Attention, LargerShapesExerciseTilesAndKeyChunks) {
  // Tq = 40 (a partial query tile), D = 32 (whole micro-kernel columns), a 300-key segment (more
  // than one key chunk), FAM + memory + block layout with GQA.
  for (DType dtype : {DType::kF64, DType::kF32}) {
    Case c = MakeCase("large", 1, 4, 2, 40, 32, {3, 300}, {kAll, kCausal}, dtype, 21);
    const double tol = dtype == DType::kF64 ? 1e-12 : 2e-5;
    ExpectForward(c, tol);
    ExpectBackward(c, dtype == DType::kF64 ? 1e-11 : 1e-4);
  }
}

TEST(Attention, ExtremeScoresStayExact) {
  // Large scales push exp far into underflow (p ≈ 0 next to p ≈ 1) for f32's vector exp.
  for (double scale : {8.0, 60.0}) {
    Case c = MakeCase("extreme", 1, 2, 1, 6, 16, {3, 6}, {kAll, kCausal}, DType::kF32, 71);
    c.scale = scale;
    ExpectForward(c, 1e-4);
    ExpectBackward(c, 1e-3 * scale);
  }
}

TEST(Attention, StridedSegmentsMatchContiguousCopies) {
  // Keys/values of one [B, H, T, D] tensor sliced into [memory | block] segments, and q/k/v as
  // permuted [B, T, H, D] → [B, H, T, D] views.
  for (DType dtype : {DType::kF64, DType::kF32}) {
    Tensor big_k = RandomTensor({2, 2, 9, 8}, dtype, 31);
    Tensor big_v = RandomTensor({2, 2, 9, 8}, dtype, 32);
    Tensor q_bthd = RandomTensor({2, 4, 2, 8}, dtype, 33);
    Tensor q = ops::Permute(q_bthd, {0, 2, 1, 3});
    ASSERT_FALSE(q.is_contiguous());
    V k{ops::Slice(big_k, 2, 1, 5), ops::Slice(big_k, 2, 5, 9)};
    V v{ops::Slice(big_v, 2, 1, 5), ops::Slice(big_v, 2, 5, 9)};
    V kc{k[0].contiguous(), k[1].contiguous()}, vc{v[0].contiguous(), v[1].contiguous()};
    Masks masks{kAll, kCausal};
    Tensor strided = ops::Attention(q, k, v, masks, 0.3);
    Tensor copied = ops::Attention(q.contiguous(), kc, vc, masks, 0.3);
    EXPECT_EQ(MaxAbsDiff(strided, copied), 0.0);
    Case c{"strided", q, k, v, masks, 0.3};
    ExpectForward(c, dtype == DType::kF64 ? 1e-12 : 1e-5);
    // A last dim that is not unit-stride (transposed view) is copied by the kernel.
    Tensor kt = ops::Transpose(RandomTensor({2, 2, 8, 4}, dtype, 34), 2, 3);
    Tensor vt = RandomTensor({2, 2, 4, 8}, dtype, 35);
    Tensor a = ops::Attention(q, {kt}, {vt}, {kAll}, 0.3);
    Tensor b = ops::Attention(q, {kt.contiguous()}, {vt}, {kAll}, 0.3);
    EXPECT_EQ(MaxAbsDiff(a, b), 0.0);
  }
}

// ---- backward ----

TEST(Attention, BackwardMatchesNaiveOnEveryLayout) {
  for (const Case& c : Layouts()) ExpectBackward(c, 1e-12);
  for (const Case& c : Layouts(DType::kF32)) ExpectBackward(c, 1e-5);
}

TEST(Attention, RowsThatSeeNothingGetNoGradient) {
  Case c = MakeCase("short", 1, 2, 1, 5, 3, {2}, {kCausal});
  std::vector<double> dq = ExpectBackward(c, 1e-12).ToDoubles();
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t i = 0; i < 3 * 3; ++i) EXPECT_EQ(dq[h * 15 + i], 0.0);
}

TEST(Attention, BackwardIsTheSameForAnyThreadCount) {
  // B·Hkv = 2 slices: 1 and 2 threads own whole slices, 3 threads sum per-thread partials.
  const int saved = omp_get_max_threads();
  Case c = MakeCase("threads", 2, 4, 1, 37, 8, {5, 45}, {kAll, kCausal}, DType::kF64, 41);
  Tensor first;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    SCOPED_TRACE(threads);
    Tensor dq = ExpectBackward(c, 1e-12);
    if (!first.defined()) first = dq;
    EXPECT_LT(MaxAbsDiff(dq, first), 1e-13);
  }
  Case one = MakeCase("one_slice", 1, 2, 1, 20, 4, {30}, {kCausal}, DType::kF32, 42);
  for (int threads : {1, 3}) {
    omp_set_num_threads(threads);
    SCOPED_TRACE(threads);
    ExpectBackward(one, 1e-5);
  }
  // With a fixed thread count, the per-thread partial sums are bitwise reproducible.
  omp_set_num_threads(3);
  auto grad_k = [&one] {
    Tensor k = one.k[0].detach().set_requires_grad(true);
    ops::SumAll(ops::Attention(one.q, {k}, one.v, one.masks, one.scale)).backward();
    return k.grad().ToDoubles();
  };
  EXPECT_EQ(grad_k(), grad_k());
  omp_set_num_threads(saved);
}

TEST(Attention, GradcheckEveryLayout) {
  for (const Case& c : Layouts()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(Gradcheck(AttentionOf(c.masks, c.scale), GradInputs(c)));
  }
}

TEST(Attention, GradcheckThroughStridedViews) {
  // Leaves [B, T, H, D] for q and one [B, H, T, D] kv tensor each for k and v, sliced into
  // [fam | memory+block] segments inside the function.
  Tensor q = RandomTensor({1, 3, 2, 4}, DType::kF64, 51, 1.0, true);
  Tensor k = RandomTensor({1, 1, 7, 4}, DType::kF64, 52, 1.0, true);
  Tensor v = RandomTensor({1, 1, 7, 4}, DType::kF64, 53, 1.0, true);
  auto fn = [](const V& in) {
    Tensor q = ops::Permute(in[0], {0, 2, 1, 3});
    V k{ops::Slice(in[1], 2, 0, 2), ops::Slice(in[1], 2, 2, 7)};
    V v{ops::Slice(in[2], 2, 0, 2), ops::Slice(in[2], 2, 2, 7)};
    return ops::Attention(q, k, v, {kAll, kCausal}, 0.7);
  };
  EXPECT_TRUE(Gradcheck(fn, {q, k, v}));
}

// Identity forward; backward multiplies the gradient by `factor` (a deliberately wrong gradient).
class ScaleGradNode : public Node {
 public:
  explicit ScaleGradNode(double factor) : factor_(factor) {}
  std::vector<Tensor> Backward(const Tensor& g) override { return {ops::Scale(g, factor_)}; }
  std::string name() const override { return "ScaleGrad"; }

 private:
  double factor_;
};

Tensor ScaleGrad(const Tensor& x, double factor) {
  Tensor out = x.detach();
  RecordNode(std::make_shared<ScaleGradNode>(factor), {x}, out);
  return out;
}

TEST(Attention, GradcheckCatchesAWrongGradient) {
  Case c = MakeCase("fam_block_tokens", 1, 2, 1, 3, 4, {2, 5}, {kAll, kCausal});
  for (double factor : {1.0, 1.01}) {
    auto fn = [&c, factor](const V& in) {
      return ops::Attention(in[0], {in[1], in[2]}, {in[3], ScaleGrad(in[4], factor)}, c.masks,
                            c.scale);
    };
    if (factor == 1.0) {
      EXPECT_TRUE(Gradcheck(fn, GradInputs(c)));
    } else {
      EXPECT_FALSE(Gradcheck(fn, GradInputs(c)));
    }
  }
}

// ---- dtypes and errors ----

TEST(Attention, BF16StorageComputesInF32) {
  Case c = MakeCase("bf16", 1, 2, 1, 4, 8, {3, 4}, {kAll, kCausal}, DType::kF32, 61);
  Case b{"bf16", c.q.to(DType::kBF16), {}, {}, c.masks, c.scale};
  for (size_t j = 0; j < c.k.size(); ++j) {
    b.k.push_back(c.k[j].to(DType::kBF16));
    b.v.push_back(c.v[j].to(DType::kBF16));
  }
  // Reference on the bf16-rounded inputs; the output is rounded to bf16 (~0.4% relative).
  ExpectForward(b, 2e-2);
  ExpectBackward(b, 5e-2);
}

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Attention, BadInputErrorsNameTheShapes) {
  Tensor q = Tensor::Zeros({1, 4, 3, 8});
  Tensor k = Tensor::Zeros({1, 2, 5, 8});
  auto expect_names = [](const std::string& msg, std::vector<std::string> parts) {
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
  };
  Tensor k4 = Tensor::Zeros({1, 2, 5, 4});
  expect_names(ErrorOf([&] { ops::Attention(q, {k4}, {k4}, {kAll}, 1.0); }),
               {"[1, 4, 3, 8]", "[1, 2, 5, 4]"});
  Tensor k2 = Tensor::Zeros({2, 2, 5, 8});
  expect_names(ErrorOf([&] { ops::Attention(q, {k2}, {k2}, {kAll}, 1.0); }),
               {"[1, 4, 3, 8]", "[2, 2, 5, 8]"});
  Tensor k3 = Tensor::Zeros({1, 3, 5, 8});
  expect_names(ErrorOf([&] { ops::Attention(q, {k3}, {k3}, {kAll}, 1.0); }),
               {"[1, 4, 3, 8]", "[1, 3, 5, 8]"});
  Tensor v6 = Tensor::Zeros({1, 2, 6, 8});
  expect_names(ErrorOf([&] { ops::Attention(q, {k}, {v6}, {kAll}, 1.0); }),
               {"[1, 2, 5, 8]", "[1, 2, 6, 8]"});
  expect_names(ErrorOf([&] {
                 ops::Attention(q, {k}, {k}, {kAll, kCausal}, 1.0);
               }),
               {"1 segments but 2 masks"});
  expect_names(ErrorOf([&] {
                 ops::Attention(q, {k, k}, {k}, {kAll, kAll}, 1.0);
               }),
               {"2 key segments but 1 value segments"});
  Tensor q3 = Tensor::Zeros({4, 3, 8});
  expect_names(ErrorOf([&] { ops::Attention(q3, {k}, {k}, {kAll}, 1.0); }), {"[4, 3, 8]"});
  Tensor k1 = Tensor::Zeros({1, 1, 5, 8});
  expect_names(ErrorOf([&] {
                 ops::Attention(q, {k, k1}, {k, k1}, {kAll, kAll}, 1.0);
               }),
               {"[1, 2, 5, 8]", "[1, 1, 5, 8]"});
  Tensor k64 = Tensor::Zeros({1, 2, 5, 8}, DType::kF64);
  expect_names(ErrorOf([&] { ops::Attention(q, {k64}, {k64}, {kAll}, 1.0); }), {"dtype mismatch"});
  Tensor qi = Tensor::Zeros({1, 4, 3, 8}, DType::kI64);
  Tensor ki = Tensor::Zeros({1, 2, 5, 8}, DType::kI64);
  expect_names(ErrorOf([&] { ops::Attention(qi, {ki}, {ki}, {kAll}, 1.0); }), {"i64[1, 4, 3, 8]"});
}

}  // namespace
}  // namespace fam
