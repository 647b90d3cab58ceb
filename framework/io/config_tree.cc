#include "framework/io/config_tree.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "framework/core/printable_text.h"
#include "framework/io/config_scalars.h"
#include "yaml-cpp/yaml.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using config_scalars::JoinPath;
using config_scalars::ParseBool;
using config_scalars::ParseDouble;

constexpr char kSetSource[] = "--set";

SourceLoc LocOf(const YAML::Mark& mark, const std::string& file) {
  if (mark.line < 0) return SourceLoc{file, 0, 0};
  return SourceLoc{file, mark.line + 1, mark.column + 1};
}

absl::Status Convert(const YAML::Node& in, const std::string& file, const std::string& path,
                     ConfigNode* out) {
  out->loc = LocOf(in.Mark(), file);
  switch (in.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      out->kind = ConfigNode::Kind::kNull;
      return absl::OkStatus();
    case YAML::NodeType::Scalar: {
      out->kind = ConfigNode::Kind::kScalar;
      out->scalar = in.Scalar();
      const std::string& tag = in.Tag();
      out->quoted = tag == "!" || absl::EndsWith(tag, ":str");
      return absl::OkStatus();
    }
    case YAML::NodeType::Sequence: {
      out->kind = ConfigNode::Kind::kSequence;
      size_t index = 0;
      for (const YAML::Node& item : in) {
        ConfigNode child;
        absl::Status status = Convert(item, file, absl::StrCat(path, "[", index, "]"), &child);
        if (!status.ok()) return status;
        if (child.loc.line == 0) child.loc = out->loc;
        out->children.push_back(std::move(child));
        ++index;
      }
      return absl::OkStatus();
    }
    case YAML::NodeType::Map: {
      out->kind = ConfigNode::Kind::kMap;
      for (auto it = in.begin(); it != in.end(); ++it) {
        const SourceLoc key_loc = LocOf(it->first.Mark(), file);
        if (!it->first.IsScalar()) {
          return ConfigError(key_loc, path, "keys must be plain names, not sequences or mappings");
        }
        const std::string key = it->first.Scalar();
        const std::string child_path = JoinPath(path, key);
        if (const ConfigNode* previous = out->Find(key)) {
          return ConfigError(
              key_loc, child_path,
              absl::StrCat("duplicate key (first written at line ", previous->key_loc.line, ")"));
        }
        ConfigNode child;
        absl::Status status = Convert(it->second, file, child_path, &child);
        if (!status.ok()) return status;
        child.key = key;
        child.key_loc = key_loc;
        // A null value has no useful mark of its own (yaml-cpp places it on the next line).
        if (child.is_null() || child.loc.line == 0) child.loc = key_loc;
        out->children.push_back(std::move(child));
      }
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

void SetSource(ConfigNode* node, const SourceLoc& loc) {
  node->loc = loc;
  node->key_loc = loc;
  for (ConfigNode& child : node->children) SetSource(&child, loc);
}

// Config files are text of at most this many bytes; a larger one is a mistake (a data file named
// by accident), and reading stops there rather than at the end of, say, /dev/zero.
constexpr size_t kMaxConfigBytes = size_t{16} << 20;

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (fs::is_directory(status)) return absl::InvalidArgumentError("is a directory");
  // Regular files, and pipes (`fam train <(...)`); not devices or sockets.
  if (fs::exists(status) && !fs::is_regular_file(status) && !fs::is_fifo(status))
    return absl::InvalidArgumentError("is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    text.append(buffer, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes)
      return absl::InvalidArgumentError(
          absl::StrCat("is larger than ", kMaxConfigBytes >> 20, " MiB, too large for a config"));
  }
  if (in.bad()) return absl::InvalidArgumentError("read failed");
  return text;
}

std::string Canonical(const std::string& path) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return ec ? fs::path(path).lexically_normal().string() : canonical.string();
}

struct LoadStack {
  std::vector<std::string> canonical;
  std::vector<std::string> display;
};

absl::StatusOr<ConfigNode> Resolve(ConfigNode root, const std::string& file, LoadStack* stack);

// Loads a file named by `base:` / `include:` (ref, written at `where`) relative to `file`.
absl::StatusOr<ConfigNode> LoadReferenced(const ConfigNode& where, const std::string& path,
                                          const std::string& file, LoadStack* stack) {
  fs::path target(where.scalar);
  if (target.is_relative()) target = fs::path(file).parent_path() / target;
  const std::string display = target.lexically_normal().string();
  const std::string canonical = Canonical(display);
  for (size_t i = 0; i < stack->canonical.size(); ++i) {
    if (stack->canonical[i] != canonical) continue;
    std::vector<std::string> chain(stack->display.begin() + i, stack->display.end());
    chain.push_back(display);
    return ConfigError(where.loc, path,
                       absl::StrCat("inheritance cycle: ", absl::StrJoin(chain, " -> ")));
  }
  absl::StatusOr<std::string> text = ReadText(display);
  if (!text.ok()) {
    return ConfigError(where.loc, path,
                       absl::StrCat("cannot open \"", display, "\": ", text.status().message()));
  }
  absl::StatusOr<ConfigNode> parsed = ParseYamlText(*text, display);
  if (!parsed.ok()) return parsed.status();
  stack->canonical.push_back(canonical);
  stack->display.push_back(display);
  absl::StatusOr<ConfigNode> resolved = Resolve(std::move(*parsed), display, stack);
  stack->canonical.pop_back();
  stack->display.pop_back();
  return resolved;
}

absl::StatusOr<ConfigNode> Resolve(ConfigNode root, const std::string& file, LoadStack* stack) {
  std::vector<std::pair<const ConfigNode*, std::string>> refs;  // (value, key path)
  if (const ConfigNode* base = root.Find("base")) {
    if (!base->is_scalar() || base->scalar.empty()) {
      return ConfigError(base->loc, "base", "expected a file path, got " + base->Describe());
    }
    refs.emplace_back(base, "base");
  }
  if (const ConfigNode* include = root.Find("include")) {
    if (include->is_scalar()) {
      refs.emplace_back(include, "include");
    } else if (include->kind == ConfigNode::Kind::kSequence) {
      for (size_t i = 0; i < include->children.size(); ++i) {
        const ConfigNode& item = include->children[i];
        const std::string path = absl::StrCat("include[", i, "]");
        if (!item.is_scalar() || item.scalar.empty()) {
          return ConfigError(item.loc, path, "expected a file path, got " + item.Describe());
        }
        refs.emplace_back(&item, path);
      }
    } else if (!include->is_null()) {
      return ConfigError(include->loc, "include",
                         "expected a file path or a list of them, got " + include->Describe());
    }
  }
  ConfigNode result = ConfigNode::Map(root.loc);
  for (const auto& [where, path] : refs) {
    absl::StatusOr<ConfigNode> loaded = LoadReferenced(*where, path, file, stack);
    if (!loaded.ok()) return loaded.status();
    MergeInto(&result, *loaded);
  }
  root.Erase("base");
  root.Erase("include");
  MergeInto(&result, root);
  result.loc = root.loc;
  return result;
}

void EmitNode(YAML::Emitter& out, const ConfigNode& node) {
  switch (node.kind) {
    case ConfigNode::Kind::kNull:
      out << YAML::Null;
      break;
    case ConfigNode::Kind::kScalar:
      if (node.quoted) out << YAML::DoubleQuoted;
      out << node.scalar;
      break;
    case ConfigNode::Kind::kSequence: {
      const bool flat =
          std::all_of(node.children.begin(), node.children.end(),
                      [](const ConfigNode& c) { return c.is_scalar() || c.is_null(); });
      if (flat) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const ConfigNode& child : node.children) EmitNode(out, child);
      out << YAML::EndSeq;
      break;
    }
    case ConfigNode::Kind::kMap:
      if (node.children.empty()) out << YAML::Flow;
      out << YAML::BeginMap;
      for (const ConfigNode& child : node.children) {
        out << YAML::Key << child.key << YAML::Value;
        EmitNode(out, child);
      }
      out << YAML::EndMap;
      break;
  }
}

