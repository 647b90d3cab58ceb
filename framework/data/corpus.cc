#include "framework/data/corpus.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace fam::data {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::string_view TrimRight(std::string_view s) {
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}

// "  12 And God said" → true and `text` = "And God said". Verse numbers are indented.
bool ParseVerseStart(std::string_view line, std::string_view* text) {
  if (line.empty() || line[0] != ' ') return false;
  std::string_view rest = TrimLeft(line);
  size_t digits = 0;
  while (digits < rest.size() && IsDigit(rest[digits])) ++digits;
  if (digits == 0 || digits == rest.size() || rest[digits] != ' ') return false;
  *text = TrimLeft(rest.substr(digits));
  return true;
}

// "Genesis 1", "1 Samuel 3", "Song of Solomon 2": unindented, ends in " <number>".
bool LooksLikeChapterHeader(std::string_view line) {
  if (line.empty() || IsSpace(line[0])) return false;
  size_t end = line.size();
  size_t digits = 0;
  while (digits < end && IsDigit(line[end - 1 - digits])) ++digits;
  return digits > 0 && digits < end && line[end - 1 - digits] == ' ';
}

}  // namespace

std::string CleanKjvText(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  std::string verse;  // the verse being joined from wrapped lines
  bool have_verse = false;
  bool prev_blank = true;     // the start of the text counts as after a blank line
  bool chapter_open = false;  // something was written in the current chapter
  bool need_separator = false;
  auto flush_verse = [&]() {
    if (!have_verse) return;
    if (need_separator) out += '\n';
    need_separator = false;
    out += verse;
    out += '\n';
    chapter_open = true;
    verse.clear();
    have_verse = false;
  };
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t nl = raw.find('\n', pos);
    if (nl == std::string_view::npos) nl = raw.size();
    std::string_view line = TrimRight(raw.substr(pos, nl - pos));
    pos = nl + 1;
    if (line.empty()) {
      prev_blank = true;
      continue;
    }
    std::string_view text;
    if (ParseVerseStart(line, &text)) {
      flush_verse();
      verse.assign(text);
      have_verse = true;
    } else if (prev_blank && LooksLikeChapterHeader(line)) {
      flush_verse();
      if (chapter_open) need_separator = true;
      chapter_open = false;
    } else if (have_verse) {
      verse += ' ';
      verse += TrimLeft(line);
    } else {
      // Text outside any verse (not expected in `bible` output): kept as its own line.
      verse.assign(TrimLeft(line));
      have_verse = true;
    }
    prev_blank = false;
  }
  flush_verse();
  return out;
}

std::vector<std::string_view> SplitDocuments(std::string_view text) {
  std::vector<std::string_view> docs;
  size_t doc_begin = std::string_view::npos;  // start of the first non-blank line of the document
  size_t doc_end = 0;                         // end (exclusive, before '\n') of its last such line
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (TrimRight(line).empty()) {
      if (doc_begin != std::string_view::npos) {
        docs.push_back(text.substr(doc_begin, doc_end - doc_begin));
        doc_begin = std::string_view::npos;
      }
    } else {
      if (doc_begin == std::string_view::npos) doc_begin = pos;
      doc_end = nl;
    }
    pos = nl + 1;
  }
  if (doc_begin != std::string_view::npos)
    docs.push_back(text.substr(doc_begin, doc_end - doc_begin));
  return docs;
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open text file ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading text file ", path));
  return std::move(buffer).str();
}

absl::StatusOr<std::string> ApplyInputFormat(std::string_view format, std::string text) {
  if (format == "text") return text;
  if (format == "kjv") return CleanKjvText(text);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown input format '", std::string(format), "' (expected text or kjv)"));
}

}  // namespace fam::data
