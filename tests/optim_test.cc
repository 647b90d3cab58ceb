// Optimizers, schedules and clipping: AdamW and Adafactor against step-by-step reference formulas
// written here in double, state save/load, bf16 parameters with f32 master copies, exact schedule
// values, global-norm clipping, and a small least-squares problem minimised through the autograd
// ops.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <numbers>
#include <string>
#include <type_traits>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/ops/ops.h"
#include "framework/optim/adafactor.h"
#include "framework/optim/adamw.h"
#include "framework/optim/grad_clip.h"
#include "framework/optim/optimizer.h"
#include "framework/optim/schedule.h"
#include "gtest/gtest.h"

namespace fam {
namespace {

using Vec = std::vector<double>;

void ExpectNear(const Vec& actual, const Vec& expected, double tol, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], tol * std::max(1.0, std::abs(expected[i])))
        << what << " [" << i << "]";
  }
}

// A deterministic gradient for step t, element k.
double TestGrad(int t, int k, int salt) {
  return std::sin(1.3 * k + 0.7 * t + 0.4 * salt) * (0.5 + 0.25 * k) + 0.05 * salt;
}

Vec TestGrads(int t, int n, int salt) {
  Vec g(n);
  for (int k = 0; k < n; ++k) g[k] = TestGrad(t, k, salt);
  return g;
}

// ---- AdamW ----

struct AdamRef {
  Vec p, m, v;
};

