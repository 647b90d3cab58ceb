// Checkpoint manager: round trip, crashes at every point of a save (fork + kill), corruption
// detection and fallback, retention, and asynchronous saves that snapshot their tensors.
#include "framework/io/checkpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <barrier>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "framework/io/atomic_file.h"
#include "framework/io/safetensors.h"
#include "gtest/gtest.h"

namespace fam::io {
namespace {

namespace fs = std::filesystem;

const char* const kAllFiles[] = {"model.safetensors", "optimizer.safetensors", "state.safetensors",
                                 "trainer_state.json", "manifest.json"};

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "fam_ckpt_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    dir_ = root_ + "/checkpoints";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  CheckpointOptions Options(int keep_last = 100, int64_t keep_every = 0) const {
    CheckpointOptions options;
    options.dir = dir_;
    options.keep_last = keep_last;
    options.keep_every = keep_every;
    return options;
  }
  std::string PathOf(int64_t step) const { return dir_ + "/" + CheckpointDirName(step); }

  // Names of the entries of the checkpoint directory.
  std::set<std::string> Entries() const {
    std::set<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_))
      names.insert(entry.path().filename().string());
    return names;
  }
  bool HasTempEntries() const {
    for (const std::string& name : Entries()) {
      if (name.starts_with(".")) return true;
    }
    return false;
  }
  std::vector<int64_t> ListedSteps(const CheckpointManager& manager) const {
    std::vector<int64_t> steps;
    for (const std::string& path : manager.List()) {
      std::string base = fs::path(path).filename().string();
      steps.push_back(std::stoll(base.substr(5)));
    }
    return steps;
  }

  std::string root_;
  std::string dir_;
};

// Distinct values per step in every dtype, including a non-contiguous (transposed) tensor.
CheckpointData MakeData(int64_t step) {
  const double s = static_cast<double>(step);
  CheckpointData data;
  data.step = step;
  data.world_size = 2;
  data.config_hash = "cfg-" + std::to_string(step);
  data.model = {
      {"model.embed_tokens.weight",
       Tensor::FromVector({s, 0.5, -1.25, 2, 3, 4.75, 5, 6, -7, 8, 9, 10.5}, {3, 4})},
      {"model.norm.weight", Tensor::FromVector({1.5, -2.0, s, 0.0078125}, {4}, DType::kBF16)},
      {"transposed", Tensor::FromVector({1, 2, 3, 4, 5, s}, {2, 3}).transpose(0, 1)},
  };
  data.optimizer = {
      {"adam.m", Tensor::FromVector({0.1 * s, 0.2, 0.3}, {3})},
      {"adam.step", Tensor::FromInts({step, -5000000000LL}, {2}, DType::kI64)},
  };
  data.extra = {
      {"fam.state", Tensor::FromVector({1e-300, s, 3.25, -4, 5, 6}, {2, 3}, DType::kF64)},
      {"counts", Tensor::FromInts({7, -8}, {2}, DType::kI32)},
  };
  data.trainer_state = {{"step", step},
                        {"loader", {{"shard", 1}, {"offset", 123 + step}}},
                        {"rng", {1, 2, 3}},
                        {"note", "fam"}};
  return data;
}

// Same dtype, shape and bytes (the expected tensor is read in logical order).
void ExpectSameTensor(const Tensor& expected, const Tensor& actual, const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what;
  EXPECT_EQ(actual.dtype(), expected.dtype()) << what;
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  Tensor e = expected.contiguous();
  Tensor a = actual.contiguous();
  ASSERT_EQ(a.nbytes(), e.nbytes()) << what;
  EXPECT_EQ(std::memcmp(a.raw_data(), e.raw_data(), e.nbytes()), 0) << what << " differs";
}

