// How much memory this machine can give the process: used to refuse, before allocating, sizes that
// could never fit (a config asking for a 200 TB tensor) instead of failing after trying.
#pragma once

#include <cstdint>
#include <string>

namespace fam {

// Physical memory plus swap, capped by the cgroup limit of a container (memory.max / v1's
// memory.limit_in_bytes) when one is set; FAM_HOST_MEMORY_BYTES overrides it (tests). 0 when
// unknown.
int64_t HostMemoryBytes();

// "23.5 GiB", "745 TiB".
std::string FormatByteSize(double bytes);

}  // namespace fam