void AdamRefStep(AdamRef& s, const Vec& g, double lr, double b1, double b2, double eps, double wd,
                 int t) {
  for (size_t i = 0; i < g.size(); ++i) {
    s.p[i] -= lr * wd * s.p[i];
    s.m[i] = b1 * s.m[i] + (1 - b1) * g[i];
    s.v[i] = b2 * s.v[i] + (1 - b2) * g[i] * g[i];
    const double m_hat = s.m[i] / (1 - std::pow(b1, t));
    const double v_hat = s.v[i] / (1 - std::pow(b2, t));
    s.p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

void CheckAdamW(DType dtype, double tol) {
  const Vec w0 = {0.5, -1.0, 2.0}, b0 = {0.1, 0.2, -0.3};
  Tensor w = Tensor::FromVector(w0, {3}, dtype).set_requires_grad(true);
  Tensor b = Tensor::FromVector(b0, {3}, dtype).set_requires_grad(true);
  Tensor frozen = Tensor::FromVector({7, 8}, {2}, dtype).set_requires_grad(true);  // never a grad
  AdamWOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-3;
  o.weight_decay = 0.1;
  AdamW opt({{"w", w, true}, {"b", b, false}, {"frozen", frozen, true}}, o);
  AdamRef rw{w0, Vec(3, 0), Vec(3, 0)}, rb{b0, Vec(3, 0), Vec(3, 0)};
  const double lrs[2] = {0.1, 0.05};
  for (int t = 1; t <= 2; ++t) {
    const Vec gw = TestGrads(t, 3, 0), gb = TestGrads(t, 3, 1);
    w.set_grad(Tensor::FromVector(gw, {3}, dtype));
    b.set_grad(Tensor::FromVector(gb, {3}, dtype));
    opt.Step(lrs[t - 1]);
    EXPECT_EQ(opt.step_count(), t);
    AdamRefStep(rw, gw, lrs[t - 1], o.beta1, o.beta2, o.eps, o.weight_decay, t);
    AdamRefStep(rb, gb, lrs[t - 1], o.beta1, o.beta2, o.eps, 0.0, t);
    if (t == 1) {  // by hand: m̂ = g and v̂ = g², so p1 = p0·(1 − lr·wd) − lr·g / (|g| + eps)
      for (int i = 0; i < 3; ++i) {
        EXPECT_NEAR(rw.p[i], w0[i] * (1 - 0.1 * 0.1) - 0.1 * gw[i] / (std::abs(gw[i]) + 1e-3),
                    1e-12);
      }
    }
    ExpectNear(w.ToDoubles(), rw.p, tol, "w after step " + std::to_string(t));
    ExpectNear(b.ToDoubles(), rb.p, tol, "b after step " + std::to_string(t));
  }
  EXPECT_EQ(frozen.ToDoubles(), (Vec{7, 8}));
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : opt.StateTensors()) state[name] = t;
  ExpectNear(state.at("w.exp_avg").ToDoubles(), rw.m, tol, "w.exp_avg");
  ExpectNear(state.at("w.exp_avg_sq").ToDoubles(), rw.v, tol, "w.exp_avg_sq");
  EXPECT_EQ(state.at("frozen.exp_avg").ToDoubles(), (Vec{0, 0}));
  EXPECT_TRUE(w.is_leaf());
  EXPECT_TRUE(w.requires_grad());
}

TEST(AdamW, MatchesFormulaF64) { CheckAdamW(DType::kF64, 1e-13); }
TEST(AdamW, MatchesFormulaF32) { CheckAdamW(DType::kF32, 2e-6); }

TEST(AdamW, FusedKernelDirectly) {
  Tensor p = Tensor::FromVector({1.0, -2.0}, {2});
  Tensor g = Tensor::FromVector({0.5, 0.25}, {2});
  Tensor m = Tensor::FromVector({0.1, 0.0}, {2});
  Tensor v = Tensor::FromVector({0.04, 0.01}, {2});
  // Step 3 with existing moments: m = 0.9·m + 0.1·g, v = 0.99·v + 0.01·g².
  GetBackend(Device::CPU()).AdamWUpdate(p, g, m, v, 0.01, 0.9, 0.99, 1e-8, 0.5, 3);
  const Vec m_ref = {0.9 * 0.1 + 0.1 * 0.5, 0.1 * 0.25};
  const Vec v_ref = {0.99 * 0.04 + 0.01 * 0.25, 0.99 * 0.01 + 0.01 * 0.0625};
  Vec p_ref = {1.0, -2.0};
  for (int i = 0; i < 2; ++i) {
    const double m_hat = m_ref[i] / (1 - 0.729), v_hat = v_ref[i] / (1 - 0.970299);
    p_ref[i] = p_ref[i] * (1 - 0.01 * 0.5) - 0.01 * m_hat / (std::sqrt(v_hat) + 1e-8);
  }
  ExpectNear(m.ToDoubles(), m_ref, 1e-6, "m");
  ExpectNear(v.ToDoubles(), v_ref, 1e-6, "v");
  ExpectNear(p.ToDoubles(), p_ref, 1e-6, "p");
  EXPECT_THROW(GetBackend(Device::CPU())
                   .AdamWUpdate(p, Tensor::Zeros({3}), m, v, 0.01, 0.9, 0.99, 1e-8, 0, 1),
               Error);
}

TEST(AdamW, RejectsBadOptionsAndParameters) {
  Tensor w = Tensor::Zeros({2});
  AdamWOptions bad;
  bad.beta2 = 1.0;
  EXPECT_THROW(AdamW({{"w", w, true}}, bad), Error);
  EXPECT_THROW(AdamW({{"w", w, true}, {"w", Tensor::Zeros({1}), true}}), Error);
  EXPECT_THROW(AdamW({{"w", Tensor::Zeros({2}, DType::kI32), true}}), Error);
  EXPECT_THROW(AdamW({{"w", Tensor::Zeros({2, 3}).transpose(0, 1), true}}), Error);
  AdamW opt({{"w", w, true}});
  w.set_grad(Tensor::Zeros({3}));
  EXPECT_THROW(opt.Step(0.1), Error);  // gradient shape differs from the parameter
}

// ---- Adafactor ----

// Direct implementation of the paper's algorithm on one [batch, n, m] tensor (factored, with row
// and column *sums* and V = R·Cᵀ / ΣR) or a vector (unfactored), with bias correction applied as
// v / (1 − β2ᵗ) to raw moving averages.
struct AdafactorRef {
  bool factored;
  int batch, n, m;
  Vec p, mom, R, C, V;
  bool clipped = false;  // whether update clipping ever engaged
};

void AdafactorRefStep(AdafactorRef& s, const Vec& g, const AdafactorOptions& o, double lr,
                      bool decay, int t) {
  const double b2 = o.beta2;
  const double correction = o.bias_correction ? 1 - std::pow(b2, t) : 1.0;
  const size_t count = g.size();
  Vec u(count);
  if (s.factored) {
    for (int b = 0; b < s.batch; ++b) {
      for (int i = 0; i < s.n; ++i) {
        double row = 0;
        for (int j = 0; j < s.m; ++j)
          row += g[(b * s.n + i) * s.m + j] * g[(b * s.n + i) * s.m + j] + o.eps1;
        s.R[b * s.n + i] = b2 * s.R[b * s.n + i] + (1 - b2) * row;
      }
      for (int j = 0; j < s.m; ++j) {
        double col = 0;
        for (int i = 0; i < s.n; ++i)
          col += g[(b * s.n + i) * s.m + j] * g[(b * s.n + i) * s.m + j] + o.eps1;
        s.C[b * s.m + j] = b2 * s.C[b * s.m + j] + (1 - b2) * col;
      }
      double r_total = 0;
      for (int i = 0; i < s.n; ++i) r_total += s.R[b * s.n + i] / correction;
      for (int i = 0; i < s.n; ++i) {
        for (int j = 0; j < s.m; ++j) {
          const double v_hat =
              (s.R[b * s.n + i] / correction) * (s.C[b * s.m + j] / correction) / r_total;
          const int k = (b * s.n + i) * s.m + j;
          u[k] = g[k] / std::sqrt(v_hat);
        }
      }
    }
  } else {
    for (size_t k = 0; k < count; ++k) {
      s.V[k] = b2 * s.V[k] + (1 - b2) * (g[k] * g[k] + o.eps1);
      u[k] = g[k] / std::sqrt(s.V[k] / correction);
    }
  }
  double sum_sq = 0;
  for (double x : u) sum_sq += x * x;
  const double rms = std::sqrt(sum_sq / count);
  if (rms > o.clip_threshold) {
    s.clipped = true;
    for (double& x : u) x *= o.clip_threshold / rms;
  }
  for (size_t k = 0; k < count; ++k) {
    double update = u[k];
    if (o.beta1 > 0) {
      s.mom[k] = o.beta1 * s.mom[k] + (1 - o.beta1) * update;
      update = s.mom[k];
    }
    const double wd = decay ? o.weight_decay : 0.0;
    s.p[k] = s.p[k] - lr * wd * s.p[k] - lr * update;
  }
}

AdafactorRef MakeRef(const Shape& shape, const Vec& p0) {
  AdafactorRef s;
  s.factored = shape.size() >= 2;
  s.m = static_cast<int>(shape.back());
  s.n = s.factored ? static_cast<int>(shape[shape.size() - 2]) : 1;
  s.batch = static_cast<int>(p0.size()) / (s.n * s.m);
  s.p = p0;
  s.mom = Vec(p0.size(), 0);
  s.V = Vec(p0.size(), 0);
  s.R = Vec(s.batch * s.n, 0);
  s.C = Vec(s.batch * s.m, 0);
  return s;
}

// Runs 3 steps on a 2×3 matrix, a 3-vector and a 2×2×3 tensor and compares with the reference.
void CheckAdafactor(const AdafactorOptions& o, bool expect_clipping) {
  const std::vector<Shape> shapes = {{2, 3}, {3}, {2, 2, 3}};
  const std::vector<std::string> names = {"w", "b", "t"};
  std::vector<NamedParameter> params;
  std::vector<AdafactorRef> refs;
  for (size_t k = 0; k < shapes.size(); ++k) {
    const int count = static_cast<int>(NumElements(shapes[k]));
    Vec p0(count);
    for (int i = 0; i < count; ++i) p0[i] = 0.3 * i - 0.7 + 0.1 * k;
    Tensor p = Tensor::FromVector(p0, shapes[k], DType::kF64).set_requires_grad(true);
    params.push_back({names[k], p, k != 1});  // no weight decay on the vector
    refs.push_back(MakeRef(shapes[k], p0));
  }
  Adafactor opt(params, o);
  const double lrs[3] = {0.1, 0.05, 0.02};
  for (int t = 1; t <= 3; ++t) {
    for (size_t k = 0; k < shapes.size(); ++k) {
      const Vec g = TestGrads(t, static_cast<int>(NumElements(shapes[k])), static_cast<int>(k));
      params[k].param.set_grad(Tensor::FromVector(g, shapes[k], DType::kF64));
      AdafactorRefStep(refs[k], g, o, lrs[t - 1], params[k].weight_decay, t);
    }
    opt.Step(lrs[t - 1]);
    for (size_t k = 0; k < shapes.size(); ++k) {
      ExpectNear(params[k].param.ToDoubles(), refs[k].p, 1e-12,
                 names[k] + " after step " + std::to_string(t));
    }
  }
  bool clipped = false;
  for (const AdafactorRef& r : refs) clipped = clipped || r.clipped;
  EXPECT_EQ(clipped, expect_clipping);
  // State: means of the bias-corrected moving averages, as documented.
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : opt.StateTensors()) state[name] = t;
  const double correction = o.bias_correction ? 1 - std::pow(o.beta2, 3) : 1.0;
  Vec row_ref(2), col_ref(3);
  for (int i = 0; i < 2; ++i) row_ref[i] = refs[0].R[i] / correction / 3;
  for (int j = 0; j < 3; ++j) col_ref[j] = refs[0].C[j] / correction / 2;
  ExpectNear(state.at("w.exp_avg_sq_row").ToDoubles(), row_ref, 1e-12, "w.exp_avg_sq_row");
  ExpectNear(state.at("w.exp_avg_sq_col").ToDoubles(), col_ref, 1e-12, "w.exp_avg_sq_col");
  EXPECT_EQ(state.at("t.exp_avg_sq_row").shape(), (Shape{2, 2}));
  EXPECT_EQ(state.at("t.exp_avg_sq_col").shape(), (Shape{2, 3}));
  EXPECT_EQ(state.count("b.exp_avg_sq"), 1u);
  EXPECT_EQ(state.count("w.exp_avg"), o.beta1 > 0 ? 1u : 0u);
}

