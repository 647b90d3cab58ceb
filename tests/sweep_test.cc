// trainers/sweep: expansion of a sweep file into cells (cartesian product order, names, overrides,
// unknown keys named with file:line), resumability on tiny real runs (an interrupted cell resumes,
// finished cells are skipped, a missing report is made again), the summary CSV against the runs'
// own metrics and reports, failures that do not stop the other cells, and the Slurm/mpirun scripts
// (run with fake fam/srun/mpirun programs that log their arguments), multi-GPU cells (nodes x
// gpus_per_node: #SBATCH lines, srun task count, flags over the file, a conflicting launch.ranks).
#include "trainers/experiments/sweep.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "framework/data/token_shard.h"
#include "framework/io/checkpoint.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/gradcheck.h"
#include "tests/test_util.h"
#include "trainers/cli/cli.h"
#include "trainers/train/train_loop.h"
#include "trainers/experiments/sweep_slurm.h"

namespace fam::sweep {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

using testing::Slurp;
using testing::Spit;

// The line of `text` (1-based) holding `part`.
int LineOf(const std::string& text, const std::string& part) {
  const size_t at = text.find(part);
  return 1 + static_cast<int>(std::count(text.begin(), text.begin() + at, '\n'));
}

// CSV without quoted fields (the test's cell names need none) → rows of fields.
std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty()))
    rows.push_back(absl::StrSplit(line, ','));
  return rows;
}

class SweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "fam_sweep_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    std::vector<int32_t> tokens;
    uint32_t x = 777;
    for (int i = 0; i < 800; ++i) {
      x = x * 1103515245u + 12345u;
      const int sentence = (x >> 16) % 3;
      for (int j = 0; j < 5; ++j) tokens.push_back(4 + sentence * 6 + j);
      tokens.push_back(2);
    }
    ASSERT_TRUE(data::WriteTokenShard((dir_ / "train-00000.bin").string(), tokens, 64).ok());
    std::vector<int32_t> val(tokens.begin(), tokens.begin() + 200);
    ASSERT_TRUE(data::WriteTokenShard((dir_ / "val-00000.bin").string(), val, 64).ok());
    std::string base = R"(name: base
run_dir: DIR/runs
model:
  vocab_size: 64
  d_model: 16
  n_layers: 1
  n_heads: 2
  n_kv_heads: 1
  head_dim: 8
  ffn_dim: 32
  tie_embeddings: true
  attention: {type: fam, block_size: 8, memory_segments: 1, fam_length: 2}
  training: {random_position_offset: false, state_passing_prob: 0}
data: {train: DIR/train-*.bin, val: DIR/val-*.bin}
optimizer: {lr: 0.01}
schedule: {type: constant}
trainer: {steps: 4, global_batch: 2, micro_batch: 2, seq_len: 16, seed: 3, log_interval: 1,
          eval_interval: 0, eval_batches: 1}
checkpoint: {interval: 2, keep_last: 2}
)";
    for (size_t p; (p = base.find("DIR")) != std::string::npos;) base.replace(p, 3, dir_.string());
    Spit(dir_ / "base.yaml", base);
    Spit(dir_ / "suite.yaml",
         "name: quick\nval: {enabled: true, mode: windows, seq_len: 16, max_windows: 4}\n"
         "passkey: {enabled: false}\nplots: false\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path WriteSweep(const std::string& name, const std::string& text) {
    Spit(dir_ / name, text);
    return dir_ / name;
  }

  SweepConfig Parse(const std::string& name, const std::string& text) {
    absl::StatusOr<SweepConfig> s = LoadSweepConfig(WriteSweep(name, text).string());
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : SweepConfig();
  }

  absl::Status ParseError(const std::string& name, const std::string& text) {
    return LoadSweepConfig(WriteSweep(name, text).string()).status();
  }

  fs::path dir_;
};

constexpr char kTwoByTwo[] = R"(experiment: base.yaml
set:
  trainer.seed: 5
  eval: {passkey_trials: 3}
axes:
  attention.fam_length: [0, 2]
  model.attention.block_size: [4, 8]
eval:
  suite: suite.yaml
plots: false
)";

TEST_F(SweepTest, ExpandsTheCartesianProductInOrder) {
  const SweepConfig s = Parse("grid.yaml", kTwoByTwo);
  EXPECT_EQ(s.name, "grid");
  EXPECT_EQ(s.experiment, (dir_ / "base.yaml").string());
  EXPECT_EQ(s.eval_suite, (dir_ / "suite.yaml").string());
  EXPECT_EQ(SweepDir(s), (dir_ / "runs" / "grid").string());  // <experiment run_dir>/<name>
  ASSERT_EQ(s.axes.size(), 2u);
  EXPECT_EQ(s.axes[0].key, "model.attention.fam_length");
  EXPECT_EQ(s.axes[0].label, "fam_length");
  EXPECT_EQ(s.set, (std::vector<std::string>{"trainer.seed=5", "eval.passkey_trials=3"}));

  absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(s);
  ASSERT_TRUE(cells.ok()) << cells.status();
  ASSERT_EQ(cells->size(), 4u);
  const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 4}, {0, 8}, {2, 4}, {2, 8}};
  for (size_t i = 0; i < 4; ++i) {
    const SweepCell& c = (*cells)[i];
    const auto [f, b] = expected[i];
    EXPECT_EQ(c.index, static_cast<int64_t>(i));
    EXPECT_EQ(c.name, absl::StrCat("fam_length_", f, "-block_size_", b));
    EXPECT_EQ(c.values, (std::vector<std::string>{std::to_string(f), std::to_string(b)}));
    EXPECT_NE(std::find(c.overrides.begin(), c.overrides.end(),
                        absl::StrCat("model.attention.fam_length=", f)),
              c.overrides.end());
    absl::StatusOr<RunConfig> run = CellRunConfig(s, c);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_EQ(run->model.attention.fam_length, f);
    EXPECT_EQ(run->model.attention.block_size, b);
    EXPECT_EQ(run->trainer.seed, 5);
    EXPECT_EQ(run->eval.passkey_trials, 3);
    EXPECT_EQ(run->trainer.steps, 4);  // from the base experiment
    EXPECT_EQ(run->name, c.name);
    EXPECT_EQ(run->RunPath(), (dir_ / "runs" / "grid" / c.name).string());
  }

  // Extra overrides (`fam sweep --set`) reach every cell; an axis key cannot be overridden.
  cells = ExpandSweep(s, {"trainer.steps=7"});
  ASSERT_TRUE(cells.ok()) << cells.status();
  absl::StatusOr<RunConfig> run = CellRunConfig(s, (*cells)[3]);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->trainer.steps, 7);
  absl::Status axis = ExpandSweep(s, {"attention.fam_length=3"}).status();
  EXPECT_EQ(axis.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(axis.message().find("is an axis"), std::string::npos) << axis;
}

