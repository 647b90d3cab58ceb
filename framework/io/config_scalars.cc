#include "framework/io/config_scalars.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace fam::config_scalars {

std::string JoinPath(std::string_view path, std::string_view key) {
  std::string joined(path);
  if (!joined.empty()) joined += ".";
  joined += key;
  return joined;
}

bool ParseInt(std::string_view text, int64_t* out) {
  size_t start = 0;
  if (!text.empty() && text[0] == '+') start = 1;
  if (start >= text.size() || (start == 1 && text[1] == '-')) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data() + start, end, *out);
  return ec == std::errc() && ptr == end;
}

bool ParseDouble(std::string_view text, double* out) {
  size_t start = 0;
  if (!text.empty() && text[0] == '+') start = 1;
  if (start >= text.size() || (start == 1 && text[1] == '-')) return false;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data() + start, end, *out);
  return ec == std::errc() && ptr == end && std::isfinite(*out);
}

bool ParseBool(std::string_view text, bool* out) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "true" || lower == "yes" || lower == "on") {
    *out = true;
    return true;
  }
  if (lower == "false" || lower == "no" || lower == "off") {
    *out = false;
    return true;
  }
  return false;
}

std::string FormatDouble(double value) {
  char buffer[64];
  auto [ptr, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return ec == std::errc() ? std::string(buffer, ptr) : absl::StrCat(value);
}

}  // namespace fam::config_scalars
