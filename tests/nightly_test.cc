// trainers/nightly: metrics of a report, thresholds, the regression check (relative for losses,
// absolute for PassKey accuracy, NaN always), the history file (round trip, torn last line, bad
// lines named), the job on fabricated runs and reports (new checkpoints only, a worse night →
// an error naming the metric), and scripts/nightly_eval.sh end to end on a tiny trained run with
// the real `fam` binary (exit code 0, then 1 against a fabricated better previous night).
#include "trainers/experiments/nightly.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "framework/data/token_shard.h"
#include "framework/io/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"
#include "trainers/cli/cli.h"
#include "trainers/train/train_loop.h"
#include "trainers/train/run_config.h"

namespace fam::nightly {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

using testing::Slurp;
using testing::Spit;

std::string SourceDir() {
  const char* env = std::getenv("FAM_SOURCE_DIR");
  if (env != nullptr && *env != '\0') return env;
  fs::path dir = fs::current_path();
  while (!fs::exists(dir / "scripts" / "nightly_eval.sh")) {
    if (dir == dir.parent_path()) return "";
    dir = dir.parent_path();
  }
  return dir.string();
}

std::string FamBinary() {
  const char* dir = std::getenv("FAM_BINARY_DIR");
  return std::string(dir ? dir : "build") + "/fam";
}

Json Report(double val_loss, std::vector<std::pair<int, double>> passkey) {
  Json pk = Json::array();
  for (auto [tokens, accuracy] : passkey)
    pk.push_back({{"context_tokens", tokens}, {"trials", 4}, {"accuracy", accuracy}});
  return {{"checkpoint", "x"},
          {"step", 1},
          {"val", {{"loss", val_loss}, {"ppl", std::exp(val_loss)}, {"tokens", 100}}},
          {"passkey", pk},
          {"peak_rss_mb", 50.0},
          {"seconds", 2.0}};
}

HistoryEntry Entry(std::map<std::string, double> metrics) {
  HistoryEntry e;
  e.time = "2024-05-01T02:00:00Z";
  e.run = "r";
  e.suite = "default";
  e.metrics = std::move(metrics);
  return e;
}

TEST(NightlyMetrics, FromAReport) {
  const auto m = ReportMetrics(Report(2.0, {{256, 0.75}, {1024, 0.5}}));
  ASSERT_EQ(m.size(), 6u);
  EXPECT_EQ(m.at("val.loss"), 2.0);
  EXPECT_DOUBLE_EQ(m.at("val.ppl"), std::exp(2.0));
  EXPECT_EQ(m.at("passkey.256"), 0.75);
  EXPECT_EQ(m.at("passkey.1024"), 0.5);
  EXPECT_EQ(m.at("peak_rss_mb"), 50.0);
  EXPECT_EQ(m.at("seconds"), 2.0);
  Json no_val = Report(1.0, {});
  no_val["val"] = nullptr;
  EXPECT_EQ(ReportMetrics(no_val).count("val.loss"), 0u);
}

TEST(NightlyThresholds, ParseAndLookUp) {
  Thresholds t;
  EXPECT_EQ(t.LimitFor("val.loss"), 0.02);
  EXPECT_EQ(t.LimitFor("passkey.4096"), 0.1);  // the family's limit
  EXPECT_LT(t.LimitFor("seconds"), 0);         // off by default
  ASSERT_TRUE(ParseThreshold("passkey.4096=0.3", &t).ok());
  ASSERT_TRUE(ParseThreshold("seconds=0.5", &t).ok());
  ASSERT_TRUE(ParseThreshold("val.loss=off", &t).ok());
  EXPECT_EQ(t.LimitFor("passkey.4096"), 0.3);
  EXPECT_EQ(t.LimitFor("passkey.256"), 0.1);
  EXPECT_EQ(t.LimitFor("seconds"), 0.5);
  EXPECT_LT(t.LimitFor("val.loss"), 0);
  absl::Status s = ParseThreshold("val.los=0.1", &t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown metric \"val.los\""), std::string::npos) << s;
  EXPECT_FALSE(ParseThreshold("val.loss=-1", &t).ok());
  EXPECT_FALSE(ParseThreshold("val.loss=abc", &t).ok());
  EXPECT_FALSE(ParseThreshold("val.loss", &t).ok());
  EXPECT_FALSE(ParseThreshold("passkey.x=0.1", &t).ok());
}

