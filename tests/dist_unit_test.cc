// framework/dist pieces that need no second process: launcher environment discovery, owner
// assignment and bucket layout, the communication thread's timeout, the world-size-1 communicator,
// and the gradient reducer / ZeRO-1 optimizer at world size 1 (they must leave training exact).
#include <map>
#include <string>

#include "framework/autograd/node.h"
#include "framework/dist/bucket_layout.h"
#include "framework/dist/comm_worker.h"
#include "framework/dist/communicator.h"
#include "framework/dist/env.h"
#include "framework/dist/grad_reducer.h"
#include "framework/dist/nccl_communicator.h"
#include "framework/dist/zero_optimizer.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace fam::dist {
namespace {

absl::StatusOr<DistEnv> FromMap(const std::map<std::string, std::string>& vars) {
  return DiscoverEnv([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

TEST(DistEnvTest, SingleProcessWithoutLauncher) {
  absl::StatusOr<DistEnv> env = FromMap({});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->rank, 0);
  EXPECT_EQ(env->world_size, 1);
  EXPECT_EQ(env->launcher, "none");
}

TEST(DistEnvTest, OpenMpiWins) {
  absl::StatusOr<DistEnv> env = FromMap({{"OMPI_COMM_WORLD_RANK", "3"},
                                         {"OMPI_COMM_WORLD_SIZE", "8"},
                                         {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                         {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                         {"SLURM_PROCID", "5"},
                                         {"SLURM_NTASKS", "9"},
                                         {"SLURM_STEP_ID", "0"}});
  ASSERT_TRUE(env.ok()) << env.status();
  EXPECT_EQ(env->launcher, "openmpi");
  EXPECT_EQ(env->rank, 3);
  EXPECT_EQ(env->world_size, 8);
  EXPECT_EQ(env->local_rank, 1);
  EXPECT_EQ(env->local_size, 2);
}

TEST(DistEnvTest, SlurmOnlyInsideAJobStep) {
  std::map<std::string, std::string> vars = {
      {"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"}};
  absl::StatusOr<DistEnv> batch_shell = FromMap(vars);  // sbatch's own shell: not a rank
  ASSERT_TRUE(batch_shell.ok());
  EXPECT_EQ(batch_shell->world_size, 1);
  vars["SLURM_STEP_ID"] = "0";
  absl::StatusOr<DistEnv> step = FromMap(vars);
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_EQ(step->launcher, "slurm");
  EXPECT_EQ(step->rank, 2);
  EXPECT_EQ(step->world_size, 4);
}

TEST(DistEnvTest, BadValuesNameTheVariable) {
  absl::StatusOr<DistEnv> text = FromMap({{"OMPI_COMM_WORLD_RANK", "x"}});
  ASSERT_FALSE(text.ok());
  EXPECT_NE(std::string(text.status().message()).find("OMPI_COMM_WORLD_RANK"), std::string::npos);
  absl::StatusOr<DistEnv> range =
      FromMap({{"OMPI_COMM_WORLD_RANK", "4"}, {"OMPI_COMM_WORLD_SIZE", "4"}});
  ASSERT_FALSE(range.ok());
  EXPECT_NE(std::string(range.status().message()).find("rank 4 of world size 4"),
            std::string::npos);
}

TEST(BucketLayoutTest, OwnersAreBalancedAndDeterministic) {
  const std::vector<int64_t> numels = {100, 10, 10, 40, 40, 5, 60};
  const std::vector<int> owners = AssignOwners(numels, 3);
  EXPECT_EQ(owners, AssignOwners(numels, 3));
  std::vector<int64_t> load(3, 0);
  for (size_t i = 0; i < numels.size(); ++i) load[owners[i]] += numels[i];
  // Largest first to the least loaded (ties to the lower rank): 100 | 60+10+10+5 | 40+40.
  EXPECT_EQ(load, (std::vector<int64_t>{100, 85, 80}));
  EXPECT_EQ(AssignOwners(numels, 1), std::vector<int>(numels.size(), 0));
}

TEST(BucketLayoutTest, BucketsFollowTheOrderAndGroupOwners) {
  const std::vector<int64_t> numels = {4, 3, 8, 2, 2, 30};
  const std::vector<size_t> order = {5, 4, 3, 2, 1, 0};
  const std::vector<int> owners = {1, 0, 1, 0, 1, 0};
  BucketLayout layout = MakeBucketLayout(numels, order, owners, 2, 10);
  // 30 alone (over the cap), then {2, 2} + 8 would pass 10 → {2, 2}, {8}, {3, 4}.
  ASSERT_EQ(layout.buckets.size(), 4u);
  EXPECT_EQ(layout.buckets[0].numel, 30);
  EXPECT_EQ(layout.buckets[1].numel, 4);
  EXPECT_EQ(layout.buckets[2].numel, 8);
  EXPECT_EQ(layout.buckets[3].numel, 7);
  for (size_t b = 0; b < layout.buckets.size(); ++b) {
    const Bucket& bucket = layout.buckets[b];
    int64_t offset = 0;
    int last_owner = -1;
    for (size_t s = 0; s < bucket.slots.size(); ++s) {
      const BucketSlot& slot = bucket.slots[s];
      EXPECT_EQ(slot.offset, offset);
      EXPECT_GE(slot.owner, last_owner);  // grouped by owner
      EXPECT_GE(slot.offset, bucket.owner_offsets[slot.owner]);
      EXPECT_LE(slot.offset + slot.numel,
                bucket.owner_offsets[slot.owner] + bucket.owner_counts[slot.owner]);
      EXPECT_EQ(layout.bucket_of[slot.param], static_cast<int>(b));
      EXPECT_EQ(layout.slot_of[slot.param], static_cast<int>(s));
      last_owner = slot.owner;
      offset += slot.numel;
    }
    EXPECT_EQ(offset, bucket.numel);
  }
  // Within bucket 3 ({1 (owner 0), 0 (owner 1)}) the owner-0 parameter comes first.
  EXPECT_EQ(layout.buckets[3].slots[0].param, 1u);
  EXPECT_EQ(layout.buckets[3].owner_counts, (std::vector<int64_t>{3, 4}));
  EXPECT_THROW(MakeBucketLayout(numels, {0, 1, 2}, owners, 2, 10), Error);
}

TEST(CommWorkerTest, RunsInOrderAndTimesOutNamingRankAndOperation) {
  std::vector<std::string> timeouts;
  CommWorker worker("rank 1 of 2 (test)", 0.2,
                    [&](const std::string& message) { timeouts.push_back(message); });
  std::vector<int> ran;
  Work first = worker.Submit({"first", [&] { ran.push_back(1); }, [] { return true; }});
  Work stuck =
      worker.Submit({"all_reduce f32[8] sum", [&] { ran.push_back(2); }, [] { return false; }});
  Work failing =
      worker.Submit({"broadcast", [] { ThrowInvalid("bad root"); }, [] { return true; }});
  first.Wait();
  EXPECT_THROW(stuck.Wait(), Error);
  try {
    failing.Wait();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad root"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ran, (std::vector<int>{1, 2}));
  ASSERT_EQ(timeouts.size(), 1u);
  EXPECT_NE(timeouts[0].find("rank 1 of 2"), std::string::npos) << timeouts[0];
  EXPECT_NE(timeouts[0].find("all_reduce f32[8] sum (collective #1)"), std::string::npos)
      << timeouts[0];
  EXPECT_GE(stuck.seconds(), 0.2);
}

TEST(LocalCommunicatorTest, CollectivesAreCopiesAndChecksNameShapes) {
  std::shared_ptr<Communicator> comm = MakeLocalCommunicator();
  EXPECT_EQ(comm->world_size(), 1);
  Tensor t = Tensor::FromFloats({1, 2, 3}, {3});
  comm->AllReduce(t).Wait();
  EXPECT_EQ(t.ToFloats(), (std::vector<float>{1, 2, 3}));
  Tensor out = Tensor::Zeros({3});
  comm->ReduceScatter(t, out, {3}).Wait();
  EXPECT_EQ(out.ToFloats(), t.ToFloats());
  Tensor gathered = Tensor::Zeros({3});
  comm->AllGather(t, gathered, {3}).Wait();
  EXPECT_EQ(gathered.ToFloats(), t.ToFloats());
  try {
    comm->AllGather(t, Tensor::Zeros({4}), {3});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f32[4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(comm->AllReduce(Tensor::Zeros({2, 3}).transpose(0, 1)), Error);
}

TEST(CreateCommunicatorTest, BackendChoiceAndNcclWhenNotBuilt) {
  absl::StatusOr<std::shared_ptr<Communicator>> local = CreateCommunicator({});
  ASSERT_TRUE(local.ok()) << local.status();
  if (std::getenv("OMPI_COMM_WORLD_SIZE") == nullptr) {
    EXPECT_EQ((*local)->backend_name(), "local");
  }
  CommOptions bad;
  bad.backend = Backend::kNccl;
  absl::StatusOr<std::shared_ptr<Communicator>> nccl = CreateCommunicator(bad);
  ASSERT_FALSE(nccl.ok());
  EXPECT_NE(std::string(nccl.status().message()).find("trainer.device: cpu"), std::string::npos);
  absl::StatusOr<std::shared_ptr<Communicator>> direct =
      CreateNcclCommunicator(DistEnv{0, 2, 0, 1, "test"}, Device::CUDA(0), 1.0);
  if (!NcclBuilt()) {
    ASSERT_FALSE(direct.ok());
    EXPECT_NE(std::string(direct.status().message()).find("NCCL support not built"),
              std::string::npos);
  }
}

// Two "layers" and two extra parameters: `rare` is used by the first micro-batch only, `unused`
// never gets a gradient.
struct TinyNet {
  Tensor w1 = testing::RandomTensor({3, 4}, DType::kF64, 1, 0.5, true);
  Tensor w2 = testing::RandomTensor({2, 3}, DType::kF64, 2, 0.5, true);
  Tensor rare = testing::RandomTensor({4}, DType::kF64, 3, 0.5, true);
  Tensor unused = testing::RandomTensor({2}, DType::kF64, 4, 0.5, true);
  std::vector<NamedParameter> Params() {
    return {{"w1", w1}, {"w2", w2}, {"rare", rare}, {"unused", unused}};
  }
  Tensor Loss(int64_t micro, bool use_rare) {
    Tensor x = testing::RandomTensor({5, 4}, DType::kF64, 100 + micro);
    if (use_rare) x = ops::Add(x, rare);
    Tensor h = ops::Tanh(ops::Linear(x, w1));
    return ops::MeanAll(ops::Square(ops::Linear(h, w2)));
  }
};

TEST(GradReducerTest, WorldOneKeepsAccumulatedGradients) {
  for (bool shard : {false, true}) {
    TinyNet net, ref;
    ReducerOptions o;
    o.bucket_bytes = 40;  // several buckets
    o.shard = shard;
    GradReducer reducer(MakeLocalCommunicator(), net.Params(), o);
    for (int step = 0; step < 2; ++step) {  // the second step uses the rebuilt buckets
      for (TinyNet* n : {&net, &ref}) {
        for (NamedParameter& p : n->Params()) p.param.zero_grad();
      }
      for (int64_t m = 0; m < 2; ++m) {
        if (m == 1) reducer.Arm();
        ops::Scale(net.Loss(m, m == 0), 0.5).backward();
        ops::Scale(ref.Loss(m, m == 0), 0.5).backward();
      }
      reducer.Finish();
      EXPECT_EQ(reducer.last_stats().buckets, static_cast<int>(reducer.layout().buckets.size()));
      EXPECT_GT(reducer.layout().buckets.size(), 1u);
      for (auto [a, b] : {std::pair{net.w1, ref.w1}, {net.w2, ref.w2}, {net.rare, ref.rare}}) {
        ASSERT_TRUE(a.grad().defined());
        EXPECT_EQ(testing::MaxAbsDiff(a.grad(), b.grad()), 0.0);
      }
      EXPECT_FALSE(net.unused.grad().defined());
    }
  }
}

using testing::MakeAdafactor;
using testing::MakeAdamW;

TEST(Zero1OptimizerTest, WorldOneEqualsThePlainOptimizerAndReshards) {
  for (auto make : {MakeAdamW, MakeAdafactor}) {
    TinyNet net, ref;
    std::vector<NamedParameter> params = net.Params();
    ReducerOptions o;
    o.shard = true;
    auto reducer = std::make_shared<GradReducer>(MakeLocalCommunicator(), params, o);
    Zero1Optimizer zero(MakeLocalCommunicator(), params, reducer->owners(), make,
                        [reducer] { reducer->GatherParameters(); });
    std::unique_ptr<Optimizer> plain = make(ref.Params());
    for (int step = 0; step < 3; ++step) {
      for (TinyNet* n : {&net, &ref}) {
        for (NamedParameter& p : n->Params()) p.param.zero_grad();
        n->Loss(step, true).backward();
      }
      zero.Step(0.01);
      plain->Step(0.01);
    }
    for (size_t i = 0; i < params.size(); ++i)
      EXPECT_EQ(testing::MaxAbsDiff(params[i].param, ref.Params()[i].param), 0.0) << i;
    auto full = zero.GatherStateTensors(0);
    auto expected = plain->StateTensors();
    ASSERT_EQ(full.size(), expected.size());
    for (size_t i = 0; i < full.size(); ++i) {
      EXPECT_EQ(full[i].first, expected[i].first);
      EXPECT_EQ(full[i].second.ToDoubles(), expected[i].second.ToDoubles()) << full[i].first;
    }
    // Reload into a fresh sharded optimizer; a name of no parameter is refused.
    std::map<std::string, Tensor> state(expected.begin(), expected.end());
    TinyNet other;
    Zero1Optimizer again(MakeLocalCommunicator(), other.Params(), reducer->owners(), make, nullptr);
    ASSERT_TRUE(again.LoadStateTensors(state).ok());
    EXPECT_EQ(again.step_count(), 3);
    state["nope.exp_avg"] = Tensor::Zeros({1});
    absl::Status bad = again.LoadStateTensors(state);
    EXPECT_FALSE(bad.ok());
    EXPECT_NE(std::string(bad.message()).find("nope.exp_avg"), std::string::npos) << bad;
  }
}

TEST(FormatBytesTest, Units) {
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(25.0 * 1024 * 1024), "25.0 MiB");
}

}  // namespace
}  // namespace fam::dist