void Flatten(const ConfigNode& node, const std::string& path, std::vector<std::string>* lines) {
  switch (node.kind) {
    case ConfigNode::Kind::kNull:
      lines->push_back(path + "=~");
      break;
    case ConfigNode::Kind::kScalar:
      lines->push_back(
          absl::StrCat(path, "=", node.quoted ? "\"" : "", node.scalar, node.quoted ? "\"" : ""));
      break;
    case ConfigNode::Kind::kSequence:
      if (node.children.empty()) lines->push_back(path + "=[]");
      for (size_t i = 0; i < node.children.size(); ++i) {
        Flatten(node.children[i], absl::StrCat(path, "[", i, "]"), lines);
      }
      break;
    case ConfigNode::Kind::kMap:
      if (node.children.empty() && !path.empty()) lines->push_back(path + "={}");
      for (const ConfigNode& child : node.children) {
        Flatten(child, JoinPath(path, child.key), lines);
      }
      break;
  }
}

}  // namespace

std::string SourceLoc::ToString() const {
  if (line <= 0) return file;
  return absl::StrCat(file, ":", line, ":", column);
}

ConfigNode ConfigNode::Map(SourceLoc loc) {
  ConfigNode node;
  node.kind = Kind::kMap;
  node.loc = std::move(loc);
  return node;
}