void ExpectMatches(const CheckpointData& data, const LoadedCheckpoint& loaded) {
  EXPECT_EQ(loaded.step, data.step);
  EXPECT_EQ(loaded.world_size, data.world_size);
  EXPECT_EQ(loaded.config_hash, data.config_hash);
  EXPECT_EQ(loaded.trainer_state, data.trainer_state);
  const std::pair<const NamedTensors*, const std::map<std::string, Tensor>*> groups[] = {
      {&data.model, &loaded.model},
      {&data.optimizer, &loaded.optimizer},
      {&data.extra, &loaded.extra}};
  for (const auto& [expected, actual] : groups) {
    ASSERT_EQ(actual->size(), expected->size());
    for (const auto& [name, tensor] : *expected) {
      auto it = actual->find(name);
      ASSERT_NE(it, actual->end()) << name;
      ExpectSameTensor(tensor, it->second, name);
    }
  }
}

void FlipByte(const std::string& path, int64_t from_end) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file.good()) << path;
  file.seekg(-from_end, std::ios::end);
  char c = 0;
  file.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  file.seekp(-from_end, std::ios::end);
  file.write(&c, 1);
}

TEST_F(CheckpointTest, DirName) {
  EXPECT_EQ(CheckpointDirName(0), "step-00000000");
  EXPECT_EQ(CheckpointDirName(1000), "step-00001000");
  EXPECT_EQ(CheckpointDirName(123456789), "step-123456789");
}

TEST_F(CheckpointTest, SaveLoadRoundTrip) {
  CheckpointManager manager(Options());
  CheckpointData data = MakeData(7);
  ASSERT_TRUE(manager.Save(data).ok());

  EXPECT_EQ(*ReadFile(dir_ + "/latest"), "step-00000007\n");
  EXPECT_EQ(Entries(), (std::set<std::string>{"latest", "step-00000007"}));
  std::set<std::string> files;
  for (const auto& entry : fs::directory_iterator(PathOf(7)))
    files.insert(entry.path().filename().string());
  EXPECT_EQ(files, std::set<std::string>(std::begin(kAllFiles), std::end(kAllFiles)));

  // Manifest: every other file with its real size.
  nlohmann::json manifest = nlohmann::json::parse(*ReadFile(PathOf(7) + "/manifest.json"));
  EXPECT_EQ(manifest["format"], "famtrain-checkpoint");
  EXPECT_EQ(manifest["version"], 1);
  EXPECT_EQ(manifest["step"], 7);
  EXPECT_EQ(manifest["world_size"], 2);
  EXPECT_EQ(manifest["config_hash"], "cfg-7");
  EXPECT_TRUE(manifest["created_unix"].is_number_integer());
  EXPECT_EQ(manifest["files"].size(), 4u);
  for (const auto& [name, entry] : manifest["files"].items()) {
    EXPECT_EQ(entry["size"].get<uint64_t>(), fs::file_size(PathOf(7) + "/" + name)) << name;
    EXPECT_EQ(entry["sha256"].get<std::string>().size(), 64u) << name;
  }

  EXPECT_TRUE(VerifyCheckpoint(PathOf(7)).ok());
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(7));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->path, PathOf(7));
  ExpectMatches(data, *loaded);
  EXPECT_EQ(*manager.LatestValid(), PathOf(7));
}

TEST_F(CheckpointTest, LoadedTensorsOutliveTheCall) {
  CheckpointManager manager(Options());
  CheckpointData data = MakeData(1);
  ASSERT_TRUE(manager.Save(data).ok());
  Tensor embed;
  {
    absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(1));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    embed = loaded->model.at("model.embed_tokens.weight");
  }
  ExpectSameTensor(data.model[0].second, embed, "embed");
}