TEST(Adafactor, MatchesPaperFormula) {
  AdafactorOptions o;  // β1 0.9, β2 0.99, ε1 1e-30, d = 1
  o.weight_decay = 0.1;
  CheckAdafactor(o, /*expect_clipping=*/true);
}

TEST(Adafactor, TightClippingNoMomentumNoBiasCorrection) {
  AdafactorOptions o;
  o.beta1 = 0.0;
  o.bias_correction = false;
  o.clip_threshold = 0.5;
  CheckAdafactor(o, /*expect_clipping=*/true);
}

TEST(Adafactor, LooseClippingNeverEngages) {
  AdafactorOptions o;
  o.clip_threshold = 100.0;
  CheckAdafactor(o, /*expect_clipping=*/false);
}

TEST(Adafactor, UnfactoredOptionAndZeroGradient) {
  // With factoring off a matrix behaves like a vector; a zero gradient gives a zero update
  // (ε1 keeps V positive).
  AdafactorOptions o;
  o.factored = false;
  Tensor w = Tensor::FromVector({1, 2, 3, 4}, {2, 2}, DType::kF64).set_requires_grad(true);
  Adafactor opt({{"w", w, true}}, o);
  std::map<std::string, Tensor> state;
  for (auto& [name, t] : opt.StateTensors()) state[name] = t;
  EXPECT_EQ(state.count("w.exp_avg_sq"), 1u);
  EXPECT_EQ(state.count("w.exp_avg_sq_row"), 0u);
  w.set_grad(Tensor::Zeros({2, 2}, DType::kF64));
  opt.Step(0.1);
  EXPECT_EQ(w.ToDoubles(), (Vec{1, 2, 3, 4}));
}

