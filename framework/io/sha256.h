// SHA-256 (FIPS 180-4), written here: checkpoint manifests record a sha256 of every file so that a
// torn or altered checkpoint is detected before it is loaded. Streaming (Sha256) and one-shot
// forms.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace fam::io {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t nbytes);
  void Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }
  // The digest of everything passed to Update so far. Does not change the state: more Update
  // calls may follow, and a later digest covers all of them.
  std::array<uint8_t, 32> Digest() const;
  std::string HexDigest() const;  // 64 lowercase hex digits

 private:
  void Compress(const uint8_t block[64]);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;  // bytes waiting in buffer_
  uint64_t total_bytes_ = 0;
};

std::string Sha256Hex(std::string_view bytes);

// Streams the file through Sha256 in fixed-size chunks (never loads it whole).
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace fam::io
