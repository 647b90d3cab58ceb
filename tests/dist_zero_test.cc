// ZeRO-2 and ZeRO-3 (framework/dist/sharded_parameters.h) across real ranks. ctest runs this binary
// as one process and under `mpirun -np 2` and `-np 3`. Every rank also trains the same tiny model
// alone, unsharded, on the whole global batch: the sharded run must give the same losses, gradient
// norms and weights. Plus the in-place storage release that ZeRO-3 relies on, and bf16 parameters
// (f32 gradients, reductions and masters).
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "framework/autograd/node.h"
#include "framework/core/rng.h"
#include "framework/dist/collective_helpers.h"
#include "framework/dist/communicator.h"
#include "framework/dist/sharded_parameters.h"
#include "framework/dist/zero_optimizer.h"
#include "framework/ops/ops.h"
#include "framework/optim/adafactor.h"
#include "framework/optim/adamw.h"
#include "gtest/gtest.h"
#include "models/fam/lora.h"
#include "models/fam/model.h"
#include "tests/test_util.h"

namespace fam::dist {
namespace {

std::shared_ptr<Communicator> g_world;

::testing::Environment* const kWorld =
    ::testing::AddGlobalTestEnvironment(new testing::WorldEnvironment(&g_world));

int Rank() { return g_world->rank(); }
int Size() { return g_world->world_size(); }

// ---- in-place storage release ----

TEST(StorageReleaseTest, ReleaseFreesTheMemoryAndUseAfterReleaseFailsClearly) {
  int freed = 0;
  float* memory = new float[4]{1, 2, 3, 4};
  std::shared_ptr<Storage> storage = Storage::Wrap(memory, 4 * sizeof(float), Device::CPU(), [&] {
    ++freed;
    delete[] memory;
  });
  Tensor t = Tensor::MakeView(storage, {4}, {1}, 0, DType::kF32);
  Tensor tail = t.slice(0, 2, 4);  // a view made before the release (as autograd saves)
  EXPECT_EQ(tail.ToDoubles(), (std::vector<double>{3, 4}));
  storage->Release("parameter 'w' is sharded");
  EXPECT_EQ(freed, 1);  // the bytes are really given back
  EXPECT_TRUE(storage->released());
  try {
    (void)tail.ToDoubles();
    FAIL() << "reading a released storage did not fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 'w' is sharded"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW((void)t.data<float>(), Error);
  storage->Release("twice");  // a no-op
  EXPECT_EQ(freed, 1);
  // Re-materialised inside another storage: every existing view sees the new data.
  Tensor backing = Tensor::FromVector({9, 9, 5, 6, 7, 8}, {6});
  storage->MaterializeInto(backing.storage(), 2 * sizeof(float));
  EXPECT_EQ(t.ToDoubles(), (std::vector<double>{5, 6, 7, 8}));
  EXPECT_EQ(tail.ToDoubles(), (std::vector<double>{7, 8}));
  ops::FillInPlace(tail, 0.5);
  EXPECT_EQ(backing.ToDoubles(), (std::vector<double>{9, 9, 5, 6, 0.5, 0.5}));
  backing = Tensor();
  EXPECT_EQ(t.ToDoubles(), (std::vector<double>{5, 6, 0.5, 0.5}));  // the backing stays alive
  storage->Release("again");
  EXPECT_THROW(storage->MaterializeInto(Tensor::Zeros({2}).storage(), 0), Error);  // too small
  storage->Materialize();
  ops::FillInPlace(t, 2.0);
  EXPECT_EQ(tail.ToDoubles(), (std::vector<double>{2, 2}));
  EXPECT_THROW(storage->Materialize(), Error);  // it holds memory
}

// ---- sharded training against unsharded training ----

struct Case {
  std::string name;
  AttentionType attention = AttentionType::kFam;
  bool adafactor = false;
  bool zero3 = true;
  bool lora = false;
  bool tie = false;
  bool recompute = false;  // activation recomputation inside the gathered window
  bool carried = false;    // FAM state carried in (one AfterLayer per layer instead of two)
};

// The forward options of both runs (a carried FAM state is the same fixed tensor per layer).
ForwardOptions Options(const Case& c, const ModelConfig& m) {
  ForwardOptions fo;
  fo.recompute = c.recompute;
  if (c.carried) {
    for (int64_t l = 0; l < m.n_layers; ++l) {
      std::vector<double> v(m.fam_rows() * m.d_model);
      for (size_t i = 0; i < v.size(); ++i) v[i] = 0.1 * std::sin(double(i + 7 * l));
      fo.initial_state.push_back(Tensor::FromVector(v, {1, m.fam_rows(), m.d_model}, DType::kF64));
    }
  }
  return fo;
}

ModelConfig TinyConfig(const Case& c) {
  ModelConfig m;
  m.vocab_size = 32;
  m.d_model = 16;
  m.n_layers = 3;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.head_dim = 8;
  m.ffn_dim = 24;
  m.tie_embeddings = c.tie;
  m.init_std = 0.1;
  m.attention.type = c.attention;
  m.attention.block_size = 4;
  m.attention.memory_segments = 1;
  m.attention.fam_length = 2;
  return m;
}

std::unique_ptr<FamModel> MakeModel(const Case& c) {
  // f64: the sharded run sums the same gradients in another order; in f64 that rounding stays far
  // below the tolerance even after AdamW divides tiny gradients by their own RMS.
  auto model = std::make_unique<FamModel>(TinyConfig(c), DType::kF64);
  model->InitializeWeights(11);
  if (c.lora) {
    LoraConfig lc;
    lc.rank = 2;
    lc.alpha = 4;
    lc.targets = {"all"};
    lc.seed = 5;
    EXPECT_TRUE(AttachLora(*model, lc).ok());
    // B starts at 0; make it non-zero so that A gets gradients from the first step.
    for (auto& [name, t] : model->NamedParameters()) {
      if (name.find("lora_B") == std::string::npos) continue;
      Tensor noise = Tensor::FromVector(std::vector<double>(t.numel(), 0.05), t.shape(), t.dtype());
      ops::CopyInPlace(t, noise);
    }
  }
  return model;
}

std::vector<NamedParameter> Trainable(const FamModel& model) {
  std::vector<NamedParameter> out;
  for (auto& [name, t] : model.NamedParameters())
    if (t.requires_grad()) out.push_back({name, t, true});
  return out;
}

std::unique_ptr<Optimizer> MakeOptimizer(const Case& c, std::vector<NamedParameter> params) {
  if (c.adafactor) return std::make_unique<Adafactor>(std::move(params), AdafactorOptions{});
  AdamWOptions o;
  o.weight_decay = 0.01;
  return std::make_unique<AdamW>(std::move(params), o);
}

constexpr int kSteps = 4;
constexpr int kMicro = 2;  // micro-batches per rank and step (one sequence each)
constexpr int64_t kSeq = 12;

// Sequence `index` of step `step` of the global batch: inputs and targets [1, kSeq].
std::pair<Tensor, Tensor> Sequence(int step, int index) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i <= kSeq; ++i)
    ids.push_back(Philox(99, static_cast<uint64_t>(step * 1000 + index), i)[0] % 32);
  std::vector<int64_t> in(ids.begin(), ids.end() - 1), out(ids.begin() + 1, ids.end());
  return {Tensor::FromInts(in, {1, kSeq}, DType::kI32), Tensor::FromInts(out, {1, kSeq})};
}

double SumSquares(const std::vector<NamedParameter>& params) {
  double s = 0;
  for (const NamedParameter& p : params) {
    if (!p.param.grad().defined()) continue;
    for (double g : p.param.grad().ToDoubles()) s += g * g;
  }
  return s;
}

struct RunResult {
  std::vector<double> losses, norms;
  std::map<std::string, std::vector<double>> weights;
  ShardingStats stats;
  int64_t persistent_bytes = 0, total_bytes = 0;
  int root_trainable = 0;  // trainable parameters outside the layers (gradient units of their own)
};

// One process alone, unsharded, on all kMicro·world sequences of each step.
RunResult RunUnsharded(const Case& c) {
  std::unique_ptr<FamModel> model = MakeModel(c);
  std::vector<NamedParameter> params = Trainable(*model);
  std::unique_ptr<Optimizer> opt = MakeOptimizer(c, params);
  RunResult r;
  const int n = kMicro * Size();
  for (int step = 0; step < kSteps; ++step) {
    opt->ZeroGrad();
    double loss_sum = 0;
    for (int i = 0; i < n; ++i) {
      auto [in, target] = Sequence(step, i);
      ForwardResult out = model->Forward(in, Options(c, model->config()));
      Tensor loss = model->Loss(out.logits, target);
      ops::Scale(loss, 1.0 / n).backward();
      loss_sum += loss.item();
    }
    r.losses.push_back(loss_sum / n);
    r.norms.push_back(std::sqrt(SumSquares(params)));
    opt->Step(0.01);
  }
  for (auto& [name, t] : model->NamedParameters()) r.weights[name] = t.ToDoubles();
  return r;
}

class Hooks : public LayerHooks {
 public:
  explicit Hooks(ShardedParameters* s) : s_(s) {}
  void BeforeLayer(int64_t l) override { s_->BeforeUnit(static_cast<int>(l)); }
  Tensor AfterLayer(int64_t l, const Tensor& out) override {
    return s_->AfterUnit(static_cast<int>(l), out);
  }

