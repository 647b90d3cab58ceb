// Collectives and data-parallel pieces across real ranks. ctest runs this binary three times: as
// one process (world size 1, the local communicator), and under `mpirun -np 2` and `-np 3`
// (tests/CMakeLists.txt). Every expectation is computed independently on each rank from the rank
// ids or by a plain single-process computation of the same thing.
#include <map>
#include <memory>
#include <numeric>
#include <string>

#include "framework/autograd/node.h"
#include "framework/dist/collective_helpers.h"
#include "framework/dist/communicator.h"
#include "framework/dist/grad_reducer.h"
#include "framework/dist/zero_optimizer.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace fam::dist {
namespace {

std::shared_ptr<Communicator> g_world;

// One communicator for the whole binary; destroyed before MPI is finalised at exit.
::testing::Environment* const kWorld = ::testing::AddGlobalTestEnvironment(
    new testing::WorldEnvironment(&g_world, "dist_collectives_test"));

Communicator& World() { return *g_world; }
int Rank() { return g_world->rank(); }
int Size() { return g_world->world_size(); }

TEST(CollectivesTest, AllReduceSumsRankIdsInEveryDtype) {
  const int64_t n = Size() * (Size() - 1) / 2;  // sum of rank ids
  for (DType dtype : {DType::kF32, DType::kF64, DType::kI32, DType::kI64, DType::kBF16}) {
    Tensor t =
        Tensor::FromVector({double(Rank()), double(Rank() + 1), double(2 * Rank())}, {3}, dtype);
    World().AllReduce(t).Wait();
    EXPECT_EQ(t.ToDoubles(), (std::vector<double>{double(n), double(n + Size()), double(2 * n)}))
        << DTypeName(dtype);
    Tensor hi = Tensor::FromVector({double(Rank()), -double(Rank())}, {2}, dtype);
    World().AllReduce(hi, ReduceOp::kMax).Wait();
    EXPECT_EQ(hi.ToDoubles(), (std::vector<double>{double(Size() - 1), 0.0})) << DTypeName(dtype);
    Tensor lo = Tensor::FromVector({double(Rank()), -double(Rank())}, {2}, dtype);
    World().AllReduce(lo, ReduceOp::kMin).Wait();
    EXPECT_EQ(lo.ToDoubles(), (std::vector<double>{0.0, -double(Size() - 1)})) << DTypeName(dtype);
  }
}

TEST(CollectivesTest, Bf16SumRoundsLikeF32ThenBf16) {
  // 1 + rank/256 is exact in bf16 only up to 1/128 steps: the sum is rounded once per addition.
  Tensor t = Tensor::FromVector({1.0 + Rank() / 128.0}, {1}, DType::kBF16);
  World().AllReduce(t).Wait();
  float expected = 0;
  for (int r = 0; r < Size(); ++r) {
    const float x = BF16::ToFloat(BF16::FromFloat(1.0f + r / 128.0f));
    expected = r == 0 ? x : BF16::ToFloat(BF16::FromFloat(expected + x));
  }
  // Rounding order may differ between MPI's reduction trees: allow one bf16 ulp at this size.
  EXPECT_NEAR(t.ToDoubles()[0], expected, Size() > 2 ? 0.0625 : 0.0);
}

// Per-rank counts with a zero in the middle when there are at least two ranks.
std::vector<int64_t> UnevenCounts() {
  std::vector<int64_t> counts;
  for (int r = 0; r < Size(); ++r) counts.push_back(r == 1 ? 0 : r + 2);
  return counts;
}

TEST(CollectivesTest, ReduceScatterWithUnevenCounts) {
  const std::vector<int64_t> counts = UnevenCounts();
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  const int64_t ranks_sum = Size() * (Size() - 1) / 2;
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kI64}) {
    std::vector<double> values;
    for (int64_t i = 0; i < total; ++i) values.push_back(Rank() * 8 + i % 8);
    Tensor input = Tensor::FromVector(values, {total}, dtype);
    Tensor output = Tensor::Zeros({counts[Rank()]}, dtype);
    World().ReduceScatter(input, output, counts).Wait();
    int64_t begin = 0;
    for (int r = 0; r < Rank(); ++r) begin += counts[r];
    std::vector<double> expected;
    for (int64_t i = begin; i < begin + counts[Rank()]; ++i)
      expected.push_back(8.0 * ranks_sum + Size() * double(i % 8));
    EXPECT_EQ(output.ToDoubles(), expected) << DTypeName(dtype);
  }
}

TEST(CollectivesTest, AllGatherWithUnevenCounts) {
  const std::vector<int64_t> counts = UnevenCounts();
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16}) {
    std::vector<double> mine;
    for (int64_t j = 0; j < counts[Rank()]; ++j) mine.push_back(Rank() * 16 + j);
    Tensor input = Tensor::FromVector(mine, {counts[Rank()]}, dtype);
    Tensor output = Tensor::Full({total}, -1.0, dtype);
    World().AllGather(input, output, counts).Wait();
    std::vector<double> expected;
    for (int r = 0; r < Size(); ++r)
      for (int64_t j = 0; j < counts[r]; ++j) expected.push_back(r * 16 + j);
    EXPECT_EQ(output.ToDoubles(), expected) << DTypeName(dtype);
  }
}

