#include "framework/core/printable_text.h"

#include <cstdint>
#include <cstdio>

namespace fam {
namespace {

void AppendHex(unsigned char byte, std::string* out) {
  char buf[5];
  std::snprintf(buf, sizeof(buf), "\\x%02x", byte);
  out->append(buf);
}

// Length of the well-formed UTF-8 sequence starting at text[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0.
size_t Utf8SequenceLength(std::string_view text, size_t i, uint32_t* code_point) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const unsigned char b0 = byte(0);
  size_t n = 0;
  uint32_t cp = 0, min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2, cp = b0 & 0x1F, min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3, cp = b0 & 0x0F, min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  *code_point = cp;
  return n;
}

// Code points a terminal does not show as themselves: C1 controls, line/paragraph separators,
// bidirectional overrides and isolates (they reorder what follows), the byte-order mark.
bool IsInvisibleControl(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
         (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0xFEFF;
}

}  // namespace

std::string EscapeNonPrintable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b >= 0x20 && b < 0x7F) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    if (b == '\n' || b == '\t' || b == '\r') {
      out.append(b == '\n' ? "\\n" : b == '\t' ? "\\t" : "\\r");
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t n = b >= 0x80 ? Utf8SequenceLength(text, i, &cp) : 0;
    if (n == 0 || IsInvisibleControl(cp)) {  // a control or a stray byte
      for (size_t k = 0; k < (n == 0 ? 1 : n); ++k)
        AppendHex(static_cast<unsigned char>(text[i + k]), &out);
      i += n == 0 ? 1 : n;
      continue;
    }
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

absl::Status PrintableStatus(const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), EscapeNonPrintable(std::string(status.message())));
}

}  // namespace fam
