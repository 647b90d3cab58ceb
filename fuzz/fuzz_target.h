// Fuzz targets: one function per file format the framework reads. Each feeds the reader the bytes
// it is given (as a file in a scratch folder, as the reader would meet it) and checks the reader's
// contract: a value, or a clean error (a non-empty single line that names the file), never a crash,
// a sanitizer report, a hang or an allocation beyond what the input justifies. The same functions
// run under libFuzzer (fuzz/libfuzzer_main.cc, -DFAM_FUZZ=ON) and replay the committed corpora and
// regression inputs in the normal test suite (tests/fuzz_replay_test.cc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace fam::fuzz {

struct Target {
  const char* name;   // also the folder of its corpus: fuzz/corpus/<name>
  const char* about;  // the reader it drives
  void (*run)(std::string_view input);
};

// Every target, in a fixed order.
const std::vector<Target>& Targets();
// nullptr when there is none of that name.
const Target* FindTarget(std::string_view name);

// A contract violation: prints the target's finding and aborts (libFuzzer then saves the input),
// or hands it to the handler installed by SetViolationHandler, which must not return (the replay
// test throws, to report the input and go on).
[[noreturn]] void Violation(std::string_view what);
using ViolationHandler = void (*)(std::string_view what);
void SetViolationHandler(ViolationHandler handler);  // nullptr: back to printing and aborting

// Checks that `status` is a clean error: not OK, one non-empty line, naming `culprit` (a file
// name) unless culprit is empty.
void ExpectCleanError(const absl::Status& status, std::string_view culprit);

// A private folder (under $TMPDIR) for the files one input becomes; emptied before each input.
class Scratch {
 public:
  static Scratch& Get();
  // Empties the folder.
  void Reset();
  // Writes `bytes` to <folder>/<name> (sub-folders created) and returns its path.
  std::string Write(const std::string& name, std::string_view bytes);
  const std::string& dir() const { return dir_; }

 private:
  Scratch();
  std::string dir_;
};

// Splits an input that stands for several files at the separator line "\n--8<--\n" (at most
// max_parts parts; the last part keeps any further separators). Seeds are built the same way
// (JoinParts).
std::vector<std::string_view> SplitParts(std::string_view input, size_t max_parts);
std::string JoinParts(const std::vector<std::string>& parts);

}  // namespace fam::fuzz
