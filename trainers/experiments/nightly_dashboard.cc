// The markdown dashboard of the nightly job (dashboard.md), its gnuplot trend plots, and what both
// it and the HTML dashboard (nightly_html.cc) show: changes, thresholds, the trend series.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "framework/io/atomic_file.h"
#include "trainers/experiments/nightly.h"
#include "trainers/experiments/sweep.h"

namespace fam::nightly {
namespace {

namespace fs = std::filesystem;

constexpr size_t kRecentEntries = 10;

std::string Cell(const std::optional<double>& v, int decimals) {
  return v ? absl::StrFormat("%.*f", decimals, *v) : "–";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// What the dashboards show

std::string MetricFamily(const std::string& metric) {
  const size_t dot = metric.rfind('.');
  return metric.rfind("passkey.", 0) == 0 && dot != std::string::npos ? metric.substr(0, dot)
                                                                      : metric;
}

std::string SeriesName(const HistoryEntry& e) { return absl::StrCat(e.run, " [", e.suite, "]"); }

// Relative change for lower-is-better metrics, absolute for accuracies.
std::string ChangeText(const std::string& metric, double previous, double current) {
  if (HigherIsBetter(metric)) return absl::StrFormat("%+.2f", current - previous);
  if (previous == 0) return absl::StrFormat("%+g", current - previous);
  return absl::StrFormat("%+.1f%%", 100 * (current - previous) / std::fabs(previous));
}

std::string LimitText(const std::string& metric, double limit) {
  if (HigherIsBetter(metric)) return absl::StrFormat("-%.2f", limit);
  return absl::StrFormat("+%g%%", 100 * limit);
}

std::optional<double> PasskeyMean(const std::map<std::string, double>& metrics) {
  double sum = 0;
  int n = 0;
  for (const auto& [name, value] : metrics)
    if (MetricFamily(name) == "passkey") {
      sum += value;
      ++n;
    }
  if (n == 0) return std::nullopt;
  return sum / n;
}

const std::vector<TrendMetric>& TrendMetrics() {
  static const std::vector<TrendMetric> metrics = {
      {"trend.val_loss", "validation loss", "val loss (nats)", std::nullopt, "val.loss",
       [](const HistoryEntry& e) { return MetricOf(e, "val.loss"); }},
      {"trend.val_ppl", "validation perplexity", "val ppl", std::nullopt, "val.ppl",
       [](const HistoryEntry& e) { return MetricOf(e, "val.ppl"); }},
      {"trend.passkey", "PassKey accuracy (mean over lengths)", "accuracy", std::pair{-0.05, 1.05},
       "passkey", [](const HistoryEntry& e) { return PasskeyMean(e.metrics); }}};
  return metrics;
}

// ---------------------------------------------------------------------------------------------
// The markdown dashboard and its gnuplot trend plots

std::vector<std::string> WriteTrendPlots(const std::vector<HistoryEntry>& history,
                                         const std::string& out_dir, std::ostream& log) {
  std::vector<std::string> series;
  for (const HistoryEntry& e : history)
    if (std::find(series.begin(), series.end(), SeriesName(e)) == series.end())
      series.push_back(SeriesName(e));
  std::string gp = absl::StrCat(
      "# Trend plots of the nightly evaluation (written by `fam nightly`; rerun: gnuplot "
      "dashboard.gp)\nset terminal ",
      sweep::PngTerminal(),
      "\nset termoption noenhanced\nset grid\nset key outside right\nset xdata time\n"
      "set timefmt \"%Y-%m-%dT%H:%M:%S\"\nset format x \"%m-%d\\n%H:%M\"\n");
  std::vector<std::string> pngs;
  for (const TrendMetric& t : TrendMetrics()) {
    std::string dat, plot;
    int block = 0;
    for (const std::string& name : series) {
      std::string lines;
      for (const HistoryEntry& e : history) {
        if (SeriesName(e) != name) continue;
        const std::optional<double> v = t.value(e);
        if (!v || !std::isfinite(*v)) continue;
        absl::StrAppend(&lines, e.time.substr(0, 19), " ", sweep::FormatNumber(*v), "\n");
      }
      if (lines.empty()) continue;
      absl::StrAppend(&dat, block > 0 ? "\n\n" : "", lines);
      std::string title = name;
      title.erase(std::remove(title.begin(), title.end(), '"'), title.end());
      absl::StrAppend(&plot, block > 0 ? ", " : "", "'", t.file, ".dat' index ", block,
                      " using 1:2 with linespoints linewidth 2 pointtype 7 title \"", title, "\"");
      ++block;
    }
    if (block == 0) continue;
    if (absl::Status s = io::WriteFileAtomic((fs::path(out_dir) / (t.file + ".dat")).string(), dat);
        !s.ok()) {
      log << "warning: " << s.message() << std::endl;
      continue;
    }
    absl::StrAppend(&gp, "set output '", t.file, ".png'\nset title \"", t.title,
                    "\"\nset ylabel \"", t.ylabel, "\"\n",
                    !t.yrange ? std::string("set autoscale y")
                              : absl::StrCat("set yrange [", sweep::FormatNumber(t.yrange->first),
                                             ":", sweep::FormatNumber(t.yrange->second), "]"),
                    "\nplot ", plot, "\n");
    pngs.push_back((fs::path(out_dir) / (t.file + ".png")).string());
  }
  if (pngs.empty()) return {};
  const std::string script = (fs::path(out_dir) / "dashboard.gp").string();
  if (absl::Status s = io::WriteFileAtomic(script, gp); !s.ok()) {
    log << "warning: " << s.message() << std::endl;
    return {};
  }
  const std::string warning = sweep::RunGnuplot(script);
  if (!warning.empty()) log << "warning: " << warning << std::endl;
  std::vector<std::string> made;
  std::error_code ec;
  for (const std::string& png : pngs)
    if (fs::exists(png, ec)) made.push_back(png);
  return made;
}

std::string DashboardMarkdown(const std::vector<HistoryEntry>& history, const NightlyResult& result,
                              const Thresholds& thresholds, const std::vector<std::string>& plots,
                              const std::string& now) {
  std::vector<std::string> on, off;
  for (const auto& [metric, limit] : thresholds.limits)
    (limit < 0 ? off : on)
        .push_back(limit < 0 ? metric : absl::StrCat(metric, " ", LimitText(metric, limit)));
  std::string md = absl::StrCat("# Nightly evaluation\n\n- updated: ", now, "\n- history: `",
                                result.history, "` (", history.size(), " entries)\n",
                                "- regression thresholds against the previous evaluation of the "
                                "same run and suite: ",
                                absl::StrJoin(on, ", "));
  if (!off.empty()) absl::StrAppend(&md, " (not checked: ", absl::StrJoin(off, ", "), ")");
  md += "\n\n## Regressions\n\n";
  if (result.regressions.empty()) {
    md += "None tonight.\n";
  } else {
    absl::StrAppend(&md, "**", result.regressions.size(), " regression(s) tonight:**\n\n");
    for (const Regression& r : result.regressions) absl::StrAppend(&md, "- ", r.ToString(), "\n");
  }
  if (!result.failures.empty()) {
    md += "\n## Failed evaluations\n\n";
    for (const std::string& f : result.failures) absl::StrAppend(&md, "- ", f, "\n");
  }
  absl::StrAppend(&md, "\n## Latest results\n\n", result.added.size(),
                  " new evaluation(s) tonight.\n\n",
                  "| run | suite | time | step | val loss | val ppl | PassKey (mean) | "
                  "peak RSS (MB) | seconds | vs previous |\n"
                  "|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<std::string> series;
  for (const HistoryEntry& e : history)
    if (std::find(series.begin(), series.end(), SeriesName(e)) == series.end())
      series.push_back(SeriesName(e));
  for (const std::string& name : series) {
    std::vector<const HistoryEntry*> entries;
    for (const HistoryEntry& e : history)
      if (SeriesName(e) == name) entries.push_back(&e);
    const HistoryEntry& last = *entries.back();
    std::string vs = "first";
    if (entries.size() > 1) {
      const HistoryEntry& prev = *entries[entries.size() - 2];
      std::vector<std::string> changes;
      for (const auto& [metric, value] : last.metrics)
        if (auto p = MetricOf(prev, metric);
            p && (metric == "val.loss" || MetricFamily(metric) == "passkey"))
          changes.push_back(absl::StrCat(metric, " ", ChangeText(metric, *p, value)));
      vs = changes.empty() ? "–" : absl::StrJoin(changes, ", ");
    }
    const std::optional<double> mean = PasskeyMean(last.metrics);
    absl::StrAppend(&md, "| ", last.run, " | ", last.suite, " | ", last.time, " | ", last.step,
                    " | ", Cell(MetricOf(last, "val.loss"), 4), " | ",
                    Cell(MetricOf(last, "val.ppl"), 2), " | ",
                    mean ? absl::StrFormat("%.0f%%", 100 * *mean) : "–", " | ",
                    Cell(MetricOf(last, "peak_rss_mb"), 1), " | ",
                    Cell(MetricOf(last, "seconds"), 1), " | ", vs, " |\n");
  }
  if (!plots.empty()) {
    md += "\n## Trends\n\n";
    for (const std::string& png : plots) {
      const std::string file = fs::path(png).filename().string();
      absl::StrAppend(&md, "![", file, "](", file, ")\n");
    }
  }
  absl::StrAppend(&md, "\n## Recent history (last ", kRecentEntries, " per run and suite)\n");
  for (const std::string& name : series) {
    absl::StrAppend(&md, "\n### ", name,
                    "\n\n| time | step | checkpoint | val loss | val ppl | PassKey (mean) |\n"
                    "|---|---|---|---|---|---|\n");
    std::vector<const HistoryEntry*> entries;
    for (const HistoryEntry& e : history)
      if (SeriesName(e) == name) entries.push_back(&e);
    const size_t first = entries.size() > kRecentEntries ? entries.size() - kRecentEntries : 0;
    for (size_t i = first; i < entries.size(); ++i) {
      const HistoryEntry& e = *entries[i];
      const std::optional<double> mean = PasskeyMean(e.metrics);
      absl::StrAppend(&md, "| ", e.time, " | ", e.step, " | ", e.checkpoint_id, " | ",
                      Cell(MetricOf(e, "val.loss"), 4), " | ", Cell(MetricOf(e, "val.ppl"), 2),
                      " | ", mean ? absl::StrFormat("%.0f%%", 100 * *mean) : "–", " |\n");
    }
  }
  return md;
}

}  // namespace fam::nightly
