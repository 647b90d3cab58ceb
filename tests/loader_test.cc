// framework/data/loader: windows of the concatenated shard stream, deterministic per-epoch order,
// epoch wrap, resume from state, world-size invariance of a global step, id checks, validation
// batches and shard globs. The shards hold token value = stream position, so every window's
// content is known without the loader.
#include "framework/data/loader.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "framework/data/token_shard.h"
#include "gtest/gtest.h"

namespace fam::data {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kSeqLen = 8;

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(::testing::TempDir()) /
            ("fam_loader_" +
             std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
             std::to_string(::getpid())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // Stream of 1001 tokens (value = position) in three shards of uneven sizes.
    int64_t pos = 0;
    for (int64_t size : {300, 450, 251}) {
      std::vector<int32_t> tokens;
      for (int64_t i = 0; i < size; ++i) tokens.push_back(static_cast<int32_t>(pos++));
      const std::string path = dir_ + "/train-0000" + std::to_string(shards_.size()) + ".bin";
      ASSERT_TRUE(WriteTokenShard(path, tokens, 2000).ok());
      shards_.push_back(path);
    }
    total_ = pos;
  }
  void TearDown() override { fs::remove_all(dir_); }

  LoaderOptions Options(int64_t global_batch, int64_t micro_batch, int world = 1, int rank = 0,
                        uint64_t seed = 5) const {
    LoaderOptions o;
    o.shards = shards_;
    o.seq_len = kSeqLen;
    o.global_batch = global_batch;
    o.micro_batch = micro_batch;
    o.world_size = world;
    o.rank = rank;
    o.seed = seed;
    return o;
  }

  static DataLoader OpenOrDie(const LoaderOptions& o) {
    absl::StatusOr<DataLoader> loader = DataLoader::Open(o);
    EXPECT_TRUE(loader.ok()) << loader.status();
    return *std::move(loader);
  }

  // Window ids of one rank's step, in micro-batch order; checks every row's content.
  static std::vector<int64_t> StepIds(DataLoader& loader) {
    absl::StatusOr<std::vector<Batch>> step = loader.NextStep();
    EXPECT_TRUE(step.ok()) << step.status();
    std::vector<int64_t> ids;
    for (const Batch& b : *step) {
      EXPECT_EQ(b.inputs.dtype(), DType::kI64);
      EXPECT_EQ(b.inputs.shape(), (Shape{loader.options().micro_batch, kSeqLen}));
      EXPECT_EQ(b.targets.shape(), b.inputs.shape());
      std::vector<int64_t> in = b.inputs.ToInts(), tg = b.targets.ToInts();
      for (int64_t r = 0; r < loader.options().micro_batch; ++r) {
        const int64_t w = in[r * kSeqLen] / kSeqLen;
        for (int64_t j = 0; j < kSeqLen; ++j) {
          EXPECT_EQ(in[r * kSeqLen + j], w * kSeqLen + j);
          EXPECT_EQ(tg[r * kSeqLen + j], w * kSeqLen + j + 1);
        }
        ids.push_back(w);
      }
    }
    return ids;
  }

  std::string dir_;
  std::vector<std::string> shards_;
  int64_t total_ = 0;
};

TEST_F(LoaderTest, WindowsAreChunksOfTheConcatenatedStream) {
  DataLoader loader = OpenOrDie(Options(4, 2));
  EXPECT_EQ(loader.NumTokens(), total_);
  EXPECT_EQ(loader.NumWindows(), (total_ - 1) / kSeqLen);  // 125
  EXPECT_EQ(loader.vocab_size(), 2000);
  // Window 37 spans shards 0 and 1 (tokens 296..304), window 93 spans 1 and 2 (744..752), and
  // the last window ends on the last token.
  const int64_t last = loader.NumWindows() - 1;
  absl::StatusOr<Batch> b = loader.ReadWindows({37, 93, 0, last});
  ASSERT_TRUE(b.ok()) << b.status();
  std::vector<int64_t> in = b->inputs.ToInts(), tg = b->targets.ToInts();
  const std::vector<int64_t> windows = {37, 93, 0, last};
  for (int r = 0; r < 4; ++r) {
    for (int64_t j = 0; j < kSeqLen; ++j) {
      EXPECT_EQ(in[r * kSeqLen + j], windows[r] * kSeqLen + j);
      EXPECT_EQ(tg[r * kSeqLen + j], windows[r] * kSeqLen + j + 1);
    }
  }
  EXPECT_LE(last * kSeqLen + kSeqLen, total_ - 1);
  EXPECT_FALSE(loader.ReadWindows({loader.NumWindows()}).ok());
}