TEST_F(SweepTest, NamePatternsStringValuesAndRunDir) {
  const SweepConfig s = Parse("types.yaml", R"(name: kinds
experiment: base.yaml
run_dir: RUNDIR
name_pattern: "{type}-B{block_size}-{sweep}"
axes:
  attention.type: [bswa, fam, "full"]
  attention.block_size: [4, 16]
)");
  absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(s);
  ASSERT_TRUE(cells.ok()) << cells.status();
  ASSERT_EQ(cells->size(), 6u);
  EXPECT_EQ((*cells)[0].name, "bswa-B4-kinds");
  EXPECT_EQ((*cells)[3].name, "fam-B16-kinds");
  EXPECT_EQ((*cells)[5].name, "full-B16-kinds");
  EXPECT_EQ(SweepDir(s), "RUNDIR");
  absl::StatusOr<RunConfig> run = CellRunConfig(s, (*cells)[2]);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->model.attention.type, AttentionType::kFam);
  EXPECT_EQ(run->run_dir, "RUNDIR");

  // A pattern that leaves an axis out gives two cells the same name.
  const SweepConfig dup = Parse("dup.yaml", R"(experiment: base.yaml
name_pattern: "F{fam_length}"
axes:
  attention.fam_length: [0, 2]
  attention.block_size: [4, 8]
)");
  absl::Status st = ExpandSweep(dup).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("both get the run name \"F0\""), std::string::npos) << st;
  EXPECT_NE(st.message().find("dup.yaml:2:"), std::string::npos) << st;
}

TEST_F(SweepTest, UnknownKeysAreNamedWithFileAndLine) {
  const std::string typo = R"(experiment: base.yaml
axes:
  attention.block_size: [4, 8]
  attention.fam_lenght: [0, 2]
)";
  absl::Status st = ParseError("typo.yaml", typo);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  const std::string want =
      absl::StrCat((dir_ / "typo.yaml").string(), ":", LineOf(typo, "fam_lenght"), ":3: ");
  EXPECT_NE(st.message().find(want), std::string::npos) << st << " (want " << want << ")";
  EXPECT_NE(st.message().find("axes.attention.fam_lenght"), std::string::npos) << st;
  EXPECT_NE(st.message().find("did you mean model.attention.fam_length"), std::string::npos) << st;

  const std::string in_set =
      "experiment: base.yaml\nset:\n  trainer:\n    stepz: 3\n"
      "axes:\n  trainer.seed: [1]\n";
  st = ParseError("set.yaml", in_set);
  EXPECT_NE(st.message().find("set.yaml:4:"), std::string::npos) << st;
  EXPECT_NE(st.message().find("set.trainer.stepz"), std::string::npos) << st;

  st = ParseError("section.yaml", "experiment: base.yaml\naxes:\n  attention: [1, 2]\n");
  EXPECT_NE(st.message().find("is a section"), std::string::npos) << st;
  st = ParseError("name.yaml", "experiment: base.yaml\naxes:\n  name: [a, b]\n");
  EXPECT_NE(st.message().find("set by the sweep"), std::string::npos) << st;
  st = ParseError("empty.yaml", "experiment: base.yaml\naxes:\n  trainer.seed: []\n");
  EXPECT_NE(st.message().find("empty.yaml:3:"), std::string::npos) << st;
  EXPECT_NE(st.message().find("non-empty list"), std::string::npos) << st;
  st = ParseError("top.yaml", "experiment: base.yaml\naxis:\n  trainer.seed: [1]\n");
  EXPECT_NE(st.message().find("top.yaml:2:"), std::string::npos) << st;
  st = ParseError("noexp.yaml", "experiment: nowhere.yaml\naxes:\n  trainer.seed: [1]\n");
  EXPECT_NE(st.message().find("noexp.yaml:1:"), std::string::npos) << st;
  EXPECT_NE(st.message().find("nowhere.yaml"), std::string::npos) << st;
  st = ParseError("pattern.yaml",
                  "experiment: base.yaml\nname_pattern: x{nope}\naxes:\n  trainer.seed: [1]\n");
  EXPECT_NE(st.message().find("unknown placeholder {nope}"), std::string::npos) << st;

  // A value the run config rejects names the cell and the key.
  const SweepConfig bad =
      Parse("bad.yaml", "experiment: base.yaml\naxes:\n  attention.fam_length: [2, -1]\n");
  absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(bad);
  ASSERT_TRUE(cells.ok()) << cells.status();
  EXPECT_TRUE(CellRunConfig(bad, (*cells)[0]).ok());
  st = CellRunConfig(bad, (*cells)[1]).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("cell fam_length_-1"), std::string::npos) << st;
  EXPECT_NE(st.message().find("fam_length"), std::string::npos) << st;
}

