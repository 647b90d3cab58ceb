// How config values are spelled: the scalar text that config_tree.cc and yaml_reader.cc read and
// write (integers, finite numbers, booleans), and dotted key paths. Shared by those two files only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fam::config_scalars {

// "a.b" and "c" → "a.b.c"; "" and "c" → "c".
std::string JoinPath(std::string_view path, std::string_view key);
// The whole text as a decimal integer (an optional leading '+').
bool ParseInt(std::string_view text, int64_t* out);
// The whole text as a finite number (an optional leading '+').
bool ParseDouble(std::string_view text, double* out);
// true/yes/on or false/no/off, in any case.
bool ParseBool(std::string_view text, bool* out);
// Shortest text that reads back as the same double.
std::string FormatDouble(double value);

}  // namespace fam::config_scalars
