#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/io/atomic_file.h"
#include "trainers/eval/eval_internal.h"
#include "trainers/eval/evaluate.h"
#include "trainers/experiments/shell_words.h"

namespace fam::eval {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using eval_internal::Exists;
using eval_internal::kMiB;

}  // namespace

Json ReportToJson(const EvalReport& report) {
  Json j;
  j["checkpoint"] = report.checkpoint;
  j["step"] = report.step ? Json(*report.step) : Json(nullptr);
  if (report.val) {
    j["val"] = {{"loss", report.val->loss},
                {"ppl", report.val->ppl},
                {"tokens", report.val->tokens},
                {"sequences", report.val->sequences},
                {"mode", report.val->mode}};
  } else {
    j["val"] = nullptr;
  }
  j["passkey"] = Json::array();
  for (const PasskeyLengthResult& r : report.passkey) {
    Json trials = Json::array();
    for (const PasskeyTrial& t : r.results)
      trials.push_back({{"key", t.key},
                        {"depth", t.depth},
                        {"prompt_tokens", t.prompt_tokens},
                        {"answer", t.answer},
                        {"correct", t.correct}});
    j["passkey"].push_back({{"context_tokens", r.context_tokens},
                            {"trials", r.trials},
                            {"accuracy", r.accuracy},
                            {"mean_prompt_tokens", r.mean_prompt_tokens},
                            {"rss_before_mb", r.rss_before_mb},
                            {"rss_after_mb", r.rss_after_mb},
                            {"rss_max_mb", r.rss_max_mb},
                            {"peak_rss_mb", r.peak_rss_mb},
                            {"state_bytes", r.state_bytes},
                            {"seconds", r.seconds},
                            {"tokens_per_s", r.tokens_per_s},
                            {"results", trials}});
  }
  j["peak_rss_mb"] = report.peak_rss_mb;
  j["seconds"] = report.seconds;
  j["model"] = report.model;
  j["suite"] = report.suite;
  return j;
}

std::string ReportToMarkdown(const EvalReport& report) {
  std::string md = "# Evaluation report\n\n";
  absl::StrAppend(&md, "- checkpoint: `", report.checkpoint, "`");
  if (report.step) absl::StrAppend(&md, " (step ", *report.step, ")");
  md += "\n";
  const Json& m = report.model;
  if (m.contains("attention")) {
    absl::StrAppendFormat(&md, "- model: %s attention, %d layers, d_model %d, %d parameters",
                          m.value("attention", ""), m.value("n_layers", 0), m.value("d_model", 0),
                          m.value("parameters", int64_t{0}));
    if (m.value("attention", "") != "full")
      absl::StrAppendFormat(&md, ", block %d, memory segments %d", m.value("block_size", 0),
                            m.value("memory_segments", 0));
    if (m.value("attention", "") == "fam")
      absl::StrAppendFormat(&md, ", FAM length %d", m.value("fam_length", 0));
    md += "\n";
  }
  absl::StrAppendFormat(&md, "- suite: %s; %.1f s; peak RSS %.1f MB\n\n", report.suite,
                        report.seconds, report.peak_rss_mb);
  md += "## Validation\n\n";
  if (report.val) {
    md += "| mode | sequences | tokens | loss | perplexity |\n|---|---|---|---|---|\n";
    absl::StrAppendFormat(&md, "| %s | %d | %d | %.4f | %.2f |\n\n", report.val->mode,
                          report.val->sequences, report.val->tokens, report.val->loss,
                          report.val->ppl);
  } else {
    md += "No validation data.\n\n";
  }
  md += "## PassKey retrieval\n\n";
  if (report.passkey.empty()) {
    md += "Not run.\n\n";
  } else {
    md +=
        "| context tokens | trials | accuracy | prompt tokens | RSS before → after (MB) | "
        "max RSS (MB) | state (MB) | seconds | tok/s |\n"
        "|---|---|---|---|---|---|---|---|---|\n";
    for (const PasskeyLengthResult& r : report.passkey)
      absl::StrAppendFormat(
          &md, "| %d | %d | %.0f%% | %.0f | %.1f → %.1f | %.1f | %.2f | %.1f | %.0f |\n",
          r.context_tokens, r.trials, 100 * r.accuracy, r.mean_prompt_tokens, r.rss_before_mb,
          r.rss_after_mb, r.rss_max_mb, r.state_bytes / kMiB, r.seconds, r.tokens_per_s);
    md += "\n";
  }
  return md;
}

