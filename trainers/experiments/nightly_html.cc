// dashboard.html of the nightly job: the page, its inline SVG trend charts and the report links.
#include "trainers/experiments/nightly_html.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iterator>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace fam::nightly {
namespace {

namespace fs = std::filesystem;

constexpr size_t kReportEntries = 10;  // recent evaluations listed per run and suite

// Chart geometry (SVG user units; the SVG scales to the page width).
constexpr double kWidth = 900, kHeight = 300;
constexpr double kLeft = 70, kRight = 20, kTop = 16, kBottom = 46;

// Tableau 10: distinguishable line colours, one per run and suite in order of appearance.
constexpr const char* kColours[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

std::string Colour(size_t series) { return kColours[series % std::size(kColours)]; }

std::string Num(double v) { return absl::StrFormat("%.1f", v); }

// Seconds since the epoch of "2024-05-01T02:00:00Z" (the seconds and the zone are optional).
std::optional<double> ParseUtc(const std::string& text) {
  std::tm tm{};
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  const int n = std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d", &year, &month, &day, &hour,
                            &minute, &second);
  if (n < 5) return std::nullopt;
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  return static_cast<double>(timegm(&tm));
}

std::string FormatUtc(double seconds, const char* format) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}

// A step of 1, 2, 2.5 or 5 times a power of ten giving at most `count` intervals over `span`.
double NiceStep(double span, int count) {
  const double raw = span / count;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 2.5, 5.0})
    if (raw <= m * power) return m * power;
  return 10 * power;
}

struct Point {
  double x = 0, y = 0;
  std::string tip;
  bool regressed = false;
};

struct Line {
  size_t colour = 0;
  std::vector<Point> points;
};

// A run and suite of `chart` regressed tonight: the point of tonight's entry is ringed.
bool Regressed(const NightlyResult& result, const HistoryEntry& e, const TrendMetric& chart) {
  const bool tonight = std::any_of(result.added.begin(), result.added.end(), [&](const auto& a) {
    return a.run == e.run && a.suite == e.suite && a.time == e.time && a.step == e.step;
  });
  return tonight && std::any_of(result.regressions.begin(), result.regressions.end(),
                                [&](const Regression& r) {
                                  return r.run == e.run && r.suite == e.suite &&
                                         MetricFamily(r.metric) == chart.family;
                                });
}

