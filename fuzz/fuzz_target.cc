#include "fuzz/fuzz_target.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fam::fuzz {

constexpr std::string_view kSeparator = "\n--8<--\n";

namespace {
ViolationHandler violation_handler = nullptr;
}  // namespace

void SetViolationHandler(ViolationHandler handler) { violation_handler = handler; }

void Violation(std::string_view what) {
  if (violation_handler != nullptr) violation_handler(what);
  std::fprintf(stderr, "fuzz: contract violated: %.*s\n", static_cast<int>(what.size()),
               what.data());
  std::abort();
}

void ExpectCleanError(const absl::Status& status, std::string_view culprit) {
  if (status.ok()) Violation("expected an error, got OK");
  const std::string message(status.message());
  const std::string named(culprit);
  if (message.empty()) Violation(absl::StrCat("empty error message (", status.ToString(), ")"));
  if (message.find('\n') != std::string::npos)
    Violation(absl::StrCat("error message spans lines: ", message));
  if (!named.empty() && !absl::StrContains(message, named))
    Violation(absl::StrCat("error does not name ", named, ": ", message));
}

Scratch& Scratch::Get() {
  static Scratch* scratch = new Scratch();
  return *scratch;
}

Scratch::Scratch() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/fam-fuzz-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) Violation("cannot create the scratch folder");
  dir_ = pattern;
}

void Scratch::Reset() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec))
    std::filesystem::remove_all(entry.path(), ec);
}

std::string Scratch::Write(const std::string& name, std::string_view bytes) {
  const std::filesystem::path path = std::filesystem::path(dir_) / name;
  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) Violation(absl::StrCat("cannot write ", path.string()));
  return path.string();
}

std::vector<std::string_view> SplitParts(std::string_view input, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t at = input.find(kSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(input.substr(0, at));
    input.remove_prefix(at + kSeparator.size());
  }
  parts.push_back(input);
  return parts;
}

std::string JoinParts(const std::vector<std::string>& parts) {
  std::string joined;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) joined += kSeparator;
    joined += parts[i];
  }
  return joined;
}

const Target* FindTarget(std::string_view name) {
  for (const Target& target : Targets())
    if (name == target.name) return &target;
  return nullptr;
}

}  // namespace fam::fuzz
