// Text corpora: turning raw source text into plain training text and splitting it into documents.
// The King James Bible comes from the Debian package bible-kjv: `bible "Genesis 1:1-Revelation
// 22:21"` prints chapters as a header line ("1 Samuel 3") between blank lines, then verses that
// start with "  <n> " and wrap at 80 columns. CleanKjvText turns that into one verse per line
// (numbers dropped, wrapped lines joined) with one blank line between chapters, so every chapter is
// one document for SplitDocuments. scripts/get_kjv.sh applies the same rules (a test keeps them
// equal).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fam::data {

// Cleans raw `bible` (bible-kjv) output as described above. Text before the first verse that is not
// a chapter header is kept as its own lines. The result ends with a newline (or is empty).
std::string CleanKjvText(std::string_view raw);

// Splits text into documents at blank lines (lines that are empty or only whitespace). Each
// document keeps its internal newlines but no leading or trailing blank lines; empty documents are
// dropped. The views point into `text`.
std::vector<std::string_view> SplitDocuments(std::string_view text);

// Reads a whole file; NotFound / DataLoss errors name the path.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

// Applies an input format to raw file text: "text" (unchanged) or "kjv" (CleanKjvText).
// InvalidArgument for any other format name.
absl::StatusOr<std::string> ApplyInputFormat(std::string_view format, std::string text);

}  // namespace fam::data