// One chart: the SVG and its legend, or a note when no entry has the metric.
std::string TrendFigure(const TrendMetric& chart, const std::vector<HistoryEntry>& history,
                        const std::vector<std::string>& series, const NightlyResult& result) {
  // Time on x when every entry's time reads as one; else the entries' order in the history.
  bool by_time = true;
  for (const HistoryEntry& e : history) by_time = by_time && ParseUtc(e.time).has_value();
  std::vector<Line> lines;
  std::vector<std::string> names;
  for (size_t s = 0; s < series.size(); ++s) {
    Line line;
    line.colour = s;
    for (size_t i = 0; i < history.size(); ++i) {
      const HistoryEntry& e = history[i];
      if (SeriesName(e) != series[s]) continue;
      const std::optional<double> v = chart.value(e);
      if (!v || !std::isfinite(*v)) continue;
      Point p;
      p.x = by_time ? *ParseUtc(e.time) : static_cast<double>(i);
      p.y = *v;
      p.tip = absl::StrFormat("%s, %s, step %d: %.6g", series[s], e.time, e.step, *v);
      p.regressed = Regressed(result, e, chart);
      line.points.push_back(std::move(p));
    }
    if (line.points.empty()) continue;
    lines.push_back(std::move(line));
    names.push_back(series[s]);
  }
  const std::string id = absl::StrReplaceAll(chart.file, {{".", "-"}});
  std::string html = absl::StrCat("<figure class=\"trend\" id=\"", id, "\">\n<figcaption>",
                                  HtmlEscape(chart.title), "</figcaption>\n");
  if (lines.empty())
    return absl::StrCat(html, "<p class=\"empty\">No evaluation has this metric yet.</p>\n",
                        "</figure>\n");

  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Line& l : lines)
    for (const Point& p : l.points) {
      x0 = std::min(x0, p.x);
      x1 = std::max(x1, p.x);
      y0 = std::min(y0, p.y);
      y1 = std::max(y1, p.y);
    }
  if (chart.yrange) {
    y0 = std::min(y0, chart.yrange->first);
    y1 = std::max(y1, chart.yrange->second);
  } else {
    const double pad = y1 > y0 ? 0.08 * (y1 - y0) : std::max(0.05 * std::fabs(y0), 0.01);
    y0 -= pad;
    y1 += pad;
  }
  const double x_pad = x1 > x0 ? 0.03 * (x1 - x0) : (by_time ? 43200.0 : 1.0);
  x0 -= x_pad;
  x1 += x_pad;
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto sx = [&](double x) { return kLeft + (x - x0) / (x1 - x0) * pw; };
  auto sy = [&](double y) { return kTop + (y1 - y) / (y1 - y0) * ph; };

  absl::StrAppend(&html, "<svg viewBox=\"0 0 ", kWidth, " ", kHeight,
                  "\" role=\"img\" xmlns=\"http://www.w3.org/2000/svg\" aria-label=\"",
                  HtmlEscape(chart.title), "\">\n");
  // y grid and labels
  const double ystep = NiceStep(y1 - y0, 6);
  int decimals = 0;  // enough to tell the ticks apart (0.25 needs 2)
  while (decimals < 9 && std::fabs(std::round(ystep * std::pow(10.0, decimals)) -
                                   ystep * std::pow(10.0, decimals)) > 1e-6)
    ++decimals;
  for (double y = std::ceil(y0 / ystep - 1e-9) * ystep; y <= y1 + 1e-9 * ystep; y += ystep) {
    absl::StrAppend(&html, "<line class=\"grid\" x1=\"", Num(kLeft), "\" x2=\"",
                    Num(kWidth - kRight), "\" y1=\"", Num(sy(y)), "\" y2=\"", Num(sy(y)), "\"/>",
                    "<text class=\"tick\" x=\"", Num(kLeft - 6), "\" y=\"", Num(sy(y) + 4),
                    "\" text-anchor=\"end\">",
                    absl::StrFormat("%.*f", decimals, std::fabs(y) < 1e-12 ? 0.0 : y), "</text>\n");
  }
  // x grid and labels
  if (by_time) {
    const double hour = 3600, day = 86400;
    double step = 365 * day;
    for (double s : {hour, 3 * hour, 6 * hour, 12 * hour, day, 2 * day, 7 * day, 14 * day, 30 * day,
                     61 * day, 91 * day, 182 * day})
      if ((x1 - x0) / s <= 8) {
        step = s;
        break;
      }
    const char* format = step < day ? "%m-%d %H:%M" : step < 182 * day ? "%m-%d" : "%Y-%m";
    for (double x = std::ceil(x0 / step) * step; x <= x1; x += step)
      absl::StrAppend(&html, "<line class=\"grid\" x1=\"", Num(sx(x)), "\" x2=\"", Num(sx(x)),
                      "\" y1=\"", Num(kTop), "\" y2=\"", Num(kTop + ph), "\"/>",
                      "<text class=\"tick\" x=\"", Num(sx(x)), "\" y=\"", Num(kTop + ph + 18),
                      "\" text-anchor=\"middle\">", FormatUtc(x, format), "</text>\n");
  } else {
    const double step = std::max(1.0, NiceStep(x1 - x0, 6));
    for (double x = std::ceil(x0 / step) * step; x <= x1; x += step)
      absl::StrAppend(&html, "<text class=\"tick\" x=\"", Num(sx(x)), "\" y=\"",
                      Num(kTop + ph + 18), "\" text-anchor=\"middle\">#", x, "</text>\n");
  }
  absl::StrAppend(&html, "<rect class=\"frame\" x=\"", Num(kLeft), "\" y=\"", Num(kTop),
                  "\" width=\"", Num(pw), "\" height=\"", Num(ph), "\"/>\n");
  absl::StrAppend(&html, "<text class=\"axis\" x=\"", Num(kLeft + pw / 2), "\" y=\"",
                  Num(kHeight - 6), "\" text-anchor=\"middle\">",
                  by_time ? "evaluation time (UTC)" : "history entry", "</text>\n",
                  "<text class=\"axis\" transform=\"translate(16 ", Num(kTop + ph / 2),
                  ") rotate(-90)\" text-anchor=\"middle\">", HtmlEscape(chart.ylabel), "</text>\n");
  for (const Line& l : lines) {
    const std::string colour = Colour(l.colour);
    std::vector<std::string> xy;
    for (const Point& p : l.points) xy.push_back(absl::StrCat(Num(sx(p.x)), ",", Num(sy(p.y))));
    if (xy.size() > 1)
      absl::StrAppend(&html, "<polyline class=\"series\" stroke=\"", colour, "\" points=\"",
                      absl::StrJoin(xy, " "), "\"/>\n");
    for (const Point& p : l.points) {
      if (p.regressed)
        absl::StrAppend(&html, "<circle class=\"regressed\" cx=\"", Num(sx(p.x)), "\" cy=\"",
                        Num(sy(p.y)), "\" r=\"8\"/>");
      absl::StrAppend(&html, "<circle fill=\"", colour, "\" cx=\"", Num(sx(p.x)), "\" cy=\"",
                      Num(sy(p.y)), "\" r=\"4\"><title>", HtmlEscape(p.tip), "</title></circle>\n");
    }
  }
  html += "</svg>\n<ul class=\"legend\">";
  for (size_t i = 0; i < lines.size(); ++i)
    absl::StrAppend(&html,
                    "<li><span class=\"swatch\" style=\"background:", Colour(lines[i].colour),
                    "\"></span>", HtmlEscape(names[i]), "</li>");
  return absl::StrCat(html, "</ul>\n</figure>\n");
}

