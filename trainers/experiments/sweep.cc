#include "trainers/experiments/sweep.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iostream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "nlohmann/json.hpp"
#include "trainers/eval/evaluate.h"
#include "trainers/experiments/sweep_internal.h"
#include "trainers/experiments/sweep_slurm.h"
#include "trainers/train/train_loop.h"

namespace fam::sweep::sweep_internal {

using Json = nlohmann::json;

std::optional<Json> ReadJsonFile(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return std::nullopt;
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  return j;
}

}  // namespace fam::sweep::sweep_internal

namespace fam::sweep {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using sweep_internal::Exists;
using sweep_internal::ReadJsonFile;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Cell state

const char* CellStateName(CellState state) {
  switch (state) {
    case CellState::kPending:
      return "pending";
    case CellState::kPartial:
      return "partial";
    case CellState::kTrained:
      return "trained";
    case CellState::kDone:
      return "done";
    case CellState::kFailed:
      return "failed";
  }
  return "?";
}

std::string FinalCheckpointPath(const RunConfig& run) {
  return (fs::path(run.RunPath()) / "checkpoints" / io::CheckpointDirName(run.trainer.steps))
      .string();
}

std::string CellReportPath(const RunConfig& run) {
  return (fs::path(run.RunPath()) / "eval" / (io::CheckpointDirName(run.trainer.steps) + ".json"))
      .string();
}

std::string CellConfigPath(const SweepConfig& sweep, const SweepCell& cell) {
  return (fs::path(SweepDir(sweep)) / "configs" / (cell.name + ".yaml")).string();
}

std::string CellComment(const SweepConfig& sweep, const SweepCell& cell) {
  std::vector<std::string> parts;
  for (size_t a = 0; a < sweep.axes.size(); ++a)
    parts.push_back(absl::StrCat(sweep.axes[a].key, "=", cell.values[a]));
  return absl::StrJoin(parts, " ");
}

CellStatus InspectCell(const RunConfig& run, bool eval_enabled) {
  CellStatus status;
  std::error_code ec;
  const fs::path dir = fs::path(run.RunPath()) / "checkpoints";
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 13 || name.rfind("step-", 0) != 0) continue;
    if (!std::all_of(name.begin() + 5, name.end(), [](char c) { return std::isdigit(c); }))
      continue;
    if (!Exists(entry.path() / "manifest.json")) continue;
    const int64_t step = std::stoll(name.substr(5));
    if (step > status.step) {
      status.step = step;
      status.checkpoint = entry.path().string();
    }
  }
  if (status.step == 0) return status;
  if (status.step < run.trainer.steps) {
    status.state = CellState::kPartial;
    return status;
  }
  status.state = CellState::kTrained;
  if (!eval_enabled) {
    status.state = CellState::kDone;
  } else if (std::optional<Json> report = ReadJsonFile(CellReportPath(run));
             report && report->contains("step")) {
    status.state = CellState::kDone;
  }
  return status;
}

// ---------------------------------------------------------------------------------------------
// `fam sweep`

namespace {

// The fam binary for scripts: this process's executable when it is `fam`, else "fam" (on PATH).
std::string SelfFam() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && exe.filename() == "fam") return exe.string();
  return "fam";
}

absl::Status WriteIfChanged(const std::string& path, const std::string& text) {
  absl::StatusOr<std::string> old = io::ReadFile(path);
  if (old.ok() && *old == text) return absl::OkStatus();
  return io::WriteFileAtomic(path, text);
}

}  // namespace