// Resumability on real (tiny) runs, and the summary against the runs' own files.
TEST_F(SweepTest, RunsResumesSkipsAndSummarises) {
  const fs::path file = WriteSweep("resume.yaml", R"(experiment: base.yaml
axes:
  attention.fam_length: [0, 2]
eval: {suite: suite.yaml}
plots: false
)");
  absl::StatusOr<SweepConfig> s = LoadSweepConfig(file.string());
  ASSERT_TRUE(s.ok()) << s.status();
  absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(*s);
  ASSERT_TRUE(cells.ok());
  std::vector<RunConfig> runs;
  for (const SweepCell& c : *cells) runs.push_back(*CellRunConfig(*s, c));

  // Cell 1 was interrupted after its step-2 checkpoint.
  SweepCell partial = (*cells)[1];
  partial.overrides.push_back("trainer.steps=2");
  ASSERT_TRUE(RunTraining(*CellRunConfig(*s, partial)).ok());
  CellStatus st = InspectCell(runs[1], true);
  EXPECT_EQ(st.state, CellState::kPartial);
  EXPECT_EQ(st.step, 2);
  EXPECT_EQ(InspectCell(runs[0], true).state, CellState::kPending);

  SweepRequest request;
  request.config = file.string();
  std::ostringstream log;
  absl::StatusOr<SweepOutcome> first = RunSweep(request, log);
  ASSERT_TRUE(first.ok()) << first.status() << "\n" << log.str();
  EXPECT_EQ(first->trained, 2);
  EXPECT_EQ(first->evaluated, 2);
  EXPECT_EQ(first->skipped, 0);
  EXPECT_NE(log.str().find("partial at step 2 of 4, resuming"), std::string::npos) << log.str();
  for (const RunConfig& run : runs) {
    EXPECT_EQ(InspectCell(run, true).state, CellState::kDone) << run.name;
    EXPECT_TRUE(fs::exists(FinalCheckpointPath(run) + "/manifest.json"));
    EXPECT_TRUE(fs::exists(CellReportPath(run)));
    // The resolved config of the cell loads back as the cell's config.
    absl::StatusOr<RunConfig> again =
        LoadRunConfig((dir_ / "runs" / "resume" / "configs" / (run.name + ".yaml")).string());
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->model.attention.fam_length, run.model.attention.fam_length);
    EXPECT_EQ(again->RunPath(), run.RunPath());
  }
  const std::string metrics1 = Slurp(fs::path(runs[1].RunPath()) / "metrics.jsonl");
  EXPECT_NE(metrics1.find("\"event\":\"resume\""), std::string::npos) << metrics1;

  // A rerun skips both cells and touches nothing.
  const std::string metrics0 = Slurp(fs::path(runs[0].RunPath()) / "metrics.jsonl");
  const auto report_time = fs::last_write_time(CellReportPath(runs[0]));
  log.str("");
  absl::StatusOr<SweepOutcome> second = RunSweep(request, log);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->trained, 0);
  EXPECT_EQ(second->evaluated, 0);
  EXPECT_EQ(second->skipped, 2);
  EXPECT_EQ(Slurp(fs::path(runs[0].RunPath()) / "metrics.jsonl"), metrics0);
  EXPECT_EQ(Slurp(fs::path(runs[1].RunPath()) / "metrics.jsonl"), metrics1);
  EXPECT_EQ(fs::last_write_time(CellReportPath(runs[0])), report_time);

  // A cell trained but not evaluated is only evaluated.
  fs::remove(CellReportPath(runs[0]));
  EXPECT_EQ(InspectCell(runs[0], true).state, CellState::kTrained);
  absl::StatusOr<SweepOutcome> third = RunSweep(request, log);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->trained, 0);
  EXPECT_EQ(third->evaluated, 1);
  EXPECT_EQ(third->skipped, 1);
  EXPECT_EQ(Slurp(fs::path(runs[0].RunPath()) / "metrics.jsonl"), metrics0);

  // summary.csv against each run's metrics.jsonl, eval report and checkpoint.
  const auto csv = ParseCsv(Slurp(dir_ / "runs" / "resume" / "summary.csv"));
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[0], (std::vector<std::string>{"cell", "fam_length", "status", "step", "train_loss",
                                              "val_loss", "val_ppl", "tokens_per_s", "parameters",
                                              "train_seconds"}));
  for (size_t i = 0; i < 2; ++i) {
    const std::vector<std::string>& row = csv[i + 1];
    ASSERT_EQ(row.size(), csv[0].size());
    EXPECT_EQ(row[0], runs[i].name);
    EXPECT_EQ(row[1], i == 0 ? "0" : "2");
    EXPECT_EQ(row[2], "done");
    EXPECT_EQ(row[3], "4");
    // Independent reading of the run's files.
    std::map<int64_t, Json> train;
    std::ifstream in(fs::path(runs[i].RunPath()) / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      Json j = Json::parse(line);
      if (j["kind"] == "train") train[j["step"].get<int64_t>()] = j;
    }
    ASSERT_EQ(train.size(), 4u);
    std::vector<double> tps;
    for (auto& [step, j] : train) tps.push_back(j["tokens_per_s"].get<double>());
    std::sort(tps.begin(), tps.end());
    const Json report = Json::parse(Slurp(CellReportPath(runs[i])));
    io::CheckpointOptions options;
    options.dir = (fs::path(runs[i].RunPath()) / "checkpoints").string();
    absl::StatusOr<io::LoadedCheckpoint> ckpt =
        io::LoadCheckpoint(*io::CheckpointManager(options).LatestValid());
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    int64_t parameters = 0;
    for (auto& [name, t] : ckpt->model) parameters += t.numel();

    auto near = [](const std::string& field, double want) {
      return std::fabs(std::stod(field) - want) <= 1e-8 * std::max(1.0, std::fabs(want));
    };
    EXPECT_TRUE(near(row[4], train.rbegin()->second["loss"].get<double>())) << row[4];
    EXPECT_TRUE(near(row[5], report["val"]["loss"].get<double>())) << row[5];
    EXPECT_TRUE(near(row[6], report["val"]["ppl"].get<double>())) << row[6];
    EXPECT_TRUE(near(row[7], 0.5 * (tps[1] + tps[2]))) << row[7];  // the median of 4
    EXPECT_EQ(row[8], std::to_string(parameters));
    EXPECT_TRUE(near(row[9], train.rbegin()->second["elapsed_s"].get<double>())) << row[9];
  }
  const std::string md = Slurp(dir_ / "runs" / "resume" / "summary.md");
  EXPECT_NE(md.find("| fam_length_2 | 2 | done | 4 |"), std::string::npos) << md;
}