// A link to `target` relative to `base`, or the file's name alone when the file is missing.
std::string FileLink(const std::string& target, const std::string& base, const std::string& text) {
  std::error_code ec;
  if (target.empty() || !fs::exists(target, ec))
    return absl::StrCat("<span class=\"missing\" title=\"", HtmlEscape(target),
                        " (not found when the page was written)\">", HtmlEscape(text), "</span>");
  const fs::path to = fs::absolute(target, ec).lexically_normal();
  const fs::path from = fs::absolute(base, ec).lexically_normal();
  fs::path relative = to.lexically_relative(from);
  if (relative.empty()) relative = to;
  return absl::StrCat("<a href=\"", HtmlEscape(UrlPath(relative.generic_string())), "\">",
                      HtmlEscape(text), "</a>");
}

constexpr char kStyle[] = R"(body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;
color:#1d232a;margin:0 auto;max-width:1100px;padding:16px 24px 40px}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#57606a;margin:0 0 8px}.status{display:inline-block;padding:4px 10px;border-radius:4px;
font-weight:600}.status.bad{background:#ffebe9;color:#a40e26}.status.ok{background:#dafbe1;color:#116329}
table{border-collapse:collapse;width:100%;margin:4px 0}th,td{padding:5px 9px;text-align:left;
border-bottom:1px solid #e4e8ec;white-space:nowrap}th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
#regressions tr.regression td{background:#fff5f5}#regressions td.change{color:#a40e26;font-weight:600}
#regressions tr.none td{color:#116329;font-style:italic}.when{color:#57606a;font-size:12px}
.note{color:#57606a;font-size:13px}ul.failures li{color:#a40e26}
figure.trend{margin:14px 0 22px}figcaption{font-weight:600;margin-bottom:4px}
svg{width:100%;height:auto;display:block;background:#fff}
svg .grid{stroke:#e4e8ec;stroke-width:1}svg .frame{fill:none;stroke:#8c959f;stroke-width:1}
svg .tick{font-size:12px;fill:#57606a}svg .axis{font-size:13px;fill:#1d232a}
svg .series{fill:none;stroke-width:2.2}svg .regressed{fill:none;stroke:#cf222e;stroke-width:2.5}
ul.legend{list-style:none;padding:0;margin:4px 0 0 70px;display:flex;flex-wrap:wrap;gap:4px 18px}
.swatch{display:inline-block;width:14px;height:4px;margin:0 6px 3px 0;vertical-align:middle}
.missing{color:#8c959f}footer{margin-top:32px;color:#57606a;font-size:12px})";

// Runs first: window.onerror marks the page, and once loaded the body says how it went.
constexpr char kScript[] = R"((function () {
  var root = document.documentElement;
  window.onerror = function (message) {
    root.setAttribute('data-error', String(message));
  };
  window.addEventListener('load', function () {
    var rows = document.querySelectorAll('#regressions tbody tr.regression').length;
    document.body.setAttribute('data-regressions', String(rows));
    if (!root.hasAttribute('data-error')) document.body.setAttribute('data-loaded', 'ok');
  });
})();)";

}  // namespace

std::string HtmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

std::string UrlPath(const std::string& path) {
  std::string out;
  for (unsigned char ch : path) {
    if (std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '/')
      out += static_cast<char>(ch);
    else
      absl::StrAppendFormat(&out, "%%%02X", ch);
  }
  return out;
}

std::string DashboardHtml(const std::vector<HistoryEntry>& history, const NightlyResult& result,
                          const Thresholds& thresholds, const std::string& out_dir,
                          const std::string& now) {
  std::vector<std::string> series;
  for (const HistoryEntry& e : history)
    if (std::find(series.begin(), series.end(), SeriesName(e)) == series.end())
      series.push_back(SeriesName(e));
  const size_t n_reg = result.regressions.size();

  std::string html =
      absl::StrCat("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
                   "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                   "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n",
                   "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
                   "<title>Nightly evaluation ", HtmlEscape(now), "</title>\n<script>\n", kScript,
                   "\n</script>\n<style>\n", kStyle, "\n</style>\n</head>\n<body>\n");
  absl::StrAppend(&html, "<header>\n<h1>Nightly evaluation</h1>\n<p class=\"meta\">updated ",
                  HtmlEscape(now), " · ", result.added.size(), " new evaluation(s) tonight · ",
                  series.size(), " run(s) and suite(s) · history <code>",
                  HtmlEscape(result.history), "</code> (", history.size(), " entries)</p>\n");
  if (n_reg > 0)
    absl::StrAppend(&html, "<p class=\"status bad\">", n_reg, " regression(s) tonight</p>\n");
  else
    html += "<p class=\"status ok\">No regressions tonight</p>\n";
  if (!result.failures.empty())
    absl::StrAppend(&html, " <p class=\"status bad\">", result.failures.size(),
                    " failed evaluation(s)</p>\n");
  html += "</header>\n";

  // Regressions
  html +=
      "<section>\n<h2>Regressions</h2>\n<table id=\"regressions\">\n<thead><tr><th>run</th>"
      "<th>suite</th><th>metric</th><th>previous</th><th>now</th><th>change</th>"
      "<th>threshold</th></tr></thead>\n<tbody>\n";
  for (const Regression& r : result.regressions)
    absl::StrAppend(
        &html, "<tr class=\"regression\"><td>", HtmlEscape(r.run), "</td><td>", HtmlEscape(r.suite),
        "</td><td>", HtmlEscape(r.metric), "</td><td class=\"num\">",
        absl::StrFormat("%.6g", r.previous), " <span class=\"when\">", HtmlEscape(r.previous_time),
        "</span></td><td class=\"num\">", absl::StrFormat("%.6g", r.current),
        "</td><td class=\"num change\">",
        HtmlEscape(std::isfinite(r.current) ? ChangeText(r.metric, r.previous, r.current)
                                            : std::string("not finite")),
        "</td><td class=\"num\">", HtmlEscape(LimitText(r.metric, r.limit)), "</td></tr>\n");
  if (n_reg == 0)
    html +=
        "<tr class=\"none\"><td colspan=\"7\">No regressions: every checked metric is within its "
        "threshold of the previous evaluation.</td></tr>\n";
  std::vector<std::string> on, off;
  for (const auto& [metric, limit] : thresholds.limits)
    (limit < 0 ? off : on)
        .push_back(limit < 0 ? metric : absl::StrCat(metric, " ", LimitText(metric, limit)));
  absl::StrAppend(&html, "</tbody>\n</table>\n<p class=\"note\">Thresholds against the previous ",
                  "evaluation of the same run and suite: ", HtmlEscape(absl::StrJoin(on, ", ")));
  if (!off.empty())
    absl::StrAppend(&html, " (not checked: ", HtmlEscape(absl::StrJoin(off, ", ")), ")");
  html += ".</p>\n";
  if (!result.failures.empty()) {
    html += "<h3>Failed evaluations</h3>\n<ul class=\"failures\">\n";
    for (const std::string& f : result.failures)
      absl::StrAppend(&html, "<li>", HtmlEscape(f), "</li>\n");
    html += "</ul>\n";
  }
  html += "</section>\n";

  // Trends
  html += "<section>\n<h2>Trends</h2>\n";
  if (history.empty()) html += "<p class=\"empty\">No evaluations yet.</p>\n";
  for (const TrendMetric& chart : TrendMetrics())
    if (!history.empty()) html += TrendFigure(chart, history, series, result);
  html += "</section>\n";

  // Reports
  absl::StrAppend(&html, "<section id=\"reports\">\n<h2>Reports</h2>\n<p class=\"note\">The last ",
                  kReportEntries,
                  " evaluations of each run and suite, newest first; links are relative to this "
                  "page.</p>\n");
  for (const std::string& name : series) {
    std::vector<const HistoryEntry*> entries;
    for (const HistoryEntry& e : history)
      if (SeriesName(e) == name) entries.push_back(&e);
    absl::StrAppend(&html, "<h3>", HtmlEscape(name),
                    "</h3>\n<table class=\"reports\">\n<thead><tr><th>time</th><th>step</th>"
                    "<th>checkpoint</th><th>val loss</th><th>val ppl</th><th>PassKey (mean)</th>"
                    "<th>report</th></tr></thead>\n<tbody>\n");
    for (size_t k = 0; k < entries.size() && k < kReportEntries; ++k) {
      const HistoryEntry& e = *entries[entries.size() - 1 - k];
      const std::optional<double> loss = MetricOf(e, "val.loss"), ppl = MetricOf(e, "val.ppl"),
                                  mean = PasskeyMean(e.metrics);
      const std::string md =
          e.report.empty() ? "" : fs::path(e.report).replace_extension(".md").string();
      absl::StrAppend(&html, "<tr><td>", HtmlEscape(e.time), "</td><td class=\"num\">", e.step,
                      "</td><td><code>", HtmlEscape(e.checkpoint_id),
                      "</code></td><td class=\"num\">", loss ? absl::StrFormat("%.4f", *loss) : "–",
                      "</td><td class=\"num\">", ppl ? absl::StrFormat("%.2f", *ppl) : "–",
                      "</td><td class=\"num\">",
                      mean ? absl::StrFormat("%.0f%%", 100 * *mean) : "–", "</td><td>",
                      FileLink(md, out_dir, "report (.md)"), " · ",
                      FileLink(e.report, out_dir, "JSON"), "</td></tr>\n");
    }
    html += "</tbody>\n</table>\n";
  }
  if (series.empty()) html += "<p class=\"empty\">No runs evaluated yet.</p>\n";
  absl::StrAppend(
      &html, "</section>\n<footer>Written by <code>fam nightly</code> at ", HtmlEscape(now),
      "; the same results as text: ", FileLink(result.dashboard, out_dir, "dashboard.md"),
      ".</footer>\n</body>\n</html>\n");
  return html;
}

}  // namespace fam::nightly
