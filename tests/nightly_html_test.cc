// trainers/nightly_html: escaping, the page's regression table (rows, or the "no regressions" row),
// its inline SVG trend charts and relative report links, on fabricated nights of `fam nightly`;
// then the page in headless Chromium (skipped without it): it loads without script errors (the
// page's own marker data-loaded="ok", no data-error) and shows the regression rows, and a page
// with a broken script is caught by the same check.
#include "trainers/experiments/nightly_html.h"

#include <stdlib.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "framework/io/checkpoint.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"
#include "trainers/experiments/sweep.h"

namespace fam::nightly {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

using testing::Slurp;
using testing::Spit;

Json Report(double val_loss, double passkey) {
  return {
      {"step", 1},
      {"val", {{"loss", val_loss}, {"ppl", std::exp(val_loss)}, {"tokens", 100}}},
      {"passkey", Json::array({{{"context_tokens", 64}, {"trials", 4}, {"accuracy", 1.0}},
                               {{"context_tokens", 128}, {"trials", 4}, {"accuracy", passkey}}})}};
}

std::string Count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return std::to_string(n);
}

// The Chromium binary on PATH ("" when there is none).
std::string Chromium() {
  for (const char* name : {"chromium", "chromium-browser"})
    if (OnPath(name)) return name;
  return "";
}

// `chromium --headless --dump-dom` of a file: the DOM after the page's load event.
std::string DumpDom(const std::string& chromium, const fs::path& page, const fs::path& profile) {
  const std::string cmd = absl::StrCat(
      "timeout 120 ", chromium, " --headless --disable-gpu --no-sandbox --no-first-run ",
      "--user-data-dir=", ShellQuote(profile.string()), " --dump-dom ",
      ShellQuote("file://" + fs::absolute(page).string()), " 2>/dev/null");
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  pclose(pipe);
  return out;
}

// The DOM without its <script> elements (their source names the markers too).
std::string WithoutScripts(std::string dom) {
  for (size_t at; (at = dom.find("<script>")) != std::string::npos;) {
    const size_t end = dom.find("</script>", at);
    dom.erase(at, end == std::string::npos ? std::string::npos : end + 9 - at);
  }
  return dom;
}

TEST(NightlyHtml, EscapesTextAndUrls) {
  EXPECT_EQ(HtmlEscape("a<b>&\"c\"'d'"), "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;");
  EXPECT_EQ(UrlPath("../runs/a b/#1%.json"), "../runs/a%20b/%231%25.json");
}

TEST(NightlyHtml, NoRegressionsRowAndEscapedNames) {
  HistoryEntry e;
  e.time = "2024-05-01T02:00:00Z";
  e.run = "ab<lation>&co";
  e.suite = "default";
  e.metrics = {{"val.loss", 2.0}, {"val.ppl", 7.4}};
  NightlyResult result;
  result.added = {e};
  const std::string html = DashboardHtml({e}, result, Thresholds(), "/tmp", e.time);
  EXPECT_NE(html.find("<table id=\"regressions\">"), std::string::npos);
  EXPECT_NE(html.find("<tr class=\"none\"><td colspan=\"7\">No regressions"), std::string::npos);
  EXPECT_EQ(html.find("class=\"regression\""), std::string::npos);
  EXPECT_NE(html.find("ab&lt;lation&gt;&amp;co [default]"), std::string::npos);
  EXPECT_EQ(html.find("ab<lation>"), std::string::npos);
  // Self-contained: no external resource of any kind.
  for (const char* ref : {"src=\"http", "href=\"http", "<link", "@import", "url("})
    EXPECT_EQ(html.find(ref), std::string::npos) << ref;
  // One night, one point per chart that has the metric; PassKey has none here.
  EXPECT_NE(html.find("id=\"trend-val_loss\""), std::string::npos);
  EXPECT_NE(html.find("No evaluation has this metric yet"), std::string::npos);
}

class NightlyHtmlTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::FreshTestDir("fam_nightly_html_"); }
  void TearDown() override { fs::remove_all(dir_); }

  void SaveCheckpoint(const std::string& run, int64_t step, float value) {
    testing::SaveTinyCheckpoint(dir_ / "runs", run, step, value);
  }

  // Three nights of two runs; on the third, alpha's val loss and PassKey 128 regress. The
  // fabricated evaluation writes the report files the way `fam eval` does (.json and .md).
  NightlyResult ThreeNights() {
    std::map<std::string, Json> reports = {
        {"alpha@10", Report(2.0, 1.0)},  {"alpha@20", Report(1.9, 1.0)},
        {"alpha@30", Report(2.4, 0.25)}, {"beta@5", Report(3.0, 0.5)},
        {"beta@6", Report(2.8, 0.5)},    {"beta@7", Report(2.7, 0.75)}};
    NightlyOptions options;
    options.runs_dir = (dir_ / "runs").string();
    options.plots = false;
    options.evaluate = [&](const RunCheckpoint& ckpt, const std::string&, const std::string& out,
                           std::ostream&) -> absl::StatusOr<Json> {
      const Json report = reports.at(absl::StrCat(ckpt.run, "@", ckpt.step));
      Spit(out, report.dump());
      Spit(fs::path(out).replace_extension(".md"), "# report\n");
      return report;
    };
    std::ostringstream log;
    absl::StatusOr<NightlyResult> night;
    for (int n = 0; n < 3; ++n) {
      SaveCheckpoint("alpha", 10 * (n + 1), static_cast<float>(n));
      SaveCheckpoint("beta", 5 + n, static_cast<float>(n));
      options.now = absl::StrCat("2024-05-0", n + 1, "T02:00:00Z");
      night = RunNightly(options, log);
      EXPECT_TRUE(night.ok()) << night.status();
    }
    return night.ok() ? *night : NightlyResult();
  }

  fs::path dir_;
};