// The joining of metrics and reports on fabricated run folders: duplicated steps after a resume,
// PassKey lengths that differ between cells, missing values as empty fields.
TEST_F(SweepTest, SummaryJoinsMetricsAndReports) {
  const SweepConfig s = Parse("fab.yaml", R"(experiment: base.yaml
axes:
  attention.type: [bswa, fam]
  trainer.seed: [1]
plots: false
)");
  absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(s);
  ASSERT_TRUE(cells.ok());
  std::vector<RunConfig> runs;
  for (const SweepCell& c : *cells) runs.push_back(*CellRunConfig(s, c));
  const fs::path a = runs[0].RunPath(), b = runs[1].RunPath();
  Spit(a / "metrics.jsonl",
       R"({"kind":"train","step":1,"loss":3.0,"tokens_per_s":100,"elapsed_s":1.0}
{"kind":"train","step":2,"loss":2.5,"tokens_per_s":300,"elapsed_s":2.0}
{"kind":"event","step":2,"event":"checkpoint"}
{"kind":"train","step":3,"loss":2.25,"tokens_per_s":50,"elapsed_s":3.0}
{"kind":"event","step":2,"event":"resume"}
{"kind":"train","step":3,"loss":2.0,"tokens_per_s":200,"elapsed_s":3.5}
{"kind":"eval","step":3,"val_loss":2.2,"val_ppl":9.025}
{"kind":"train","step":4,"loss":1.75,"tokens_per_s":400,"elapsed_s":4.5}
)");
  Spit(a / "checkpoints" / "step-00000004" / "manifest.json", "{}");
  Spit(a / "eval" / "step-00000004.json", R"({"step": 4, "val": {"loss": 1.5, "ppl": 4.4817},
    "passkey": [{"context_tokens": 64, "trials": 4, "accuracy": 0.75},
                {"context_tokens": 256, "trials": 4, "accuracy": 0.25}]})");
  // Cell b: interrupted at step 2, trainer validation only, no report.
  Spit(b / "metrics.jsonl",
       R"({"kind":"train","step":1,"loss":4.0,"tokens_per_s":10,"elapsed_s":0.5}
{"kind":"eval","step":1,"val_loss":3.5,"val_ppl":33.115}
)");
  Spit(b / "checkpoints" / "step-00000002" / "manifest.json", "{}");
  Spit(b / "checkpoints" / "step-00000003" / "model.safetensors", "");  // no manifest: not one

  const std::vector<CellSummary> rows = CollectSummary(s, *cells, runs);
  EXPECT_EQ(SummaryCsv(s, rows),
            "cell,type,seed,status,step,train_loss,val_loss,val_ppl,passkey_64,passkey_256,"
            "tokens_per_s,parameters,train_seconds\n"
            "type_bswa-seed_1,bswa,1,done,4,1.75,1.5,4.4817,0.75,0.25,250," +
                std::to_string(runs[0].model.ParameterCount()) +
                ",4.5\n"
                "type_fam-seed_1,fam,1,partial,2,4,3.5,33.115,,,10," +
                std::to_string(runs[1].model.ParameterCount()) + ",0.5\n");
  EXPECT_EQ(rows[0].passkey.size(), 2u);

  const std::map<std::string, std::string> failed = {{"type_fam-seed_1", "boom"}};
  EXPECT_EQ(CollectSummary(s, *cells, runs, failed)[1].state, CellState::kFailed);
  const std::string md = SummaryMarkdown(s, rows, {});
  EXPECT_NE(md.find("| type_bswa-seed_1 | bswa | 1 | done | 4 | 1.7500 | 1.5000 | 4.48 | 75% | "
                    "25% | 250 |"),
            std::string::npos)
      << md;
  EXPECT_NE(
      md.find("| type_fam-seed_1 | fam | 1 | partial | 2 | 4.0000 | 3.5000 | 33.12 | – | – |"),
      std::string::npos)
      << md;
}