// ---- state save / load ----

template <typename Opt, typename Options>
void CheckStateRoundTrip(const Options& options) {
  auto make_params = [] {
    Tensor w = Tensor::FromVector({0.1, 0.2, 0.3, 0.4, 0.5, 0.6}, {2, 3}).set_requires_grad(true);
    Tensor b = Tensor::FromVector({1, -1, 0.5}, {3}).set_requires_grad(true);
    return std::vector<NamedParameter>{{"w", w, true}, {"b", b, false}};
  };
  auto set_grads = [](std::vector<NamedParameter>& ps, int t) {
    for (size_t k = 0; k < ps.size(); ++k) {
      const int n = static_cast<int>(ps[k].param.numel());
      ps[k].param.set_grad(
          Tensor::FromVector(TestGrads(t, n, static_cast<int>(k)), ps[k].param.shape()));
    }
  };
  std::vector<NamedParameter> pa = make_params(), pb = make_params();
  Opt a(pa, options), b(pb, options);
  for (int t = 1; t <= 2; ++t) {
    set_grads(pa, t);
    a.Step(0.01);
  }
  // b gets a's parameters and optimizer state (copied: StateTensors returns live handles).
  std::map<std::string, Tensor> saved;
  for (auto& [name, t] : a.StateTensors()) saved[name] = t.clone();
  for (size_t k = 0; k < pa.size(); ++k) ops::CopyInPlace(pb[k].param, pa[k].param);
  ASSERT_TRUE(b.LoadStateTensors(saved).ok());
  EXPECT_EQ(b.step_count(), 2);
  set_grads(pa, 3);
  set_grads(pb, 3);
  a.Step(0.01);
  b.Step(0.01);
  for (size_t k = 0; k < pa.size(); ++k) {
    EXPECT_EQ(pa[k].param.ToDoubles(), pb[k].param.ToDoubles()) << pa[k].name;
  }

  // Errors name the tensor and change nothing.
  Opt c(make_params(), options);
  auto bad = saved;
  bad.erase("w.exp_avg_sq" + std::string(std::is_same_v<Opt, Adafactor> ? "_row" : ""));
  absl::Status status = c.LoadStateTensors(bad);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("w.exp_avg_sq"), std::string::npos) << status;
  bad = saved;
  bad["b.exp_avg"] = Tensor::Zeros({4});
  status = c.LoadStateTensors(bad);
  EXPECT_NE(status.message().find("b.exp_avg'"), std::string::npos) << status;
  EXPECT_NE(status.message().find("[4]"), std::string::npos) << status;
  bad = saved;
  bad["z.exp_avg"] = Tensor::Zeros({1});
  status = c.LoadStateTensors(bad);
  EXPECT_NE(status.message().find("z.exp_avg"), std::string::npos) << status;
  EXPECT_EQ(c.step_count(), 0);
  for (auto& [name, t] : c.StateTensors()) {
    for (double x : t.ToDoubles()) EXPECT_EQ(x, 0.0) << name;
  }
}

