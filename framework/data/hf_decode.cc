// Decoders of a Hugging Face tokenizer.json (declared in hf_pipeline.h): each turns the list of
// token strings into another list, as the `tokenizers` library's decode_chain does.
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "framework/data/hf_pipeline.h"

namespace fam::data::hf {
namespace {

// Byte-level tokens back to bytes; a token with a character outside the alphabet is kept as it
// is. The bytes are read as UTF-8 with ill-formed sequences replaced by U+FFFD.
class ByteLevelDecoder : public Decoder {
 public:
  ByteLevelDecoder() {
    for (int b = 0; b < 256; ++b) to_byte_[ByteToCodePoint(static_cast<uint8_t>(b))] = b;
  }
  void Apply(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& t : *tokens) {
      const size_t mark = bytes.size();
      size_t pos = 0;
      bool all = true;
      while (pos < t.size()) {
        auto it = to_byte_.find(NextCodePoint(t, &pos));
        if (it == to_byte_.end()) {
          all = false;
          break;
        }
        bytes.push_back(static_cast<char>(it->second));
      }
      if (!all) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens->assign(1, ValidUtf8(bytes));
  }

 private:
  std::unordered_map<char32_t, uint8_t> to_byte_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepends)
      : replacement_(std::move(replacement)), prepends_(prepends) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      const std::string& t = (*tokens)[i];
      std::string out;
      for (size_t pos = 0; pos < t.size();) {
        if (t.compare(pos, replacement_.size(), replacement_) == 0) {
          if (i != 0 || !prepends_) out.push_back(' ');
          pos += replacement_.size();
        } else {
          out.push_back(t[pos++]);
        }
      }
      (*tokens)[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool prepends_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::shared_ptr<const Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      const auto matches = pattern_->FindAll(t);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const auto& [b, e] : matches) {
        out.append(t, prev, b - prev);
        out += content_;
        prev = e;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  std::shared_ptr<const Regex> pattern_;
  std::string content_;
};

// Runs of <0xNN> tokens become the text of their bytes, or one U+FFFD token per byte when the
// run is not valid UTF-8.
class ByteFallbackDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t count = 0;
    auto flush = [&] {
      if (count == 0) return;
      if (ValidUtf8(bytes) == bytes) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < count; ++i) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (std::string& t : *tokens) {
      int value = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') value = Hex(t[3], t[4]);
      if (value >= 0) {
        bytes.push_back(static_cast<char>(value));
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static int Digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int Hex(char a, char b) {
    const int hi = Digit(a), lo = Digit(b);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string all;
    for (const std::string& t : *tokens) all += t;
    tokens->assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int64_t start, int64_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Apply(std::vector<std::string>* tokens) const override {
    const size_t n = content_.size();
    for (std::string& t : *tokens) {
      size_t begin = 0, end = t.size();
      for (int64_t i = 0; i < start_ && begin + n <= end && t.compare(begin, n, content_) == 0;
           ++i) {
        begin += n;
      }
      for (int64_t i = 0; i < stop_ && end >= begin + n && t.compare(end - n, n, content_) == 0;
           ++i) {
        end -= n;
      }
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  int64_t start_, stop_;
};

class DecoderSequence : public Decoder {
 public:
  explicit DecoderSequence(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->Apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const json& j, const JsonFile& file,
                                                      const std::string& where) {
  if (j.is_null()) return nullptr;
  absl::StatusOr<std::string> type = file.Type(j, where);
  if (!type.ok()) return type.status();
  if (*type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (*type == "Metaspace") {
    absl::StatusOr<std::string> replacement = ParseReplacement(j, file, where);
    if (!replacement.ok()) return replacement.status();
    absl::StatusOr<PrependScheme> scheme = ParsePrependScheme(j, file, where);
    if (!scheme.ok()) return scheme.status();
    return std::make_unique<MetaspaceDecoder>(*replacement, *scheme != PrependScheme::kNever);
  }
  if (*type == "Replace") {
    const json& p = j.value("pattern", json());
    const std::string pw = where + ".pattern";
    absl::StatusOr<std::shared_ptr<const Regex>> pattern =
        file.Error(pw, "expected {\"String\": ...} or {\"Regex\": ...}");
    if (p.is_object() && p.size() == 1 && p.contains("String") && p["String"].is_string()) {
      pattern = Regex::Compile(p["String"].get<std::string>(), true, file, pw);
    } else if (p.is_object() && p.size() == 1 && p.contains("Regex") && p["Regex"].is_string()) {
      pattern = Regex::Compile(p["Regex"].get<std::string>(), false, file, pw + ".Regex");
    }
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = file.String(j, "content", where);
    if (!content.ok()) return content.status();
    return std::make_unique<ReplaceDecoder>(*std::move(pattern), *content);
  }
  if (*type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (*type == "Fuse") return std::make_unique<FuseDecoder>();
  if (*type == "Strip") {
    absl::StatusOr<std::string> content = file.String(j, "content", where, " ");
    if (!content.ok()) return content.status();
    absl::StatusOr<int64_t> start = file.Int(j, "start", where, 0);
    if (!start.ok()) return start.status();
    absl::StatusOr<int64_t> stop = file.Int(j, "stop", where, 0);
    if (!stop.ok()) return stop.status();
    size_t pos = 0;
    if (content->empty() || (NextCodePoint(*content, &pos), pos != content->size())) {
      return file.Error(where + ".content", "expected one character");
    }
    return std::make_unique<StripDecoder>(*content, *start, *stop);
  }
  if (*type == "Sequence") {
    const json& list = j.value("decoders", json());
    if (!list.is_array()) return file.Error(where + ".decoders", "expected a list");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = ParseDecoder(list[i], file, absl::StrCat(where, ".decoders[", i, "]"));
      if (!step.ok()) return step.status();
      if (*step != nullptr) steps.push_back(*std::move(step));
    }
    return std::make_unique<DecoderSequence>(std::move(steps));
  }
  return file.Error(where + ".type", absl::StrCat(*type, " is not supported"));
}

}  // namespace fam::data::hf
