// Config-driven ablations (`fam sweep`). A sweep YAML names a base experiment, overrides for every
// cell (`set:`) and axes (dotted run-config keys → value lists); the cartesian product of the axes
// is the list of cells, each a run named after its values with its own resolved config. A sweep
// runs its cells one after the other in this process (train, then eval), or writes a Slurm job
// array / an mpirun script that does the same with `fam train` + `fam eval` lines. It is
// resumable: a cell whose run has its final checkpoint and its eval report is skipped, an
// interrupted one resumes from its newest checkpoint. The summary (CSV + markdown + gnuplot PNGs)
// joins each cell's training metrics with its eval report. See docs/evaluation.md.
// Sources: sweep_spec.cc (sweep files, run-config keys, expansion into cells), sweep.cc (cell
// state and RunSweep), sweep_summary.cc (summary tables and plots), sweep_slurm.cc (scripts).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/io/config_tree.h"
#include "trainers/experiments/shell_words.h"  // ShellQuote, OnPath: used by sweep and nightly callers
#include "trainers/train/run_config.h"

namespace fam::sweep {

enum class SweepMode { kRun, kSlurm, kMpirun };

struct SweepAxis {
  std::string key;                  // full run-config key: "model.attention.fam_length"
  std::string written;              // as written in the sweep: "attention.fam_length"
  std::string label;                // short name for cell names and tables: "fam_length"
  std::vector<std::string> values;  // YAML texts applied as `key=value` overrides
  std::vector<std::string> shown;   // the values as shown in names and tables
  SourceLoc loc;                    // where the axis key is written
};

struct SlurmOptions {
  std::string partition;  // "" = the cluster's default
  std::string account;
  std::string time = "02:00:00";
  int64_t cpus_per_task = 0;  // 0 = not set
  int64_t gpus_per_task = 0;
  int64_t max_parallel = 0;  // array throttle (%N); 0 = no limit
  // Multi-GPU cells: nodes × gpus_per_node ranks, one per GPU (0 = not set; when one of them is
  // set, the other defaults to 1). See trainers/experiments/sweep_slurm.h.
  int64_t nodes = 0;
  int64_t gpus_per_node = 0;
};

// `fam sweep` flags for the scripts; each one given replaces the sweep file's launch.slurm key.
struct LaunchFlags {
  std::optional<int64_t> nodes, gpus_per_node;
  std::optional<std::string> time, partition, account;
};

struct SweepConfig {
  std::string name;              // default: the sweep file's name without extension
  std::string source;            // the sweep file
  std::string experiment;        // base experiment YAML (resolved against the sweep file's folder)
  std::vector<std::string> set;  // "key=value" overrides for every cell, before the axes
  std::vector<SweepAxis> axes;   // the first axis varies slowest
  std::string name_pattern;      // "" = "<label>_<value>" joined by '-'
  SourceLoc name_pattern_loc;
  std::string run_dir;  // folder of the cells' runs; "" = <experiment's run_dir>/<name>
  bool eval_enabled = true;
  std::string eval_suite;  // eval suite YAML; "" = the built-in default suite
  SweepMode mode = SweepMode::kRun;
  int64_t ranks = 1;    // processes per cell in mpirun/slurm scripts (see CellRanks)
  SourceLoc ranks_loc;  // where launch.ranks is written; no file when it is not
  std::string fam;      // fam binary named in scripts; "" = this binary (or `fam`)
  std::string mpirun = "mpirun";
  SlurmOptions slurm;
  bool plots = true;  // summary plots through gnuplot
};

// Loads a sweep file (`base:` / `include:` inheritance allowed). Unknown keys, unknown axis or
// `set:` keys (not a run-config key, even with `model.` in front), empty axes and bad values are
// InvalidArgument naming the key with file:line:column.
absl::StatusOr<SweepConfig> LoadSweepConfig(const std::string& path);
// The same from YAML text standing for the file `source_name`.
absl::StatusOr<SweepConfig> ParseSweepConfig(const std::string& yaml,
                                             const std::string& source_name);
// The full run-config key of a key written in a sweep ("attention.type" → "model.attention.type"),
// or an InvalidArgument at `loc` naming `where`.`written` (with the closest key as a hint).
absl::StatusOr<std::string> ResolveRunKey(const std::string& written, const SourceLoc& loc,
                                          const std::string& where);

struct SweepCell {
  int64_t index = 0;
  std::string name;                    // the run name (a folder name)
  std::vector<std::string> values;     // one per axis, as written
  std::vector<std::string> overrides;  // set, extra, axes, then name and run_dir
};

// The folder of the cells' runs and of the sweep's files (configs/, scripts, summary).
std::string SweepDir(const SweepConfig& sweep);
// The cartesian product of the axes in order (a sweep without axes has one cell). `extra` are
// overrides for every cell (`fam sweep --set`), applied after `set:`; naming an axis key is an
// error. Duplicate cell names are an error naming both cells.
absl::StatusOr<std::vector<SweepCell>> ExpandSweep(const SweepConfig& sweep,
                                                   const std::vector<std::string>& extra = {});
// The cell's run config: the base experiment with the cell's overrides. Errors name the sweep
// file and the cell.
absl::StatusOr<RunConfig> CellRunConfig(const SweepConfig& sweep, const SweepCell& cell);

// ---- cell state ----

enum class CellState { kPending, kPartial, kTrained, kDone, kFailed };
const char* CellStateName(CellState state);  // pending, partial, trained, done, failed

struct CellStatus {
  CellState state = CellState::kPending;
  int64_t step = 0;        // step of the newest checkpoint with a manifest (0: none)
  std::string checkpoint;  // its directory
};

// <run>/checkpoints/step-<steps>: the checkpoint a finished cell ends with.
std::string FinalCheckpointPath(const RunConfig& run);
// <run>/eval/step-<steps>.json: where the sweep (and the scripts) put the cell's eval report.
std::string CellReportPath(const RunConfig& run);
// <sweep dir>/configs/<cell>.yaml: the resolved config of a cell.
std::string CellConfigPath(const SweepConfig& sweep, const SweepCell& cell);
// kDone: the final checkpoint and (when eval is enabled) a readable eval report; kTrained: the
// final checkpoint only; kPartial: an earlier checkpoint; kPending: none. Cheap: manifests are
// checked for presence (training verifies them when it resumes).
CellStatus InspectCell(const RunConfig& run, bool eval_enabled);

// The cell's axis values as "key=value key=value" (log lines and script comments).
std::string CellComment(const SweepConfig& sweep, const SweepCell& cell);

// The slurm and mpirun scripts (SlurmScript, MpirunScript) are in
// trainers/experiments/sweep_slurm.h.

// ---- summary ----

struct CellSummary {
  std::string cell;
  std::vector<std::string> values;  // one per axis
  CellState state = CellState::kPending;
  int64_t step = 0;
  std::optional<double> train_loss;  // last train line of metrics.jsonl
  std::optional<double> val_loss;    // the eval report's, else the last validation of training
  std::optional<double> val_ppl;
  std::map<int64_t, double> passkey;    // context tokens → accuracy (eval report)
  std::optional<double> tokens_per_s;   // median of the train lines' tokens_per_s
  int64_t parameters = 0;               // ModelConfig::ParameterCount()
  std::optional<double> train_seconds;  // elapsed_s of the last train line
  std::string run_dir;
};

// Reads every cell's metrics.jsonl and eval report. `failed` marks cells that failed in this
// invocation.
std::vector<CellSummary> CollectSummary(const SweepConfig& sweep,
                                        const std::vector<SweepCell>& cells,
                                        const std::vector<RunConfig>& runs,
                                        const std::map<std::string, std::string>& failed = {});
// Columns: cell, one per axis label, status, step, train_loss, val_loss, val_ppl,
// passkey_<tokens> (every length any cell has), tokens_per_s, parameters, train_seconds. Missing
// values are empty fields.
std::string SummaryCsv(const SweepConfig& sweep, const std::vector<CellSummary>& rows);
std::string SummaryMarkdown(const SweepConfig& sweep, const std::vector<CellSummary>& rows,
                            const std::vector<std::string>& plots);

struct SummaryFiles {
  std::string csv, markdown;
  std::vector<std::string> plots;
};
// Writes <sweep dir>/summary.csv, summary.md and, with plots and gnuplot, summary.val.png (val
// loss against the first axis, one line per combination of the others), summary.loss.png (train
// loss curves) and summary.passkey.png (accuracy against context length), from summary.*.dat
// files and the gnuplot script summary.gp left next to them.
absl::StatusOr<SummaryFiles> WriteSummary(const SweepConfig& sweep,
                                          const std::vector<SweepCell>& cells,
                                          const std::vector<CellSummary>& rows, bool plots,
                                          std::ostream& log);

// ---- `fam sweep` ----

struct SweepRequest {
  std::string config;                  // sweep YAML
  std::vector<std::string> overrides;  // --set for every cell
  std::optional<SweepMode> mode;       // overrides the file's mode
  bool summary_only = false;           // only collect and write the summary
  bool dry_run = false;                // list the cells and their states; write nothing
  bool plots = true;
  std::string fam;     // fam binary for scripts ("" = the sweep's `launch.fam`, else this binary)
  LaunchFlags launch;  // --nodes, --gpus-per-node, --time, --partition, --account
};

struct SweepOutcome {
  std::vector<SweepCell> cells;
  std::vector<CellSummary> rows;
  std::string script;  // slurm/mpirun: the script written
  SummaryFiles summary;
  int64_t trained = 0, evaluated = 0, skipped = 0;
  bool interrupted = false;  // a cell's training stopped on SIGTERM/SIGINT; later cells not run
};

// Expands the sweep, writes every cell's resolved config, then runs the cells (mode run: train
// then eval in this process, finished cells skipped, failures recorded and the next cell run) or
// writes the script (slurm: <sweep dir>/sweep.sbatch, mpirun: <sweep dir>/sweep_mpirun.sh), and
// writes the summary. A failed cell makes the result an error naming it (after the summary).
absl::StatusOr<SweepOutcome> RunSweep(const SweepRequest& request, std::ostream& log);

// ---- small helpers shared with trainers/nightly ----

// Characters other than letters, digits and "._+-" become '_' (cell and job names).
std::string SanitizeName(const std::string& text);
// Runs `gnuplot <script>`; a missing gnuplot or a failure is a warning in the returned text (""
// when it worked).
std::string RunGnuplot(const std::string& script_path);
// The gnuplot terminal line for PNGs (pngcairo when available, else png).
std::string PngTerminal();
// "1.5e-3" style numbers: shortest text that reads back the same value (up to 10 digits).
std::string FormatNumber(double value);

}  // namespace fam::sweep
