// Failure behaviour of a data-parallel job: when one rank of `mpirun -np 2 fam train` is killed
// (SIGKILL) or stalls (SIGSTOP), the other must exit non-zero within a bounded time, with a message
// naming the rank and, for a stall, the collective that timed out (distributed.timeout_s). Skipped
// when mpirun is not installed.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "framework/data/token_shard.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

using testing::FindMpirun;
using testing::Slurp;

class DistFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef FAM_HAVE_MPI
    GTEST_SKIP() << "famtrain was built without MPI";
#endif
    mpirun_ = FindMpirun();
    if (mpirun_.empty()) GTEST_SKIP() << "mpirun not found: distributed failure tests skipped";
    testing::SetMpirunJobEnv();
    tag_ = std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    dir_ = testing::FreshTestDir("fam_dist_failure_test_");  // <tmp>/fam_dist_failure_test_<tag_>
    std::vector<int32_t> tokens;
    for (int i = 0; i < 20000; ++i) tokens.push_back((i * 7 + i / 13) % 60);
    ASSERT_TRUE(data::WriteTokenShard((dir_ / "train-00000.bin").string(), tokens, 64).ok());
    std::ofstream(dir_ / "exp.yaml")
        << "name: fail\nrun_dir: " << (dir_ / "runs").string() << "\n"
        << testing::kJobModelYaml << "data: {train: " << (dir_ / "train-*.bin").string() << R"(}
schedule: {type: constant}
trainer: {steps: 1000000, global_batch: 4, micro_batch: 2, seq_len: 64, log_interval: 1, threads: 1}
distributed: {timeout_s: 5}
checkpoint: {interval: 0}
)";
  }
  void TearDown() override {
    for (pid_t pid : {rank1_, mpirun_pid_}) {
      if (pid > 0) ::kill(pid, SIGKILL);
    }
    if (mpirun_pid_ > 0) ::waitpid(mpirun_pid_, nullptr, 0);
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Starts `mpirun -np 2 fam train` with its output in dir_/log.txt.
  void Start() {
    ::setenv("FAM_TEST_TAG", tag_.c_str(), 1);
    const std::string fam = testing::FamBinary();
    const std::string config = (dir_ / "exp.yaml").string();
    const std::string log = (dir_ / "log.txt").string();
    mpirun_pid_ = fork();
    if (mpirun_pid_ == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(mpirun_.c_str(), mpirun_.c_str(), "-np", "2", "--oversubscribe", "--bind-to", "none",
            "-x", "FAM_TEST_TAG", fam.c_str(), "train", "--config", config.c_str(), (char*)nullptr);
      _exit(127);
    }
  }

  int TrainLines() {
    const std::string m = Slurp(dir_ / "runs" / "fail" / "metrics.jsonl");
    int n = 0;
    for (size_t p = 0; (p = m.find("\"kind\":\"train\"", p)) != std::string::npos; ++p) ++n;
    return n;
  }

  // The pid of the rank-1 process of this test's job (found by its environment), or -1.
  pid_t FindRank(int rank) {
    const std::string want_tag = "FAM_TEST_TAG=" + tag_;
    const std::string want_rank = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const std::string name = entry.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      const std::string env = Slurp(entry.path() / "environ");
      bool tag = false, is_rank = false;
      std::stringstream vars(env);
      for (std::string var; std::getline(vars, var, '\0');) {
        tag = tag || var == want_tag;
        is_rank = is_rank || var == want_rank;
      }
      if (tag && is_rank) return static_cast<pid_t>(std::stol(name));
    }
    return -1;
  }

  // Waits up to `seconds` for mpirun; returns its exit status (or -1 on time-out).
  int WaitForMpirun(double seconds, double* waited) {
    const Clock::time_point begin = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - begin).count() < seconds) {
      int status = 0;
      if (::waitpid(mpirun_pid_, &status, WNOHANG) == mpirun_pid_) {
        mpirun_pid_ = -1;
        *waited = std::chrono::duration<double>(Clock::now() - begin).count();
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    *waited = seconds;
    return -1;
  }

  // Starts the job, waits until it trains, then sends `sig` to rank 1.
  void StartAndHitRankOne(int sig) {
    Start();
    for (int i = 0; i < 1200 && TrainLines() < 3; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_GE(TrainLines(), 3) << Slurp(dir_ / "log.txt");
    rank1_ = FindRank(1);
    ASSERT_GT(rank1_, 0) << "rank 1 not found";
    ASSERT_EQ(::kill(rank1_, sig), 0);
  }

  std::string mpirun_, tag_;
  fs::path dir_;
  pid_t mpirun_pid_ = -1, rank1_ = -1;
};

TEST_F(DistFailureTest, KilledRankEndsTheJob) {
  StartAndHitRankOne(SIGKILL);
  double waited = 0;
  const int code = WaitForMpirun(60, &waited);
  const std::string log = Slurp(dir_ / "log.txt");
  ASSERT_NE(code, -1) << "the job still runs 60 s after rank 1 was killed\n" << log;
  EXPECT_NE(code, 0) << log;
  EXPECT_NE(log.find("rank 1"), std::string::npos) << log;
  std::cout << "job ended " << waited << " s after rank 1 was killed (exit " << code << ")\n";
}

TEST_F(DistFailureTest, StalledRankMakesTheOtherTimeOut) {
  StartAndHitRankOne(SIGSTOP);
  double waited = 0;
  const int code = WaitForMpirun(60, &waited);
  const std::string log = Slurp(dir_ / "log.txt");
  ASSERT_NE(code, -1) << "the job still runs 60 s after rank 1 stalled\n" << log;
  EXPECT_NE(code, 0) << log;
  // Rank 0 names itself and the collective it waited for, after distributed.timeout_s = 5.
  EXPECT_NE(log.find("rank 0 of 2 (mpi)"), std::string::npos) << log;
  EXPECT_NE(log.find("did not complete within 5 s"), std::string::npos) << log;
  EXPECT_GE(waited, 3.0) << log;  // it waited for the timeout, not less
  std::cout << "job ended " << waited << " s after rank 1 stalled (exit " << code << ")\n";
}

}  // namespace
}  // namespace fam
