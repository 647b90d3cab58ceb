// Text fit for a terminal: messages may quote bytes read from files (a corrupt header, a token
// string), which must not reach the user's terminal raw.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace fam {

// `text` with every byte that is not printable escaped: control characters (newline and tab
// included, so a message stays on one line) as \n, \t, \r or \xNN; DEL, the C1 controls, line
// separators, bidirectional overrides and the byte-order mark as the \xNN of their bytes; and
// bytes that are not well-formed UTF-8 as \xNN. Printable ASCII and well-formed UTF-8
// (accents, CJK, emoji) pass unchanged; a backslash stays a single backslash.
std::string EscapeNonPrintable(std::string_view text);

// `status` with its message passed through EscapeNonPrintable (OK stays OK): what a reader returns
// when its errors may quote names or text taken from the file, so the error stays one line.
absl::Status PrintableStatus(const absl::Status& status);

}  // namespace fam