TEST(NightlyRegressions, LossesRelativeAccuracyAbsolute) {
  Thresholds t;  // val.loss +2%, passkey -0.1
  const HistoryEntry prev = Entry({{"val.loss", 2.0}, {"passkey.256", 0.9}, {"seconds", 1.0}});
  // Within the limits (and an unchecked metric much worse): nothing.
  EXPECT_TRUE(
      FindRegressions(prev, Entry({{"val.loss", 2.03}, {"passkey.256", 0.85}, {"seconds", 9.0}}), t)
          .empty());
  // Better: nothing.
  EXPECT_TRUE(FindRegressions(prev, Entry({{"val.loss", 1.0}, {"passkey.256", 1.0}}), t).empty());
  // Past the limits: both named, with the numbers.
  std::vector<Regression> r =
      FindRegressions(prev, Entry({{"val.loss", 2.1}, {"passkey.256", 0.7}}), t);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].metric, "passkey.256");
  EXPECT_EQ(r[0].previous, 0.9);
  EXPECT_EQ(r[0].current, 0.7);
  EXPECT_EQ(r[1].metric, "val.loss");
  EXPECT_NE(r[1].ToString().find("r [default]: val.loss 2 -> 2.1 (+5.0%, limit +2%)"),
            std::string::npos)
      << r[1].ToString();
  // A diverged run (NaN) regresses; a metric the previous night lacked does not.
  r = FindRegressions(prev, Entry({{"val.loss", std::nan("")}, {"passkey.512", 0.0}}), t);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].metric, "val.loss");
}

class NightlyTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::FreshTestDir("fam_nightly_test_"); }
  void TearDown() override { fs::remove_all(dir_); }

  void SaveCheckpoint(const std::string& run, int64_t step, float value) {
    testing::SaveTinyCheckpoint(dir_ / "runs", run, step, value);
  }

  fs::path dir_;
};

TEST_F(NightlyTest, HistoryRoundTripTornLineAndBadLines) {
  const std::string path = (dir_ / "h" / "history.jsonl").string();
  absl::StatusOr<std::vector<HistoryEntry>> h = ReadHistory(path);
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->empty());
  HistoryEntry a = Entry({{"val.loss", 2.5}, {"passkey.64", 1.0}});
  a.checkpoint = "runs/r/checkpoints/step-00000010";
  a.checkpoint_id = "0123456789abcdef";
  a.step = 10;
  HistoryEntry b = a;
  b.time = "2024-05-02T02:00:00Z";
  b.metrics["val.loss"] = 2.25;
  ASSERT_TRUE(AppendHistory(path, {a}).ok());
  ASSERT_TRUE(AppendHistory(path, {b}).ok());
  h = ReadHistory(path);
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0].time, a.time);
  EXPECT_EQ((*h)[0].checkpoint_id, a.checkpoint_id);
  EXPECT_EQ((*h)[0].step, 10);
  EXPECT_EQ((*h)[1].metrics, b.metrics);

  // A crash while appending leaves a torn line: skipped, then replaced by the next append.
  std::ofstream(path, std::ios::app) << R"({"time":"2024-05-03","run":"r","su)";
  h = ReadHistory(path);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->size(), 2u);
  ASSERT_TRUE(AppendHistory(path, {a}).ok());
  h = ReadHistory(path);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->size(), 3u);

  Spit(dir_ / "bad.jsonl", EntryToJson(a).dump() + "\nnot json\n" + EntryToJson(b).dump() + "\n");
  absl::Status s = ReadHistory((dir_ / "bad.jsonl").string()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("bad.jsonl:2:"), std::string::npos) << s;
  Spit(dir_ / "bad2.jsonl", R"({"run":"r","suite":"s","metrics":{"val.loss":"x"}})"
                            "\n");
  s = ReadHistory((dir_ / "bad2.jsonl").string()).status();
  EXPECT_NE(s.message().find("bad2.jsonl:1:"), std::string::npos) << s;
  EXPECT_NE(s.message().find("val.loss"), std::string::npos) << s;
}