TEST_F(SweepTest, AFailedCellDoesNotStopTheOthers) {
  const fs::path file =
      WriteSweep("fail.yaml", absl::StrCat(R"(experiment: base.yaml
axes:
  data.train: [")",
                                           (dir_ / "nothing-*.bin").string(), "\", \"",
                                           (dir_ / "train-*.bin").string(),
                                           R"("]
name_pattern: "d{index}"
eval: {enabled: false}
plots: false
)"));
  SweepRequest request;
  request.config = file.string();
  std::ostringstream log;
  absl::StatusOr<SweepOutcome> outcome = RunSweep(request, log);
  ASSERT_FALSE(outcome.ok());
  EXPECT_NE(outcome.status().message().find("1 of 2 cells failed: d0 ("), std::string::npos)
      << outcome.status();
  const auto csv = ParseCsv(Slurp(dir_ / "runs" / "fail" / "summary.csv"));
  ASSERT_EQ(csv.size(), 3u);
  EXPECT_EQ(csv[1][0], "d0");
  EXPECT_EQ(csv[1][2], "failed");
  EXPECT_EQ(csv[2][0], "d1");
  EXPECT_EQ(csv[2][2], "done");  // eval disabled: the final checkpoint finishes the cell
}

// Runs a generated script with fake fam/srun/mpirun programs that log their arguments; the fake
// `fam eval` writes the report, so a second run must skip every cell.
class ScriptTest : public SweepTest {
 protected:
  void MakeFakes() {
    const fs::path bin = dir_ / "bin";
    const std::string log = (dir_ / "calls.log").string();
    Spit(bin / "fam",
         absl::StrCat("#!/bin/bash\necho \"fam $*\" >> '", log, "'\n",
                      "if [ \"$1\" = eval ]; then\n"
                      "  while [ $# -gt 0 ]; do\n"
                      "    if [ \"$1\" = --out ]; then mkdir -p \"$(dirname \"$2\")\"; "
                      "echo '{\"step\": 4}' > \"$2\"; fi\n"
                      "    shift\n  done\nfi\n"));
    // srun logs its own options (those before the program) and runs the program once.
    Spit(bin / "srun", absl::StrCat("#!/bin/bash\nopts=\nwhile [ \"${1#--}\" != \"$1\" ]; do "
                                    "opts=\"$opts $1\"; shift; done\necho \"srun$opts\" >> '",
                                    log, "'\nexec \"$@\"\n"));
    Spit(bin / "mpirun",
         absl::StrCat("#!/bin/bash\necho \"mpirun $1 $2\" >> '", log, "'\nshift 2\nexec \"$@\"\n"));
    for (const char* f : {"fam", "srun", "mpirun"}) ::chmod((bin / f).c_str(), 0755);
  }
  int Run(const std::string& command) {
    return std::system(absl::StrCat("cd '", dir_.string(), "' && PATH='", (dir_ / "bin").string(),
                                    "':\"$PATH\" ", command, " >/dev/null 2>&1")
                           .c_str());
  }
  std::string Calls() { return Slurp(dir_ / "calls.log"); }
};

TEST_F(ScriptTest, MpirunScriptRunsCellsInOrderAndSkipsFinishedOnes) {
  const fs::path file = WriteSweep("mpi.yaml", R"(experiment: base.yaml
axes:
  attention.fam_length: [0, 2]
  attention.block_size: [4, 8]
name_pattern: "F{fam_length}-B{block_size}"
eval: {suite: suite.yaml}
mode: mpirun
launch: {ranks: 2, fam: fam}
plots: false
)");
  SweepRequest request;
  request.config = file.string();
  request.overrides = {"trainer.steps=4"};
  std::ostringstream log;
  absl::StatusOr<SweepOutcome> outcome = RunSweep(request, log);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  EXPECT_EQ(outcome->trained, 0);  // nothing runs in this process
  const fs::path sweep_dir = dir_ / "runs" / "mpi";
  EXPECT_EQ(outcome->script, (sweep_dir / "sweep_mpirun.sh").string());
  const std::string script = Slurp(outcome->script);
  EXPECT_EQ(Run("bash -n " + outcome->script), 0) << script;
  for (const char* cell : {"F0-B4", "F0-B8", "F2-B4", "F2-B8"}) {
    const fs::path config = sweep_dir / "configs" / (std::string(cell) + ".yaml");
    EXPECT_TRUE(fs::exists(config)) << config;
    EXPECT_NE(
        script.find(absl::StrCat("\"$MPIRUN\" -np 2 \"$FAM\" train --config ", config.string())),
        std::string::npos)
        << script;
    EXPECT_NE(
        script.find(absl::StrCat("\"$FAM\" eval --checkpoint ",
                                 (sweep_dir / cell / "checkpoints" / "step-00000004").string(),
                                 " --config ", (dir_ / "suite.yaml").string(), " --out ",
                                 (sweep_dir / cell / "eval" / "step-00000004.json").string())),
        std::string::npos)
        << script;
  }
  EXPECT_NE(script.find(absl::StrCat("\"$FAM\" sweep --config ", file.string(),
                                     " --set trainer.steps=4 --summary")),
            std::string::npos)
      << script;

  MakeFakes();
  ASSERT_EQ(Run("bash " + outcome->script), 0) << Calls();
  std::vector<std::string> calls = absl::StrSplit(Calls(), '\n', absl::SkipEmpty());
  ASSERT_EQ(calls.size(), 13u) << Calls();  // 4 x (mpirun, train, eval) + summary
  EXPECT_EQ(calls[0], "mpirun -np 2");
  EXPECT_EQ(calls[1], "fam train --config " + (sweep_dir / "configs" / "F0-B4.yaml").string());
  EXPECT_EQ(calls[3], "mpirun -np 2");
  EXPECT_EQ(calls[4], "fam train --config " + (sweep_dir / "configs" / "F0-B8.yaml").string());
  EXPECT_EQ(calls[12].rfind("fam sweep --config", 0), 0u) << calls[12];

  // Every report exists now: a second run only writes the summary.
  fs::remove(dir_ / "calls.log");
  ASSERT_EQ(Run("bash " + outcome->script), 0);
  calls = absl::StrSplit(Calls(), '\n', absl::SkipEmpty());
  ASSERT_EQ(calls.size(), 1u) << Calls();
}

TEST_F(ScriptTest, SlurmArrayHasOneTaskPerCell) {
  const fs::path file = WriteSweep("array.yaml", R"(experiment: base.yaml
axes:
  attention.fam_length: [0, 2, 4]
eval: {suite: suite.yaml}
launch:
  fam: fam
  ranks: 4
  slurm: {partition: gpu, time: "00:30:00", gpus_per_task: 1, max_parallel: 2}
plots: false
)");
  SweepRequest request;
  request.config = file.string();
  request.mode = SweepMode::kSlurm;
  std::ostringstream log;
  absl::StatusOr<SweepOutcome> outcome = RunSweep(request, log);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const fs::path sweep_dir = dir_ / "runs" / "array";
  EXPECT_EQ(outcome->script, (sweep_dir / "sweep.sbatch").string());
  const std::string script = Slurp(outcome->script);
  EXPECT_EQ(Run("bash -n " + outcome->script), 0) << script;
  for (const char* line :
       {"#SBATCH --array=0-2%2\n", "#SBATCH --ntasks=4\n", "#SBATCH --gpus-per-task=1\n",
        "#SBATCH --time=00:30:00\n", "#SBATCH --partition=gpu\n", "  1)  # fam_length_2: "})
    EXPECT_NE(script.find(line), std::string::npos) << line << "\n" << script;
  EXPECT_NE(script.find(absl::StrCat("#SBATCH --output=", (sweep_dir / "logs").string())),
            std::string::npos)
      << script;
  EXPECT_TRUE(fs::is_directory(sweep_dir / "logs"));
  // The #SBATCH lines come before the first command (sbatch stops reading them there).
  EXPECT_LT(script.rfind("#SBATCH"), script.find("set -euo pipefail"));

  MakeFakes();
  ASSERT_EQ(Run("SLURM_ARRAY_TASK_ID=1 bash " + outcome->script), 0) << Calls();
  const std::vector<std::string> calls = absl::StrSplit(Calls(), '\n', absl::SkipEmpty());
  ASSERT_EQ(calls.size(), 3u) << Calls();
  EXPECT_EQ(calls[0], "srun");
  EXPECT_EQ(calls[1],
            "fam train --config " + (sweep_dir / "configs" / "fam_length_2.yaml").string());
  EXPECT_EQ(
      calls[2].rfind("fam eval --checkpoint " +
                         (sweep_dir / "fam_length_2" / "checkpoints" / "step-00000004").string(),
                     0),
      0u)
      << calls[2];
  fs::remove(dir_ / "calls.log");
  ASSERT_EQ(Run("SLURM_ARRAY_TASK_ID=1 bash " + outcome->script), 0);
  EXPECT_FALSE(fs::exists(dir_ / "calls.log")) << Calls();             // finished: skipped
  EXPECT_NE(Run("SLURM_ARRAY_TASK_ID=3 bash " + outcome->script), 0);  // no such cell
  EXPECT_NE(Run("bash " + outcome->script), 0);                        // not under sbatch
}

// Multi-GPU cells: 2 nodes x 8 GPUs per node, 16 ranks per cell, one per GPU.
constexpr char kTwoNodes[] = R"(experiment: base.yaml
axes:
  attention.fam_length: [0, 2]
eval: {suite: suite.yaml}
launch:
  fam: fam
  slurm: {nodes: 2, gpus_per_node: 8, time: "04:00:00", partition: gpu, account: proj}
plots: false
)";

