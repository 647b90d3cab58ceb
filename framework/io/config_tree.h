// The config tree: a YAML file loaded into a ConfigNode tree in which every value remembers the
// file, line and column it was written at; `base:` / `include:` inherit other files (deep merge,
// this file wins) and `--set a.b.c=value` overrides apply on top; the tree is written back as YAML
// or as sorted dotted lines for hashing. Errors are one line, "file:line:col: a.b.c: what was
// wrong". Typed reading of a tree against a schema: yaml_reader.h.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fam {

// Where a key or value was written. Lines and columns are 1-based; line 0 means "no line" (values
// from command-line overrides, whose file is "--set", or values made by code).
struct SourceLoc {
  std::string file;
  int line = 0;
  int column = 0;
  std::string ToString() const;  // "file:line:column", or "file" alone without a line
};

// One YAML value with its location. Mappings keep their keys in the order written.
struct ConfigNode {
  enum class Kind { kNull, kScalar, kSequence, kMap };
  Kind kind = Kind::kNull;
  std::string scalar;   // the text of a scalar
  bool quoted = false;  // a quoted (or !!str) scalar: a string, never a number or a bool
  SourceLoc loc;        // where the value starts (for null values: where its key is)
  std::string key;      // for a mapping entry: its key
  SourceLoc key_loc;    // and where the key was written
  std::vector<ConfigNode> children;  // mapping entries or sequence items, in order

  static ConfigNode Map(SourceLoc loc = {});
  static ConfigNode Scalar(std::string text, SourceLoc loc = {});
  bool is_map() const { return kind == Kind::kMap; }
  bool is_scalar() const { return kind == Kind::kScalar; }
  bool is_null() const { return kind == Kind::kNull; }

  const ConfigNode* Find(std::string_view child_key) const;
  ConfigNode* Find(std::string_view child_key);
  // Follows a dotted path of mapping keys ("attention.block_size"); nullptr when absent.
  const ConfigNode* FindPath(std::string_view dotted) const;
  // Adds (or replaces) the entry `child_key`; returns it.
  ConfigNode& Set(std::string_view child_key, ConfigNode value);
  bool Erase(std::string_view child_key);
  // For "got ..." in error messages: 12, "abc", a sequence, a mapping, an empty value.
  std::string Describe() const;
};

// The one-line InvalidArgument error of this module: "<loc>: <path>: <message>".
absl::Status ConfigError(const SourceLoc& loc, std::string_view path, std::string_view message);

// Parses YAML text whose top level must be a mapping (an empty text is an empty mapping); `file` is
// the name used in locations. Does not follow `base:` / `include:`.
absl::StatusOr<ConfigNode> ParseYamlText(const std::string& text, const std::string& file);
// Reads a YAML file and resolves its inheritance: the files named by a top-level `base: path` and
// `include: [paths]` (relative to the including file) are loaded the same way and deep-merged in
// that order, then this file's own keys on top. Cycles are errors.
absl::StatusOr<ConfigNode> LoadYamlFile(const std::string& path);
// The same for text that stands for the file `file` (relative paths resolve against its folder).
absl::StatusOr<ConfigNode> LoadYamlText(const std::string& text, const std::string& file);

// Deep merge: mappings merge key by key (recursively), anything else in `over` replaces; a null in
// `over` leaves a mapping of `base` as it is.
void MergeInto(ConfigNode* base, const ConfigNode& over);
// Applies "a.b.c=value" overrides in order; the value is parsed as YAML (so `steps=100` is an
// integer and `type=bswa` a string; text that is not valid YAML is taken as a string). Missing
// sections are created; setting a key below a scalar is an error. Locations become "--set".
absl::Status ApplyOverrides(ConfigNode* root, const std::vector<std::string>& overrides);

// The tree as YAML text (block mappings, flow sequences).
std::string EmitYaml(const ConfigNode& root);
// The tree as sorted "dotted.key=value" lines: a canonical text for hashing.
std::string FlattenYaml(const ConfigNode& root);

}  // namespace fam
