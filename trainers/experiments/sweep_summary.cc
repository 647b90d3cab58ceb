#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "framework/io/atomic_file.h"
#include "nlohmann/json.hpp"
#include "trainers/experiments/sweep.h"
#include "trainers/experiments/sweep_internal.h"

namespace fam::sweep {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using sweep_internal::Exists;
using sweep_internal::ReadJsonFile;

struct RunMetrics {
  std::map<int64_t, Json> train;  // step → last train line of that step
  std::optional<double> val_loss, val_ppl;
};

RunMetrics ReadMetrics(const std::string& path) {
  RunMetrics m;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
    const std::string kind = j.value("kind", "");
    if (kind == "train" && j.contains("loss") && j["loss"].is_number()) {
      m.train[j["step"].get<int64_t>()] = j;
    } else if (kind == "eval" && j.contains("val_loss") && j["val_loss"].is_number()) {
      m.val_loss = j["val_loss"].get<double>();
      if (j.contains("val_ppl") && j["val_ppl"].is_number()) m.val_ppl = j["val_ppl"].get<double>();
    }
  }
  return m;
}

std::optional<double> Median(std::vector<double> v) {
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

std::string Opt(const std::optional<double>& v) { return v ? FormatNumber(*v) : ""; }
std::string OptFormat(const std::optional<double>& v, int decimals) {
  return v ? absl::StrFormat("%.*f", decimals, *v) : "–";
}

std::vector<int64_t> PasskeyLengths(const std::vector<CellSummary>& rows) {
  std::set<int64_t> lengths;
  for (const CellSummary& r : rows)
    for (const auto& [tokens, accuracy] : r.passkey) lengths.insert(tokens);
  return {lengths.begin(), lengths.end()};
}

// A string as a gnuplot string literal (double quotes; the few special characters dropped).
std::string GnuplotString(const std::string& text) {
  std::string out = "\"";
  for (char ch : text)
    if (ch != '"' && ch != '\\' && ch != '\n') out += ch;
  return out + "\"";
}

}  // namespace