absl::StatusOr<SweepOutcome> RunSweep(const SweepRequest& request, std::ostream& log) {
  absl::StatusOr<SweepConfig> loaded = LoadSweepConfig(request.config);
  if (!loaded.ok()) return loaded.status();
  SweepConfig& sweep = *loaded;
  if (request.mode) sweep.mode = *request.mode;
  if (absl::Status s = ApplyLaunchFlags(request.launch, &sweep); !s.ok()) return s;
  if (absl::Status s = ResolveLaunchShape(&sweep); !s.ok()) return s;
  SweepOutcome outcome;
  absl::StatusOr<std::vector<SweepCell>> cells = ExpandSweep(sweep, request.overrides);
  if (!cells.ok()) return cells.status();
  outcome.cells = *cells;
  std::vector<RunConfig> runs;
  for (const SweepCell& cell : outcome.cells) {
    absl::StatusOr<RunConfig> run = CellRunConfig(sweep, cell);
    if (!run.ok()) return run.status();
    runs.push_back(*std::move(run));
  }
  const size_t n = outcome.cells.size();
  log << "sweep " << sweep.name << ": " << n << " cells in " << SweepDir(sweep) << std::endl;

  if (request.dry_run) {
    for (size_t i = 0; i < n; ++i) {
      const CellStatus st = InspectCell(runs[i], sweep.eval_enabled);
      log << absl::StrFormat("  [%d/%d] %s: %s (step %d of %d)  %s\n", i + 1, n,
                             outcome.cells[i].name, CellStateName(st.state), st.step,
                             runs[i].trainer.steps, CellComment(sweep, outcome.cells[i]));
    }
    log << std::flush;
    outcome.rows = CollectSummary(sweep, outcome.cells, runs);
    return outcome;
  }

  std::error_code ec;
  fs::create_directories(fs::path(SweepDir(sweep)) / "configs", ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(SweepDir(sweep), ": cannot create the sweep folder: ", ec.message()));
  if (!request.summary_only) {
    for (size_t i = 0; i < n; ++i)
      if (absl::Status s =
              WriteIfChanged(CellConfigPath(sweep, outcome.cells[i]), RunConfigToYaml(runs[i]));
          !s.ok())
        return s;
  }

  std::map<std::string, std::string> failed;
  absl::StatusCode first_failure = absl::StatusCode::kOk;
  auto fail = [&](const std::string& cell, const absl::Status& status) {
    log << "cell " << cell << " failed: " << status.message() << std::endl;
    failed[cell] = std::string(status.message());
    if (first_failure == absl::StatusCode::kOk) first_failure = status.code();
  };

  if (!request.summary_only && sweep.mode == SweepMode::kRun) {
    for (size_t i = 0; i < n && !outcome.interrupted; ++i) {
      const SweepCell& cell = outcome.cells[i];
      const RunConfig& run = runs[i];
      CellStatus st = InspectCell(run, sweep.eval_enabled);
      log << absl::StrFormat("[%d/%d] %s (%s): %s", i + 1, n, cell.name, CellComment(sweep, cell),
                             CellStateName(st.state));
      if (st.state == CellState::kPartial)
        log << " at step " << st.step << " of " << run.trainer.steps << ", resuming";
      log << std::endl;
      if (st.state == CellState::kDone) {
        ++outcome.skipped;
        continue;
      }
      if (st.state == CellState::kPending || st.state == CellState::kPartial) {
        absl::StatusOr<TrainResult> trained = RunTraining(run);
        if (!trained.ok()) {
          fail(cell.name, trained.status());
          continue;
        }
        ++outcome.trained;
        if (trained->interrupted) {
          outcome.interrupted = true;
          break;
        }
        st = InspectCell(run, sweep.eval_enabled);
        if (st.state != CellState::kTrained && st.state != CellState::kDone) {
          fail(cell.name, absl::InternalError(absl::StrCat("no checkpoint at step ",
                                                           run.trainer.steps, " after training")));
          continue;
        }
      }
      if (sweep.eval_enabled && st.state != CellState::kDone) {
        eval::EvalRequest er;
        er.source.checkpoint = st.checkpoint;
        er.suite = sweep.eval_suite;
        er.out = CellReportPath(run);
        er.plots = request.plots && sweep.plots;
        absl::StatusOr<eval::EvalReport> report = eval::RunEval(er, log);
        if (!report.ok()) {
          fail(cell.name, report.status());
          continue;
        }
        ++outcome.evaluated;
      }
    }
    log << absl::StrFormat("sweep %s: %d trained, %d evaluated, %d already done, %d failed%s\n",
                           sweep.name, outcome.trained, outcome.evaluated, outcome.skipped,
                           failed.size(), outcome.interrupted ? ", interrupted" : "")
        << std::flush;
  } else if (!request.summary_only) {
    ScriptContext context;
    context.workdir = fs::current_path(ec).string();
    context.fam = !request.fam.empty() ? request.fam : !sweep.fam.empty() ? sweep.fam : SelfFam();
    context.sweep_file = request.config;
    context.extra = request.overrides;
    const bool slurm = sweep.mode == SweepMode::kSlurm;
    outcome.script =
        (fs::path(SweepDir(sweep)) / (slurm ? "sweep.sbatch" : "sweep_mpirun.sh")).string();
    const std::string text = slurm ? SlurmScript(sweep, outcome.cells, runs, context)
                                   : MpirunScript(sweep, outcome.cells, runs, context);
    if (absl::Status s = io::WriteFileAtomic(outcome.script, text); !s.ok()) return s;
    fs::permissions(outcome.script,
                    fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::add, ec);
    if (slurm) fs::create_directories(fs::path(SweepDir(sweep)) / "logs", ec);
    log << "wrote " << outcome.script << "; run it with: " << (slurm ? "sbatch " : "bash ")
        << outcome.script << std::endl;
  }

  outcome.rows = CollectSummary(sweep, outcome.cells, runs, failed);
  absl::StatusOr<SummaryFiles> files =
      WriteSummary(sweep, outcome.cells, outcome.rows, request.plots, log);
  if (!files.ok()) return files.status();
  outcome.summary = *files;
  log << "summary: " << files->csv << ", " << files->markdown;
  for (const std::string& png : files->plots) log << ", " << fs::path(png).filename().string();
  log << std::endl;
  if (!failed.empty()) {
    std::vector<std::string> parts;
    for (const auto& [cell, message] : failed)
      parts.push_back(absl::StrCat(cell, " (", message, ")"));
    return absl::Status(first_failure,
                        absl::StrCat("sweep ", sweep.name, ": ", failed.size(), " of ", n,
                                     " cells failed: ", absl::StrJoin(parts, "; ")));
  }
  return outcome;
}

}  // namespace fam::sweep
