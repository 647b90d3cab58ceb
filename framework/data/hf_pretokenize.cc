// Normalizers and pre-tokenizers of a Hugging Face tokenizer.json (declared in hf_pipeline.h),
// with the semantics of the `tokenizers` library.
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "framework/data/hf_pipeline.h"

namespace fam::data::hf {
namespace {

constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr char kWhitespacePattern[] = R"(\w+|[^\w\s]+)";

std::string Unsupported(const std::string& type) { return absl::StrCat(type, " is not supported"); }

// A Split pattern: {"String": s} or {"Regex": r}.
absl::StatusOr<std::shared_ptr<const Regex>> ParsePattern(const json& j, const JsonFile& file,
                                                          const std::string& where) {
  if (j.is_object() && j.size() == 1) {
    if (j.contains("String") && j["String"].is_string()) {
      return Regex::Compile(j["String"].get<std::string>(), /*literal=*/true, file, where);
    }
    if (j.contains("Regex") && j["Regex"].is_string()) {
      return Regex::Compile(j["Regex"].get<std::string>(), /*literal=*/false, file,
                            where + ".Regex");
    }
  }
  return file.Error(where, "expected {\"String\": ...} or {\"Regex\": ...}");
}

// ---------------------------------------------------------------------------------------------
// Normalizers

class UnicodeForm : public Normalizer {
 public:
  explicit UnicodeForm(int options) : options_(options) {}
  void Apply(std::string* text) const override {
    if (text->empty()) return;
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text->data()),
                                            static_cast<utf8proc_ssize_t>(text->size()), &out,
                                            static_cast<utf8proc_option_t>(options_));
    if (n >= 0) text->assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);  // the text is valid UTF-8, so n < 0 does not happen; it is then kept as is
  }

 private:
  int options_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void Apply(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

std::string ReplaceAll(const std::string& text, const Regex& pattern, const std::string& content) {
  const auto matches = pattern.FindAll(text);
  if (matches.empty()) return text;
  std::string out;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    out.append(text, prev, b - prev);
    out += content;
    prev = e;
  }
  out.append(text, prev, std::string::npos);
  return out;
}

class Replace : public Normalizer {
 public:
  Replace(std::shared_ptr<const Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::string* text) const override { *text = ReplaceAll(*text, *pattern_, content_); }

 private:
  std::shared_ptr<const Regex> pattern_;
  std::string content_;
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void Apply(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      size_t pos = 0;
      while (pos < end) {
        size_t next = pos;
        if (!IsWhitespace(NextCodePoint(*text, &next))) break;
        pos = next;
      }
      begin = pos;
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>((*text)[start]) & 0xC0) == 0x80) {
          --start;
        }
        size_t next = start;
        if (!IsWhitespace(NextCodePoint(*text, &next))) break;
        end = start;
      }
    }
    *text = text->substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class NormalizerSequence : public Normalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::string* text) const override {
    for (const auto& step : steps_) step->Apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits every piece at the matches of `pattern` the way NormalizedString::split does.
void SplitPieces(const Regex& pattern, Behavior behavior, bool invert,
                 std::vector<PreToken>* pieces) {
  std::vector<PreToken> out;
  out.reserve(pieces->size());
  struct Span {
    size_t b, e;
    bool match;
  };
  std::vector<Span> spans, merged;
  for (PreToken& piece : *pieces) {
    const std::string& s = piece.text;
    spans.clear();
    size_t prev = 0;
    for (const auto& [b, e] : pattern.FindAll(s)) {
      if (prev != b) spans.push_back({prev, b, invert});
      spans.push_back({b, e, !invert});
      prev = e;
    }
    if (prev != s.size()) spans.push_back({prev, s.size(), invert});
    // (offsets, removed) after the behaviour.
    merged.clear();
    bool previous_match = false;
    switch (behavior) {
      case Behavior::kRemoved:
        merged = spans;  // `match` now means "removed"
        break;
      case Behavior::kIsolated:
        for (const Span& sp : spans) merged.push_back({sp.b, sp.e, false});
        break;
      case Behavior::kContiguous:
        for (const Span& sp : spans) {
          if (sp.match == previous_match && !merged.empty()) {
            merged.back().e = sp.e;
          } else {
            merged.push_back({sp.b, sp.e, false});
          }
          previous_match = sp.match;
        }
        break;
      case Behavior::kMergedWithPrevious:
        for (const Span& sp : spans) {
          if (sp.match && !previous_match && !merged.empty()) {
            merged.back().e = sp.e;
          } else {
            merged.push_back({sp.b, sp.e, false});
          }
          previous_match = sp.match;
        }
        break;
      case Behavior::kMergedWithNext:
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
          if (it->match && !previous_match && !merged.empty()) {
            merged.back().b = it->b;
          } else {
            merged.push_back({it->b, it->e, false});
          }
          previous_match = it->match;
        }
        std::reverse(merged.begin(), merged.end());
        break;
    }
    for (const Span& sp : merged) {
      if (sp.match || sp.e == sp.b) continue;
      out.push_back({s.substr(sp.b, sp.e - sp.b), piece.at_start && sp.b == 0});
    }
  }
  *pieces = std::move(out);
}