ConfigNode ConfigNode::Scalar(std::string text, SourceLoc loc) {
  ConfigNode node;
  node.kind = Kind::kScalar;
  node.scalar = std::move(text);
  node.loc = std::move(loc);
  return node;
}

const ConfigNode* ConfigNode::Find(std::string_view child_key) const {
  if (kind != Kind::kMap) return nullptr;
  for (const ConfigNode& child : children) {
    if (child.key == child_key) return &child;
  }
  return nullptr;
}

ConfigNode* ConfigNode::Find(std::string_view child_key) {
  return const_cast<ConfigNode*>(static_cast<const ConfigNode*>(this)->Find(child_key));
}

const ConfigNode* ConfigNode::FindPath(std::string_view dotted) const {
  const ConfigNode* node = this;
  const absl::string_view text(dotted.data(), dotted.size());
  for (absl::string_view part : absl::StrSplit(text, '.')) {
    node = node->Find(std::string_view(part.data(), part.size()));
    if (node == nullptr) return nullptr;
  }
  return node;
}

ConfigNode& ConfigNode::Set(std::string_view child_key, ConfigNode value) {
  value.key = std::string(child_key);
  if (ConfigNode* existing = Find(child_key)) {
    *existing = std::move(value);
    return *existing;
  }
  kind = Kind::kMap;
  children.push_back(std::move(value));
  return children.back();
}

bool ConfigNode::Erase(std::string_view child_key) {
  for (auto it = children.begin(); it != children.end(); ++it) {
    if (kind == Kind::kMap && it->key == child_key) {
      children.erase(it);
      return true;
    }
  }
  return false;
}

std::string ConfigNode::Describe() const {
  switch (kind) {
    case Kind::kNull:
      return "an empty value";
    case Kind::kSequence:
      return "a sequence";
    case Kind::kMap:
      return "a mapping";
    case Kind::kScalar:
      break;
  }
  double number;
  bool flag;
  const bool typed = ParseDouble(scalar, &number) || ParseBool(scalar, &flag);
  if (quoted && typed) return absl::StrCat("the quoted string \"", scalar, "\"");
  if (typed) return scalar;
  return absl::StrCat("\"", scalar, "\"");
}

absl::Status ConfigError(const SourceLoc& loc, std::string_view path, std::string_view message) {
  std::string text;
  if (!loc.file.empty()) absl::StrAppend(&text, loc.ToString(), ": ");
  if (!path.empty()) text.append(path).append(": ");
  text.append(message);
  // Keys and YAML parser messages quote the file's text: the error stays one line.
  return absl::InvalidArgumentError(EscapeNonPrintable(text));
}

absl::StatusOr<ConfigNode> ParseYamlText(const std::string& text, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return ConfigError(LocOf(e.mark, file), "", absl::StrCat("YAML syntax error: ", e.msg));
  }
  ConfigNode out;
  absl::Status status = Convert(root, file, "", &out);
  if (!status.ok()) return status;
  if (out.is_null()) return ConfigNode::Map(SourceLoc{file, 1, 1});
  if (!out.is_map()) {
    return ConfigError(out.loc, "",
                       "the top level must be a mapping of keys, got " + out.Describe());
  }
  return out;
}

