// Replays the fuzz targets of fuzz/ in the normal suite (no clang needed): every committed seed
// (fuzz/corpus/<target>) and every input of an earlier finding (fuzz/regressions/<target>) goes
// through its target, and so do fixed truncations and byte changes of each seed. A contract
// violation (a crash-free but unclean error, or an OK where the target demands an error) fails the
// test naming the input; a crash or sanitizer report (build-asan) ends it.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fuzz/fuzz_target.h"
#include "gtest/gtest.h"

namespace fam::fuzz {

// gtest prints a parameter that fails by its name.
void PrintTo(const Target& target, std::ostream* out) { *out << target.name; }

namespace {

namespace fs = std::filesystem;

struct ContractViolated : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void ThrowViolation(std::string_view what) {
  throw ContractViolated(std::string(what));
}

fs::path SourceDir() {
  const char* env = std::getenv("FAM_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path(".");
}

std::vector<fs::path> FilesIn(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_regular_file()) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class FuzzReplay : public ::testing::TestWithParam<Target> {
 protected:
  void SetUp() override { SetViolationHandler(ThrowViolation); }
  void TearDown() override { SetViolationHandler(nullptr); }

  // Runs one input; a violation becomes a test failure naming `label`.
  void Replay(const std::string& label, std::string_view input) {
    Scratch::Get().Reset();
    try {
      GetParam().run(input);
    } catch (const ContractViolated& violation) {
      ADD_FAILURE() << GetParam().name << ": " << label << ": " << violation.what();
    }
    ++replayed_;
  }
  int replayed_ = 0;
};

TEST_P(FuzzReplay, SeedsAndRegressionsKeepTheContract) {
  const fs::path corpus = SourceDir() / "fuzz" / "corpus" / GetParam().name;
  const std::vector<fs::path> seeds = FilesIn(corpus);
  ASSERT_FALSE(seeds.empty()) << "no seeds in " << corpus << " (scripts/fuzz.sh --seeds)";
  for (const fs::path& seed : seeds) Replay(seed.string(), ReadAll(seed));
  for (const fs::path& input : FilesIn(SourceDir() / "fuzz" / "regressions" / GetParam().name))
    Replay(input.string(), ReadAll(input));
}

// A fixed sample of what a fuzzer tries first: each seed cut short at 64 places, and 64 copies
// with one to four bytes overwritten (the same every run).
TEST_P(FuzzReplay, TruncatedAndChangedSeedsKeepTheContract) {
  constexpr int kVariants = 64;
  std::mt19937_64 rng(0x5eedf00d);
  const std::vector<fs::path> seeds = FilesIn(SourceDir() / "fuzz" / "corpus" / GetParam().name);
  ASSERT_FALSE(seeds.empty()) << "no seeds for " << GetParam().name;
  for (const fs::path& seed : seeds) {
    const std::string bytes = ReadAll(seed);
    if (bytes.empty()) continue;
    for (int i = 0; i < kVariants; ++i) {
      const size_t keep = bytes.size() * static_cast<size_t>(i) / kVariants;
      Replay(seed.string() + " cut to " + std::to_string(keep) + " bytes", bytes.substr(0, keep));
    }
    for (int i = 0; i < kVariants; ++i) {
      std::string changed = bytes;
      const int count = 1 + static_cast<int>(rng() % 4);
      std::string where;
      for (int c = 0; c < count; ++c) {
        const size_t at = rng() % changed.size();
        changed[at] = static_cast<char>(rng() & 0xff);
        where += " " + std::to_string(at);
      }
      Replay(seed.string() + " with bytes changed at" + where, changed);
    }
  }
  EXPECT_GT(replayed_, 0);
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzReplay, ::testing::ValuesIn(Targets()),
                         [](const ::testing::TestParamInfo<Target>& info) {
                           return std::string(info.param.name);
                         });

// The contract check itself: each way an error can be unclean is caught.
TEST(FuzzContract, UncleanErrorsAreViolations) {
  SetViolationHandler(ThrowViolation);
  EXPECT_THROW(ExpectCleanError(absl::OkStatus(), ""), ContractViolated);
  EXPECT_THROW(ExpectCleanError(absl::InvalidArgumentError(""), ""), ContractViolated);
  EXPECT_THROW(ExpectCleanError(absl::InvalidArgumentError("a.bin: bad\nheader"), "a.bin"),
               ContractViolated);
  EXPECT_THROW(ExpectCleanError(absl::InvalidArgumentError("bad header"), "a.bin"),
               ContractViolated);
  EXPECT_NO_THROW(ExpectCleanError(absl::InvalidArgumentError("a.bin: bad header"), "a.bin"));
  SetViolationHandler(nullptr);
}

TEST(FuzzContract, EveryTargetHasSeedsAndAUniqueName) {
  std::vector<std::string> names;
  for (const Target& target : Targets()) {
    names.push_back(target.name);
    EXPECT_EQ(FindTarget(target.name), &target);
    EXPECT_FALSE(FilesIn(SourceDir() / "fuzz" / "corpus" / target.name).empty()) << target.name;
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end());
  EXPECT_EQ(FindTarget("no_such_reader"), nullptr);
}

TEST(FuzzContract, PartsSplitAtTheSeparatorAndJoinBack) {
  const std::string joined = JoinParts({"a", "", "b\n--8<--\nc"});
  const std::vector<std::string_view> two = SplitParts(joined, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0], "a");
  EXPECT_EQ(two[1], "\n--8<--\nb\n--8<--\nc");
  const std::vector<std::string_view> all = SplitParts(joined, 9);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[1], "");
  EXPECT_EQ(all[3], "c");
  EXPECT_EQ(SplitParts("no separator", 3).size(), 1u);
}

}  // namespace
}  // namespace fam::fuzz