TEST_F(NightlyTest, EvaluatesNewCheckpointsAndFailsOnAWorseNight) {
  SaveCheckpoint("alpha", 10, 1.0f);
  SaveCheckpoint("sweep/cell_a", 5, 1.0f);
  fs::create_directories(dir_ / "runs" / "empty" / "checkpoints");  // no checkpoint: left out
  fs::create_directories(dir_ / "runs" / "notarun" / "eval");

  // Fabricated reports: what each (run, step) evaluates to.
  std::map<std::string, Json> reports = {{"alpha@10", Report(2.0, {{64, 1.0}, {128, 0.75}})},
                                         {"sweep/cell_a@5", Report(3.0, {})}};
  std::vector<std::string> calls;
  NightlyOptions options;
  options.runs_dir = (dir_ / "runs").string();
  options.plots = false;
  options.evaluate = [&](const RunCheckpoint& ckpt, const std::string& suite,
                         const std::string& out, std::ostream&) -> absl::StatusOr<Json> {
    calls.push_back(absl::StrCat(ckpt.run, "@", ckpt.step, " ", suite));
    EXPECT_EQ(out, (fs::path(ckpt.run_dir) / "eval" / "nightly" /
                    (io::CheckpointDirName(ckpt.step) + ".default.json"))
                       .string());
    return reports.at(absl::StrCat(ckpt.run, "@", ckpt.step));
  };

  // Night 1: both runs are new.
  options.now = "2024-05-01T02:00:00Z";
  std::ostringstream log;
  absl::StatusOr<NightlyResult> night = RunNightly(options, log);
  ASSERT_TRUE(night.ok()) << night.status();
  EXPECT_EQ(calls, (std::vector<std::string>{"alpha@10 ", "sweep/cell_a@5 "}));
  EXPECT_EQ(night->added.size(), 2u);
  EXPECT_TRUE(night->regressions.empty());
  EXPECT_TRUE(NightlyStatus(*night).ok());
  EXPECT_NE(log.str().find("empty: no valid checkpoint"), std::string::npos) << log.str();
  const std::string history = (dir_ / "runs" / "nightly" / "history.jsonl").string();
  EXPECT_EQ(night->history, history);
  absl::StatusOr<std::vector<HistoryEntry>> h = ReadHistory(history);
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0].run, "alpha");
  EXPECT_EQ((*h)[0].step, 10);
  EXPECT_EQ((*h)[0].metrics.at("passkey.128"), 0.75);
  EXPECT_EQ((*h)[0].time, options.now);

  // Night 2: nothing new → nothing evaluated, nothing appended.
  calls.clear();
  options.now = "2024-05-02T02:00:00Z";
  night = RunNightly(options, log);
  ASSERT_TRUE(night.ok()) << night.status();
  EXPECT_TRUE(calls.empty());
  EXPECT_TRUE(night->added.empty());
  EXPECT_EQ(ReadHistory(history)->size(), 2u);

  // Night 3: alpha has a new checkpoint whose report is worse.
  SaveCheckpoint("alpha", 20, 3.0f);
  reports["alpha@20"] = Report(2.5, {{64, 1.0}, {128, 0.25}});
  options.now = "2024-05-03T02:00:00Z";
  night = RunNightly(options, log);
  ASSERT_TRUE(night.ok()) << night.status();
  EXPECT_EQ(calls, (std::vector<std::string>{"alpha@20 "}));
  ASSERT_EQ(night->regressions.size(), 2u);
  EXPECT_EQ(night->regressions[0].metric, "passkey.128");
  EXPECT_EQ(night->regressions[1].metric, "val.loss");
  EXPECT_EQ(night->regressions[1].previous_time, "2024-05-01T02:00:00Z");
  absl::Status status = NightlyStatus(*night);
  EXPECT_NE(cli::ExitCode(status), 0);
  EXPECT_NE(status.message().find("alpha [default]: val.loss 2 -> 2.5"), std::string::npos)
      << status;
  EXPECT_NE(status.message().find("passkey.128 0.75 -> 0.25"), std::string::npos) << status;
  EXPECT_EQ(ReadHistory(history)->size(), 3u);  // recorded all the same
  const std::string dashboard = Slurp(night->dashboard);
  EXPECT_NE(dashboard.find("**2 regression(s) tonight:**"), std::string::npos) << dashboard;
  EXPECT_NE(dashboard.find("| alpha | default | 2024-05-03T02:00:00Z | 20 | 2.5000 |"),
            std::string::npos)
      << dashboard;
  EXPECT_NE(dashboard.find("val.loss +25.0%"), std::string::npos) << dashboard;

  // Night 4: an evaluation that fails is an error naming the run; the others still run.
  SaveCheckpoint("alpha", 30, 4.0f);
  SaveCheckpoint("sweep/cell_a", 6, 4.0f);
  reports["sweep/cell_a@6"] = Report(2.9, {});
  options.now = "2024-05-04T02:00:00Z";
  auto fabricated = options.evaluate;
  options.evaluate = [&](const RunCheckpoint& ckpt, const std::string& suite,
                         const std::string& out, std::ostream& l) -> absl::StatusOr<Json> {
    if (ckpt.run == "alpha") return absl::DataLossError("model.safetensors: sha256 mismatch");
    return fabricated(ckpt, suite, out, l);
  };
  night = RunNightly(options, log);
  ASSERT_TRUE(night.ok()) << night.status();
  EXPECT_EQ(night->added.size(), 1u);
  status = NightlyStatus(*night);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(status.message().find("alpha [default]: model.safetensors"), std::string::npos)
      << status;
}

