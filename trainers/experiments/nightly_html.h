// The nightly job's HTML dashboard (dashboard.html, next to dashboard.md): one self-contained page
// that needs no network, no gnuplot and no JS library. Tonight's regressions table comes first
// (id "regressions"), then an inline SVG trend chart per TrendMetrics() entry (one line per run
// and suite, drawn from the history), then each run's recent evaluations with relative links to
// their eval reports. A small inline script marks the page once it has loaded (body
// data-loaded="ok", data-regressions=<rows>) and records script errors (html data-error), so that
// a headless browser can check the page.
#pragma once

#include <string>
#include <vector>

#include "trainers/experiments/nightly.h"

namespace fam::nightly {

// Text for HTML element content and attribute values: & < > " ' as character references.
std::string HtmlEscape(const std::string& text);

// A file path as a URL path: bytes other than letters, digits, "-._~/" percent-encoded.
std::string UrlPath(const std::string& path);

// The page; `out_dir` is where it is written (report links are relative to it).
std::string DashboardHtml(const std::vector<HistoryEntry>& history, const NightlyResult& result,
                          const Thresholds& thresholds, const std::string& out_dir,
                          const std::string& now);

}  // namespace fam::nightly