TEST_F(CheckpointTest, EmptyGroupsAreSkipped) {
  CheckpointManager manager(Options());
  CheckpointData data = MakeData(3);
  data.optimizer.clear();
  data.extra.clear();
  ASSERT_TRUE(manager.Save(data).ok());
  EXPECT_FALSE(fs::exists(PathOf(3) + "/optimizer.safetensors"));
  EXPECT_FALSE(fs::exists(PathOf(3) + "/state.safetensors"));
  nlohmann::json manifest = nlohmann::json::parse(*ReadFile(PathOf(3) + "/manifest.json"));
  EXPECT_EQ(manifest["files"].size(), 2u);
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(3));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->optimizer.empty());
  EXPECT_TRUE(loaded->extra.empty());
  ExpectMatches(data, *loaded);
}

TEST_F(CheckpointTest, ResaveOfTheSameStepReplacesIt) {
  CheckpointManager manager(Options());
  ASSERT_TRUE(manager.Save(MakeData(3)).ok());
  CheckpointData second = MakeData(3);
  second.config_hash = "second";
  second.model[0].second = Tensor::FromVector({9, 9, 9}, {3});
  ASSERT_TRUE(manager.Save(second).ok());
  EXPECT_EQ(Entries(), (std::set<std::string>{"latest", "step-00000003"}));
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(3));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectMatches(second, *loaded);
}

TEST_F(CheckpointTest, BadInputIsAnError) {
  CheckpointManager manager(Options());
  CheckpointData data = MakeData(1);
  data.model.push_back({"undefined", Tensor()});
  absl::Status status = manager.Save(data);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("undefined"), std::string::npos) << status;
  EXPECT_FALSE(HasTempEntries());
  EXPECT_TRUE(manager.List().empty());
  data = MakeData(-1);
  EXPECT_EQ(manager.Save(data).code(), absl::StatusCode::kInvalidArgument);
}

// A child process saves step 2 and dies right after the k-th file; step 1 must survive intact
// and the next save must succeed.
TEST_F(CheckpointTest, CrashAtEveryPointOfASaveKeepsThePreviousCheckpoint) {
  const CheckpointData first = MakeData(1);
  const CheckpointData second = MakeData(2);
  for (int k = 0; k < 5; ++k) {
    SCOPED_TRACE("crash after " + std::string(kAllFiles[k]));
    std::error_code ec;
    fs::remove_all(dir_, ec);
    {
      CheckpointManager manager(Options());
      ASSERT_TRUE(manager.Save(first).ok());
    }
    const bool use_kill = k % 2 == 1;
    fflush(nullptr);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      CheckpointOptions options = Options();
      int files_written = 0;
      options.after_file_written = [&](const std::string& name) {
        if (++files_written == k + 1 && name == kAllFiles[k]) {
          if (use_kill) ::raise(SIGKILL);
          ::_exit(1);
        }
      };
      CheckpointManager manager(options);
      (void)manager.Save(second);
      ::_exit(3);  // the hook did not fire where expected
    }
    int wait_status = 0;
    ASSERT_EQ(::waitpid(pid, &wait_status, 0), pid);
    if (use_kill) {
      ASSERT_TRUE(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL);
    } else {
      ASSERT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 1);
    }
    EXPECT_TRUE(HasTempEntries());  // the crashed save's .tmp-step-* directory

    CheckpointManager manager(Options());
    std::vector<std::string> warnings;
    absl::StatusOr<std::string> latest =
        manager.LatestValid([&](const std::string& w) { warnings.push_back(w); });
    ASSERT_TRUE(latest.ok()) << latest.status();
    EXPECT_EQ(*latest, PathOf(1));
    EXPECT_TRUE(warnings.empty());
    EXPECT_EQ(ListedSteps(manager), (std::vector<int64_t>{1}));
    absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(*latest);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectMatches(first, *loaded);

    ASSERT_TRUE(manager.Save(second).ok());
    EXPECT_EQ(*manager.LatestValid(), PathOf(2));
    EXPECT_EQ(*ReadFile(dir_ + "/latest"), "step-00000002\n");
    EXPECT_FALSE(HasTempEntries());
    loaded = LoadCheckpoint(PathOf(2));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectMatches(second, *loaded);
  }
}

