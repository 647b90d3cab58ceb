// The nightly evaluation job (`fam nightly`, run by scripts/nightly_eval.sh from cron or Slurm):
// finds the newest valid checkpoint of every run under a runs folder, evaluates the ones not yet
// in the history with the configured eval suites, appends one JSON line per evaluation to the
// history file, writes a markdown dashboard with trend plots and a self-contained HTML one
// (trainers/experiments/nightly_html.h), and reports every metric that regressed past its threshold against
// the previous evaluation of the same run and suite (the previous night), so that the job can
// exit non-zero and cron or CI can alert.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace fam::nightly {

// ---- metrics and thresholds ----

// The metrics of an eval report (FORMATS.md "Eval report"): "val.loss", "val.ppl",
// "passkey.<context tokens>" (accuracy), "peak_rss_mb", "seconds". Absent values are left out.
std::map<std::string, double> ReportMetrics(const nlohmann::json& report);

// How much worse a metric may get before it is a regression. The family of "passkey.1024" is
// "passkey"; a limit given for "passkey.1024" wins over the family's.
struct Thresholds {
  // metric or family → limit; < 0 = not checked. val.loss, val.ppl, peak_rss_mb and seconds are
  // relative increases (0.02 = +2%); passkey is an absolute accuracy drop (0.1 = 10 points).
  std::map<std::string, double> limits = {
      {"val.loss", 0.02}, {"val.ppl", -1}, {"passkey", 0.1}, {"peak_rss_mb", -1}, {"seconds", -1}};
  double LimitFor(const std::string& metric) const;
};
// Applies "metric=limit" ("val.loss=0.05", "passkey=off"); unknown metrics and bad numbers are
// InvalidArgument naming them.
absl::Status ParseThreshold(const std::string& spec, Thresholds* thresholds);
// Higher is better only for PassKey accuracy.
bool HigherIsBetter(const std::string& metric);

struct Regression {
  std::string run, suite, metric;
  double previous = 0, current = 0;
  double limit = 0;
  std::string previous_time;
  std::string ToString() const;  // "run [suite]: val.loss 2.1 → 2.4 (+14.3%, limit +2%) ..."
};

// ---- history ----

struct HistoryEntry {
  std::string time;           // UTC, "2024-05-01T02:00:00Z"
  std::string run;            // run folder relative to the runs folder
  std::string suite;          // suite name
  std::string checkpoint;     // checkpoint directory
  std::string checkpoint_id;  // sha256 (16 hex) of its manifest.json: a retrained run is new
  int64_t step = 0;
  std::string report;  // the report JSON written
  std::map<std::string, double> metrics;
};
nlohmann::json EntryToJson(const HistoryEntry& entry);
absl::StatusOr<HistoryEntry> EntryFromJson(const nlohmann::json& j);

// The history file, oldest first. A missing file is an empty history; a torn last line (a crash
// while appending) is skipped; any other bad line is DataLoss naming file:line.
absl::StatusOr<std::vector<HistoryEntry>> ReadHistory(const std::string& path);
// Appends entries (the file is rewritten atomically, so it is never left half-written).
absl::Status AppendHistory(const std::string& path, const std::vector<HistoryEntry>& entries);

// The value of `metric` in the entry; nullopt when absent.
std::optional<double> MetricOf(const HistoryEntry& entry, const std::string& metric);

// Metrics of `current` worse than in `previous` by more than their limits.
std::vector<Regression> FindRegressions(const HistoryEntry& previous, const HistoryEntry& current,
                                        const Thresholds& thresholds);

// ---- checkpoints ----

struct RunCheckpoint {
  std::string run;  // relative to the runs folder ("kjv_tiny_fam", "ablation/F16")
  std::string run_dir;
  std::string checkpoint;  // the newest valid checkpoint directory
  std::string id;          // sha256 (16 hex) of its manifest.json
  int64_t step = 0;
};
// Every run folder (a folder with a checkpoints/ folder, up to 3 levels below `runs_dir`, except
// `skip`) and its newest valid checkpoint; runs without one are left out (reported through warn).
absl::StatusOr<std::vector<RunCheckpoint>> FindRunCheckpoints(
    const std::string& runs_dir, const std::string& skip,
    const std::function<void(const std::string&)>& warn);