class Split : public PreTokenizer {
 public:
  Split(std::shared_ptr<const Regex> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void Apply(std::vector<PreToken>* pieces) const override {
    SplitPieces(*pattern_, behavior_, invert_, pieces);
  }

 private:
  std::shared_ptr<const Regex> pattern_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::shared_ptr<const Regex> gpt2)
      : add_prefix_space_(add_prefix_space), gpt2_(std::move(gpt2)) {}
  void Apply(std::vector<PreToken>* pieces) const override {
    if (add_prefix_space_) {
      for (PreToken& p : *pieces) {
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, " ");
      }
    }
    if (gpt2_ != nullptr) SplitPieces(*gpt2_, Behavior::kIsolated, false, pieces);
    for (PreToken& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) AppendUtf8(ByteToCodePoint(c), &mapped);
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::shared_ptr<const Regex> gpt2_;  // null: use_regex false
};

class Metaspace : public PreTokenizer {
 public:
  Metaspace(std::string replacement, PrependScheme scheme, std::shared_ptr<const Regex> splitter)
      : replacement_(std::move(replacement)), scheme_(scheme), splitter_(std::move(splitter)) {}
  void Apply(std::vector<PreToken>* pieces) const override {
    for (PreToken& p : *pieces) {
      std::string out;
      out.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') {
          out += replacement_;
        } else {
          out.push_back(c);
        }
      }
      const bool starts = out.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start))) {
        out.insert(0, replacement_);
      }
      p.text = std::move(out);
    }
    if (splitter_ != nullptr) SplitPieces(*splitter_, Behavior::kMergedWithNext, false, pieces);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  std::shared_ptr<const Regex> splitter_;  // null: split false
};

class WhitespaceSplit : public PreTokenizer {
 public:
  void Apply(std::vector<PreToken>* pieces) const override {
    std::vector<PreToken> out;
    for (const PreToken& p : *pieces) {
      size_t pos = 0, word = std::string::npos;
      while (pos < p.text.size()) {
        const size_t at = pos;
        const bool space = IsWhitespace(NextCodePoint(p.text, &pos));
        if (space && word != std::string::npos) {
          out.push_back({p.text.substr(word, at - word), p.at_start && word == 0});
          word = std::string::npos;
        } else if (!space && word == std::string::npos) {
          word = at;
        }
      }
      if (word != std::string::npos) {
        out.push_back({p.text.substr(word), p.at_start && word == 0});
      }
    }
    *pieces = std::move(out);
  }
};