// A crash while re-saving an existing step (after a resume) leaves the old one of that step.
TEST_F(CheckpointTest, CrashDuringResaveKeepsTheOldCheckpointOfThatStep) {
  const CheckpointData original = MakeData(2);
  {
    CheckpointManager manager(Options());
    ASSERT_TRUE(manager.Save(MakeData(1)).ok());
    ASSERT_TRUE(manager.Save(original).ok());
  }
  CheckpointData changed = MakeData(2);
  changed.config_hash = "changed";
  fflush(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    CheckpointOptions options = Options();
    options.after_file_written = [](const std::string& name) {
      if (name == "manifest.json") ::raise(SIGKILL);
    };
    CheckpointManager manager(options);
    (void)manager.Save(changed);
    ::_exit(3);
  }
  int wait_status = 0;
  ASSERT_EQ(::waitpid(pid, &wait_status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wait_status));
  CheckpointManager manager(Options());
  EXPECT_EQ(*manager.LatestValid(), PathOf(2));
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(2));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectMatches(original, *loaded);
}

class CorruptionTest : public CheckpointTest {
 protected:
  void SetUp() override {
    CheckpointTest::SetUp();
    CheckpointManager manager(Options());
    ASSERT_TRUE(manager.Save(MakeData(1)).ok());
    ASSERT_TRUE(manager.Save(MakeData(2)).ok());
  }

  // The newest is rejected naming `file`, LatestValid warns and falls back to step 1, and an
  // explicit load of the newest fails naming it.
  void ExpectFallback(const std::string& file, absl::StatusCode code) {
    absl::Status status = VerifyCheckpoint(PathOf(2));
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_NE(status.message().find(PathOf(2)), std::string::npos) << status;
    EXPECT_NE(status.message().find(file), std::string::npos) << status;
    EXPECT_EQ(status.message().find('\n'), std::string::npos) << status;

    CheckpointManager manager(Options());
    std::vector<std::string> warnings;
    absl::StatusOr<std::string> latest =
        manager.LatestValid([&](const std::string& w) { warnings.push_back(w); });
    ASSERT_TRUE(latest.ok()) << latest.status();
    EXPECT_EQ(*latest, PathOf(1));
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("checkpoint " + PathOf(2) + " is corrupt ("), std::string::npos)
        << warnings[0];
    EXPECT_NE(warnings[0].find(file), std::string::npos) << warnings[0];
    EXPECT_NE(warnings[0].find("falling back to the previous one"), std::string::npos);

    absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(2));
    EXPECT_FALSE(loaded.ok());
    EXPECT_NE(loaded.status().message().find(PathOf(2)), std::string::npos) << loaded.status();
    loaded = LoadCheckpoint(PathOf(1));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ExpectMatches(MakeData(1), *loaded);
  }
};

TEST_F(CorruptionTest, FlippedByte) {
  FlipByte(PathOf(2) + "/model.safetensors", 5);
  ExpectFallback("model.safetensors", absl::StatusCode::kDataLoss);
}

TEST_F(CorruptionTest, TruncatedFile) {
  const std::string path = PathOf(2) + "/optimizer.safetensors";
  fs::resize_file(path, fs::file_size(path) - 3);
  ExpectFallback("optimizer.safetensors", absl::StatusCode::kDataLoss);
}

TEST_F(CorruptionTest, DeletedManifest) {
  fs::remove(PathOf(2) + "/manifest.json");
  ExpectFallback("manifest.json", absl::StatusCode::kNotFound);
}

TEST_F(CorruptionTest, DeletedFile) {
  fs::remove(PathOf(2) + "/state.safetensors");
  ExpectFallback("state.safetensors", absl::StatusCode::kNotFound);
}

