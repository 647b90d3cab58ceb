#include "framework/io/yaml_reader.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/io/config_scalars.h"
#include "framework/io/edit_distance.h"

namespace fam {
namespace {

using config_scalars::FormatDouble;
using config_scalars::JoinPath;
using config_scalars::ParseBool;
using config_scalars::ParseDouble;
using config_scalars::ParseInt;

std::string WithArticle(std::string_view type, const Bounds& bounds) {
  const std::string range = bounds.Describe();
  return range.empty() ? std::string(type) : absl::StrCat(std::string(type), " ", range);
}

}  // namespace

bool Bounds::Contains(double value) const {
  if (min && (min_exclusive ? !(value > *min) : !(value >= *min))) return false;
  if (max && (max_exclusive ? !(value < *max) : !(value <= *max))) return false;
  return true;
}

std::string Bounds::Describe() const {
  if (min && max) {
    return absl::StrCat("in ", min_exclusive ? "(" : "[", FormatDouble(*min), ", ",
                        FormatDouble(*max), max_exclusive ? ")" : "]");
  }
  if (min) return absl::StrCat(min_exclusive ? "> " : ">= ", FormatDouble(*min));
  if (max) return absl::StrCat(max_exclusive ? "< " : "<= ", FormatDouble(*max));
  return "";
}

Bounds AtLeast(double min) {
  Bounds b;
  b.min = min;
  return b;
}

Bounds Above(double min) {
  Bounds b;
  b.min = min;
  b.min_exclusive = true;
  return b;
}

Bounds Positive() { return Above(0); }

Bounds InRange(double min, double max) {
  Bounds b;
  b.min = min;
  b.max = max;
  return b;
}

Bounds InHalfOpen(double min, double max) {
  Bounds b = InRange(min, max);
  b.max_exclusive = true;
  return b;
}

YamlReader YamlReader::Reading(const ConfigNode* node, std::string path) {
  auto state = std::make_shared<State>();
  state->mode = Mode::kRead;
  YamlReader reader(std::move(state), std::move(path));
  reader.node_ = node;
  if (node != nullptr) reader.section_loc_ = node->key_loc.file.empty() ? node->loc : node->key_loc;
  return reader;
}

YamlReader YamlReader::Writing(ConfigNode* out) {
  auto state = std::make_shared<State>();
  state->mode = Mode::kWrite;
  YamlReader writer(std::move(state), "");
  *out = ConfigNode::Map();
  writer.out_ = out;
  return writer;
}

YamlReader YamlReader::Explaining(std::vector<KeyDoc>* docs) {
  auto state = std::make_shared<State>();
  state->mode = Mode::kExplain;
  state->docs = docs;
  return YamlReader(std::move(state), "");
}

bool YamlReader::reading() const { return state_->mode == Mode::kRead; }
bool YamlReader::writing() const { return state_->mode == Mode::kWrite; }
bool YamlReader::explaining() const { return state_->mode == Mode::kExplain; }
bool YamlReader::ok() const { return state_->status.ok(); }
const absl::Status& YamlReader::status() const { return state_->status; }

std::string YamlReader::PathOf(std::string_view key) const { return JoinPath(path_, key); }

const ConfigNode* YamlReader::Lookup(std::string_view key) {
  known_.emplace_back(key);
  if (!reading() || !ok() || node_ == nullptr) return nullptr;
  return node_->Find(key);
}

void YamlReader::FailAt(const ConfigNode& value, std::string_view path, std::string_view message) {
  if (ok()) state_->status = ConfigError(value.loc, path, message);
}

void YamlReader::Put(std::string_view key, ConfigNode value) { out_->Set(key, std::move(value)); }

void YamlReader::Explain(std::string_view key, std::string type, std::string default_value,
                         std::string_view doc) {
  state_->docs->push_back(
      KeyDoc{PathOf(key), std::move(type), std::move(default_value), std::string(doc)});
}

void YamlReader::Get(std::string_view key, int64_t* value, Bounds bounds, std::string_view doc) {
  if (writing()) return Put(key, ConfigNode::Scalar(absl::StrCat(*value)));
  if (explaining()) return Explain(key, WithArticle("integer", bounds), absl::StrCat(*value), doc);
  const ConfigNode* node = Lookup(key);
  if (node == nullptr) return;
  int64_t parsed = 0;
  if (!node->is_scalar() || node->quoted || !ParseInt(node->scalar, &parsed) ||
      !bounds.Contains(static_cast<double>(parsed))) {
    return FailAt(
        *node, PathOf(key),
        absl::StrCat("expected ", WithArticle("an integer", bounds), ", got ", node->Describe()));
  }
  *value = parsed;
}

void YamlReader::Get(std::string_view key, int64_t* value, int64_t min, std::string_view doc) {
  Get(key, value, AtLeast(static_cast<double>(min)), doc);
}

void YamlReader::Get(std::string_view key, double* value, Bounds bounds, std::string_view doc) {
  if (writing()) return Put(key, ConfigNode::Scalar(FormatDouble(*value)));
  if (explaining()) return Explain(key, WithArticle("number", bounds), FormatDouble(*value), doc);
  const ConfigNode* node = Lookup(key);
  if (node == nullptr) return;
  double parsed = 0;
  if (!node->is_scalar() || node->quoted || !ParseDouble(node->scalar, &parsed) ||
      !bounds.Contains(parsed)) {
    return FailAt(
        *node, PathOf(key),
        absl::StrCat("expected ", WithArticle("a number", bounds), ", got ", node->Describe()));
  }
  *value = parsed;
}

void YamlReader::Get(std::string_view key, bool* value, std::string_view doc) {
  const char* text = *value ? "true" : "false";
  if (writing()) return Put(key, ConfigNode::Scalar(text));
  if (explaining()) return Explain(key, "bool", text, doc);
  const ConfigNode* node = Lookup(key);
  if (node == nullptr) return;
  bool parsed = false;
  if (!node->is_scalar() || node->quoted || !ParseBool(node->scalar, &parsed)) {
    return FailAt(*node, PathOf(key), "expected true or false, got " + node->Describe());
  }
  *value = parsed;
}

void YamlReader::Get(std::string_view key, std::string* value, std::string_view doc) {
  if (writing()) return Put(key, ConfigNode::Scalar(*value));
  if (explaining()) return Explain(key, "string", value->empty() ? "\"\"" : *value, doc);
  const ConfigNode* node = Lookup(key);
  if (node == nullptr) return;
  if (node->is_null()) {
    value->clear();
  } else if (node->is_scalar()) {
    *value = node->scalar;
  } else {
    FailAt(*node, PathOf(key), "expected a string, got " + node->Describe());
  }
}

void YamlReader::Get(std::string_view key, std::vector<int64_t>* value, Bounds bounds,
                     std::string_view doc) {
  if (writing()) {
    ConfigNode list;
    list.kind = ConfigNode::Kind::kSequence;
    for (int64_t v : *value) list.children.push_back(ConfigNode::Scalar(absl::StrCat(v)));
    return Put(key, std::move(list));
  }
  if (explaining()) {
    return Explain(key, WithArticle("list of integers", bounds),
                   absl::StrCat("[", absl::StrJoin(*value, ", "), "]"), doc);
  }
  const ConfigNode* node = Lookup(key);
  if (node == nullptr) return;
  if (node->is_null()) {
    value->clear();
    return;
  }
  if (node->kind != ConfigNode::Kind::kSequence) {
    return FailAt(*node, PathOf(key),
                  absl::StrCat("expected a list of ", WithArticle("integers", bounds),
                               " like [1, 2], got ", node->Describe()));
  }
  std::vector<int64_t> parsed;
  for (size_t i = 0; i < node->children.size(); ++i) {
    const ConfigNode& item = node->children[i];
    int64_t v = 0;
    if (!item.is_scalar() || item.quoted || !ParseInt(item.scalar, &v) ||
        !bounds.Contains(static_cast<double>(v))) {
      return FailAt(
          item, absl::StrCat(PathOf(key), "[", i, "]"),
          absl::StrCat("expected ", WithArticle("an integer", bounds), ", got ", item.Describe()));
    }
    parsed.push_back(v);
  }
  *value = std::move(parsed);
}

void YamlReader::Get(std::string_view key, std::vector<std::string>* value, std::string_view doc) {
  if (writing()) {
    ConfigNode list;
    list.kind = ConfigNode::Kind::kSequence;
    for (const std::string& v : *value) list.children.push_back(ConfigNode::Scalar(v));
    return Put(key, std::move(list));
  }
  if (explaining()) {
    return Explain(key, "list of strings", absl::StrCat("[", absl::StrJoin(*value, ", "), "]"),
                   doc);
  }
  const ConfigNode* node = Lookup(key);
  if (node == nullptr) return;
  if (node->is_null()) {
    value->clear();
    return;
  }
  if (node->kind != ConfigNode::Kind::kSequence) {
    return FailAt(*node, PathOf(key),
                  "expected a list of strings like [a, b], got " + node->Describe());
  }
  std::vector<std::string> parsed;
  for (size_t i = 0; i < node->children.size(); ++i) {
    const ConfigNode& item = node->children[i];
    if (!item.is_scalar()) {
      return FailAt(item, absl::StrCat(PathOf(key), "[", i, "]"),
                    "expected a string, got " + item.Describe());
    }
    parsed.push_back(item.scalar);
  }
  *value = std::move(parsed);
}

int YamlReader::GetChoice(std::string_view key, int current, const std::vector<std::string>& names,
                          std::string_view doc) {
  const std::string current_name = current >= 0 ? names[current] : "?";
  if (writing()) {
    Put(key, ConfigNode::Scalar(current_name));
    return -1;
  }
  if (explaining()) {
    Explain(key, "one of " + absl::StrJoin(names, "|"), current_name, doc);
    return -1;
  }
  const ConfigNode* node = Lookup(key);
  if (node == nullptr) return -1;
  if (node->is_scalar()) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == node->scalar) return static_cast<int>(i);
    }
  }
  FailAt(*node, PathOf(key),
         absl::StrCat("expected one of ", absl::StrJoin(names, "|"), ", got ", node->Describe()));
  return -1;
}

