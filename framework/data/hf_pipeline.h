// The text stages of a Hugging Face tokenizer.json around its model: normalizers (NFC/NFD/NFKC/
// NFKD through utf8proc, Prepend, Replace, Strip, Sequence), pre-tokenizers (Split with PCRE2
// patterns, ByteLevel, Digits, Metaspace, Whitespace, WhitespaceSplit, Sequence) and decoders
// (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence), each read from its JSON
// with the rules of the `tokenizers` library. Anything else is refused with the JSON path at
// fault. Internal to framework/data (hf_tokenizer.cc puts the stages together).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace fam::data::hf {

using json = nlohmann::json;

// Error messages of one file: "<file>: <json path>: <what>".
struct JsonFile {
  std::string path;
  absl::Status Error(const std::string& where, const std::string& what) const;
  // Typed field reads; a missing key gives `fallback`, a key of another type an error.
  absl::StatusOr<std::string> String(const json& j, const std::string& key,
                                     const std::string& where, std::string fallback = "") const;
  absl::StatusOr<bool> Bool(const json& j, const std::string& key, const std::string& where,
                            bool fallback) const;
  absl::StatusOr<int64_t> Int(const json& j, const std::string& key, const std::string& where,
                              int64_t fallback) const;
  // The "type" field of a stage.
  absl::StatusOr<std::string> Type(const json& j, const std::string& where) const;
};

// A compiled PCRE2 pattern (UTF + UCP, JIT when available), or a literal string.
class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(const std::string& pattern,
                                                              bool literal, const JsonFile& file,
                                                              const std::string& where);
  ~Regex();
  // The [begin, end) byte ranges of the non-overlapping matches in `text`, left to right (empty
  // matches are skipped). `text` is valid UTF-8.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  Regex() = default;
  std::string literal_;
  bool is_literal_ = false;
  void* code_ = nullptr;  // pcre2_code_8*
};

// One piece of text on its way to the model; `at_start` marks a piece that begins at offset 0 of
// the whole input (what Metaspace's prepend_scheme "first" looks at).
struct PreToken {
  std::string text;
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void Apply(std::string* text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces every piece by its splits (empty splits dropped).
  virtual void Apply(std::vector<PreToken>* pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>* tokens) const = 0;
};

// Metaspace's fields (pre-tokenizer and decoder): the replacement character (default "▁") and
// when it is prepended (prepend_scheme, or add_prefix_space in older files).
enum class PrependScheme { kAlways, kFirst, kNever };
absl::StatusOr<std::string> ParseReplacement(const json& j, const JsonFile& file,
                                             const std::string& where);
absl::StatusOr<PrependScheme> ParsePrependScheme(const json& j, const JsonFile& file,
                                                 const std::string& where);

// `j` is the value of the key at `where` (e.g. "normalizer"); null gives nullptr.
absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const json& j, const JsonFile& file,
                                                            const std::string& where);
absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const json& j, const JsonFile& file,
                                                                const std::string& where);
absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const json& j, const JsonFile& file,
                                                      const std::string& where);

// Unicode helpers shared by the stages and the added-token matcher (valid UTF-8 in, code points).
// Decodes the code point at text[*pos] and advances *pos.
char32_t NextCodePoint(std::string_view text, size_t* pos);
void AppendUtf8(char32_t cp, std::string* out);
bool IsWhitespace(char32_t cp);  // Rust's char::is_whitespace (Unicode White_Space)
bool IsWordChar(char32_t cp);    // alphanumeric or '_' (what single_word added tokens look at)
// `text` with every ill-formed UTF-8 sequence replaced by U+FFFD (as Python's errors="replace").
std::string ValidUtf8(std::string_view text);
// The byte-level alphabet of GPT-2: byte b ↔ the code point ByteToCodePoint(b).
char32_t ByteToCodePoint(uint8_t b);
// `text` in single quotes for an error message, control bytes written as \xNN.
std::string Quoted(const std::string& text);
// "<0xNN>" of byte-fallback pieces.
std::string BytePiece(uint8_t b);

}  // namespace fam::data::hf