TEST_F(CorruptionTest, UnparsableManifest) {
  ASSERT_TRUE(WriteFileAtomic(PathOf(2) + "/manifest.json", "{\"format\": ").ok());
  ExpectFallback("manifest.json", absl::StatusCode::kDataLoss);
}

TEST_F(CorruptionTest, NoValidCheckpointIsNotFound) {
  FlipByte(PathOf(1) + "/trainer_state.json", 2);
  FlipByte(PathOf(2) + "/trainer_state.json", 2);
  CheckpointManager manager(Options());
  std::vector<std::string> warnings;
  absl::StatusOr<std::string> latest =
      manager.LatestValid([&](const std::string& w) { warnings.push_back(w); });
  EXPECT_EQ(latest.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(warnings.size(), 2u);
  EXPECT_EQ(VerifyCheckpoint(root_ + "/missing").code(), absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, LatestValidWithoutIndexOrCheckpoints) {
  CheckpointManager manager(Options());
  EXPECT_EQ(manager.LatestValid().status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(manager.Save(MakeData(4)).ok());
  ASSERT_TRUE(manager.Save(MakeData(5)).ok());
  fs::remove(dir_ + "/latest");
  EXPECT_EQ(*manager.LatestValid(), PathOf(5));  // scans step-* directories
}

TEST_F(CheckpointTest, RetentionKeepsNewestAndMultiples) {
  fs::create_directories(dir_ + "/step-notes");
  fs::create_directories(dir_ + "/other");
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/notes.txt", "keep me").ok());
  CheckpointManager manager(Options(/*keep_last=*/2, /*keep_every=*/4));
  for (int64_t step = 1; step <= 9; ++step) {
    ASSERT_TRUE(manager.Save(MakeData(step)).ok()) << step;
    EXPECT_EQ(*manager.LatestValid(), PathOf(step));
  }
  EXPECT_EQ(ListedSteps(manager), (std::vector<int64_t>{4, 8, 9}));
  EXPECT_EQ(Entries(), (std::set<std::string>{"latest", "notes.txt", "other", "step-notes",
                                              "step-00000004", "step-00000008", "step-00000009"}));
}

// A corrupt checkpoint with a higher step (written earlier, e.g. by an abandoned run) counts
// for nothing: the newest valid ones and the one just saved are kept, the corrupt one goes.
TEST_F(CheckpointTest, CorruptNewestIsNeverTheOnlyOneKept) {
  {
    CheckpointManager writer(Options());
    for (int64_t step : {1, 5, 9}) ASSERT_TRUE(writer.Save(MakeData(step)).ok());
  }
  FlipByte(PathOf(9) + "/model.safetensors", 1);
  {
    CheckpointManager manager(Options(/*keep_last=*/2));
    ASSERT_TRUE(manager.Save(MakeData(6)).ok());
    EXPECT_EQ(ListedSteps(manager), (std::vector<int64_t>{5, 6}));
  }
  CheckpointManager manager(Options(/*keep_last=*/1));
  ASSERT_TRUE(manager.Save(MakeData(3)).ok());
  EXPECT_EQ(ListedSteps(manager), (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(*manager.LatestValid(), PathOf(3));  // `latest` names the one just saved
}

TEST_F(CheckpointTest, SaveAsyncSnapshotsTensors) {
  CheckpointManager manager(Options());
  CheckpointData data = MakeData(11);
  const CheckpointData expected = MakeData(11);
  ASSERT_TRUE(manager.SaveAsync(data).ok());
  // Training goes on and changes the parameters in place at once.
  for (auto* group : {&data.model, &data.optimizer, &data.extra}) {
    for (auto& [name, tensor] : *group) {
      auto* bytes = static_cast<unsigned char*>(tensor.storage()->data());
      std::memset(bytes, 0x5a, tensor.storage()->nbytes());
    }
  }
  ASSERT_TRUE(manager.Wait().ok());
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(11));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectMatches(expected, *loaded);

  // Back-to-back asynchronous saves, the last one joined by the destructor.
  {
    CheckpointManager other(Options());
    ASSERT_TRUE(other.SaveAsync(MakeData(12)).ok());
    ASSERT_TRUE(other.SaveAsync(MakeData(13)).ok());
  }
  EXPECT_EQ(*manager.LatestValid(), PathOf(13));
  loaded = LoadCheckpoint(PathOf(12));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectMatches(MakeData(12), *loaded);
}

TEST_F(CheckpointTest, SaveAsyncErrorIsReturnedByTheNextCall) {
  ASSERT_TRUE(WriteFileAtomic(root_ + "/file", "not a directory").ok());
  CheckpointOptions options = Options();
  options.dir = root_ + "/file/checkpoints";
  CheckpointManager manager(options);
  ASSERT_TRUE(manager.SaveAsync(MakeData(1)).ok());
  absl::Status status = manager.Wait();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(options.dir), std::string::npos) << status;
  EXPECT_TRUE(manager.Wait().ok());  // reported once

  ASSERT_TRUE(manager.SaveAsync(MakeData(1)).ok());
  status = manager.SaveAsync(MakeData(2));
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("previous asynchronous checkpoint save failed"),
            std::string::npos)
      << status;
  EXPECT_TRUE(manager.Wait().ok());
}

// Sharded checkpoints: `size` threads play the ranks of a job; all_gather goes through shared
// slots and a barrier.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), slots_(size), barrier_(size) {}

  ShardGroup Member(int rank) {
    ShardGroup group;
    group.rank = rank;
    group.size = size_;
    group.all_gather = [this, rank](const std::string& mine) {
      slots_[rank] = mine;
      barrier_.arrive_and_wait();
      std::vector<std::string> all = slots_;
      barrier_.arrive_and_wait();  // nobody overwrites a slot before everyone has read it
      return all;
    };
    return group;
  }

  // fn(rank) on one thread per rank; their statuses in rank order.
  std::vector<absl::Status> Run(const std::function<absl::Status(int)>& fn) {
    std::vector<absl::Status> out(size_);
    std::vector<std::thread> threads;
    for (int r = 0; r < size_; ++r) threads.emplace_back([&, r] { out[r] = fn(r); });
    for (std::thread& t : threads) t.join();
    return out;
  }

 private:
  int size_;
  std::vector<std::string> slots_;
  std::barrier<> barrier_;
};

// What rank `rank` of 2 owns of MakeData(step): rank 0 the embedding, the step counter and m;
// rank 1 the other weights and v. Extra tensors and trainer state are rank 0's to write.
CheckpointData ShardOf(int64_t step, int rank) {
  CheckpointData all = MakeData(step);
  CheckpointData d = all;
  d.sharding = "zero1";
  const Tensor v = Tensor::FromVector({0.5, 0.25 * static_cast<double>(step)}, {2});
  if (rank == 0) {
    d.model = {all.model[0]};
    d.optimizer = {all.optimizer[0], all.optimizer[1]};
  } else {
    d.model = {all.model[1], all.model[2]};
    d.optimizer = {{"adam.v", v}};
    d.extra.clear();
    d.trainer_state = {{"ignored", true}};
  }
  return d;
}

// The whole of what the two ranks saved, as one unsharded checkpoint would hold it.
CheckpointData ShardedWhole(int64_t step) {
  CheckpointData d = MakeData(step);
  d.optimizer.emplace_back("adam.v", ShardOf(step, 1).optimizer[0].second);
  return d;
}

class ShardedCheckpointTest : public CheckpointTest {
 protected:
  std::vector<absl::Status> SaveSharded(
      int64_t step, const std::function<void(int, CheckpointData*)>& edit = nullptr) {
    ThreadGroup group(2);
    return group.Run([&](int rank) {
      CheckpointManager manager(Options(/*keep_last=*/100));
      CheckpointData data = ShardOf(step, rank);
      if (edit) edit(rank, &data);
      return manager.SaveSharded(data, group.Member(rank));
    });
  }
  std::set<std::string> FilesOf(int64_t step) const {
    std::set<std::string> files;
    for (const auto& entry : fs::directory_iterator(PathOf(step)))
      files.insert(entry.path().filename().string());
    return files;
  }
};

TEST_F(ShardedCheckpointTest, EachRankWritesItsShardAndLoadingMergesThem) {
  for (const absl::Status& s : SaveSharded(4)) ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(*ReadFile(dir_ + "/latest"), "step-00000004\n");
  EXPECT_FALSE(HasTempEntries());
  EXPECT_EQ(FilesOf(4),
            (std::set<std::string>{"model-rank-0-of-2.safetensors", "model-rank-1-of-2.safetensors",
                                   "optimizer-rank-0-of-2.safetensors",
                                   "optimizer-rank-1-of-2.safetensors", "state.safetensors",
                                   "trainer_state.json", "manifest.json"}));
  // Each shard holds exactly what its rank owns.
  auto names_in = [&](const std::string& file) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
        SafetensorsFile::Open(PathOf(4) + "/" + file);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? (*f)->names() : std::vector<std::string>();
  };
  EXPECT_EQ(names_in("model-rank-1-of-2.safetensors"),
            (std::vector<std::string>{"model.norm.weight", "transposed"}));
  EXPECT_EQ(names_in("optimizer-rank-1-of-2.safetensors"), (std::vector<std::string>{"adam.v"}));
  EXPECT_EQ(names_in("optimizer-rank-0-of-2.safetensors"),
            (std::vector<std::string>{"adam.m", "adam.step"}));

  nlohmann::json manifest = nlohmann::json::parse(*ReadFile(PathOf(4) + "/manifest.json"));
  EXPECT_EQ(manifest["world_size"], 2);
  EXPECT_EQ(manifest["shards"], (nlohmann::json{{"world_size", 2}, {"zero", "zero1"}}));
  EXPECT_EQ(manifest["files"].size(), 6u);
  for (const auto& [name, entry] : manifest["files"].items())
    EXPECT_EQ(entry["size"].get<uint64_t>(), fs::file_size(PathOf(4) + "/" + name)) << name;

  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(4));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->shard_files, 4);
  ExpectMatches(ShardedWhole(4), *loaded);  // rank 0's trainer state and extra tensors

  // The collective verification (hashing split between the ranks) agrees on every rank.
  ThreadGroup group(2);
  for (const absl::Status& s :
       group.Run([&](int rank) { return VerifyCheckpoint(PathOf(4), group.Member(rank)); }))
    EXPECT_TRUE(s.ok()) << s;
}