TEST(CollectivesTest, BroadcastFromTheLastRankAndBarrier) {
  const int root = Size() - 1;
  Tensor t = Rank() == root ? Tensor::FromFloats({3, 1, 4, 1, 5}, {5}) : Tensor::Zeros({5});
  World().Broadcast(t, root).Wait();
  EXPECT_EQ(t.ToFloats(), (std::vector<float>{3, 1, 4, 1, 5}));
  World().Barrier().Wait();
  EXPECT_THROW(World().Broadcast(t, Size()), Error);
}

TEST(CollectivesTest, ManyOperationsInFlightCompleteInOrder) {
  std::vector<Tensor> tensors;
  std::vector<Work> works;
  for (int k = 0; k < 20; ++k) {
    tensors.push_back(Tensor::Full({100 + k * 37}, Rank() + k, DType::kF64));
    works.push_back(World().AllReduce(tensors.back()));
  }
  for (int k = 19; k >= 0; --k) works[k].Wait();
  const double ranks_sum = Size() * (Size() - 1) / 2.0;
  for (int k = 0; k < 20; ++k) {
    EXPECT_TRUE(works[k].Done());
    EXPECT_EQ(tensors[k].ToDoubles(), std::vector<double>(100 + k * 37, ranks_sum + Size() * k));
  }
}

TEST(CollectivesTest, StringsAndAgreement) {
  const std::vector<std::string> all =
      AllGatherStrings(World(), std::string(Rank() * 5, 'a' + Rank()));
  ASSERT_EQ(static_cast<int>(all.size()), Size());
  for (int r = 0; r < Size(); ++r) EXPECT_EQ(all[r], std::string(r * 5, 'a' + r));
  EXPECT_TRUE(AgreeOnStatus(World(), absl::OkStatus(), "testing").ok());
  const int failing = Size() - 1;
  absl::Status mine =
      Rank() == failing ? absl::InvalidArgumentError("bad shard x.bin") : absl::OkStatus();
  absl::Status agreed = AgreeOnStatus(World(), mine, "testing");
  EXPECT_EQ(agreed.code(), absl::StatusCode::kInvalidArgument);
  // (One process: its own error as it is.)
  const std::string expected = Size() == 1 ? "bad shard x.bin"
                               : Rank() == failing
                                   ? "rank " + std::to_string(failing) + ": bad shard x.bin"
                                   : "rank " + std::to_string(failing) + " failed testing";
  EXPECT_EQ(std::string(agreed.message()), expected) << agreed;
  // Only the failing rank's error is printed by the CLI: the others are marked as reported.
  EXPECT_EQ(ReportedByAnotherRank(agreed), Rank() != failing);
  // Every rank failing (a bad config): the lowest rank reports, with its own code.
  absl::Status every = AgreeOnStatus(
      World(), Rank() == 0 ? absl::NotFoundError("no x") : absl::InvalidArgumentError("bad"),
      "testing");
  EXPECT_EQ(ReportedByAnotherRank(every), Rank() != 0);
  EXPECT_EQ(every.code(), absl::StatusCode::kNotFound) << every;
  if (Rank() == 0) {
    EXPECT_EQ(std::string(every.message()), Size() == 1 ? "no x" : "rank 0: no x");
  }
  // The job-wide agreement (before any communicator) gives the same answer.
  absl::Status job = AgreeOnStatusInJob(mine, "to load the config");
  EXPECT_EQ(ReportedByAnotherRank(job), Rank() != failing) << job;
  EXPECT_TRUE(AgreeOnStatusInJob(absl::OkStatus(), "to load the config").ok());
}

// A tiny f64 network; rank r's micro-batch m reads input seed 100 + 10·r + m. `rare` is used
// only by rank 0's first micro-batch, `unused` by nobody.
struct TinyNet {
  Tensor w1 = testing::RandomTensor({3, 4}, DType::kF64, 1, 0.5, true);
  Tensor w2 = testing::RandomTensor({2, 3}, DType::kF64, 2, 0.5, true);
  Tensor rare = testing::RandomTensor({4}, DType::kF64, 3, 0.5, true);
  Tensor emb = testing::RandomTensor({6, 4}, DType::kF64, 5, 0.5, true);
  Tensor unused = testing::RandomTensor({2}, DType::kF64, 4, 0.5, true);
  std::vector<NamedParameter> Params() {
    return {{"emb", emb}, {"w1", w1}, {"w2", w2}, {"rare", rare}, {"unused", unused}};
  }
  Tensor Loss(int rank, int64_t micro) {
    Tensor x = testing::RandomTensor({5, 4}, DType::kF64, 100 + 10 * rank + micro);
    x = ops::Add(x, ops::Slice(emb, 0, micro, micro + 5));
    if (rank == 0 && micro == 0) x = ops::Add(x, rare);
    Tensor h = ops::Tanh(ops::Linear(x, w1));
    return ops::MeanAll(ops::Square(ops::Linear(h, w2)));
  }
  void ZeroGrad() {
    for (NamedParameter& p : Params()) p.param.zero_grad();
  }
};

