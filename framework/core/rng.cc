#include "framework/core/rng.h"

#include <cmath>
#include <vector>

namespace fam {

std::array<uint32_t, 4> Philox(uint64_t seed, uint64_t stream, uint64_t offset) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(offset), c1 = static_cast<uint32_t>(offset >> 32);
  uint32_t c2 = static_cast<uint32_t>(stream), c3 = static_cast<uint32_t>(stream >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {c0, c1, c2, c3};
}

namespace {
inline float ToUnit(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }
}  // namespace

float UniformAt(uint64_t seed, uint64_t stream, uint64_t index) {
  return ToUnit(Philox(seed, stream, index / 4)[index % 4]);
}

float NormalAt(uint64_t seed, uint64_t stream, uint64_t index) {
  // Box-Muller on two words of the block: values 2j and 2j+1 share one block half.
  std::array<uint32_t, 4> r = Philox(seed, stream, index / 2 + (uint64_t{1} << 62));
  const int half = static_cast<int>(index % 2);
  float u1 = (static_cast<float>(r[2 * half] >> 8) + 1.0f) * (1.0f / 16777216.0f);  // (0, 1]
  float u2 = ToUnit(r[2 * half + 1]);
  return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.283185307179586f * u2);
}

uint64_t Generator::UniformInt(uint64_t n) {
  std::array<uint32_t, 4> r = Philox(seed_, stream_, offset_++);
  uint64_t x = (static_cast<uint64_t>(r[0]) << 32) | r[1];
  return n == 0 ? 0 : x % n;
}

}  // namespace fam