TEST(OptimizerState, AdamWRoundTripAndErrors) {
  AdamWOptions o;
  o.weight_decay = 0.01;
  CheckStateRoundTrip<AdamW>(o);
}

TEST(OptimizerState, AdafactorRoundTripAndErrors) {
  CheckStateRoundTrip<Adafactor>(AdafactorOptions{});
}

TEST(OptimizerState, NamesAndZeroGrad) {
  Tensor w = Tensor::Zeros({2, 3}).set_requires_grad(true);
  Tensor b = Tensor::Zeros({3}).set_requires_grad(true);
  AdamW adam({{"w", w, true}, {"b", b, false}});
  std::vector<std::string> names;
  for (auto& [name, t] : adam.StateTensors()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"optimizer.step", "w.exp_avg", "w.exp_avg_sq",
                                             "b.exp_avg", "b.exp_avg_sq"}));
  Adafactor ada({{"w", w, true}, {"b", b, false}});
  names.clear();
  for (auto& [name, t] : ada.StateTensors()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"optimizer.step", "w.exp_avg", "w.exp_avg_sq_row",
                                             "w.exp_avg_sq_col", "b.exp_avg", "b.exp_avg_sq"}));
  w.set_grad(Tensor::Ones({2, 3}));
  adam.ZeroGrad();
  EXPECT_FALSE(w.grad().defined());
}

// ---- bf16 parameters: f32 master copies ----

// bf16-exact starting values: a matrix (factored in Adafactor) and a vector.
std::vector<NamedParameter> MixedParams(DType dtype) {
  Tensor w = Tensor::FromVector({0.5, -0.25, 1.5, 0.75, -2.0, 0.125}, {2, 3}).to(dtype);
  Tensor b = Tensor::FromVector({1.0, -0.5, 0.375}, {3}).to(dtype);
  return {{"w", w.set_requires_grad(true), true}, {"b", b.set_requires_grad(true), false}};
}

void SetF32Grads(std::vector<NamedParameter>& ps, int t) {
  for (size_t k = 0; k < ps.size(); ++k) {
    const int n = static_cast<int>(ps[k].param.numel());
    ps[k].param.set_grad(
        Tensor::FromVector(TestGrads(t, n, static_cast<int>(k)), ps[k].param.shape()));
  }
}

std::map<std::string, Tensor> StateMap(const Optimizer& opt) {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : opt.StateTensors()) out[name] = t;
  return out;
}

// The same optimizer over bf16 parameters and over f32 parameters with the same (bf16-exact)
// values and the same f32 gradients: the masters and the state equal the f32 run exactly, and each
// bf16 parameter is bf16(its master) after every step.
template <typename Opt, typename Options>
void CheckMasterMatchesF32(const Options& options) {
  std::vector<NamedParameter> p16 = MixedParams(DType::kBF16), p32 = MixedParams(DType::kF32);
  Opt a(p16, options), b(p32, options);
  for (int t = 1; t <= 6; ++t) {
    SetF32Grads(p16, t);
    SetF32Grads(p32, t);
    a.Step(0.05);
    b.Step(0.05);
    std::map<std::string, Tensor> sa = StateMap(a), sb = StateMap(b);
    ASSERT_EQ(sa.size(), sb.size() + 2);  // + w.master, b.master
    for (auto& [name, tensor] : sb) {
      ASSERT_TRUE(sa.count(name)) << name;
      EXPECT_EQ(sa[name].dtype(), tensor.dtype()) << name;  // f32 state
      EXPECT_EQ(sa[name].ToDoubles(), tensor.ToDoubles()) << name << " step " << t;
    }
    for (size_t k = 0; k < p16.size(); ++k) {
      const Tensor master = sa.at(p16[k].name + ".master");
      EXPECT_EQ(master.dtype(), DType::kF32);
      EXPECT_EQ(master.ToDoubles(), p32[k].param.ToDoubles()) << p16[k].name << " step " << t;
      EXPECT_EQ(p16[k].param.dtype(), DType::kBF16);
      EXPECT_EQ(p16[k].param.ToDoubles(), master.to(DType::kBF16).ToDoubles()) << p16[k].name;
    }
  }
  // The run moved the weights away from bf16-exact values: the masters hold more than bf16 does.
  EXPECT_NE(p16[0].param.ToDoubles(), p32[0].param.ToDoubles());
}

TEST(MasterWeights, AdamWMasterEqualsTheF32Run) {
  AdamWOptions o;
  o.weight_decay = 0.1;
  CheckMasterMatchesF32<AdamW>(o);
}

