#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/core/error.h"
#include "framework/io/edit_distance.h"
#include "framework/io/yaml_reader.h"
#include "trainers/experiments/sweep.h"
#include "trainers/experiments/sweep_internal.h"
#include "trainers/experiments/sweep_slurm.h"

namespace fam::sweep {
namespace {

namespace fs = std::filesystem;
using sweep_internal::Exists;

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

std::string SanitizeName(const std::string& text) {
  std::string out;
  for (unsigned char ch : text)
    out += (std::isalnum(ch) || ch == '.' || ch == '_' || ch == '+' || ch == '-') ? ch : '_';
  return out;
}

}  // namespace fam::sweep
