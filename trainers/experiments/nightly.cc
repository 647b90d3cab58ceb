#include "trainers/experiments/nightly.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/io/sha256.h"
#include "trainers/eval/evaluate.h"
#include "trainers/experiments/nightly_html.h"

namespace fam::nightly {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr int kMaxRunDepth = 3;

bool IsDir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A suite name as part of a file name: characters other than [A-Za-z0-9._-] become '_'.
std::string FileNamePart(const std::string& text) {
  std::string out;
  for (unsigned char ch : text) out += std::isalnum(ch) || ch == '.' || ch == '-' ? ch : '_';
  return out;
}

// The newest entry of the same run and suite in `entries`, or nullptr.
const HistoryEntry* PreviousOf(const std::vector<HistoryEntry>& entries, const std::string& run,
                               const std::string& suite) {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)
    if (it->run == run && it->suite == suite) return &*it;
  return nullptr;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Metrics and thresholds

std::map<std::string, double> ReportMetrics(const Json& report) {
  std::map<std::string, double> m;
  if (!report.is_object()) return m;
  if (report.contains("val") && report["val"].is_object()) {
    const Json& val = report["val"];
    for (const char* key : {"loss", "ppl"})
      if (val.contains(key) && val[key].is_number())
        m[absl::StrCat("val.", key)] = val[key].get<double>();
  }
  if (report.contains("passkey") && report["passkey"].is_array())
    for (const Json& p : report["passkey"])
      if (p.is_object() && p.contains("context_tokens") &&
          p["context_tokens"].is_number_integer() && p.contains("accuracy") &&
          p["accuracy"].is_number())
        m[absl::StrCat("passkey.", p["context_tokens"].get<int64_t>())] =
            p["accuracy"].get<double>();
  for (const char* key : {"peak_rss_mb", "seconds"})
    if (report.contains(key) && report[key].is_number()) m[key] = report[key].get<double>();
  return m;
}

double Thresholds::LimitFor(const std::string& metric) const {
  if (auto it = limits.find(metric); it != limits.end()) return it->second;
  if (auto it = limits.find(MetricFamily(metric)); it != limits.end()) return it->second;
  return -1;
}

bool HigherIsBetter(const std::string& metric) { return MetricFamily(metric) == "passkey"; }

absl::Status ParseThreshold(const std::string& spec, Thresholds* thresholds) {
  const size_t eq = spec.find('=');
  if (eq == std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat(
        "--threshold: expected metric=limit (e.g. val.loss=0.02), got \"", spec, "\""));
  const std::string metric = spec.substr(0, eq), text = spec.substr(eq + 1);
  int64_t tokens = 0;
  const bool passkey_length =
      metric.rfind("passkey.", 0) == 0 && absl::SimpleAtoi(metric.substr(8), &tokens) && tokens > 0;
  if (!thresholds->limits.count(metric) && !passkey_length) {
    std::vector<std::string> known;
    for (const auto& [name, limit] : Thresholds().limits) known.push_back(name);
    return absl::InvalidArgumentError(
        absl::StrCat("--threshold ", spec, ": unknown metric \"", metric,
                     "\" (known: ", absl::StrJoin(known, ", "), ", passkey.<context tokens>)"));
  }
  double limit = -1;
  if (text != "off" && (!absl::SimpleAtod(text, &limit) || !(limit >= 0)))
    return absl::InvalidArgumentError(
        absl::StrCat("--threshold ", spec, ": expected a limit >= 0 or off, got \"", text, "\""));
  thresholds->limits[metric] = limit;
  return absl::OkStatus();
}

std::string Regression::ToString() const {
  return absl::StrFormat("%s [%s]: %s %.6g -> %.6g (%s, limit %s) against %s", run, suite, metric,
                         previous, current, ChangeText(metric, previous, current),
                         LimitText(metric, limit), previous_time);
}

std::vector<Regression> FindRegressions(const HistoryEntry& previous, const HistoryEntry& current,
                                        const Thresholds& thresholds) {
  std::vector<Regression> out;
  for (const auto& [metric, value] : current.metrics) {
    const double limit = thresholds.LimitFor(metric);
    if (limit < 0) continue;
    const std::optional<double> before = MetricOf(previous, metric);
    if (!before || !std::isfinite(*before)) continue;
    bool worse;
    if (!std::isfinite(value)) {
      worse = true;
    } else if (HigherIsBetter(metric)) {
      worse = *before - value > limit + 1e-12;
    } else {
      worse = (value - *before) / std::max(std::fabs(*before), 1e-12) > limit + 1e-12;
    }
    if (!worse) continue;
    Regression r;
    r.run = current.run;
    r.suite = current.suite;
    r.metric = metric;
    r.previous = *before;
    r.current = value;
    r.limit = limit;
    r.previous_time = previous.time;
    out.push_back(std::move(r));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// History

std::optional<double> MetricOf(const HistoryEntry& entry, const std::string& metric) {
  auto it = entry.metrics.find(metric);
  if (it == entry.metrics.end()) return std::nullopt;
  return it->second;
}

Json EntryToJson(const HistoryEntry& e) {
  Json metrics = Json::object();
  for (const auto& [name, value] : e.metrics) metrics[name] = value;
  return {{"time", e.time},
          {"run", e.run},
          {"suite", e.suite},
          {"checkpoint", e.checkpoint},
          {"checkpoint_id", e.checkpoint_id},
          {"step", e.step},
          {"report", e.report},
          {"metrics", metrics}};
}

absl::StatusOr<HistoryEntry> EntryFromJson(const Json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  HistoryEntry e;
  for (auto [key, field] :
       {std::pair{"time", &e.time}, std::pair{"run", &e.run}, std::pair{"suite", &e.suite},
        std::pair{"checkpoint", &e.checkpoint}, std::pair{"checkpoint_id", &e.checkpoint_id},
        std::pair{"report", &e.report}}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_string())
      return absl::InvalidArgumentError(absl::StrCat("\"", key, "\" is not a string"));
    *field = j[key].get<std::string>();
  }
  if (e.run.empty() || e.suite.empty())
    return absl::InvalidArgumentError("\"run\" and \"suite\" are required");
  if (j.contains("step") && j["step"].is_number_integer()) e.step = j["step"].get<int64_t>();
  if (!j.contains("metrics") || !j["metrics"].is_object())
    return absl::InvalidArgumentError("\"metrics\" must be an object");
  for (const auto& [name, value] : j["metrics"].items()) {
    if (value.is_number()) {
      e.metrics[name] = value.get<double>();
    } else if (value.is_null()) {
      e.metrics[name] = std::nan("");  // a NaN written by a diverged run
    } else {
      return absl::InvalidArgumentError(absl::StrCat("metric \"", name, "\" is not a number"));
    }
  }
  return e;
}

absl::StatusOr<std::vector<HistoryEntry>> ReadHistory(const std::string& path) {
  std::vector<HistoryEntry> entries;
  std::error_code ec;
  if (!fs::exists(path, ec)) return entries;
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  const std::vector<std::string> lines = absl::StrSplit(*text, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    const bool torn = i + 1 == lines.size();  // the text does not end with a newline
    Json j = Json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      if (torn) break;
      return absl::DataLossError(absl::StrCat(path, ":", i + 1, ": not a JSON line"));
    }
    absl::StatusOr<HistoryEntry> e = EntryFromJson(j);
    if (!e.ok())
      return absl::DataLossError(
          absl::StrCat(path, ":", i + 1, ": bad history entry: ", e.status().message()));
    entries.push_back(*std::move(e));
  }
  return entries;
}

absl::Status AppendHistory(const std::string& path, const std::vector<HistoryEntry>& entries) {
  std::string text;
  std::error_code ec;
  if (fs::exists(path, ec)) {
    absl::StatusOr<std::string> old = io::ReadFile(path);
    if (!old.ok()) return old.status();
    text = *std::move(old);
    text.resize(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);  // torn tail
  } else if (const fs::path parent = fs::path(path).parent_path(); !parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec)
      return absl::PermissionDeniedError(
          absl::StrCat(parent.string(), ": cannot create the folder: ", ec.message()));
  }
  for (const HistoryEntry& e : entries) text += EntryToJson(e).dump() + "\n";
  return io::WriteFileAtomic(path, text);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

namespace {

void FindRunDirs(const fs::path& dir, const fs::path& skip, int depth, std::vector<fs::path>* out) {
  std::error_code ec;
  std::vector<fs::path> children;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory(ec)) children.push_back(entry.path());
  std::sort(children.begin(), children.end());
  for (const fs::path& child : children) {
    if (fs::equivalent(child, skip, ec)) continue;
    if (IsDir(child / "checkpoints")) {
      out->push_back(child);
    } else if (depth < kMaxRunDepth) {
      FindRunDirs(child, skip, depth + 1, out);
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<RunCheckpoint>> FindRunCheckpoints(
    const std::string& runs_dir, const std::string& skip,
    const std::function<void(const std::string&)>& warn) {
  if (!IsDir(runs_dir)) return absl::NotFoundError(absl::StrCat(runs_dir, ": no such runs folder"));
  std::vector<fs::path> dirs;
  if (IsDir(fs::path(runs_dir) / "checkpoints"))
    dirs.push_back(runs_dir);  // a single run
  else
    FindRunDirs(runs_dir, skip, 1, &dirs);
  std::vector<RunCheckpoint> out;
  for (const fs::path& dir : dirs) {
    RunCheckpoint rc;
    rc.run_dir = dir.string();
    rc.run = dir == fs::path(runs_dir) ? fs::absolute(dir).lexically_normal().filename().string()
                                       : dir.lexically_relative(runs_dir).generic_string();
    io::CheckpointOptions options;
    options.dir = (dir / "checkpoints").string();
    io::CheckpointManager manager(options);
    absl::StatusOr<std::string> latest = manager.LatestValid(warn);
    if (!latest.ok()) {
      if (warn)
        warn(absl::StrCat(rc.run, ": no valid checkpoint (", latest.status().message(), ")"));
      continue;
    }
    rc.checkpoint = *latest;
    absl::StatusOr<std::string> manifest =
        io::ReadFile((fs::path(*latest) / "manifest.json").string());
    if (!manifest.ok()) return manifest.status();
    rc.id = io::Sha256Hex(*manifest).substr(0, 16);
    Json j = Json::parse(*manifest, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("step") && j["step"].is_number_integer())
      rc.step = j["step"].get<int64_t>();
    out.push_back(std::move(rc));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The job

absl::StatusOr<NightlyResult> RunNightly(const NightlyOptions& options, std::ostream& log) {
  if (options.runs_dir.empty()) return absl::InvalidArgumentError("--runs is required");
  const std::string out_dir =
      options.out_dir.empty() ? (fs::path(options.runs_dir) / "nightly").string() : options.out_dir;
  NightlyResult result;
  result.history =
      options.history.empty() ? (fs::path(out_dir) / "history.jsonl").string() : options.history;
  const std::string now = options.now.empty() ? UtcNow() : options.now;

  // Suites first: a bad suite file is a config error before anything runs.
  std::vector<std::pair<std::string, std::string>> suites;  // (path, name)
  if (options.suites.empty()) suites.emplace_back("", eval::EvalSuite().name);
  for (const std::string& path : options.suites) {
    absl::StatusOr<eval::EvalSuite> suite = eval::LoadEvalSuite(path);
    if (!suite.ok()) return suite.status();
    suites.emplace_back(path, suite->name);
  }
  absl::StatusOr<std::vector<HistoryEntry>> history = ReadHistory(result.history);
  if (!history.ok()) return history.status();
  auto warn = [&](const std::string& w) { log << "warning: " << w << std::endl; };
  absl::StatusOr<std::vector<RunCheckpoint>> checkpoints =
      FindRunCheckpoints(options.runs_dir, out_dir, warn);
  if (!checkpoints.ok()) return checkpoints.status();
  log << "nightly " << now << ": " << checkpoints->size() << " run(s) with checkpoints under "
      << options.runs_dir << ", " << suites.size() << " suite(s)" << std::endl;

  auto evaluate = options.evaluate;
  if (!evaluate) {
    evaluate = [&](const RunCheckpoint& ckpt, const std::string& suite, const std::string& out,
                   std::ostream& elog) -> absl::StatusOr<Json> {
      eval::EvalRequest request;
      request.source.checkpoint = ckpt.checkpoint;
      request.suite = suite;
      request.out = out;
      request.plots = options.plots;
      absl::StatusOr<eval::EvalReport> report = eval::RunEval(request, elog);
      if (!report.ok()) return report.status();
      return eval::ReportToJson(*report);
    };
  }

  std::vector<HistoryEntry> all = *history;
  for (const RunCheckpoint& ckpt : *checkpoints) {
    for (const auto& suite_entry : suites) {
      const std::string& suite_path = suite_entry.first;
      const std::string& suite_name = suite_entry.second;
      const bool seen = std::any_of(all.begin(), all.end(), [&](const HistoryEntry& e) {
        return e.run == ckpt.run && e.suite == suite_name && e.checkpoint_id == ckpt.id;
      });
      if (seen && !options.reeval) {
        log << ckpt.run << " [" << suite_name << "]: step " << ckpt.step
            << " already evaluated, skipped" << std::endl;
        continue;
      }
      const std::string out = (fs::path(ckpt.run_dir) / "eval" / "nightly" /
                               absl::StrCat(fs::path(ckpt.checkpoint).filename().string(), ".",
                                            FileNamePart(suite_name), ".json"))
                                  .string();
      log << ckpt.run << " [" << suite_name << "]: evaluating " << ckpt.checkpoint << std::endl;
      absl::StatusOr<Json> report = evaluate(ckpt, suite_path, out, log);
      if (!report.ok()) {
        result.failures.push_back(
            absl::StrCat(ckpt.run, " [", suite_name, "]: ", report.status().message()));
        if (result.failure_code == absl::StatusCode::kOk)
          result.failure_code = report.status().code();
        log << "error: " << result.failures.back() << std::endl;
        continue;
      }
      HistoryEntry entry;
      entry.time = now;
      entry.run = ckpt.run;
      entry.suite = suite_name;
      entry.checkpoint = ckpt.checkpoint;
      entry.checkpoint_id = ckpt.id;
      entry.step = ckpt.step;
      entry.report = out;
      entry.metrics = ReportMetrics(*report);
      if (const HistoryEntry* previous = PreviousOf(all, entry.run, entry.suite)) {
        for (Regression& r : FindRegressions(*previous, entry, options.thresholds)) {
          log << "REGRESSION " << r.ToString() << std::endl;
          result.regressions.push_back(std::move(r));
        }
      }
      all.push_back(entry);
      result.added.push_back(std::move(entry));
    }
  }
  if (!result.added.empty())
    if (absl::Status s = AppendHistory(result.history, result.added); !s.ok()) return s;

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(out_dir, ": cannot create the dashboard folder: ", ec.message()));
  if (options.plots) result.plots = WriteTrendPlots(all, out_dir, log);
  result.dashboard = (fs::path(out_dir) / "dashboard.md").string();
  if (absl::Status s = io::WriteFileAtomic(
          result.dashboard, DashboardMarkdown(all, result, options.thresholds, result.plots, now));
      !s.ok())
    return s;
  result.dashboard_html = (fs::path(out_dir) / "dashboard.html").string();
  if (absl::Status s = io::WriteFileAtomic(
          result.dashboard_html, DashboardHtml(all, result, options.thresholds, out_dir, now));
      !s.ok())
    return s;
  log << "nightly: " << result.added.size() << " new evaluation(s), " << result.regressions.size()
      << " regression(s), " << result.failures.size() << " failure(s); history " << result.history
      << ", dashboard " << result.dashboard << " and " << result.dashboard_html << std::endl;
  return result;
}

absl::Status NightlyStatus(const NightlyResult& result) {
  std::vector<std::string> parts;
  if (!result.regressions.empty()) {
    std::vector<std::string> r;
    for (const Regression& reg : result.regressions) r.push_back(reg.ToString());
    parts.push_back(
        absl::StrCat(result.regressions.size(),
                     " metric(s) regressed past their thresholds: ", absl::StrJoin(r, "; ")));
  }
  if (!result.failures.empty())
    parts.push_back(absl::StrCat(result.failures.size(),
                                 " evaluation(s) failed: ", absl::StrJoin(result.failures, "; ")));
  if (parts.empty()) return absl::OkStatus();
  const absl::StatusCode code =
      !result.regressions.empty() ? absl::StatusCode::kAborted : result.failure_code;
  return absl::Status(code, absl::StrCat("nightly: ", absl::StrJoin(parts, "; "),
                                         " (dashboard: ", result.dashboard, ")"));
}

}  // namespace fam::nightly
