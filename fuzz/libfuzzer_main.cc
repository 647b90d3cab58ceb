// libFuzzer's entry point for one target, chosen at build time (FAM_FUZZ_TARGET_NAME, see
// fuzz/CMakeLists.txt): each input is written where the reader expects it and checked against the
// reader's contract (fuzz_target.h).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fuzz/fuzz_target.h"

namespace {

const fam::fuzz::Target& ThisTarget() {
  static const fam::fuzz::Target* target = [] {
    const fam::fuzz::Target* found = fam::fuzz::FindTarget(FAM_FUZZ_TARGET_NAME);
    if (found == nullptr) {
      std::fprintf(stderr, "fuzz: no target named %s\n", FAM_FUZZ_TARGET_NAME);
      std::exit(2);
    }
    return found;
  }();
  return *target;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fam::fuzz::Scratch::Get().Reset();
  ThisTarget().run(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
