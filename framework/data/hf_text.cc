// JSON field reading with errors naming the path, PCRE2 patterns, and the Unicode helpers of the
// Hugging Face tokenizer.json stages (declared in hf_pipeline.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/data/hf_pipeline.h"

namespace fam::data::hf {

absl::Status JsonFile::Error(const std::string& where, const std::string& what) const {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", where, ": ", what));
}

namespace {
std::string Key(const std::string& where, const std::string& key) {
  return where.empty() ? std::string(key) : absl::StrCat(where, ".", key);
}
}  // namespace

absl::StatusOr<std::string> JsonFile::String(const json& j, const std::string& key,
                                             const std::string& where, std::string fallback) const {
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) return Error(Key(where, key), "expected a string");
  return it->get<std::string>();
}

absl::StatusOr<bool> JsonFile::Bool(const json& j, const std::string& key, const std::string& where,
                                    bool fallback) const {
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Error(Key(where, key), "expected true or false");
  return it->get<bool>();
}

absl::StatusOr<int64_t> JsonFile::Int(const json& j, const std::string& key,
                                      const std::string& where, int64_t fallback) const {
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return Error(Key(where, key), "expected an integer");
  return it->get<int64_t>();
}

absl::StatusOr<std::string> JsonFile::Type(const json& j, const std::string& where) const {
  if (!j.is_object()) return Error(where, "expected an object");
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) return Error(Key(where, "type"), "missing");
  return it->get<std::string>();
}

// ---------------------------------------------------------------------------------------------
// Regex

absl::StatusOr<std::shared_ptr<const Regex>> Regex::Compile(const std::string& pattern,
                                                            bool literal, const JsonFile& file,
                                                            const std::string& where) {
  std::shared_ptr<Regex> re(new Regex());
  if (literal) {
    re->is_literal_ = true;
    re->literal_ = pattern;
    return std::shared_ptr<const Regex>(std::move(re));
  }
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, /*ccontext=*/nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return file.Error(where, absl::StrCat("pattern does not compile at offset ", offset, ": ",
                                          reinterpret_cast<const char*>(message)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when unavailable
  re->code_ = code;
  return std::shared_ptr<const Regex>(std::move(re));
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

std::vector<std::pair<size_t, size_t>> Regex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  if (is_literal_) {
    if (literal_.empty()) return matches;
    for (size_t pos = text.find(literal_); pos != std::string_view::npos;
         pos = text.find(literal_, pos + literal_.size())) {
      matches.emplace_back(pos, pos + literal_.size());
    }
    return matches;
  }
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {  // e.g. the JIT stack ran out: the interpreter
      rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                       nullptr);
    }
    if (rc < 0) break;  // no match (or a matching error: the rest is one unmatched piece)
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      matches.emplace_back(b, e);
      start = e;
    } else {  // an empty match: skip one character
      if (b >= text.size()) break;
      start = b + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) {
        ++start;
      }
    }
  }
  pcre2_match_data_free(md);
  return matches;
}

// ---------------------------------------------------------------------------------------------
// Unicode

char32_t NextCodePoint(std::string_view text, size_t* pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t i = *pos;
  const unsigned char c = s[i];
  int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  if (i + n > text.size()) n = 1;  // cannot happen on valid UTF-8
  char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
  *pos = i + n;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsWhitespace(char32_t cp) {
  if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85) return true;
  if (cp < 0xA0) return false;
  const utf8proc_category_t c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

bool IsWordChar(char32_t cp) {
  if (cp == '_') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

std::string ValidUtf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n && s[i] < 0x80) ++i;  // the common all-ASCII prefix
  std::string out(text.substr(0, i));
  out.reserve(n);
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Unicode Table 3-7: the length of the sequence and the range of its second byte.
    int len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (len == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    // The maximal valid prefix is replaced by one U+FFFD; the byte that breaks it starts anew.
    int good = 1;
    while (good < len && i + good < n) {
      const unsigned char b = s[i + good];
      const bool ok = good == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
      if (!ok) break;
      ++good;
    }
    if (good == len) {
      out.append(text.substr(i, len));
    } else {
      out += kReplacement;
    }
    i += good;
  }
  return out;
}

char32_t ByteToCodePoint(uint8_t b) {
  // Printable Latin-1 bytes stand for themselves; the other 68 take 256, 257, ... in byte order.
  static const std::vector<char32_t> table = [] {
    std::vector<char32_t> t(256);
    char32_t next = 256;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE;
      t[i] = printable ? static_cast<char32_t>(i) : next++;
    }
    return t;
  }();
  return table[b];
}

std::string Quoted(const std::string& text) {
  std::string out = "'";
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7F) {
      out += absl::StrFormat("\\x%02X", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "'";
}

std::string BytePiece(uint8_t b) { return absl::StrFormat("<0x%02X>", b); }

}  // namespace fam::data::hf