void YamlReader::Section(std::string_view key, const std::function<void(YamlReader&)>& fn,
                         std::string_view doc) {
  known_.emplace_back(key);
  YamlReader child(state_, PathOf(key));
  if (writing()) {
    child.out_ = &out_->Set(key, ConfigNode::Map());
    fn(child);
    return;
  }
  if (explaining()) {
    Explain(key, "section", "", doc);
    fn(child);
    return;
  }
  const ConfigNode* node = (ok() && node_ != nullptr) ? node_->Find(key) : nullptr;
  if (node != nullptr && !node->is_map() && !node->is_null()) {
    return FailAt(*node, PathOf(key),
                  "expected a section (a mapping of keys), got " + node->Describe());
  }
  child.node_ = (node != nullptr && node->is_map()) ? node : nullptr;
  child.section_loc_ = node != nullptr ? node->key_loc : section_loc_;
  fn(child);
  child.Finish().IgnoreError();  // the error, if any, stays in the shared state
}

void YamlReader::Fail(std::string_view key, std::string_view message) {
  if (!reading() || !ok()) return;
  const ConfigNode* node = nullptr;
  if (node_ != nullptr) node = key.empty() ? node_ : node_->FindPath(key);
  const SourceLoc& loc = node != nullptr && node != node_ ? node->loc : section_loc_;
  state_->status = ConfigError(loc, key.empty() ? path_ : PathOf(key), message);
}

absl::Status YamlReader::Finish() {
  if (!reading() || !ok() || node_ == nullptr) return status();
  for (const ConfigNode& child : node_->children) {
    if (std::find(known_.begin(), known_.end(), child.key) != known_.end()) continue;
    const std::string* best = nullptr;
    size_t best_distance = 0;
    for (const std::string& known : known_) {
      const size_t distance = io::EditDistance(child.key, known);
      if (best == nullptr || distance < best_distance) {
        best = &known;
        best_distance = distance;
      }
    }
    const size_t allowed = child.key.size() >= 8 ? 3 : child.key.size() >= 4 ? 2 : 1;
    std::string message = "unknown key";
    if (best != nullptr && best_distance <= allowed) {
      absl::StrAppend(&message, " (did you mean \"", *best, "\"?)");
    } else if (!known_.empty()) {
      absl::StrAppend(&message, " (known keys here: ", absl::StrJoin(known_, ", "), ")");
    }
    state_->status = ConfigError(child.key_loc, PathOf(child.key), message);
    break;
  }
  return status();
}

}  // namespace fam