TEST(MasterWeights, AdafactorMasterEqualsTheF32Run) {
  CheckMasterMatchesF32<Adafactor>(AdafactorOptions{});
}

TEST(MasterWeights, UpdatesBelowBf16ResolutionAccumulate) {
  // AdamW with a constant gradient moves each weight by ~lr per step. Near 1.0 bf16 resolves
  // 2^-8 below and 2^-7 above, so a step of 1e-3 rounds away in bf16 arithmetic; the master keeps
  // it.
  constexpr double kLr = 1e-3;
  Tensor p = Tensor::Ones({4}, DType::kBF16).set_requires_grad(true);
  AdamW opt({{"p", p, false}});
  // Pure-bf16 arithmetic for comparison: an f32 parameter rounded to bf16 after every step.
  Tensor q = Tensor::Ones({4}).set_requires_grad(true);
  AdamW pure({{"q", q, false}});
  for (int t = 1; t <= 12; ++t) {
    p.set_grad(Tensor::Ones({4}));
    q.set_grad(Tensor::Ones({4}));
    opt.Step(kLr);
    pure.Step(kLr);
    ops::CopyInPlace(q, q.to(DType::kBF16));
    const Vec master = StateMap(opt).at("p.master").ToDoubles();
    EXPECT_NEAR(master[0], 1.0 - t * kLr, 1e-6) << t;
    EXPECT_EQ(p.ToDoubles(), Tensor::FromVector(master, {4}).to(DType::kBF16).ToDoubles()) << t;
    EXPECT_EQ(q.ToDoubles(), Vec(4, 1.0)) << t;  // pure bf16: stuck at 1
    if (t == 1) {
      EXPECT_EQ(p.ToDoubles(), Vec(4, 1.0));  // one step is below resolution
    }
  }
  EXPECT_LT(p.ToDoubles()[0], 0.995);  // 12 steps moved the bf16 weight: 0.98828125
}

TEST(MasterWeights, StateRoundTripIncludesMasters) {
  for (bool adafactor : {false, true}) {
    SCOPED_TRACE(adafactor ? "adafactor" : "adamw");
    auto make = [&](std::vector<NamedParameter> ps) -> std::unique_ptr<Optimizer> {
      if (adafactor) return std::make_unique<Adafactor>(std::move(ps));
      return std::make_unique<AdamW>(std::move(ps));
    };
    std::vector<NamedParameter> pa = MixedParams(DType::kBF16), pb = MixedParams(DType::kBF16);
    std::unique_ptr<Optimizer> a = make(pa), b = make(pb);
    for (int t = 1; t <= 3; ++t) {
      SetF32Grads(pa, t);
      a->Step(0.05);
    }
    std::vector<std::string> names;
    std::map<std::string, Tensor> saved;
    for (auto& [name, t] : a->StateTensors()) {
      names.push_back(name);
      saved[name] = t.clone();
    }
    ASSERT_GE(names.size(), 2u);
    EXPECT_EQ(names[names.size() - 2], "w.master");
    EXPECT_EQ(names.back(), "b.master");
    // b's parameters still hold their initial values; loading sets them to bf16(master).
    ASSERT_TRUE(b->LoadStateTensors(saved).ok());
    for (size_t k = 0; k < pa.size(); ++k) {
      EXPECT_EQ(pb[k].param.ToDoubles(), pa[k].param.ToDoubles()) << pa[k].name;
      EXPECT_EQ(StateMap(*b).at(pa[k].name + ".master").ToDoubles(),
                saved.at(pa[k].name + ".master").ToDoubles());
    }
    SetF32Grads(pa, 4);
    SetF32Grads(pb, 4);
    a->Step(0.05);
    b->Step(0.05);
    for (auto& [name, t] : StateMap(*a)) {
      EXPECT_EQ(t.ToDoubles(), StateMap(*b).at(name).ToDoubles()) << name;
    }
    // A state without the masters is refused, naming the missing one, and changes nothing.
    auto bad = saved;
    bad.erase("w.master");
    std::unique_ptr<Optimizer> c = make(MixedParams(DType::kBF16));
    absl::Status status = c->LoadStateTensors(bad);
    EXPECT_FALSE(status.ok());
    EXPECT_NE(status.message().find("w.master"), std::string::npos) << status;
    EXPECT_EQ(c->step_count(), 0);
  }
}