TEST(GradReducerTest, MatchesTheFullBatchAverage) {
  for (bool shard : {false, true}) {
    SCOPED_TRACE(shard ? "zero1" : "all-reduce");
    TinyNet net, ref;
    ReducerOptions o;
    o.bucket_bytes = 100;  // several buckets
    o.shard = shard;
    GradReducer reducer(g_world, net.Params(), o);
    for (int step = 0; step < 2; ++step) {  // step 2 uses buckets rebuilt in observed order
      net.ZeroGrad();
      ref.ZeroGrad();
      for (int64_t m = 0; m < 2; ++m) {
        if (m == 1) reducer.Arm();
        ops::Scale(net.Loss(Rank(), m), 0.5).backward();
      }
      reducer.Finish();
      // Reference: every rank's micro-batches in one process, averaged over 2·world.
      for (int r = 0; r < Size(); ++r)
        for (int64_t m = 0; m < 2; ++m) ops::Scale(ref.Loss(r, m), 0.5 / Size()).backward();
      std::vector<NamedParameter> got = net.Params(), want = ref.Params();
      for (size_t i = 0; i < got.size(); ++i) {
        const bool expect_grad = want[i].param.grad().defined() && (!shard || reducer.owns(i));
        ASSERT_EQ(got[i].param.grad().defined(), expect_grad) << got[i].name;
        if (expect_grad) {
          EXPECT_LT(testing::MaxAbsDiff(got[i].param.grad(), want[i].param.grad()), 1e-14)
              << got[i].name;
        }
      }
    }
    if (shard) {
      // Owners publish their parameters; every rank receives them.
      std::vector<NamedParameter> params = net.Params();
      for (size_t i = 0; i < params.size(); ++i) {
        if (reducer.owns(i)) ops::FillInPlace(params[i].param, 10.0 * reducer.owners()[i] + i);
      }
      reducer.GatherParameters();
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT_EQ(params[i].param.ToDoubles(),
                  std::vector<double>(params[i].param.numel(), 10.0 * reducer.owners()[i] + i))
            << params[i].name;
      }
    }
  }
}

using testing::MakeAdafactor;
using testing::MakeAdamW;

TEST(Zero1OptimizerTest, ShardedUpdatesEqualTheUnshardedOptimizer) {
  for (auto make : {MakeAdamW, MakeAdafactor}) {
    TinyNet net, ref;
    std::vector<NamedParameter> params = net.Params();
    ReducerOptions o;
    o.shard = true;
    auto reducer = std::make_shared<GradReducer>(g_world, params, o);
    Zero1Optimizer zero(g_world, params, reducer->owners(), make,
                        [reducer] { reducer->GatherParameters(); });
    std::unique_ptr<Optimizer> plain = make(ref.Params());
    auto step = [&](int s) {
      net.ZeroGrad();
      ref.ZeroGrad();
      for (TinyNet* n : {&net, &ref}) n->Loss(0, s % 2).backward();  // the same gradients
      zero.Step(0.01);
      plain->Step(0.01);
    };
    for (int s = 0; s < 3; ++s) step(s);
    std::vector<NamedParameter> want = ref.Params();
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_EQ(testing::MaxAbsDiff(params[i].param, want[i].param), 0.0) << params[i].name;
    // The gathered state is the unsharded optimizer's, on rank 0 only.
    auto full = zero.GatherStateTensors(0);
    auto expected = plain->StateTensors();
    if (Rank() == 0) {
      ASSERT_EQ(full.size(), expected.size());
      for (size_t i = 0; i < full.size(); ++i) {
        EXPECT_EQ(full[i].first, expected[i].first);
        EXPECT_EQ(full[i].second.ToDoubles(), expected[i].second.ToDoubles()) << full[i].first;
      }
    } else {
      EXPECT_TRUE(full.empty());
    }
    // Reshard: a fresh sharded optimizer loads the full state and continues identically.
    std::map<std::string, Tensor> state(expected.begin(), expected.end());
    Zero1Optimizer resumed(g_world, params, reducer->owners(), make,
                           [reducer] { reducer->GatherParameters(); });
    ASSERT_TRUE(resumed.LoadStateTensors(state).ok());
    net.ZeroGrad();
    ref.ZeroGrad();
    for (TinyNet* n : {&net, &ref}) n->Loss(1, 0).backward();
    resumed.Step(0.01);
    plain->Step(0.01);
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_EQ(testing::MaxAbsDiff(params[i].param, want[i].param), 0.0) << params[i].name;
  }
}

}  // namespace
}  // namespace fam::dist