TEST_F(ShardedCheckpointTest, CorruptOrMissingShardIsNamedAndThePreviousOneIsUsed) {
  for (const absl::Status& s : SaveSharded(1)) ASSERT_TRUE(s.ok()) << s;
  for (const absl::Status& s : SaveSharded(2)) ASSERT_TRUE(s.ok()) << s;
  // Every file in turn, flipped: each rank of a collective check reports it, whichever rank hashed
  // it; then deleted.
  for (const std::string file : {"model-rank-0-of-2.safetensors", "model-rank-1-of-2.safetensors",
                                 "optimizer-rank-1-of-2.safetensors"}) {
    SCOPED_TRACE(file);
    const std::string path = PathOf(2) + "/" + file;
    FlipByte(path, 3);
    absl::Status single = VerifyCheckpoint(PathOf(2));
    EXPECT_EQ(single.code(), absl::StatusCode::kDataLoss) << single;
    EXPECT_NE(single.message().find(file), std::string::npos) << single;
    ThreadGroup group(2);
    std::vector<std::string> warnings[2];
    std::vector<absl::StatusOr<std::string>> latest(2, absl::UnknownError(""));
    group.Run([&](int rank) {
      CheckpointManager manager(Options());
      const ShardGroup member = group.Member(rank);
      absl::Status s = VerifyCheckpoint(PathOf(2), member);
      EXPECT_EQ(s, single);
      latest[rank] =
          manager.LatestValid([&](const std::string& w) { warnings[rank].push_back(w); }, &member);
      return absl::OkStatus();
    });
    for (int r = 0; r < 2; ++r) {
      ASSERT_TRUE(latest[r].ok()) << latest[r].status();
      EXPECT_EQ(*latest[r], PathOf(1));
      ASSERT_EQ(warnings[r].size(), 1u);
      EXPECT_NE(warnings[r][0].find(file), std::string::npos) << warnings[r][0];
    }
    absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(2));
    EXPECT_FALSE(loaded.ok());
    EXPECT_NE(loaded.status().message().find(file), std::string::npos) << loaded.status();
    FlipByte(path, 3);  // restored
    ASSERT_TRUE(VerifyCheckpoint(PathOf(2)).ok());
  }
  fs::remove(PathOf(2) + "/optimizer-rank-1-of-2.safetensors");
  absl::Status missing = VerifyCheckpoint(PathOf(2));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_NE(missing.message().find("optimizer-rank-1-of-2.safetensors (listed in manifest.json) "
                                   "is missing"),
            std::string::npos)
      << missing;
  absl::StatusOr<LoadedCheckpoint> previous = LoadCheckpoint(PathOf(1));
  ASSERT_TRUE(previous.ok()) << previous.status();
  ExpectMatches(ShardedWhole(1), *previous);
}

