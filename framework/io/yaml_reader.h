// Typed YAML configuration. A config schema is written once as plain code against YamlReader
// (r.Get("d_model", &cfg.d_model, AtLeast(1), "meaning")), and the same code reads a config tree
// (config_tree.h: values with their file:line:col, inheritance and `--set` overrides resolved;
// first error as one line, "file:line:col: a.b.c: what was wrong", unknown keys included), writes
// a struct back to a tree (the resolved config, emitted as YAML) and lists every key with type,
// default and meaning.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "framework/io/config_tree.h"

namespace fam {

// Allowed range of a number: min/max bounds, each inclusive or exclusive.
struct Bounds {
  std::optional<double> min, max;
  bool min_exclusive = false, max_exclusive = false;
  bool Contains(double value) const;
  std::string Describe() const;  // ">= 1", "> 0", "in [0, 1)", or "" without bounds
};
Bounds AtLeast(double min);                 // >= min
Bounds Above(double min);                   // > min
Bounds Positive();                          // > 0
Bounds InRange(double min, double max);     // [min, max]
Bounds InHalfOpen(double min, double max);  // [min, max)

// A key as listed by the explaining mode (for `fam config --explain`).
struct KeyDoc {
  std::string path;           // "model.attention.type"
  std::string type;           // "integer >= 1", "one of full|bswa|fam", "section"
  std::string default_value;  // as YAML text; empty for sections
  std::string doc;
};

// Walks a config schema written as code. One class, three modes:
// - reading: assigns the values found in a tree (keys absent keep the struct's defaults) and keeps
//   the first error; Finish() reports keys the schema never asked for;
// - writing: appends every visited value to a tree (the resolved config);
// - explaining: appends a KeyDoc per visited key, the struct's values as defaults.
class YamlReader {
 public:
  // Reads the mapping `node` (nullptr: an empty one) whose dotted key path is `path` ("" at top).
  static YamlReader Reading(const ConfigNode* node, std::string path = "");
  static YamlReader Writing(ConfigNode* out);
  static YamlReader Explaining(std::vector<KeyDoc>* docs);

  bool reading() const;
  bool writing() const;
  bool explaining() const;
  bool ok() const;
  const absl::Status& status() const;

  void Get(std::string_view key, int64_t* value, Bounds bounds, std::string_view doc = "");
  void Get(std::string_view key, int64_t* value, int64_t min, std::string_view doc = "");
  void Get(std::string_view key, double* value, Bounds bounds, std::string_view doc = "");
  void Get(std::string_view key, bool* value, std::string_view doc = "");
  // Any scalar is accepted as a string; an empty value is "".
  void Get(std::string_view key, std::string* value, std::string_view doc = "");
  // A sequence of integers, each within bounds; an empty value is an empty list.
  void Get(std::string_view key, std::vector<int64_t>* value, Bounds bounds,
           std::string_view doc = "");
  // A sequence of strings (any scalars); an empty value is an empty list.
  void Get(std::string_view key, std::vector<std::string>* value, std::string_view doc = "");
  // One of the named values; an unknown name is an error listing the allowed ones.
  template <typename E>
  void GetEnum(std::string_view key, E* value, const std::vector<std::pair<std::string, E>>& names,
               std::string_view doc = "");
  // A nested mapping read by fn (called with a reader for it even when the key is absent); unknown
  // keys inside it are reported when fn returns.
  void Section(std::string_view key, const std::function<void(YamlReader&)>& fn,
               std::string_view doc = "");

  // Records an error (unless one is recorded already) at `key`'s value (a dotted path below this
  // section allowed; "" for the section itself), or at this section when the key is absent.
  void Fail(std::string_view key, std::string_view message);
  // Reports the first key of this section that the schema did not ask for (with the closest known
  // key when it is a likely typo); returns the first error recorded anywhere.
  absl::Status Finish();

  const ConfigNode* node() const { return node_; }
  std::string PathOf(std::string_view key) const;

 private:
  enum class Mode { kRead, kWrite, kExplain };
  struct State {
    Mode mode = Mode::kRead;
    absl::Status status;
    std::vector<KeyDoc>* docs = nullptr;
  };
  YamlReader(std::shared_ptr<State> state, std::string path)
      : state_(std::move(state)), path_(std::move(path)) {}
  // Marks key as known; in reading mode returns its node (nullptr when absent or after an error).
  const ConfigNode* Lookup(std::string_view key);
  void FailAt(const ConfigNode& value, std::string_view path, std::string_view message);
  void Put(std::string_view key, ConfigNode value);
  void Explain(std::string_view key, std::string type, std::string default_value,
               std::string_view doc);
  int GetChoice(std::string_view key, int current, const std::vector<std::string>& names,
                std::string_view doc);

  std::shared_ptr<State> state_;
  std::string path_;
  const ConfigNode* node_ = nullptr;  // reading: this section's mapping
  SourceLoc section_loc_;             // reading: where this section's key was written
  ConfigNode* out_ = nullptr;         // writing: this section's mapping
  std::vector<std::string> known_;
};

template <typename E>
void YamlReader::GetEnum(std::string_view key, E* value,
                         const std::vector<std::pair<std::string, E>>& names,
                         std::string_view doc) {
  std::vector<std::string> texts;
  int current = -1;
  for (size_t i = 0; i < names.size(); ++i) {
    texts.push_back(names[i].first);
    if (names[i].second == *value) current = static_cast<int>(i);
  }
  const int chosen = GetChoice(key, current, texts, doc);
  if (chosen >= 0) *value = names[chosen].second;
}

}  // namespace fam