absl::StatusOr<ConfigNode> LoadYamlText(const std::string& text, const std::string& file) {
  absl::StatusOr<ConfigNode> parsed = ParseYamlText(text, file);
  if (!parsed.ok()) return parsed.status();
  LoadStack stack;
  stack.canonical.push_back(Canonical(file));
  stack.display.push_back(file);
  return Resolve(std::move(*parsed), file, &stack);
}

absl::StatusOr<ConfigNode> LoadYamlFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadText(path);
  if (!text.ok()) {
    return ConfigError(SourceLoc{path}, "",
                       absl::StrCat("cannot open config file: ", text.status().message()));
  }
  return LoadYamlText(*text, path);
}

void MergeInto(ConfigNode* base, const ConfigNode& over) {
  if (over.is_null() && base->is_map()) return;
  if (!base->is_map() || !over.is_map()) {
    std::string key = base->key;
    *base = over;
    if (!key.empty()) base->key = key;
    return;
  }
  base->loc = over.loc;
  if (over.key_loc.line > 0) base->key_loc = over.key_loc;
  for (const ConfigNode& child : over.children) {
    if (ConfigNode* existing = base->Find(child.key)) {
      MergeInto(existing, child);
      existing->key_loc = child.key_loc;
    } else {
      base->children.push_back(child);
    }
  }
}

absl::Status ApplyOverrides(ConfigNode* root, const std::vector<std::string>& overrides) {
  const SourceLoc set_loc{kSetSource, 0, 0};
  for (const std::string& item : overrides) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      return ConfigError(set_loc, "", absl::StrCat("expected key.path=value, got \"", item, "\""));
    }
    const std::string dotted(absl::StripAsciiWhitespace(item.substr(0, eq)));
    const std::vector<std::string> parts = absl::StrSplit(dotted, '.');
    for (const std::string& part : parts) {
      if (part.empty()) {
        return ConfigError(set_loc, "",
                           absl::StrCat("bad key path \"", dotted, "\" in \"", item, "\""));
      }
    }
    const std::string text = item.substr(eq + 1);
    ConfigNode value;
    try {
      absl::Status status = Convert(YAML::Load(text), kSetSource, dotted, &value);
      if (!status.ok()) return status;
    } catch (const YAML::Exception&) {
      value = ConfigNode::Scalar(text);  // not YAML (e.g. a glob starting with '*'): a string
      value.quoted = true;
    }
    SetSource(&value, set_loc);
    ConfigNode* section = root;
    std::string path;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      path = JoinPath(path, parts[i]);
      ConfigNode* next = section->Find(parts[i]);
      if (next == nullptr || next->is_null()) {
        ConfigNode fresh = ConfigNode::Map(set_loc);
        fresh.key_loc = set_loc;
        next = &section->Set(parts[i], std::move(fresh));
      } else if (!next->is_map()) {
        return ConfigError(set_loc, path,
                           absl::StrCat("is a value, not a section: cannot set ", dotted));
      }
      section = next;
    }
    ConfigNode* existing = section->Find(parts.back());
    if (existing != nullptr && existing->is_map() && value.is_map()) {
      MergeInto(existing, value);
    } else {
      section->Set(parts.back(), std::move(value));
    }
  }
  return absl::OkStatus();
}

std::string EmitYaml(const ConfigNode& root) {
  // Top-level entries are emitted one by one so that sections can be set apart by blank lines.
  std::string text;
  for (const ConfigNode& child : root.children) {
    YAML::Emitter out;
    out << YAML::BeginMap << YAML::Key << child.key << YAML::Value;
    EmitNode(out, child);
    out << YAML::EndMap;
    if (child.is_map() && !text.empty()) text += "\n";
    absl::StrAppend(&text, out.c_str(), "\n");
  }
  return text;
}

std::string FlattenYaml(const ConfigNode& root) {
  std::vector<std::string> lines;
  Flatten(root, "", &lines);
  std::sort(lines.begin(), lines.end());
  return absl::StrJoin(lines, "\n");
}

}  // namespace fam