TEST_F(ShardedCheckpointTest, OneRanksFailureFailsEveryRankAndKeepsThePreviousCheckpoint) {
  for (const absl::Status& s : SaveSharded(1)) ASSERT_TRUE(s.ok()) << s;
  // Rank 1 cannot write its model shard (a duplicate tensor name).
  std::vector<absl::Status> failed = SaveSharded(2, [](int rank, CheckpointData* d) {
    if (rank == 1) d->model.push_back(d->model[0]);
  });
  for (const absl::Status& s : failed) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_EQ(s.message().substr(0, 8), "rank 1: ") << s;
    EXPECT_NE(s.message().find("model-rank-1-of-2.safetensors"), std::string::npos) << s;
  }
  EXPECT_EQ(failed[0], failed[1]);
  EXPECT_FALSE(fs::exists(PathOf(2)));
  EXPECT_FALSE(HasTempEntries());
  EXPECT_EQ(*ReadFile(dir_ + "/latest"), "step-00000001\n");
  EXPECT_TRUE(VerifyCheckpoint(PathOf(1)).ok());
  // Rank 0 refuses before anything is written (world_size disagrees with the group).
  failed = SaveSharded(3, [](int rank, CheckpointData* d) {
    if (rank == 0) d->world_size = 3;
  });
  for (const absl::Status& s : failed) {
    EXPECT_EQ(s.message().substr(0, 8), "rank 0: ") << s;
  }
  EXPECT_FALSE(fs::exists(PathOf(3)));
  EXPECT_FALSE(HasTempEntries());
}

TEST_F(ShardedCheckpointTest, ATensorInTwoShardsIsAnErrorNamingBoth) {
  for (const absl::Status& s : SaveSharded(5, [](int rank, CheckpointData*d) {
         if (rank == 1) d->model.push_back({"model.embed_tokens.weight", d->model[0].second});
       })) {
    ASSERT_TRUE(s.ok()) << s;
  }
  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(PathOf(5));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_NE(loaded.status().message().find("'model.embed_tokens.weight' is in both "
                                           "model-rank-0-of-2.safetensors and "
                                           "model-rank-1-of-2.safetensors"),
            std::string::npos)
      << loaded.status();
}

}  // namespace
}  // namespace fam::io