TEST_F(ScriptTest, SlurmCellsOnTwoNodesOfEightGpus) {
  const fs::path file = WriteSweep("multi.yaml", kTwoNodes);
  absl::StatusOr<SweepConfig> parsed = LoadSweepConfig(file.string());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->ranks, 16);  // launch.ranks left out: nodes x gpus_per_node
  EXPECT_EQ(CellRanks(*parsed), 16);
  SweepRequest request;
  request.config = file.string();
  request.mode = SweepMode::kSlurm;
  std::ostringstream log;
  absl::StatusOr<SweepOutcome> outcome = RunSweep(request, log);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const fs::path sweep_dir = dir_ / "runs" / "multi";
  const std::string script = Slurp(outcome->script);
  EXPECT_EQ(Run("bash -n " + outcome->script), 0) << script;
  for (const char* line :
       {"#SBATCH --array=0-1\n", "#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=8\n",
        "#SBATCH --gpus-per-node=8\n", "#SBATCH --time=04:00:00\n", "#SBATCH --partition=gpu\n",
        "#SBATCH --account=proj\n"})
    EXPECT_NE(script.find(line), std::string::npos) << line << "\n" << script;
  EXPECT_EQ(script.find("#SBATCH --ntasks="), std::string::npos) << script;
  EXPECT_EQ(script.find("--gpus-per-task"), std::string::npos) << script;
  EXPECT_LT(script.rfind("#SBATCH"), script.find("set -euo pipefail"));
  for (const char* cell : {"fam_length_0", "fam_length_2"})
    EXPECT_NE(script.find(absl::StrCat(
                  "    srun --nodes=2 --ntasks=16 --ntasks-per-node=8 \"$FAM\" train --config ",
                  (sweep_dir / "configs" / (std::string(cell) + ".yaml")).string(), "\n")),
              std::string::npos)
        << cell << "\n"
        << script;

  MakeFakes();
  ASSERT_EQ(Run("SLURM_ARRAY_TASK_ID=0 bash " + outcome->script), 0) << Calls();
  const std::vector<std::string> calls = absl::StrSplit(Calls(), '\n', absl::SkipEmpty());
  ASSERT_EQ(calls.size(), 3u) << Calls();
  EXPECT_EQ(calls[0], "srun --nodes=2 --ntasks=16 --ntasks-per-node=8");
  EXPECT_EQ(calls[1],
            "fam train --config " + (sweep_dir / "configs" / "fam_length_0.yaml").string());

  // The mpirun script launches as many ranks; a matching launch.ranks is fine.
  std::string mpi_text = absl::StrCat(kTwoNodes, "mode: mpirun\n");
  const std::string fam_line = "  fam: fam\n";
  mpi_text.replace(mpi_text.find(fam_line), fam_line.size(), fam_line + "  ranks: 16\n");
  request.config = WriteSweep("multi_mpi.yaml", mpi_text).string();
  request.mode = std::nullopt;
  outcome = RunSweep(request, log);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const std::string mpirun = Slurp(outcome->script);
  EXPECT_NE(mpirun.find("  \"$MPIRUN\" -np 16 \"$FAM\" train --config "), std::string::npos)
      << mpirun;
}

