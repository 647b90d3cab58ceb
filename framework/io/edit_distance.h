// Edit distance for "did you mean …?" suggestions on misspelt config keys (the YAML reader's
// typed schema and the sweep/run-config override paths).
#pragma once

#include <cstddef>
#include <string_view>

namespace fam::io {

// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of two
// adjacent characters each count one ("laerning" is 1 from "learning").
size_t EditDistance(std::string_view a, std::string_view b);

}  // namespace fam::io