 private:
  ShardedParameters* s_;
};

// Every rank on its kMicro sequences, ZeRO-2 or ZeRO-3 as the trainer wires it.
RunResult RunSharded(const Case& c) {
  std::unique_ptr<FamModel> model = MakeModel(c);
  const int n_layers = static_cast<int>(model->config().n_layers);
  std::vector<NamedParameter> all;
  std::vector<int> unit_of;
  RunResult r;
  for (auto& [name, t] : model->NamedParameters()) {
    all.push_back({name, t, true});
    unit_of.push_back(name.rfind("model.layers.", 0) == 0 ? std::stoi(name.substr(13)) : n_layers);
    r.total_bytes += static_cast<int64_t>(t.nbytes());
    if (unit_of.back() == n_layers && t.requires_grad()) ++r.root_trainable;
  }
  ShardedParameters sharding(g_world, all, unit_of, n_layers + 1, c.zero3);
  sharding.Shard();
  r.persistent_bytes = sharding.persistent_param_bytes();
  Hooks hooks(&sharding);
  std::vector<NamedParameter> params = sharding.trainable();
  std::function<void()> gather;
  if (!c.zero3) gather = [&sharding] { sharding.GatherAll(); };
  Zero1Optimizer opt(
      g_world, params, sharding.trainable_owners(),
      [&c](std::vector<NamedParameter> owned) { return MakeOptimizer(c, std::move(owned)); },
      gather);
  for (int step = 0; step < kSteps; ++step) {
    opt.ZeroGrad();
    double loss_sum = 0;
    for (int m = 0; m < kMicro; ++m) {
      auto [in, target] = Sequence(step, Rank() * kMicro + m);
      sharding.BeginMicroBatch();
      ForwardOptions fo = Options(c, model->config());
      fo.hooks = c.zero3 ? &hooks : nullptr;
      ForwardResult out = model->Forward(in, fo);
      Tensor loss = model->Loss(out.logits, target);
      // The sharding averages over ranks: world x (1 / (kMicro·world)).
      ops::Scale(loss, 1.0 / kMicro).backward();
      sharding.EndMicroBatch();
      loss_sum += loss.item();
    }
    sharding.FinishStep();
    // Only the owners hold gradients; everyone else's are gone.
    for (size_t i = 0; i < params.size(); ++i) {
      if (sharding.trainable_owners()[i] != Rank())
        EXPECT_FALSE(params[i].param.grad().defined()) << params[i].name;
    }
    if (c.zero3 && Size() > 1) {
      // Outside a micro-batch, a parameter owned elsewhere is released: reading it fails clearly.
      for (size_t i = 0; i < all.size(); ++i) {
        if (sharding.owners()[i] == Rank()) continue;
        try {
          (void)all[i].param.ToDoubles();
          ADD_FAILURE() << all[i].name << " is readable while released";
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find("is sharded (ZeRO-3)"), std::string::npos)
              << e.what();
        }
        break;
      }
    }
    const std::vector<double> sums = AllReduceDoubles(*g_world, {loss_sum, SumSquares(params)});
    r.losses.push_back(sums[0] / (kMicro * Size()));
    r.norms.push_back(std::sqrt(sums[1]));
    opt.Step(0.01);
  }
  r.stats = sharding.stats();
  sharding.GatherAll();
  for (auto& [name, t] : model->NamedParameters()) r.weights[name] = t.ToDoubles();
  sharding.ReleaseAll();
  return r;
}

