#include "framework/core/host_memory.h"

#include <sys/sysinfo.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace fam {
namespace {

// A cgroup limit in bytes from a file holding a number (or "max": no limit); 0 when none.
int64_t CgroupLimit(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text)) return 0;
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value <= 0) return 0;
  return value;
}

}  // namespace

int64_t HostMemoryBytes() {
  if (const char* forced = std::getenv("FAM_HOST_MEMORY_BYTES")) {
    int64_t value = 0;
    if (absl::SimpleAtoi(forced, &value) && value > 0) return value;
  }
  struct sysinfo info;
  if (sysinfo(&info) != 0) return 0;
  const double unit = info.mem_unit;
  int64_t total = static_cast<int64_t>(
      (static_cast<double>(info.totalram) + static_cast<double>(info.totalswap)) * unit);
  // v1 reports "no limit" as a huge number: only a limit below the machine's counts.
  for (const char* path :
       {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    const int64_t limit = CgroupLimit(path);
    if (limit > 0 && limit < total) total = limit;
  }
  return total;
}

std::string FormatByteSize(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) {
    bytes /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f B", bytes) : absl::StrFormat("%.1f %s", bytes, units[u]);
}

}  // namespace fam