TEST_F(LoaderTest, OrderIsADeterministicPermutationPerSeedAndEpoch) {
  DataLoader a = OpenOrDie(Options(4, 2, 1, 0, /*seed=*/5));
  DataLoader b = OpenOrDie(Options(4, 2, 1, 0, /*seed=*/5));
  DataLoader c = OpenOrDie(Options(4, 2, 1, 0, /*seed=*/6));
  std::vector<int64_t> order = a.EpochOrder(0);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < a.NumWindows(); ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_NE(order, sorted);
  EXPECT_EQ(order, b.EpochOrder(0));
  EXPECT_NE(order, a.EpochOrder(1));
  EXPECT_NE(order, c.EpochOrder(0));

  bool differs = false;
  for (int step = 0; step < 10; ++step) {
    std::vector<int64_t> ia = StepIds(a), ib = StepIds(b), ic = StepIds(c);
    EXPECT_EQ(ia, ib);
    differs |= ia != ic;
    // The step reads the next global_batch positions of the order.
    EXPECT_EQ(ia, std::vector<int64_t>(order.begin() + 4 * step, order.begin() + 4 * step + 4));
  }
  EXPECT_TRUE(differs);

  LoaderOptions sequential = Options(4, 2);
  sequential.shuffle = false;
  DataLoader s = OpenOrDie(sequential);
  EXPECT_EQ(s.EpochOrder(3), sorted);
  EXPECT_EQ(StepIds(s), (std::vector<int64_t>{0, 1, 2, 3}));
}

TEST_F(LoaderTest, EpochWrapDropsTheIncompleteTail) {
  DataLoader loader = OpenOrDie(Options(12, 3));  // 125 windows → 10 steps per epoch, 5 dropped
  ASSERT_EQ(loader.steps_per_epoch(), 10);
  ASSERT_EQ(loader.accumulation_steps(), 4);
  std::set<int64_t> seen;
  for (int step = 0; step < 10; ++step) {
    for (int64_t w : StepIds(loader)) EXPECT_TRUE(seen.insert(w).second) << "repeated window " << w;
  }
  EXPECT_EQ(seen.size(), 120u);
  EXPECT_EQ(loader.state().epoch, 0);
  EXPECT_EQ(loader.state().samples_consumed, 120);
  std::vector<int64_t> first_of_epoch1 = StepIds(loader);
  EXPECT_EQ(loader.state().epoch, 1);
  EXPECT_EQ(loader.state().samples_consumed, 12);
  std::vector<int64_t> order1 = loader.EpochOrder(1);
  EXPECT_EQ(first_of_epoch1, std::vector<int64_t>(order1.begin(), order1.begin() + 12));
}

TEST_F(LoaderTest, ResumeFromStateContinuesIdentically) {
  DataLoader a = OpenOrDie(Options(12, 3));
  for (int step = 0; step < 13; ++step) StepIds(a);  // into epoch 1
  const LoaderState saved = a.state();
  EXPECT_EQ(saved.epoch, 1);
  std::vector<std::vector<int64_t>> expected;
  for (int step = 0; step < 12; ++step) expected.push_back(StepIds(a));  // crosses into epoch 2

  DataLoader b = OpenOrDie(Options(12, 3));
  ASSERT_TRUE(b.Restore(saved).ok());
  for (int step = 0; step < 12; ++step) EXPECT_EQ(StepIds(b), expected[step]) << "step " << step;
  EXPECT_EQ(a.state().epoch, b.state().epoch);
  EXPECT_EQ(a.state().samples_consumed, b.state().samples_consumed);

  EXPECT_FALSE(b.Restore({0, b.NumWindows() + 1}).ok());
  EXPECT_FALSE(b.Restore({-1, 0}).ok());
}