TEST_F(ScriptTest, LaunchFlagsOverrideTheSweepFile) {
  const fs::path file = WriteSweep("flags.yaml", R"(experiment: base.yaml
axes:
  attention.fam_length: [0]
eval: {enabled: false}
launch:
  fam: fam
  slurm: {nodes: 1, gpus_per_node: 4, time: "01:00:00", partition: debug, account: old}
plots: false
)");
  SweepRequest request;
  request.config = file.string();
  request.mode = SweepMode::kSlurm;
  request.launch.nodes = 2;
  request.launch.gpus_per_node = 8;
  request.launch.time = "12:00:00";
  request.launch.partition = "gpu";
  request.launch.account = "ml";
  std::ostringstream log;
  absl::StatusOr<SweepOutcome> outcome = RunSweep(request, log);
  ASSERT_TRUE(outcome.ok()) << outcome.status();
  const std::string script = Slurp(outcome->script);
  for (const char* line :
       {"#SBATCH --nodes=2\n", "#SBATCH --ntasks-per-node=8\n", "#SBATCH --gpus-per-node=8\n",
        "#SBATCH --time=12:00:00\n", "#SBATCH --partition=gpu\n", "#SBATCH --account=ml\n",
        "    srun --nodes=2 --ntasks=16 --ntasks-per-node=8 \"$FAM\" train --config "})
    EXPECT_NE(script.find(line), std::string::npos) << line << "\n" << script;
  for (const char* gone : {"--nodes=1", "--gpus-per-node=4", "01:00:00", "debug", "=old"})
    EXPECT_EQ(script.find(gone), std::string::npos) << gone << "\n" << script;

  // The same through the command line; a flag alone keeps the file's other keys.
  if (!fs::exists(testing::FamBinary())) GTEST_SKIP() << "no fam binary for the CLI part";
  const testing::CommandResult cli = testing::RunCommand(absl::StrCat(
      "cd '", dir_.string(), "' && '", fs::absolute(testing::FamBinary()).string(),
      "' sweep --config flags.yaml --mode slurm --gpus-per-node 2 --partition big 2>&1"));
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const std::string from_cli = Slurp(dir_ / "runs" / "flags" / "sweep.sbatch");
  for (const char* line :
       {"#SBATCH --nodes=1\n", "#SBATCH --gpus-per-node=2\n", "#SBATCH --partition=big\n",
        "#SBATCH --account=old\n", "srun --nodes=1 --ntasks=2 --ntasks-per-node=2 \"$FAM\" train"})
    EXPECT_NE(from_cli.find(line), std::string::npos) << line << "\n" << from_cli;
  const testing::CommandResult zero = testing::RunFam(
      absl::StrCat("sweep --config ", (dir_ / "flags.yaml").string(), " --mode slurm --nodes 0"));
  EXPECT_EQ(zero.exit_code, 2) << zero.output;
  EXPECT_NE(zero.output.find("--nodes: expected an integer >= 1, got 0"), std::string::npos)
      << zero.output;
}