TEST(MasterWeights, OnlyBf16ParametersHaveMastersAndBf16GradientsWork) {
  Tensor w = Tensor::Zeros({2}).set_requires_grad(true);
  Tensor h = Tensor::Zeros({2}, DType::kBF16).set_requires_grad(true);
  AdamW opt({{"w", w, true}, {"h", h, true}});
  ASSERT_EQ(opt.MasterWeights().size(), 1u);
  EXPECT_TRUE(opt.MasterWeights()[0].first.same(h));
  h.set_grad(Tensor::FromVector({1, -1}, {2}).to(DType::kBF16));  // a bf16 gradient converts
  opt.Step(0.5);
  EXPECT_EQ(h.ToDoubles(), (Vec{-0.5, 0.5}));
  EXPECT_EQ(w.ToDoubles(), (Vec{0, 0}));  // no gradient: skipped
}

// ---- schedules ----

TEST(Schedule, ExactValues) {
  ScheduleOptions s;
  s.lr = 0.1;
  s.warmup_steps = 10;
  s.decay_steps = 110;
  s.min_lr_ratio = 0.1;
  for (ScheduleType type :
       {ScheduleType::kConstant, ScheduleType::kCosine, ScheduleType::kLinear}) {
    s.type = type;
    EXPECT_DOUBLE_EQ(LearningRate(s, 0), 0.01) << ScheduleTypeName(type);  // lr / warmup
    EXPECT_DOUBLE_EQ(LearningRate(s, 4), 0.05) << ScheduleTypeName(type);  // mid-warmup
    EXPECT_DOUBLE_EQ(LearningRate(s, 9), 0.1) << ScheduleTypeName(type);   // last warmup step
    EXPECT_DOUBLE_EQ(LearningRate(s, 10), 0.1) << ScheduleTypeName(type);  // end of warmup
  }
  s.type = ScheduleType::kConstant;
  EXPECT_DOUBLE_EQ(LearningRate(s, 60), 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(s, 100000), 0.1);
  s.type = ScheduleType::kCosine;
  EXPECT_NEAR(LearningRate(s, 35), 0.01 + 0.045 * (1 + std::sqrt(0.5)), 1e-15);  // quarter way
  EXPECT_NEAR(LearningRate(s, 60), 0.055, 1e-15);                                // halfway
  EXPECT_NEAR(LearningRate(s, 110), 0.01, 1e-15);                                // end
  EXPECT_NEAR(LearningRate(s, 5000), 0.01, 1e-15);                               // beyond
  s.type = ScheduleType::kLinear;
  EXPECT_NEAR(LearningRate(s, 35), 0.0775, 1e-15);
  EXPECT_NEAR(LearningRate(s, 60), 0.055, 1e-15);
  EXPECT_NEAR(LearningRate(s, 110), 0.01, 1e-15);
  EXPECT_NEAR(LearningRate(s, 5000), 0.01, 1e-15);
  s.warmup_steps = 0;  // no warmup: decay starts at step 0 from the full lr
  EXPECT_DOUBLE_EQ(LearningRate(s, 0), 0.1);
  EXPECT_NEAR(LearningRate(s, 55), 0.055, 1e-15);
}

TEST(Schedule, ValidationAndParsing) {
  ScheduleOptions s;
  s.type = ScheduleType::kCosine;
  s.warmup_steps = 10;
  s.decay_steps = 5;
  EXPECT_NE(ValidateSchedule(s).message().find("decay_steps"), std::string::npos);
  EXPECT_THROW(LearningRate(s, 0), Error);
  s.decay_steps = 20;
  s.min_lr_ratio = 2;
  EXPECT_NE(ValidateSchedule(s).message().find("min_lr_ratio"), std::string::npos);
  EXPECT_EQ(*ParseScheduleType("cosine"), ScheduleType::kCosine);
  EXPECT_EQ(*ParseScheduleType("constant"), ScheduleType::kConstant);
  EXPECT_EQ(*ParseScheduleType("linear"), ScheduleType::kLinear);
  EXPECT_NE(ParseScheduleType("cosin").status().message().find("cosin"), std::string::npos);
}

// ---- clipping ----