TEST_F(LoaderTest, UnionOverRanksOfAStepIsTheSameForAnyWorldSize) {
  constexpr int64_t kGlobal = 8;
  // Reference: world 1, micro batch 2 (4 accumulation steps); 15 steps cross an epoch boundary.
  DataLoader single = OpenOrDie(Options(kGlobal, 2));
  std::vector<std::vector<int64_t>> reference;
  for (int step = 0; step < 17; ++step) reference.push_back(StepIds(single));

  for (int world : {1, 2, 4}) {
    for (int64_t micro : {int64_t{1}, int64_t{2}}) {
      std::vector<DataLoader> ranks;
      for (int r = 0; r < world; ++r) ranks.push_back(OpenOrDie(Options(kGlobal, micro, world, r)));
      for (int step = 0; step < 17; ++step) {
        std::vector<int64_t> all;
        for (int r = 0; r < world; ++r) {
          std::vector<int64_t> ids = StepIds(ranks[r]);
          EXPECT_EQ(static_cast<int64_t>(ids.size()), kGlobal / world);
          // Rank r holds block r of the step's positions.
          std::vector<int64_t> block(reference[step].begin() + r * (kGlobal / world),
                                     reference[step].begin() + (r + 1) * (kGlobal / world));
          EXPECT_EQ(ids, block) << "world " << world << " rank " << r << " step " << step;
          all.insert(all.end(), ids.begin(), ids.end());
        }
        std::vector<int64_t> want = reference[step];
        std::sort(all.begin(), all.end());
        std::sort(want.begin(), want.end());
        EXPECT_EQ(all, want) << "world " << world << " micro " << micro << " step " << step;
        for (int r = 1; r < world; ++r) {
          EXPECT_EQ(ranks[r].state().epoch, ranks[0].state().epoch);
          EXPECT_EQ(ranks[r].state().samples_consumed, ranks[0].state().samples_consumed);
        }
      }
    }
  }

  // A run saved on world 1 resumes on world 4 with the next step's windows.
  DataLoader one = OpenOrDie(Options(kGlobal, 2));
  for (int step = 0; step < 5; ++step) StepIds(one);
  std::vector<int64_t> all;
  for (int r = 0; r < 4; ++r) {
    DataLoader rank = OpenOrDie(Options(kGlobal, 1, 4, r));
    ASSERT_TRUE(rank.Restore(one.state()).ok());
    std::vector<int64_t> ids = StepIds(rank);
    all.insert(all.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(all, reference[5]);
}

TEST_F(LoaderTest, OutOfRangeIdNamesShardAndOffset) {
  // Shard 1 claims vocab 500 while holding ids up to 749: the checksum is fine (it covers only
  // the tokens), the first bad id (500) is at offset 200 of shard 1, the target of window 24.
  std::string bytes;
  {
    std::ifstream in(shards_[1], std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    bytes = s.str();
  }
  const uint64_t vocab = 500;
  std::memcpy(bytes.data() + 16, &vocab, 8);
  {
    std::ofstream out(shards_[1], std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  LoaderOptions o = Options(4, 2);
  o.shards = {shards_[1]};
  DataLoader loader = OpenOrDie(o);
  EXPECT_TRUE(loader.ReadWindows({0, 23}).ok());  // offsets 0..8 and 184..192
  absl::StatusOr<Batch> bad = loader.ReadWindows({24});
  ASSERT_FALSE(bad.ok());
  const std::string message(bad.status().message());
  EXPECT_NE(message.find(shards_[1]), std::string::npos) << message;
  EXPECT_NE(message.find("offset 200"), std::string::npos) << message;

  // Mixed vocabularies across shards are rejected when opening.
  absl::StatusOr<DataLoader> mixed = DataLoader::Open(Options(4, 2));
  ASSERT_FALSE(mixed.ok());
  EXPECT_NE(std::string(mixed.status().message()).find("vocab_size"), std::string::npos);
}

TEST_F(LoaderTest, ValBatchesAreSequentialAndSplitAcrossRanks) {
  DataLoader loader = OpenOrDie(Options(0, 4));  // global_batch 0: validation only
  absl::StatusOr<std::vector<Batch>> val = loader.ValBatches(3);
  ASSERT_TRUE(val.ok()) << val.status();
  ASSERT_EQ(val->size(), 3u);
  for (int b = 0; b < 3; ++b) {
    std::vector<int64_t> in = (*val)[b].inputs.ToInts();
    for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(in[r * kSeqLen], (b * 4 + r) * kSeqLen);
  }
  absl::StatusOr<std::vector<Batch>> all = loader.ValBatches(0);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 31u);  // 125 windows / 4
  EXPECT_EQ(loader.NextStep().status().code(), absl::StatusCode::kFailedPrecondition);

  // World 2: rank 1 gets global batches 1, 3, 5.
  DataLoader rank1 = OpenOrDie(Options(0, 4, 2, 1));
  absl::StatusOr<std::vector<Batch>> mine = rank1.ValBatches(6);
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ(mine->size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*mine)[i].inputs.ToInts()[0], (2 * i + 1) * 4 * kSeqLen);
}

TEST_F(LoaderTest, OptionErrorsAndShardGlobs) {
  EXPECT_FALSE(DataLoader::Open(Options(6, 4)).ok());        // 6 not a multiple of 4
  EXPECT_FALSE(DataLoader::Open(Options(8, 2, 2, 2)).ok());  // rank out of range
  LoaderOptions huge = Options(4, 2);
  huge.seq_len = 5000;
  EXPECT_FALSE(DataLoader::Open(huge).ok());  // no full window
  LoaderOptions small_model = Options(4, 2);
  small_model.max_vocab_size = 1000;
  EXPECT_FALSE(DataLoader::Open(small_model).ok());
  DataLoader too_big = OpenOrDie(Options(128, 2));  // 125 windows < global batch
  EXPECT_EQ(too_big.NextStep().status().code(), absl::StatusCode::kFailedPrecondition);

  absl::StatusOr<std::vector<std::string>> found = ExpandShardGlob(dir_ + "/train-*.bin");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, shards_);
  found = ExpandShardGlob(shards_[2] + ", " + dir_ + "/train-0000[01].bin");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, (std::vector<std::string>{shards_[2], shards_[0], shards_[1]}));
  found = ExpandShardGlob(dir_ + "/val-*.bin");
  EXPECT_EQ(found.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(found.status().message()).find("val-*.bin"), std::string::npos);
}

}  // namespace
}  // namespace fam::data