absl::StatusOr<LossCurves> ReadLossCurves(const std::string& metrics_jsonl) {
  std::ifstream in(metrics_jsonl);
  if (!in) return absl::NotFoundError(absl::StrCat(metrics_jsonl, ": cannot open"));
  LossCurves curves;
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;
    const std::string kind = j.value("kind", "");
    if (kind == "train" && j.contains("loss") && j["loss"].is_number())
      absl::StrAppend(&curves.train, j["step"].get<int64_t>(), " ", j["loss"].get<double>(), "\n");
    if (kind == "eval" && j.contains("val_loss") && j["val_loss"].is_number())
      absl::StrAppend(&curves.val, j["step"].get<int64_t>(), " ", j["val_loss"].get<double>(),
                      "\n");
  }
  return curves;
}

namespace {

// scripts/plot_report.sh: under $FAM_SOURCE_DIR, or upward from the working directory or from
// the executable's folder. "" when not found.
std::string FindPlotScript() {
  const fs::path rel = fs::path("scripts") / "plot_report.sh";
  if (const char* env = std::getenv("FAM_SOURCE_DIR"); env != nullptr && *env != '\0')
    if (Exists(fs::path(env) / rel)) return (fs::path(env) / rel).string();
  std::error_code ec;
  std::vector<fs::path> starts = {fs::current_path(ec)};
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(exe.parent_path());
  for (fs::path dir : starts) {
    while (!dir.empty()) {
      if (Exists(dir / rel)) return (dir / rel).string();
      if (dir == dir.parent_path()) break;
      dir = dir.parent_path();
    }
  }
  return "";
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  return io::WriteFileAtomic(path, text);
}

}  // namespace

absl::StatusOr<ReportFiles> WriteReport(const EvalReport& report, const std::string& out,
                                        const std::string& metrics_jsonl, bool plots,
                                        const std::function<void(const std::string&)>& warn) {
  ReportFiles files;
  files.json = out;
  std::string stem = out;
  if (fs::path(out).extension() == ".json") stem = out.substr(0, out.size() - 5);
  files.markdown = stem + ".md";
  std::error_code ec;
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(parent.string(), ": cannot create the report directory: ", ec.message()));

  // Plot data.
  bool have_data = false;
  if (!report.passkey.empty()) {
    std::string dat = "# context_tokens accuracy\n";
    for (const PasskeyLengthResult& r : report.passkey)
      absl::StrAppend(&dat, r.context_tokens, " ", r.accuracy, "\n");
    if (absl::Status s = WriteText(stem + ".passkey.dat", dat); !s.ok()) return s;
    have_data = true;
  }
  if (!metrics_jsonl.empty() && Exists(metrics_jsonl)) {
    absl::StatusOr<LossCurves> curves = ReadLossCurves(metrics_jsonl);
    if (curves.ok()) {
      if (absl::Status s = WriteText(stem + ".loss_train.dat", curves->train); !s.ok()) return s;
      if (absl::Status s = WriteText(stem + ".loss_val.dat", curves->val); !s.ok()) return s;
      have_data = have_data || !curves->train.empty() || !curves->val.empty();
    } else if (warn) {
      warn(std::string(curves.status().message()));
    }
  }
  if (plots && have_data) {
    const std::string script = FindPlotScript();
    if (!OnPath("gnuplot")) {
      if (warn) warn("gnuplot not found: skipping the plots (install gnuplot-nox)");
    } else if (script.empty()) {
      if (warn) warn("scripts/plot_report.sh not found (set FAM_SOURCE_DIR): skipping the plots");
    } else {
      const std::string command =
          absl::StrCat("bash ", ShellQuote(script), " ", ShellQuote(stem), " >/dev/null");
      const int rc = std::system(command.c_str());
      if (rc != 0 && warn) warn(absl::StrCat("plotting failed: `", command, "` returned ", rc));
      for (const char* suffix : {".passkey.png", ".loss.png"})
        if (Exists(stem + suffix)) files.plots.push_back(stem + suffix);
    }
  }

  std::string md = ReportToMarkdown(report);
  if (!files.plots.empty()) {
    md += "## Plots\n\n";
    for (const std::string& png : files.plots)
      absl::StrAppend(&md, "![", fs::path(png).filename().string(), "](",
                      fs::path(png).filename().string(), ")\n");
  }
  if (absl::Status s = WriteText(files.markdown, md); !s.ok()) return s;
  if (absl::Status s = WriteText(out, ReportToJson(report).dump(2) + "\n"); !s.ok()) return s;
  return files;
}

}  // namespace fam::eval