TEST(GradClip, GlobalNormAndScaling) {
  Tensor a = Tensor::Zeros({2}).set_requires_grad(true);
  Tensor b = Tensor::Zeros({1}, DType::kF64).set_requires_grad(true);
  Tensor c = Tensor::Zeros({3}).set_requires_grad(true);  // no gradient: ignored
  std::vector<NamedParameter> ps = {{"a", a, true}, {"b", b, true}, {"c", c, true}};
  auto reset = [&] {
    a.set_grad(Tensor::FromVector({3, 4}, {2}));
    b.set_grad(Tensor::FromVector({12}, {1}, DType::kF64));
  };
  reset();
  EXPECT_DOUBLE_EQ(GradSumSquares(ps), 169.0);
  EXPECT_DOUBLE_EQ(ClipGradNorm(ps, 20.0), 13.0);  // below the threshold: unchanged
  EXPECT_EQ(a.grad().ToDoubles(), (Vec{3, 4}));
  EXPECT_DOUBLE_EQ(ClipGradNorm(ps, 0.0), 13.0);  // disabled
  EXPECT_EQ(b.grad().ToDoubles(), (Vec{12}));
  EXPECT_DOUBLE_EQ(ClipGradNorm(ps, 6.5), 13.0);  // halves every gradient
  EXPECT_EQ(a.grad().ToDoubles(), (Vec{1.5, 2}));
  EXPECT_EQ(b.grad().ToDoubles(), (Vec{6}));
  EXPECT_NEAR(std::sqrt(GradSumSquares(ps)), 6.5, 1e-12);
  EXPECT_FALSE(c.grad().defined());

  // A strided (transposed) gradient is measured and scaled in place too.
  Tensor w = Tensor::Zeros({3, 2}).set_requires_grad(true);
  Tensor g = Tensor::FromVector({1, 2, 3, 4, 5, 6}, {2, 3}).transpose(0, 1);  // [3, 2] view
  w.set_grad(g);
  std::vector<NamedParameter> pw = {{"w", w, true}};
  EXPECT_DOUBLE_EQ(ClipGradNorm(pw, std::sqrt(91.0) / 2), std::sqrt(91.0));
  EXPECT_EQ(w.grad().ToDoubles(), (Vec{0.5, 2, 1, 2.5, 1.5, 3}));
}

TEST(GradClip, NonFiniteGradients) {
  Tensor a = Tensor::Zeros({3}).set_requires_grad(true);
  Tensor b = Tensor::Zeros({2}).set_requires_grad(true);
  std::vector<NamedParameter> ps = {{"a", a, true}, {"b", b, true}};
  a.set_grad(Tensor::FromVector({1, 2, 3}, {3}));
  b.set_grad(Tensor::FromVector({1e30, -1e30}, {2}));  // large but finite (squares overflow f32)
  EXPECT_TRUE(AllGradsFinite(ps));
  EXPECT_TRUE(std::isfinite(ClipGradNorm(ps, 1.0)));
  a.set_grad(Tensor::FromVector({1, 2, 3}, {3}));
  b.set_grad(Tensor::FromVector({1, std::nan("")}, {2}));
  EXPECT_FALSE(AllGradsFinite(ps));
  EXPECT_TRUE(std::isnan(ClipGradNorm(ps, 1.0)));
  EXPECT_EQ(a.grad().ToDoubles(), (Vec{1, 2, 3}));  // a non-finite norm scales nothing
  b.set_grad(Tensor::FromVector({1, -INFINITY}, {2}));
  EXPECT_FALSE(AllGradsFinite(ps));
}

// ---- end to end: least squares through autograd ----

template <typename Opt, typename Options>
void CheckLeastSquares(const Options& options, double peak_lr) {
  const int n = 8;
  Vec xs(n * 3), ys(n * 4);
  const double w_true[4][3] = {{1, -2, 0.5}, {0.3, 0.8, -1}, {-1.5, 0.2, 0.7}, {2, 1, -0.4}};
  for (int r = 0; r < n; ++r) {
    for (int j = 0; j < 3; ++j) xs[r * 3 + j] = std::sin(1.7 * r + 2.3 * j + 0.5);
    for (int i = 0; i < 4; ++i) {
      double y = 0;
      for (int j = 0; j < 3; ++j) y += w_true[i][j] * xs[r * 3 + j];
      ys[r * 4 + i] = y;
    }
  }
  Tensor x = Tensor::FromVector(xs, {n, 3});
  Tensor y = Tensor::FromVector(ys, {n, 4});
  Tensor w = Tensor::Zeros({4, 3}).set_requires_grad(true);
  Opt opt({{"w", w, false}}, options);
  ScheduleOptions schedule;
  schedule.type = ScheduleType::kCosine;
  schedule.lr = peak_lr;
  schedule.warmup_steps = 10;
  schedule.decay_steps = 400;
  auto loss_fn = [&] { return ops::MeanAll(ops::Square(ops::Sub(ops::Linear(x, w), y))); };
  const double initial = loss_fn().item();
  for (int step = 0; step < 400; ++step) {
    Tensor loss = loss_fn();
    loss.backward();
    opt.Step(LearningRate(schedule, step));
    opt.ZeroGrad();
  }
  const double final_loss = loss_fn().item();
  EXPECT_LT(final_loss * 100, initial) << "initial " << initial << " final " << final_loss;
}

TEST(EndToEnd, AdamWMinimisesLeastSquares) { CheckLeastSquares<AdamW>(AdamWOptions{}, 0.1); }

TEST(EndToEnd, AdafactorMinimisesLeastSquares) {
  CheckLeastSquares<Adafactor>(AdafactorOptions{}, 0.1);
}

}  // namespace
}  // namespace fam