TEST_F(SweepTest, RanksConflictingWithNodesTimesGpusAreAConfigError) {
  const std::string text = R"(experiment: base.yaml
axes:
  attention.fam_length: [0]
launch:
  ranks: 4
  slurm: {nodes: 2, gpus_per_node: 8}
)";
  absl::Status st = ParseError("conflict.yaml", text);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cli::ExitCode(st), 2);
  EXPECT_EQ(std::string(st.message()).find('\n'), std::string::npos) << st;  // one line
  EXPECT_NE(st.message().find(absl::StrCat((dir_ / "conflict.yaml").string(), ":",
                                           LineOf(text, "ranks: 4"), ":")),
            std::string::npos)
      << st;
  EXPECT_NE(st.message().find("launch.ranks: 4 conflicts with launch.slurm.nodes x gpus_per_node "
                              "(--nodes x --gpus-per-node) = 2 x 8 = 16 ranks"),
            std::string::npos)
      << st;

  // A matching file, then flags that change the product: the same error.
  const fs::path ok = WriteSweep("match.yaml", absl::StrCat(text.substr(0, text.find("ranks: 4")),
                                                            "ranks: 16\n  slurm: {nodes: 2, "
                                                            "gpus_per_node: 8}\n"));
  SweepRequest request;
  request.config = ok.string();
  request.mode = SweepMode::kSlurm;
  request.launch.gpus_per_node = 4;
  std::ostringstream log;
  st = RunSweep(request, log).status();
  EXPECT_EQ(cli::ExitCode(st), 2) << st;
  EXPECT_NE(st.message().find("launch.ranks: 16 conflicts with"), std::string::npos) << st;
  EXPECT_NE(st.message().find("= 2 x 4 = 8 ranks"), std::string::npos) << st;

  // Bad values and combinations.
  st = ParseError("zero.yaml",
                  "experiment: base.yaml\naxes:\n  trainer.seed: [1]\n"
                  "launch: {slurm: {nodes: 0}}\n");
  EXPECT_NE(st.message().find("launch.slurm.nodes: expected an integer >= 1"), std::string::npos)
      << st;
  st = ParseError("task.yaml",
                  "experiment: base.yaml\naxes:\n  trainer.seed: [1]\n"
                  "launch: {slurm: {gpus_per_node: 8, gpus_per_task: 1}}\n");
  EXPECT_EQ(cli::ExitCode(st), 2) << st;
  EXPECT_NE(st.message().find("launch.slurm.gpus_per_task: not together with"), std::string::npos)
      << st;
  // gpus_per_node alone: one node.
  const SweepConfig one = Parse("one.yaml",
                                "experiment: base.yaml\naxes:\n  trainer.seed: [1]\n"
                                "launch: {slurm: {gpus_per_node: 4}}\n");
  EXPECT_EQ(one.slurm.nodes, 1);
  EXPECT_EQ(one.ranks, 4);
}

TEST_F(SweepTest, SummaryPlotsWithGnuplot) {
  if (!OnPath("gnuplot")) GTEST_SKIP() << "gnuplot not installed";
  const SweepConfig s = Parse("plots.yaml", R"(experiment: base.yaml
axes:
  attention.fam_length: [0, 2]
  attention.block_size: [4, 8]
)");
  absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(s);
  ASSERT_TRUE(cells.ok());
  std::vector<RunConfig> runs;
  for (size_t i = 0; i < cells->size(); ++i) {
    runs.push_back(*CellRunConfig(s, (*cells)[i]));
    const fs::path run = runs.back().RunPath();
    Spit(run / "metrics.jsonl",
         absl::StrCat(R"({"kind":"train","step":1,"loss":3,"tokens_per_s":1,"elapsed_s":1})", "\n",
                      R"({"kind":"train","step":2,"loss":)", 2.0 - 0.1 * i,
                      R"(,"tokens_per_s":1,"elapsed_s":2})", "\n"));
    Spit(run / "eval" / "step-00000004.json",
         absl::StrCat(R"({"step":4,"val":{"loss":)", 2.5 - 0.1 * i,
                      R"(,"ppl":10},"passkey":[{"context_tokens":32,"accuracy":0.5}]})"));
  }
  std::ostringstream log;
  absl::StatusOr<SummaryFiles> files =
      WriteSummary(s, *cells, CollectSummary(s, *cells, runs), true, log);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(files->plots.size(), 3u) << log.str();
  for (const std::string& png : files->plots) EXPECT_GT(fs::file_size(png), 1000u) << png;
  // Val loss against fam_length, one line per block size.
  const std::string dat = Slurp(dir_ / "runs" / "plots" / "summary.val.dat");
  EXPECT_EQ(dat, "0 \"0\" 2.5\n1 \"2\" 2.3\n\n\n0 \"0\" 2.4\n1 \"2\" 2.2\n");
  EXPECT_NE(Slurp(files->markdown).find("![summary.val.png](summary.val.png)"), std::string::npos);
}

// The shipped ablations expand into valid tiny, short cells (CPU minutes).
TEST(ShippedSweeps, ExpandIntoSmallValidCells) {
  fs::path source;
  if (const char* env = std::getenv("FAM_SOURCE_DIR"); env != nullptr && *env != '\0') {
    source = env;
  } else {
    for (fs::path dir = fs::current_path(); dir != dir.parent_path(); dir = dir.parent_path())
      if (fs::exists(dir / "configs" / "experiments")) {
        source = dir;
        break;
      }
  }
  if (source.empty()) GTEST_SKIP() << "source tree not found (set FAM_SOURCE_DIR)";
  struct Want {
    const char* file;
    std::vector<std::string> names;
  };
  for (const Want& want :
       {Want{"ablation_fam_length", {"F0", "F8", "F32", "F64"}},
        Want{"ablation_block_size",
             {"bswa-B32", "bswa-B64", "bswa-B128", "fam-B32", "fam-B64", "fam-B128"}}}) {
    SCOPED_TRACE(want.file);
    absl::StatusOr<SweepConfig> s = LoadSweepConfig(
        (source / "configs" / "experiments" / (std::string(want.file) + ".yaml")).string());
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->name, want.file);
    EXPECT_EQ(SweepDir(*s), "runs/" + std::string(want.file));
    absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(*s);
    ASSERT_TRUE(cells.ok()) << cells.status();
    ASSERT_EQ(cells->size(), want.names.size());
    for (size_t i = 0; i < cells->size(); ++i) {
      EXPECT_EQ((*cells)[i].name, want.names[i]);
      absl::StatusOr<RunConfig> run = CellRunConfig(*s, (*cells)[i]);
      ASSERT_TRUE(run.ok()) << run.status();
      EXPECT_EQ(run->model.d_model, 128);  // the tiny preset
      EXPECT_EQ(run->trainer.seq_len, 512);
      EXPECT_GE(run->trainer.steps, 60);
      EXPECT_LE(run->trainer.steps, 150);
      EXPECT_FALSE(run->eval.passkey_lengths.empty());
    }
  }
}

}  // namespace
}  // namespace fam::sweep