TEST_F(NightlyTest, TrendPlotsWithGnuplot) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "no gnuplot";
  SaveCheckpoint("alpha", 10, 1.0f);
  NightlyOptions options;
  options.runs_dir = (dir_ / "runs").string();
  int night = 0;
  options.evaluate = [&](const RunCheckpoint&, const std::string&, const std::string&,
                         std::ostream&) -> absl::StatusOr<Json> {
    return Report(2.0 - 0.1 * night, {{64, 0.5}});
  };
  std::ostringstream log;
  for (night = 1; night <= 2; ++night) {
    options.now = absl::StrCat("2024-05-0", night, "T02:00:00Z");
    options.reeval = true;
    ASSERT_TRUE(RunNightly(options, log).ok());
  }
  absl::StatusOr<NightlyResult> last = RunNightly(options, log);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->plots.size(), 3u) << log.str();
  for (const std::string& png : last->plots) EXPECT_GT(fs::file_size(png), 1000u) << png;
  EXPECT_NE(Slurp(last->dashboard).find("![trend.val_loss.png](trend.val_loss.png)"),
            std::string::npos);
}

// scripts/nightly_eval.sh with the real binary on a tiny trained run: a first night is clean
// (exit 0), a rerun finds nothing new, and after a fabricated much better previous night the
// re-evaluation regresses: exit code 1 and the metric named.
TEST_F(NightlyTest, ScriptEndToEnd) {
  const std::string source = SourceDir();
  if (source.empty() || !fs::exists(FamBinary())) GTEST_SKIP() << "no source tree or fam binary";
  std::vector<int32_t> tokens;
  for (int i = 0; i < 3000; ++i) tokens.push_back(3 + (i * 7) % 29);
  ASSERT_TRUE(data::WriteTokenShard((dir_ / "train-00000.bin").string(), tokens, 32).ok());
  ASSERT_TRUE(data::WriteTokenShard((dir_ / "val-00000.bin").string(),
                                    std::vector<int32_t>(tokens.begin(), tokens.begin() + 300), 32)
                  .ok());
  std::string yaml = R"(name: tiny
run_dir: DIR/runs
model: {vocab_size: 32, d_model: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, head_dim: 8,
        ffn_dim: 32, tie_embeddings: true,
        attention: {type: fam, block_size: 8, memory_segments: 1, fam_length: 2}}
data: {train: DIR/train-*.bin, val: DIR/val-*.bin}
trainer: {steps: 3, global_batch: 2, micro_batch: 2, seq_len: 16, log_interval: 1}
eval: {val_batches: 2}
)";
  for (size_t p; (p = yaml.find("DIR")) != std::string::npos;) yaml.replace(p, 3, dir_.string());
  absl::StatusOr<RunConfig> config = ParseRunConfig(yaml, (dir_ / "tiny.yaml").string());
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_TRUE(RunTraining(*config).ok());

  auto run = [&](const std::string& extra) {
    const std::string cmd =
        absl::StrCat("FAM='", FamBinary(), "' bash '", source, "/scripts/nightly_eval.sh' '",
                     (dir_ / "runs").string(), "' --no-plots ", extra, " 2>&1");
    std::string out;
    FILE* pipe = popen(cmd.c_str(), "r");
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    const int status = pclose(pipe);
    return std::pair<int, std::string>(WIFEXITED(status) ? WEXITSTATUS(status) : -1, out);
  };
  auto [code, out] = run("");
  ASSERT_EQ(code, 0) << out;
  const fs::path history = dir_ / "runs" / "nightly" / "history.jsonl";
  absl::StatusOr<std::vector<HistoryEntry>> h = ReadHistory(history.string());
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_EQ(h->size(), 1u) << out;
  EXPECT_EQ((*h)[0].run, "tiny");
  EXPECT_EQ((*h)[0].step, 3);
  ASSERT_EQ((*h)[0].metrics.count("val.loss"), 1u) << out;
  EXPECT_TRUE(
      fs::exists(dir_ / "runs" / "tiny" / "eval" / "nightly" / "step-00000003.default.json"));
  EXPECT_TRUE(fs::exists(dir_ / "runs" / "nightly" / "dashboard.md"));
  EXPECT_TRUE(fs::exists(dir_ / "runs" / "nightly" / "dashboard.html"));

  std::tie(code, out) = run("");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("already evaluated"), std::string::npos) << out;
  EXPECT_EQ(ReadHistory(history.string())->size(), 1u);

  // Fabricate a previous night 10% better in val loss, then evaluate the checkpoint again.
  HistoryEntry better = (*h)[0];
  better.metrics["val.loss"] *= 0.9;
  Spit(history, EntryToJson(better).dump() + "\n");
  std::tie(code, out) = run("--reeval");
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("error: nightly: 1 metric(s) regressed"), std::string::npos) << out;
  EXPECT_NE(out.find("tiny [default]: val.loss"), std::string::npos) << out;
  // A looser threshold lets the same night pass; a bad threshold is a usage error (2).
  Spit(history, EntryToJson(better).dump() + "\n");
  std::tie(code, out) = run("--reeval --threshold val.loss=0.5");
  EXPECT_EQ(code, 0) << out;
  std::tie(code, out) = run("--threshold loss=0.5");
  EXPECT_EQ(code, 2) << out;
}

}  // namespace
}  // namespace fam::nightly