TEST_F(NightlyHtmlTest, RegressionsFirstThenTrendsThenReportLinks) {
  const NightlyResult night = ThreeNights();
  ASSERT_EQ(night.regressions.size(), 2u);
  EXPECT_EQ(night.dashboard_html, (dir_ / "runs" / "nightly" / "dashboard.html").string());
  const std::string html = Slurp(night.dashboard_html);
  const size_t table = html.find("<table id=\"regressions\">");
  const size_t trends = html.find("<h2>Trends</h2>");
  const size_t reports = html.find("<h2>Reports</h2>");
  ASSERT_NE(table, std::string::npos);
  EXPECT_LT(table, trends);
  EXPECT_LT(trends, reports);
  EXPECT_EQ(Count(html, "<tr class=\"regression\">"), "2");
  EXPECT_EQ(html.find("<tr class=\"none\">"), std::string::npos);
  EXPECT_NE(html.find("<tr class=\"regression\"><td>alpha</td><td>default</td><td>val.loss</td>"
                      "<td class=\"num\">1.9 <span class=\"when\">2024-05-02T02:00:00Z</span></td>"
                      "<td class=\"num\">2.4</td><td class=\"num change\">+26.3%</td>"
                      "<td class=\"num\">+2%</td></tr>"),
            std::string::npos)
      << html;
  EXPECT_NE(html.find("<td>passkey.128</td><td class=\"num\">1 <span class=\"when\">"),
            std::string::npos);
  EXPECT_NE(html.find("<td class=\"num change\">-0.75</td><td class=\"num\">-0.10</td>"),
            std::string::npos);
  // Three charts (the gnuplot plots' series), each an inline SVG with one line per run; alpha's
  // regressed points of tonight ringed in the loss and PassKey charts, not in perplexity.
  EXPECT_EQ(Count(html, "<svg "), "3");
  EXPECT_EQ(Count(html, "<polyline "), "6");
  EXPECT_EQ(Count(html, "class=\"regressed\""), "2");
  for (const char* id : {"trend-val_loss", "trend-val_ppl", "trend-passkey"})
    EXPECT_NE(html.find(absl::StrCat("id=\"", id, "\"")), std::string::npos) << id;
  EXPECT_NE(html.find("<title>alpha [default], 2024-05-03T02:00:00Z, step 30: 2.4</title>"),
            std::string::npos);
  // Report links relative to the dashboard folder, newest first.
  const std::string json = "../alpha/eval/nightly/step-00000030.default.json";
  const std::string md = "../alpha/eval/nightly/step-00000030.default.md";
  EXPECT_NE(html.find(absl::StrCat("<a href=\"", md, "\">report (.md)</a> · <a href=\"", json,
                                   "\">JSON</a>")),
            std::string::npos)
      << html;
  EXPECT_LT(html.find(json), html.find("step-00000010.default.json"));
  EXPECT_TRUE(fs::exists(fs::path(night.dashboard_html).parent_path() / json));
  EXPECT_NE(html.find("<a href=\"dashboard.md\">dashboard.md</a>"), std::string::npos);
}

TEST_F(NightlyHtmlTest, LoadsInHeadlessChromium) {
  const std::string chromium = Chromium();
  if (chromium.empty())
    GTEST_SKIP() << "chromium (or chromium-browser) is not on PATH: the dashboard.html browser "
                    "check is skipped (apt-get install chromium)";
  const NightlyResult night = ThreeNights();
  ASSERT_EQ(night.regressions.size(), 2u);
  const std::string dom = DumpDom(chromium, night.dashboard_html, dir_ / "profile");
  ASSERT_NE(dom.find("</html>"), std::string::npos) << "no DOM from " << chromium << ":\n" << dom;
  const std::string page = WithoutScripts(dom);
  EXPECT_NE(page.find("data-loaded=\"ok\""), std::string::npos) << page;
  EXPECT_EQ(page.find("data-error="), std::string::npos) << page;
  EXPECT_NE(page.find("data-regressions=\"2\""), std::string::npos) << page;
  EXPECT_NE(page.find("<table id=\"regressions\">"), std::string::npos);
  EXPECT_NE(page.find("<td>alpha</td><td>default</td><td>val.loss</td>"), std::string::npos);
  EXPECT_NE(page.find("<td>alpha</td><td>default</td><td>passkey.128</td>"), std::string::npos);
  EXPECT_EQ(Count(page, "<svg "), "3");

  // The check catches a page whose script fails.
  std::string broken = Slurp(night.dashboard_html);
  broken.insert(broken.find("</body>"), "<script>notDefinedAnywhere();</script>\n");
  Spit(dir_ / "broken.html", broken);
  const std::string bad = WithoutScripts(DumpDom(chromium, dir_ / "broken.html", dir_ / "profile"));
  EXPECT_NE(bad.find("data-error=\""), std::string::npos) << bad;
  EXPECT_NE(bad.find("notDefinedAnywhere"), std::string::npos) << bad;
  EXPECT_EQ(bad.find("data-loaded=\"ok\""), std::string::npos) << bad;
}

}  // namespace
}  // namespace fam::nightly
