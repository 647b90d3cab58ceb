#include "trainers/experiments/sweep.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "framework/core/error.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/io/edit_distance.h"
#include "framework/io/yaml_reader.h"
#include "nlohmann/json.hpp"
#include "trainers/eval/evaluate.h"
#include "trainers/experiments/sweep_slurm.h"
#include "trainers/train/train_loop.h"

namespace fam::sweep {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

bool Exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

const std::vector<std::pair<std::string, SweepMode>>& ModeNames() {
  static const std::vector<std::pair<std::string, SweepMode>> names = {
      {"run", SweepMode::kRun}, {"slurm", SweepMode::kSlurm}, {"mpirun", SweepMode::kMpirun}};
  return names;
}

// Every key of the run config: the default config written out by its own schema.
const ConfigNode& SchemaTree() {
  static const ConfigNode tree = [] {
    absl::StatusOr<ConfigNode> t = ParseYamlText(RunConfigToYaml(RunConfig()), "run config");
    FAM_ASSERT(t.ok());
    return *std::move(t);
  }();
  return tree;
}

void LeafPaths(const ConfigNode& node, const std::string& prefix, std::vector<std::string>* out) {
  for (const ConfigNode& child : node.children) {
    const std::string path = prefix.empty() ? child.key : absl::StrCat(prefix, ".", child.key);
    if (child.is_map())
      LeafPaths(child, path, out);
    else
      out->push_back(path);
  }
}

// A value as override text (parsed as YAML again by ApplyOverrides).
std::string ValueText(const ConfigNode& node) {
  switch (node.kind) {
    case ConfigNode::Kind::kNull:
      return "";
    case ConfigNode::Kind::kScalar:
      if (!node.quoted) return node.scalar;
      {
        std::string out = "\"";
        for (char ch : node.scalar) {
          if (ch == '"' || ch == '\\') out += '\\';
          out += ch;
        }
        return out + "\"";
      }
    case ConfigNode::Kind::kSequence: {
      std::vector<std::string> items;
      for (const ConfigNode& child : node.children) items.push_back(ValueText(child));
      return absl::StrCat("[", absl::StrJoin(items, ", "), "]");
    }
    case ConfigNode::Kind::kMap: {
      std::vector<std::string> items;
      for (const ConfigNode& child : node.children)
        items.push_back(absl::StrCat(child.key, ": ", ValueText(child)));
      return absl::StrCat("{", absl::StrJoin(items, ", "), "}");
    }
  }
  return "";
}

// A value as shown in cell names and tables.
std::string ShownText(const ConfigNode& node) {
  if (node.kind != ConfigNode::Kind::kSequence) return node.is_scalar() ? node.scalar : "";
  std::vector<std::string> items;
  for (const ConfigNode& child : node.children) items.push_back(ShownText(child));
  return absl::StrJoin(items, "+");
}

std::string Quoted(const std::string& text) {
  std::string out = "\"";
  for (char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

void VisitSweep(YamlReader& r, SweepConfig* s) {
  r.Get("name", &s->name, "sweep name (default: the file's name without extension)");
  r.Get("experiment", &s->experiment, "base experiment YAML, relative to this file");
  r.Get("name_pattern", &s->name_pattern,
        "cell run names: {label} / {key} placeholders, {sweep}, {index}; \"\" = label_value-...");
  r.Get("run_dir", &s->run_dir, "folder of the cells' runs; \"\" = <experiment run_dir>/<name>");
  r.Section(
      "eval",
      [&](YamlReader& e) {
        e.Get("enabled", &s->eval_enabled, "evaluate every cell after training");
        e.Get("suite", &s->eval_suite,
              "eval suite YAML, relative to this file; \"\" = the built-in default suite");
      },
      "evaluation of each cell (`fam eval`)");
  r.GetEnum("mode", &s->mode, ModeNames(),
            "run: cells one after the other in this process; slurm: write a job array script; "
            "mpirun: write a bash script of mpirun lines");
  r.Section(
      "launch",
      [&](YamlReader& l) {
        l.Get("fam", &s->fam, "fam binary named in scripts; \"\" = this binary");
        l.Get("ranks", &s->ranks, 1,
              "processes per cell (mpirun -np, Slurm --ntasks); with slurm.nodes/gpus_per_node "
              "it defaults to, and must equal, nodes x gpus_per_node");
        l.Get("mpirun", &s->mpirun, "mpirun command of the mpirun script");
        l.Section(
            "slurm",
            [&](YamlReader& sl) {
              sl.Get("partition", &s->slurm.partition,
                     "#SBATCH --partition (\"\" = default; --partition)");
              sl.Get("account", &s->slurm.account, "#SBATCH --account (\"\" = default; --account)");
              sl.Get("time", &s->slurm.time, "#SBATCH --time per cell (--time)");
              sl.Get("cpus_per_task", &s->slurm.cpus_per_task, 0, "#SBATCH --cpus-per-task");
              sl.Get("gpus_per_task", &s->slurm.gpus_per_task, 0,
                     "#SBATCH --gpus-per-task (not with gpus_per_node)");
              sl.Get("nodes", &s->slurm.nodes, 1,
                     "nodes per cell (#SBATCH --nodes; --nodes): with gpus_per_node, a cell runs "
                     "nodes x gpus_per_node ranks, one per GPU; unset = 1 when gpus_per_node is "
                     "set, else #SBATCH --ntasks=ranks");
              sl.Get("gpus_per_node", &s->slurm.gpus_per_node, 1,
                     "GPUs and ranks per node (#SBATCH --gpus-per-node and --ntasks-per-node; "
                     "--gpus-per-node); unset = 1 when nodes is set");
              sl.Get("max_parallel", &s->slurm.max_parallel, 0,
                     "array tasks running at once (%N); 0 = no limit");
            },
            "Slurm job array settings");
      },
      "scripts of the slurm and mpirun modes");
  r.Get("plots", &s->plots, "summary plots through gnuplot");
}

// `set:` may be written flat (dotted keys) or nested like a run config; leaves become overrides.
absl::Status FlattenSet(const ConfigNode& node, const std::string& prefix,
                        std::vector<std::pair<std::string, const ConfigNode*>>* out) {
  for (const ConfigNode& child : node.children) {
    const std::string key = prefix.empty() ? child.key : absl::StrCat(prefix, ".", child.key);
    if (child.is_map()) {
      if (absl::Status s = FlattenSet(child, key, out); !s.ok()) return s;
    } else {
      out->emplace_back(key, &child);
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPattern(const SweepConfig& s) {
  const std::string& p = s.name_pattern;
  for (size_t open = p.find('{'); open != std::string::npos; open = p.find('{', open + 1)) {
    const size_t close = p.find('}', open);
    if (close == std::string::npos)
      return ConfigError(s.name_pattern_loc, "name_pattern", "a '{' without its '}'");
    const std::string name = p.substr(open + 1, close - open - 1);
    bool known = name == "sweep" || name == "index";
    std::vector<std::string> labels;
    for (const SweepAxis& a : s.axes) {
      known = known || name == a.label || name == a.key || name == a.written;
      labels.push_back(a.label);
    }
    if (!known)
      return ConfigError(s.name_pattern_loc, "name_pattern",
                         absl::StrCat("unknown placeholder {", name, "} (axes: ",
                                      absl::StrJoin(labels, ", "), "; also {sweep}, {index})"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SweepConfig> BuildSweep(ConfigNode tree, const std::string& source) {
  SweepConfig s;
  s.source = source;
  s.name = fs::path(source).stem().string();
  // `axes` and `set` hold run-config keys: they are checked against the run config's schema.
  std::optional<ConfigNode> axes, set;
  if (const ConfigNode* a = tree.Find("axes")) axes = *a;
  if (const ConfigNode* a = tree.Find("set")) set = *a;
  tree.Erase("axes");
  tree.Erase("set");
  YamlReader reader = YamlReader::Reading(&tree);
  VisitSweep(reader, &s);
  if (absl::Status st = reader.Finish(); !st.ok()) return st;
  if (const ConfigNode* p = tree.Find("name_pattern")) s.name_pattern_loc = p->loc;
  if (const ConfigNode* r = tree.FindPath("launch.ranks"); r != nullptr && !r->is_null())
    s.ranks_loc = r->loc;
  if (absl::Status st = ResolveLaunchShape(&s); !st.ok()) return st;
  if (s.name_pattern_loc.file.empty()) s.name_pattern_loc.file = source;

  const fs::path folder = fs::path(source).parent_path();
  auto resolve_path = [&](const std::string& key, std::string* path) -> absl::Status {
    if (path->empty()) return absl::OkStatus();
    fs::path p(*path);
    if (p.is_relative()) p = folder / p;
    const ConfigNode* node = tree.FindPath(key);
    if (!Exists(p))
      return ConfigError(node != nullptr ? node->loc : SourceLoc{source}, key,
                         absl::StrCat("no such file: ", p.lexically_normal().string(),
                                      " (paths are relative to the sweep file)"));
    *path = p.lexically_normal().string();
    return absl::OkStatus();
  };
  if (s.experiment.empty())
    return ConfigError(SourceLoc{source}, "experiment",
                       "missing: name the base experiment YAML (relative to this file)");
  if (absl::Status st = resolve_path("experiment", &s.experiment); !st.ok()) return st;
  if (absl::Status st = resolve_path("eval.suite", &s.eval_suite); !st.ok()) return st;

  if (set && !set->is_null()) {
    if (!set->is_map())
      return ConfigError(set->loc, "set",
                         "expected a mapping of run-config keys to values, got " + set->Describe());
    std::vector<std::pair<std::string, const ConfigNode*>> leaves;
    if (absl::Status st = FlattenSet(*set, "", &leaves); !st.ok()) return st;
    for (const auto& [written, node] : leaves) {
      absl::StatusOr<std::string> key = ResolveRunKey(written, node->key_loc, "set");
      if (!key.ok()) return key.status();
      s.set.push_back(absl::StrCat(*key, "=", ValueText(*node)));
    }
  }

  if (!axes || axes->is_null())
    return ConfigError(SourceLoc{source}, "axes",
                       "missing: give at least one axis (a run-config key and a list of values)");
  if (!axes->is_map())
    return ConfigError(
        axes->loc, "axes",
        "expected a mapping of run-config keys to value lists, got " + axes->Describe());
  for (const ConfigNode& entry : axes->children) {
    absl::StatusOr<std::string> key = ResolveRunKey(entry.key, entry.key_loc, "axes");
    if (!key.ok()) return key.status();
    const std::string path = "axes." + entry.key;
    if (entry.kind != ConfigNode::Kind::kSequence || entry.children.empty())
      return ConfigError(entry.loc, path,
                         "expected a non-empty list of values, got " + entry.Describe());
    for (const SweepAxis& other : s.axes)
      if (other.key == *key)
        return ConfigError(entry.key_loc, path,
                           absl::StrCat("the same key as axis ", other.written, " (", *key, ")"));
    SweepAxis axis;
    axis.key = *key;
    axis.written = entry.key;
    axis.loc = entry.key_loc;
    axis.label = key->substr(key->rfind('.') + 1);
    std::set<std::string> seen;
    for (const ConfigNode& value : entry.children) {
      if (value.is_map() || value.is_null())
        return ConfigError(value.loc, path,
                           "expected a value or a list of values, got " + value.Describe());
      if (!seen.insert(ValueText(value)).second)
        return ConfigError(value.loc, path, "value " + value.Describe() + " is listed twice");
      axis.values.push_back(ValueText(value));
      axis.shown.push_back(ShownText(value));
    }
    s.axes.push_back(std::move(axis));
  }
  // Axes whose last key components collide are labelled by their full keys.
  for (SweepAxis& a : s.axes) {
    const auto same = std::count_if(s.axes.begin(), s.axes.end(), [&](const SweepAxis& b) {
      return b.key.substr(b.key.rfind('.') + 1) == a.key.substr(a.key.rfind('.') + 1);
    });
    if (same > 1) a.label = a.key;
  }
  for (const std::string& item : s.set) {
    const std::string key = item.substr(0, item.find('='));
    for (const SweepAxis& a : s.axes)
      if (a.key == key)
        return ConfigError(a.loc, "axes." + a.written,
                           absl::StrCat(key, " is also given in set: (one of them must go)"));
  }
  if (absl::Status st = CheckPattern(s); !st.ok()) return st;

  if (s.run_dir.empty()) {
    absl::StatusOr<RunConfig> base = LoadRunConfig(s.experiment, s.set);
    if (!base.ok())
      return absl::Status(base.status().code(),
                          absl::StrCat(source, ": base experiment: ", base.status().message()));
    s.run_dir = (fs::path(base->run_dir) / s.name).string();
  }
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Sweep files

absl::StatusOr<std::string> ResolveRunKey(const std::string& written, const SourceLoc& loc,
                                          const std::string& where) {
  const std::string path = where.empty() ? written : absl::StrCat(where, ".", written);
  if (written == "name" || written == "run_dir")
    return ConfigError(loc, path,
                       "set by the sweep (cells are named after their values and run in the "
                       "sweep's run_dir)");
  for (const std::string& candidate : {written, "model." + written}) {
    if (candidate == "model.preset") return candidate;
    const ConfigNode* node = SchemaTree().FindPath(candidate);
    if (node == nullptr) continue;
    if (node->is_map()) {
      std::vector<std::string> keys;
      LeafPaths(*node, candidate, &keys);
      return ConfigError(loc, path,
                         absl::StrCat("is a section, not a key; name one of its keys (",
                                      absl::StrJoin(keys, ", "), ")"));
    }
    return candidate;
  }
  std::vector<std::string> keys;
  LeafPaths(SchemaTree(), "", &keys);
  std::string best;
  size_t best_distance = 4;
  for (const std::string& key : keys) {
    for (const std::string& candidate : {key, key.substr(std::min(key.size(), size_t{6}))}) {
      if (candidate != key && key.rfind("model.", 0) != 0) continue;
      const size_t d = io::EditDistance(written, candidate);
      if (d < best_distance) {
        best_distance = d;
        best = key;
      }
    }
  }
  return ConfigError(loc, path,
                     absl::StrCat("unknown run config key",
                                  best.empty() ? "" : absl::StrCat(" (did you mean ", best, "?)"),
                                  "; keys are dotted paths such as model.attention.fam_length or "
                                  "trainer.steps (`fam config --explain` lists them)"));
}

absl::StatusOr<SweepConfig> LoadSweepConfig(const std::string& path) {
  absl::StatusOr<ConfigNode> tree = LoadYamlFile(path);
  if (!tree.ok()) return tree.status();
  return BuildSweep(*std::move(tree), path);
}

absl::StatusOr<SweepConfig> ParseSweepConfig(const std::string& yaml,
                                             const std::string& source_name) {
  absl::StatusOr<ConfigNode> tree = LoadYamlText(yaml, source_name);
  if (!tree.ok()) return tree.status();
  return BuildSweep(*std::move(tree), source_name);
}

std::string SweepDir(const SweepConfig& sweep) { return sweep.run_dir; }

absl::StatusOr<std::vector<SweepCell>> ExpandSweep(const SweepConfig& sweep,
                                                   const std::vector<std::string>& extra) {
  std::vector<std::string> extra_resolved;
  for (const std::string& item : extra) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos)
      return absl::InvalidArgumentError(
          absl::StrCat("--set: expected key.path=value, got \"", item, "\""));
    absl::StatusOr<std::string> key = ResolveRunKey(item.substr(0, eq), SourceLoc{"--set"}, "");
    if (!key.ok()) return key.status();
    for (const SweepAxis& a : sweep.axes)
      if (a.key == *key)
        return absl::InvalidArgumentError(
            absl::StrCat("--set ", item, ": ", *key, " is an axis of the sweep ", sweep.source,
                         " (", a.loc.ToString(), "); change the axis instead"));
    extra_resolved.push_back(absl::StrCat(*key, item.substr(eq)));
  }

  int64_t total = 1;
  for (const SweepAxis& a : sweep.axes) total *= static_cast<int64_t>(a.values.size());
  std::vector<SweepCell> cells;
  std::map<std::string, int64_t> names;
  for (int64_t i = 0; i < total; ++i) {
    SweepCell cell;
    cell.index = i;
    std::vector<size_t> pick(sweep.axes.size());
    int64_t rest = i;
    for (size_t a = sweep.axes.size(); a-- > 0;) {
      const int64_t n = static_cast<int64_t>(sweep.axes[a].values.size());
      pick[a] = static_cast<size_t>(rest % n);
      rest /= n;
    }
    cell.overrides = sweep.set;
    cell.overrides.insert(cell.overrides.end(), extra_resolved.begin(), extra_resolved.end());
    std::vector<std::string> parts;
    for (size_t a = 0; a < sweep.axes.size(); ++a) {
      const SweepAxis& axis = sweep.axes[a];
      cell.values.push_back(axis.shown[pick[a]]);
      cell.overrides.push_back(absl::StrCat(axis.key, "=", axis.values[pick[a]]));
      parts.push_back(absl::StrCat(axis.label, "_", axis.shown[pick[a]]));
    }
    if (sweep.name_pattern.empty()) {
      cell.name = parts.empty() ? sweep.name : absl::StrJoin(parts, "-");
    } else {
      const std::string& p = sweep.name_pattern;
      size_t at = 0;
      while (at < p.size()) {
        const size_t open = p.find('{', at);
        cell.name += p.substr(at, open == std::string::npos ? std::string::npos : open - at);
        if (open == std::string::npos) break;
        const size_t close = p.find('}', open);
        const std::string key = p.substr(open + 1, close - open - 1);
        if (key == "sweep") cell.name += sweep.name;
        if (key == "index") cell.name += std::to_string(i);
        for (size_t a = 0; a < sweep.axes.size(); ++a) {
          const SweepAxis& axis = sweep.axes[a];
          if (key == axis.label || key == axis.key || key == axis.written) {
            cell.name += axis.shown[pick[a]];
            break;
          }
        }
        at = close + 1;
      }
    }
    cell.name = SanitizeName(cell.name);
    if (cell.name.empty() || cell.name == "." || cell.name == ".." || cell.name == "configs" ||
        cell.name == "logs")
      return ConfigError(
          sweep.name_pattern_loc, "name_pattern",
          absl::StrCat("cell ", i, " gets the unusable run name \"", cell.name, "\""));
    if (auto [it, fresh] = names.emplace(cell.name, i); !fresh)
      return ConfigError(sweep.name_pattern_loc, "name_pattern",
                         absl::StrCat("cells ", it->second, " and ", i, " both get the run name \"",
                                      cell.name, "\"; put every axis into the pattern"));
    cell.overrides.push_back("name=" + Quoted(cell.name));
    cell.overrides.push_back("run_dir=" + Quoted(SweepDir(sweep)));
    cells.push_back(std::move(cell));
  }
  return cells;
}

absl::StatusOr<RunConfig> CellRunConfig(const SweepConfig& sweep, const SweepCell& cell) {
  absl::StatusOr<RunConfig> run = LoadRunConfig(sweep.experiment, cell.overrides);
  if (!run.ok())
    return absl::Status(run.status().code(), absl::StrCat(sweep.source, ": cell ", cell.name, ": ",
                                                          run.status().message()));
  return run;
}

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

namespace {

std::optional<Json> ReadJsonFile(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return std::nullopt;
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  return j;
}

}  // namespace

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
// Summary

namespace {

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

// ---------------------------------------------------------------------------------------------
// Helpers

std::string SanitizeName(const std::string& text) {
  std::string out;
  for (unsigned char ch : text)
    out += (std::isalnum(ch) || ch == '.' || ch == '_' || ch == '+' || ch == '-') ? ch : '_';
  return out;
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