// ---- the job ----

struct NightlyOptions {
  std::string runs_dir;
  std::vector<std::string> suites;  // eval suite YAMLs; empty = the built-in default suite
  std::string out_dir;              // dashboard folder; "" = <runs_dir>/nightly
  std::string history;              // "" = <out_dir>/history.jsonl
  Thresholds thresholds;
  bool reeval = false;  // evaluate checkpoints already in the history again
  bool plots = true;
  std::string now;  // timestamp of this night's entries; "" = the current UTC time
  // Evaluates one checkpoint with one suite ("" = default), writing the report to `out`; returns
  // the report JSON. Default: eval::RunEval. Tests put fabricated reports here.
  std::function<absl::StatusOr<nlohmann::json>(const RunCheckpoint&, const std::string& suite,
                                               const std::string& out, std::ostream& log)>
      evaluate;
};

struct NightlyResult {
  std::vector<HistoryEntry> added;
  std::vector<Regression> regressions;
  std::vector<std::string> failures;                      // "run [suite]: message"
  absl::StatusCode failure_code = absl::StatusCode::kOk;  // of the first failure
  std::string history, dashboard;
  std::string dashboard_html;  // dashboard.html next to dashboard.md
  std::vector<std::string> plots;
};

// Runs the job; the history and dashboard are written even when metrics regressed or an
// evaluation failed (see NightlyStatus).
absl::StatusOr<NightlyResult> RunNightly(const NightlyOptions& options, std::ostream& log);
// OK, or an error naming every regression (kAborted) and failed evaluation.
absl::Status NightlyStatus(const NightlyResult& result);

// ---- what the dashboards show ----

// The change of a metric as shown: "+5.0%" (relative, lower-is-better metrics) or "-0.50"
// (absolute, PassKey accuracy).
std::string ChangeText(const std::string& metric, double previous, double current);
// A threshold as the change it allows: "+2%" or "-0.10".
std::string LimitText(const std::string& metric, double limit);
// The mean accuracy over the "passkey.<tokens>" metrics; nullopt without any.
std::optional<double> PasskeyMean(const std::map<std::string, double>& metrics);
// "run [suite]": one line of the trend plots and one section of the recent history.
std::string SeriesName(const HistoryEntry& entry);

// One trend plot of the dashboards, drawn once per series (run and suite) over time.
struct TrendMetric {
  std::string file;    // "trend.val_loss": the gnuplot files' stem and the HTML chart's id
  std::string title;   // "validation loss"
  std::string ylabel;  // "val loss (nats)"
  std::optional<std::pair<double, double>> yrange;  // nullopt = automatic
  std::string family;  // regressions of this metric family are marked ("val.loss", "passkey")
  std::function<std::optional<double>(const HistoryEntry&)> value;
};
// Validation loss, validation perplexity and mean PassKey accuracy, in that order.
const std::vector<TrendMetric>& TrendMetrics();
// "passkey" for "passkey.<tokens>", else the metric itself.
std::string MetricFamily(const std::string& metric);

// Writes the trend data (trend.*.dat) and dashboard.gp into out_dir and runs gnuplot; returns the
// PNGs made (none, with a warning in the log, without gnuplot).
std::vector<std::string> WriteTrendPlots(const std::vector<HistoryEntry>& history,
                                         const std::string& out_dir, std::ostream& log);

// The markdown dashboard: regressions of this night, the latest entry of every run and suite with
// its change against the previous one, trend plots and the recent history.
std::string DashboardMarkdown(const std::vector<HistoryEntry>& history, const NightlyResult& result,
                              const Thresholds& thresholds, const std::vector<std::string>& plots,
                              const std::string& now);

}  // namespace fam::nightly