void ExpectSame(const RunResult& a, const RunResult& b, double rtol, double atol) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t s = 0; s < a.losses.size(); ++s) {
    EXPECT_NEAR(a.losses[s], b.losses[s], rtol * std::abs(a.losses[s])) << "loss, step " << s;
    EXPECT_NEAR(a.norms[s], b.norms[s], rtol * a.norms[s]) << "grad norm, step " << s;
  }
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (const auto& [name, x] : a.weights) {
    ASSERT_TRUE(b.weights.count(name)) << name;
    const std::vector<double>& y = b.weights.at(name);
    ASSERT_EQ(x.size(), y.size()) << name;
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i)
      worst = std::max(worst, std::abs(x[i] - y[i]) - rtol * std::abs(x[i]));
    EXPECT_LE(worst, atol) << name;
  }
}

class ZeroTrainingTest : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroTrainingTest, EqualsUnshardedTraining) {
  const Case& c = GetParam();
  const RunResult want = RunUnsharded(c);
  const RunResult got = RunSharded(c);
  ExpectSame(want, got, 1e-9, 1e-9);
  // The weights of a step-0 model differ from the trained ones (the test can fail).
  const RunResult untrained = [&] {
    RunResult r;
    for (auto& [name, t] : MakeModel(c)->NamedParameters()) r.weights[name] = t.ToDoubles();
    return r;
  }();
  double moved = 0;
  for (const auto& [name, x] : want.weights)
    for (size_t i = 0; i < x.size(); ++i)
      moved = std::max(moved, std::abs(x[i] - untrained.weights.at(name)[i]));
  EXPECT_GT(moved, 1e-3);
  if (c.zero3) {
    const int layers = 3;
    // Per micro-batch: forward gathers the root and every layer, backward every layer but the last
    // (kept from forward); all layer gathers but the first backward one... are prefetched.
    if (Size() > 1) {
      EXPECT_EQ(got.stats.gathers, kSteps * kMicro * (2 * layers));
      EXPECT_EQ(got.stats.prefetched, kSteps * kMicro * (2 * layers - 1));
      EXPECT_LT(got.persistent_bytes, got.total_bytes);
    }
    EXPECT_GT(got.stats.peak_gathered_bytes, 0);
  } else {
    EXPECT_EQ(got.persistent_bytes, got.total_bytes);  // ZeRO-2 keeps every parameter
  }
  // One per layer unit and one per trainable root parameter.
  EXPECT_EQ(got.stats.reduce_scatters, kSteps * kMicro * (3 + got.root_trainable));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ZeroTrainingTest,
    ::testing::Values(Case{"fam_adamw_zero2", AttentionType::kFam, false, false},
                      Case{"fam_adamw_zero3", AttentionType::kFam, false, true},
                      Case{"fam_adafactor_zero2", AttentionType::kFam, true, false},
                      Case{"fam_adafactor_zero3", AttentionType::kFam, true, true},
                      Case{"full_adamw_zero3_tied", AttentionType::kFull, false, true, false, true},
                      Case{"fam_lora_zero3", AttentionType::kFam, false, true, true},
                      Case{"fam_lora_zero2", AttentionType::kFam, false, false, true},
                      Case{"fam_recompute_zero3", AttentionType::kFam, false, true, false, false,
                           true},
                      Case{"fam_carried_state_zero3", AttentionType::kFam, false, true, false,
                           false, false, true}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// bf16 parameters (mixed precision): gradients arrive in f32 (GradDType), are reduce-scattered and
// accumulated in f32 — 1 + k·2⁻⁹ is not a bf16 value — also when a unit got no gradient in the
// first micro-batch (its zeros start the owner's accumulator, which must be f32 all the same); the
// owner's optimizer updates its f32 master and every rank then holds bf16(master).
TEST(ZeroBf16Test, GradientsAreReducedAndAccumulatedInF32) {
  for (const bool zero3 : {false, true}) {
    SCOPED_TRACE(zero3 ? "zero3" : "zero2");
    Tensor w0 = Tensor::Full({4}, 0.5, DType::kBF16), w1 = Tensor::Full({4}, -0.25, DType::kBF16);
    w0.set_requires_grad(true);
    w1.set_requires_grad(true);
    // w0 alone in layer unit 0, w1 in the root unit.
    std::vector<NamedParameter> all = {{"w0", w0, true}, {"w1", w1, true}};
    ShardedParameters sharding(g_world, all, {0, 1}, 2, zero3);
    sharding.Shard();
    Zero1Optimizer opt(
        g_world, sharding.trainable(), sharding.trainable_owners(),
        [](std::vector<NamedParameter> owned) { return testing::MakeAdamW(std::move(owned)); },
        zero3 ? std::function<void()>() : [&sharding] { sharding.GatherAll(); });
    const double tiny = std::ldexp(1.0, -9);
    const double c = Rank() == 0 ? 1.0 : tiny;  // per rank: 1 on rank 0, 2⁻⁹ elsewhere
    auto dot = [](const Tensor& w, double value) {
      return ops::SumAll(ops::Mul(w, Tensor::Full(w.shape(), value, DType::kBF16)));
    };
    // Micro-batch 0: w1·c only (no gradient of unit 0 anywhere). Micro-batch 1: w1·2⁻⁹ + w0·c.
    for (int m = 0; m < 2; ++m) {
      sharding.BeginMicroBatch();
      Tensor loss = dot(w1, m == 0 ? c : tiny);
      if (m == 1) {
        sharding.BeforeUnit(0);
        loss = ops::Add(loss, dot(w0, c));
      }
      loss.backward();
      sharding.EndMicroBatch();
    }
    sharding.FinishStep();
    const int world = Size();
    const std::vector<double> want = {(1 + (world - 1) * tiny) / world,
                                      (1 + (2 * world - 1) * tiny) / world};
    const std::vector<int> owners = sharding.trainable_owners();
    for (int i = 0; i < 2; ++i) {
      const Tensor g = all[i].param.grad();
      if (owners[i] != Rank()) {
        EXPECT_FALSE(g.defined()) << all[i].name;
        continue;
      }
      ASSERT_TRUE(g.defined()) << all[i].name;
      EXPECT_EQ(g.dtype(), DType::kF32) << all[i].name;
      // f32 rounding of the 1/world average only; bf16 would be off by about 2⁻⁹ relative.
      for (double v : g.ToDoubles()) EXPECT_NEAR(v, want[i], 1e-6 * want[i]) << all[i].name;
    }
    opt.Step(1e-4);
    // AdamW's first step moves each master by about lr, less than half a bf16 step at 0.25 or 0.5:
    // the f32 masters moved, the bf16 parameters (= bf16(master)) did not.
    for (auto& [param, master] : opt.MasterWeights()) {
      EXPECT_EQ(master.dtype(), DType::kF32);
      EXPECT_NE(master.ToDoubles(), ops::Cast(param, DType::kF32).ToDoubles());
      EXPECT_EQ(param.ToDoubles(), ops::Cast(master, DType::kBF16).ToDoubles());
    }
    const int64_t masters = static_cast<int64_t>(opt.MasterWeights().size());
    EXPECT_EQ(AllReduceInts(*g_world, {masters})[0], 2);  // one per parameter, at its owner
    sharding.GatherAll();
    // Every rank holds the owners' bf16(master): the same values everywhere.
    for (const NamedParameter& p : all) {
      const std::vector<double> v = p.param.ToDoubles();
      std::vector<double> sum = AllReduceDoubles(*g_world, v);
      for (size_t k = 0; k < v.size(); ++k) EXPECT_EQ(sum[k], world * v[k]) << p.name;
    }
    sharding.ReleaseAll();
  }
}

}  // namespace
}  // namespace fam::dist
