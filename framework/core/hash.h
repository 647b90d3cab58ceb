// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3, one byte at a time): the
// one hash behind token- and weight-shard checksums, run-config fingerprints, LoRA base
// fingerprints and the per-tensor random streams of model initialisation
// (FamModel::InitializeWeights, through ParameterNameHash), whose values therefore depend on it
// bit for bit. Not cryptographic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fam {

inline constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ull;
// The basis that parameter names are hashed from (FNV-1a's basis 14695981039346656037 with its last
// digit dropped): it keys model initialisation's per-tensor streams and LoRA's base fingerprints,
// so it stays as it is for initial weights and saved fingerprints to keep reproducing.
inline constexpr uint64_t kParameterNameBasis = 1469598103934665603ull;

// Continues `hash` over `size` bytes at `data` (start from kFnv1a64Basis).
uint64_t Fnv1a64(const void* data, size_t size, uint64_t hash = kFnv1a64Basis);
inline uint64_t Fnv1a64(std::string_view text, uint64_t hash = kFnv1a64Basis) {
  return Fnv1a64(text.data(), text.size(), hash);
}
// A parameter name's hash (FamModel::InitializeWeights, LoRA, the HF importer's FAM seeding).
inline uint64_t ParameterNameHash(std::string_view name) {
  return Fnv1a64(name, kParameterNameBasis);
}

}  // namespace fam