std::vector<CellSummary> CollectSummary(const SweepConfig& sweep,
                                        const std::vector<SweepCell>& cells,
                                        const std::vector<RunConfig>& runs,
                                        const std::map<std::string, std::string>& failed) {
  std::vector<CellSummary> rows;
  for (size_t i = 0; i < cells.size(); ++i) {
    const RunConfig& run = runs[i];
    CellSummary row;
    row.cell = cells[i].name;
    row.values = cells[i].values;
    row.run_dir = run.RunPath();
    const CellStatus status = InspectCell(run, sweep.eval_enabled);
    row.state = failed.count(cells[i].name) ? CellState::kFailed : status.state;
    row.step = status.step;
    row.parameters = run.model.ParameterCount();
    const RunMetrics m = ReadMetrics((fs::path(run.RunPath()) / "metrics.jsonl").string());
    if (!m.train.empty()) {
      const Json& last = m.train.rbegin()->second;
      row.train_loss = last["loss"].get<double>();
      if (last.contains("elapsed_s") && last["elapsed_s"].is_number())
        row.train_seconds = last["elapsed_s"].get<double>();
      std::vector<double> tps;
      for (const auto& [step, j] : m.train)
        if (j.contains("tokens_per_s") && j["tokens_per_s"].is_number())
          tps.push_back(j["tokens_per_s"].get<double>());
      row.tokens_per_s = Median(tps);
    }
    row.val_loss = m.val_loss;
    row.val_ppl = m.val_ppl;
    if (std::optional<Json> report = ReadJsonFile(CellReportPath(run))) {
      const Json& val = (*report)["val"];
      if (val.is_object() && val.contains("loss") && val["loss"].is_number()) {
        row.val_loss = val["loss"].get<double>();
        row.val_ppl = val.contains("ppl") && val["ppl"].is_number()
                          ? std::optional<double>(val["ppl"].get<double>())
                          : std::nullopt;
      }
      if (report->contains("passkey") && (*report)["passkey"].is_array())
        for (const Json& p : (*report)["passkey"])
          if (p.is_object() && p.contains("context_tokens") && p.contains("accuracy") &&
              p["context_tokens"].is_number_integer() && p["accuracy"].is_number())
            row.passkey[p["context_tokens"].get<int64_t>()] = p["accuracy"].get<double>();
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string SummaryCsv(const SweepConfig& sweep, const std::vector<CellSummary>& rows) {
  const std::vector<int64_t> lengths = PasskeyLengths(rows);
  std::vector<std::string> header = {"cell"};
  for (const SweepAxis& a : sweep.axes) header.push_back(CsvField(a.label));
  for (const char* h : {"status", "step", "train_loss", "val_loss", "val_ppl"}) header.push_back(h);
  for (int64_t n : lengths) header.push_back(absl::StrCat("passkey_", n));
  for (const char* h : {"tokens_per_s", "parameters", "train_seconds"}) header.push_back(h);
  std::string csv = absl::StrJoin(header, ",") + "\n";
  for (const CellSummary& r : rows) {
    std::vector<std::string> f = {CsvField(r.cell)};
    for (const std::string& v : r.values) f.push_back(CsvField(v));
    f.push_back(CellStateName(r.state));
    f.push_back(r.step > 0 ? std::to_string(r.step) : "");
    f.push_back(Opt(r.train_loss));
    f.push_back(Opt(r.val_loss));
    f.push_back(Opt(r.val_ppl));
    for (int64_t n : lengths) {
      auto it = r.passkey.find(n);
      f.push_back(it == r.passkey.end() ? "" : FormatNumber(it->second));
    }
    f.push_back(Opt(r.tokens_per_s));
    f.push_back(std::to_string(r.parameters));
    f.push_back(Opt(r.train_seconds));
    csv += absl::StrJoin(f, ",") + "\n";
  }
  return csv;
}

std::string SummaryMarkdown(const SweepConfig& sweep, const std::vector<CellSummary>& rows,
                            const std::vector<std::string>& plots) {
  std::map<CellState, int> counts;
  for (const CellSummary& r : rows) ++counts[r.state];
  std::string md = absl::StrCat("# Sweep ", sweep.name, "\n\n- sweep file: `", sweep.source,
                                "`; base experiment: `", sweep.experiment, "`\n");
  for (const SweepAxis& a : sweep.axes)
    absl::StrAppend(&md, "- axis `", a.key, "`: ", absl::StrJoin(a.shown, ", "), "\n");
  std::vector<std::string> states;
  for (CellState s : {CellState::kDone, CellState::kTrained, CellState::kPartial,
                      CellState::kPending, CellState::kFailed})
    if (counts[s] > 0) states.push_back(absl::StrCat(counts[s], " ", CellStateName(s)));
  absl::StrAppend(&md, "- cells: ", rows.size(), " (", absl::StrJoin(states, ", "), ")\n");
  absl::StrAppend(&md, "- eval: ",
                  !sweep.eval_enabled        ? "off"
                  : sweep.eval_suite.empty() ? "default suite"
                                             : absl::StrCat("`", sweep.eval_suite, "`"),
                  "; val loss/ppl come from the eval report, else from training's last "
                  "validation; tok/s is the median over the run's train lines\n\n");
  const std::vector<int64_t> lengths = PasskeyLengths(rows);
  md += "| cell |";
  for (const SweepAxis& a : sweep.axes) absl::StrAppend(&md, " ", a.label, " |");
  md += " status | step | train loss | val loss | val ppl |";
  for (int64_t n : lengths) absl::StrAppend(&md, " PassKey ", n, " |");
  md += " tok/s | parameters | train s |\n|---|";
  for (size_t i = 0; i < sweep.axes.size() + 5 + lengths.size() + 3; ++i) md += "---|";
  md += "\n";
  for (const CellSummary& r : rows) {
    absl::StrAppend(&md, "| ", r.cell, " |");
    for (const std::string& v : r.values) absl::StrAppend(&md, " ", v, " |");
    absl::StrAppend(&md, " ", CellStateName(r.state), " | ", r.step, " | ",
                    OptFormat(r.train_loss, 4), " | ", OptFormat(r.val_loss, 4), " | ",
                    OptFormat(r.val_ppl, 2), " |");
    for (int64_t n : lengths) {
      auto it = r.passkey.find(n);
      absl::StrAppend(&md, " ",
                      it == r.passkey.end() ? "–" : absl::StrFormat("%.0f%%", 100 * it->second),
                      " |");
    }
    absl::StrAppend(&md, " ", OptFormat(r.tokens_per_s, 0), " | ", r.parameters, " | ",
                    OptFormat(r.train_seconds, 1), " |\n");
  }
  if (!plots.empty()) {
    md += "\n## Plots\n\n";
    for (const std::string& png : plots) {
      const std::string file = fs::path(png).filename().string();
      absl::StrAppend(&md, "![", file, "](", file, ")\n");
    }
  }
  return md;
}

absl::StatusOr<SummaryFiles> WriteSummary(const SweepConfig& sweep,
                                          const std::vector<SweepCell>& cells,
                                          const std::vector<CellSummary>& rows, bool plots,
                                          std::ostream& log) {
  const fs::path dir(SweepDir(sweep));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(dir.string(), ": cannot create the sweep folder: ", ec.message()));
  SummaryFiles files;
  files.csv = (dir / "summary.csv").string();
  files.markdown = (dir / "summary.md").string();
  if (absl::Status s = io::WriteFileAtomic(files.csv, SummaryCsv(sweep, rows)); !s.ok()) return s;

  if (plots && sweep.plots && !rows.empty()) {
    std::string gp = absl::StrCat("# Plots of the sweep ", sweep.name,
                                  " (written by `fam sweep`; rerun with: gnuplot summary.gp)\n",
                                  "set terminal ", PngTerminal(), "\nset termoption noenhanced\n",
                                  "set grid\nset key outside right\n");
    std::vector<std::string> pngs;
    // 1. Val loss (else train loss) against the first axis; one line per other-axes combination.
    const bool have_val = std::any_of(rows.begin(), rows.end(),
                                      [](const CellSummary& r) { return r.val_loss.has_value(); });
    std::map<std::string, std::vector<size_t>> groups;  // other axes' values → rows
    std::vector<std::string> group_order;
    for (size_t i = 0; i < rows.size(); ++i) {
      std::vector<std::string> others;
      for (size_t a = 1; a < sweep.axes.size(); ++a)
        others.push_back(absl::StrCat(sweep.axes[a].label, "=", cells[i].values[a]));
      const std::string key = others.empty() ? "all" : absl::StrJoin(others, ", ");
      if (!groups.count(key)) group_order.push_back(key);
      groups[key].push_back(i);
    }
    std::string dat, plot;
    int block = 0;
    for (const std::string& key : group_order) {
      std::string lines;
      for (size_t i : groups[key]) {
        const std::optional<double>& v = have_val ? rows[i].val_loss : rows[i].train_loss;
        if (!v || sweep.axes.empty()) continue;
        const SweepAxis& x = sweep.axes[0];
        const size_t pos =
            std::find(x.shown.begin(), x.shown.end(), cells[i].values[0]) - x.shown.begin();
        absl::StrAppend(&lines, pos, " ", GnuplotString(cells[i].values[0]), " ", FormatNumber(*v),
                        "\n");
      }
      if (lines.empty()) continue;
      absl::StrAppend(&dat, block > 0 ? "\n\n" : "", lines);
      absl::StrAppend(
          &plot, block > 0 ? ", " : "", "'summary.val.dat' index ", block,
          " using 1:3:xtic(2) with linespoints linewidth 2 pointtype 7 ",
          group_order.size() == 1 ? std::string("notitle") : "title " + GnuplotString(key));
      ++block;
    }
    if (block > 0) {
      if (absl::Status s = io::WriteFileAtomic((dir / "summary.val.dat").string(), dat); !s.ok())
        return s;
      absl::StrAppend(&gp, "set output 'summary.val.png'\nset title ",
                      GnuplotString(absl::StrCat(sweep.name, ": ",
                                                 have_val ? "validation" : "final train", " loss")),
                      "\nset xlabel ", GnuplotString(sweep.axes[0].key), "\nset ylabel ",
                      GnuplotString(have_val ? "val loss (nats)" : "train loss (nats)"),
                      "\nset xrange [-0.5:", sweep.axes[0].shown.size() - 0.5, "]\nplot ", plot,
                      "\nunset xrange\nset xtics autofreq\n");
      pngs.push_back((dir / "summary.val.png").string());
    }
    // 2. Train loss curves.
    dat.clear();
    plot.clear();
    block = 0;
    for (const CellSummary& r : rows) {
      const RunMetrics m = ReadMetrics((fs::path(r.run_dir) / "metrics.jsonl").string());
      if (m.train.empty()) continue;
      absl::StrAppend(&dat, block > 0 ? "\n\n" : "");
      for (const auto& [step, j] : m.train)
        absl::StrAppend(&dat, step, " ", FormatNumber(j["loss"].get<double>()), "\n");
      absl::StrAppend(&plot, block > 0 ? ", " : "", "'summary.loss.dat' index ", block,
                      " using 1:2 with linespoints linewidth 1.5 pointtype 7 pointsize 0.4 title ",
                      GnuplotString(r.cell));
      ++block;
    }
    if (block > 0) {
      if (absl::Status s = io::WriteFileAtomic((dir / "summary.loss.dat").string(), dat); !s.ok())
        return s;
      absl::StrAppend(&gp, "set output 'summary.loss.png'\nset title ",
                      GnuplotString(sweep.name + ": train loss"),
                      "\nset xlabel \"step\"\nset ylabel \"cross-entropy (nats)\"\nplot ", plot,
                      "\n");
      pngs.push_back((dir / "summary.loss.png").string());
    }
    // 3. PassKey accuracy against context length.
    dat.clear();
    plot.clear();
    block = 0;
    for (const CellSummary& r : rows) {
      if (r.passkey.empty()) continue;
      absl::StrAppend(&dat, block > 0 ? "\n\n" : "");
      for (const auto& [tokens, accuracy] : r.passkey)
        absl::StrAppend(&dat, tokens, " ", FormatNumber(accuracy), "\n");
      absl::StrAppend(&plot, block > 0 ? ", " : "", "'summary.passkey.dat' index ", block,
                      " using 1:2 with linespoints linewidth 2 pointtype 7 title ",
                      GnuplotString(r.cell));
      ++block;
    }
    if (block > 0) {
      if (absl::Status s = io::WriteFileAtomic((dir / "summary.passkey.dat").string(), dat);
          !s.ok())
        return s;
      absl::StrAppend(&gp, "set output 'summary.passkey.png'\nset title ",
                      GnuplotString(sweep.name + ": PassKey retrieval"),
                      "\nset xlabel \"context length (tokens)\"\nset ylabel \"accuracy\"\n"
                      "set logscale x 2\nset yrange [-0.05:1.05]\nplot ",
                      plot, "\n");
      pngs.push_back((dir / "summary.passkey.png").string());
    }
    if (!pngs.empty()) {
      const std::string script = (dir / "summary.gp").string();
      if (absl::Status s = io::WriteFileAtomic(script, gp); !s.ok()) return s;
      const std::string warning = RunGnuplot(script);
      if (!warning.empty()) log << "warning: " << warning << std::endl;
      for (const std::string& png : pngs)
        if (Exists(png)) files.plots.push_back(png);
    }
  }
  if (absl::Status s =
          io::WriteFileAtomic(files.markdown, SummaryMarkdown(sweep, rows, files.plots));
      !s.ok())
    return s;
  return files;
}

std::string PngTerminal() {
  static const std::string terminal = [] {
    const int rc = std::system("gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1");
    return rc == 0 ? std::string("pngcairo size 900,520 font \"sans,10\"")
                   : std::string("png size 900,520");
  }();
  return terminal;
}

std::string RunGnuplot(const std::string& script_path) {
  if (!OnPath("gnuplot")) return "gnuplot not found: skipping the plots (install gnuplot-nox)";
  const fs::path script(script_path);
  const std::string dir = script.parent_path().empty() ? "." : script.parent_path().string();
  const std::string log = script.filename().string() + ".log";
  const std::string command =
      absl::StrCat("cd ", ShellQuote(dir), " && gnuplot ", ShellQuote(script.filename().string()),
                   " >", ShellQuote(log), " 2>&1");
  const int rc = std::system(command.c_str());
  if (rc != 0)
    return absl::StrCat("gnuplot failed on ", script_path, " (see ", (fs::path(dir) / log).string(),
                        ")");
  std::error_code ec;
  fs::remove(fs::path(dir) / log, ec);
  return "";
}

std::string FormatNumber(double value) { return absl::StrFormat("%.10g", value); }

}  // namespace fam::sweep
