// Shell words for the scripts and commands the trainers write or run (sweep job scripts, gnuplot
// calls of eval and sweep reports): quoting and looking a program up on PATH.
#pragma once

#include <string>

namespace fam {

// `text` as one bash word: unchanged when it holds only [A-Za-z0-9/._+=:,-] (and is not empty),
// otherwise single-quoted with each ' written as '\''.
std::string ShellQuote(const std::string& text);
// Whether an executable `program` is in one of PATH's folders.
bool OnPath(const std::string& program);

}  // namespace fam