class PreTokenizerSequence : public PreTokenizer {
 public:
  explicit PreTokenizerSequence(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::vector<PreToken>* pieces) const override {
    for (const auto& step : steps_) step->Apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

// The `replacement` of Metaspace (one character).
absl::StatusOr<std::string> ParseReplacement(const json& j, const JsonFile& file,
                                             const std::string& where) {
  absl::StatusOr<std::string> r = file.String(j, "replacement", where, "\xE2\x96\x81");
  if (!r.ok()) return r.status();
  size_t pos = 0;
  if (r->empty() || (NextCodePoint(*r, &pos), pos != r->size())) {
    return file.Error(where + ".replacement", "expected one character");
  }
  return r;
}

absl::StatusOr<PrependScheme> ParsePrependScheme(const json& j, const JsonFile& file,
                                                 const std::string& where) {
  if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
    absl::StatusOr<std::string> s = file.String(j, "prepend_scheme", where);
    if (!s.ok()) return s.status();
    if (*s == "always") return PrependScheme::kAlways;
    if (*s == "first") return PrependScheme::kFirst;
    if (*s == "never") return PrependScheme::kNever;
    return file.Error(where + ".prepend_scheme",
                      absl::StrCat(Quoted(*s), " (expected always|first|never)"));
  }
  absl::StatusOr<bool> add = file.Bool(j, "add_prefix_space", where, true);  // files before 0.19
  if (!add.ok()) return add.status();
  return *add ? PrependScheme::kAlways : PrependScheme::kNever;
}

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const json& j, const JsonFile& file,
                                                            const std::string& where) {
  if (j.is_null()) return nullptr;
  absl::StatusOr<std::string> type = file.Type(j, where);
  if (!type.ok()) return type.status();
  const int stable = UTF8PROC_STABLE;
  if (*type == "NFC") return std::make_unique<UnicodeForm>(stable | UTF8PROC_COMPOSE);
  if (*type == "NFD") return std::make_unique<UnicodeForm>(stable | UTF8PROC_DECOMPOSE);
  if (*type == "NFKC") {
    return std::make_unique<UnicodeForm>(stable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  }
  if (*type == "NFKD") {
    return std::make_unique<UnicodeForm>(stable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  if (*type == "Prepend") {
    absl::StatusOr<std::string> prefix = file.String(j, "prepend", where);
    if (!prefix.ok()) return prefix.status();
    return std::make_unique<Prepend>(*prefix);
  }
  if (*type == "Replace") {
    auto pattern = ParsePattern(j.value("pattern", json()), file, where + ".pattern");
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = file.String(j, "content", where);
    if (!content.ok()) return content.status();
    return std::make_unique<Replace>(*std::move(pattern), *content);
  }
  if (*type == "Strip") {
    absl::StatusOr<bool> left = file.Bool(j, "strip_left", where, true);
    if (!left.ok()) return left.status();
    absl::StatusOr<bool> right = file.Bool(j, "strip_right", where, true);
    if (!right.ok()) return right.status();
    return std::make_unique<Strip>(*left, *right);
  }
  if (*type == "Sequence") {
    const json& list = j.value("normalizers", json());
    if (!list.is_array()) return file.Error(where + ".normalizers", "expected a list");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = ParseNormalizer(list[i], file, absl::StrCat(where, ".normalizers[", i, "]"));
      if (!step.ok()) return step.status();
      if (*step != nullptr) steps.push_back(*std::move(step));
    }
    return std::make_unique<NormalizerSequence>(std::move(steps));
  }
  return file.Error(where + ".type", Unsupported(*type));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const json& j, const JsonFile& file,
                                                                const std::string& where) {
  if (j.is_null()) return nullptr;
  absl::StatusOr<std::string> type = file.Type(j, where);
  if (!type.ok()) return type.status();
  if (*type == "Split") {
    auto pattern = ParsePattern(j.value("pattern", json()), file, where + ".pattern");
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> behavior = file.String(j, "behavior", where);
    if (!behavior.ok()) return behavior.status();
    absl::StatusOr<bool> invert = file.Bool(j, "invert", where, false);
    if (!invert.ok()) return invert.status();
    static const std::pair<const char*, Behavior> kBehaviors[] = {
        {"Removed", Behavior::kRemoved},
        {"Isolated", Behavior::kIsolated},
        {"MergedWithPrevious", Behavior::kMergedWithPrevious},
        {"MergedWithNext", Behavior::kMergedWithNext},
        {"Contiguous", Behavior::kContiguous}};
    for (const auto& [name, b] : kBehaviors) {
      if (*behavior == name) return std::make_unique<Split>(*std::move(pattern), b, *invert);
    }
    return file.Error(where + ".behavior", absl::StrCat(Quoted(*behavior), " is not supported"));
  }
  if (*type == "ByteLevel") {
    absl::StatusOr<bool> prefix = file.Bool(j, "add_prefix_space", where, true);
    if (!prefix.ok()) return prefix.status();
    absl::StatusOr<bool> use_regex = file.Bool(j, "use_regex", where, true);
    if (!use_regex.ok()) return use_regex.status();
    std::shared_ptr<const Regex> gpt2;
    if (*use_regex) {
      auto re = Regex::Compile(kGpt2Pattern, false, file, where);
      if (!re.ok()) return re.status();
      gpt2 = *std::move(re);
    }
    return std::make_unique<ByteLevel>(*prefix, std::move(gpt2));
  }
  if (*type == "Digits") {
    absl::StatusOr<bool> individual = file.Bool(j, "individual_digits", where, false);
    if (!individual.ok()) return individual.status();
    auto re = Regex::Compile(R"(\p{N})", false, file, where);
    if (!re.ok()) return re.status();
    return std::make_unique<Split>(
        *std::move(re), *individual ? Behavior::kIsolated : Behavior::kContiguous, false);
  }
  if (*type == "Metaspace") {
    absl::StatusOr<std::string> replacement = ParseReplacement(j, file, where);
    if (!replacement.ok()) return replacement.status();
    absl::StatusOr<PrependScheme> scheme = ParsePrependScheme(j, file, where);
    if (!scheme.ok()) return scheme.status();
    absl::StatusOr<bool> split = file.Bool(j, "split", where, true);
    if (!split.ok()) return split.status();
    std::shared_ptr<const Regex> splitter;
    if (*split) {
      auto re = Regex::Compile(*replacement, /*literal=*/true, file, where);
      if (!re.ok()) return re.status();
      splitter = *std::move(re);
    }
    return std::make_unique<Metaspace>(*replacement, *scheme, std::move(splitter));
  }
  if (*type == "Whitespace") {
    auto re = Regex::Compile(kWhitespacePattern, false, file, where);
    if (!re.ok()) return re.status();
    return std::make_unique<Split>(*std::move(re), Behavior::kRemoved, /*invert=*/true);
  }
  if (*type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (*type == "Sequence") {
    const json& list = j.value("pretokenizers", json());
    if (!list.is_array()) return file.Error(where + ".pretokenizers", "expected a list");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = ParsePreTokenizer(list[i], file, absl::StrCat(where, ".pretokenizers[", i, "]"));
      if (!step.ok()) return step.status();
      if (*step != nullptr) steps.push_back(*std::move(step));
    }
    return std::make_unique<PreTokenizerSequence>(std::move(steps));
  }
  return file.Error(where + ".type", Unsupported(*type));
}

}  // namespace fam::data::hf
