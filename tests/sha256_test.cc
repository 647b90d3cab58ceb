// SHA-256 against the FIPS 180-2 / NIST test vectors, streaming in arbitrary pieces, and Sha256File
// against the system's sha256sum where it exists.
#include "framework/io/sha256.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "framework/io/atomic_file.h"
#include "gtest/gtest.h"

namespace fam::io {
namespace {

std::string TempDirFor(const std::string& test) {
  std::string dir = ::testing::TempDir() + "/fam_sha256_" + test + "_" + std::to_string(getpid());
  std::string command = "mkdir -p '" + dir + "'";
  EXPECT_EQ(std::system(command.c_str()), 0);
  return dir;
}

// Deterministic bytes covering all 256 values.
std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

TEST(Sha256, NistVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(
      Sha256Hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                "klmnopqrlmnopqrsmnopqrstnopqrstu"),
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, MillionAInUnevenPieces) {
  Sha256 hash;
  const std::string a(4096, 'a');
  size_t remaining = 1000000;
  for (size_t piece = 1; remaining > 0; piece = piece * 3 % 4093 + 1) {
    size_t n = std::min(piece, remaining);
    hash.Update(std::string_view(a).substr(0, n));
    remaining -= n;
  }
  EXPECT_EQ(hash.HexDigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, EverySplitPointMatchesOneShot) {
  const std::string message = Pattern(200);
  const std::string expected = Sha256Hex(message);
  for (size_t split = 0; split <= message.size(); ++split) {
    Sha256 hash;
    hash.Update(std::string_view(message).substr(0, split));
    hash.Update(std::string_view(message).substr(split));
    ASSERT_EQ(hash.HexDigest(), expected) << "split at " << split;
  }
}

TEST(Sha256, DigestDoesNotDisturbTheStream) {
  Sha256 hash;
  hash.Update("ab");
  EXPECT_EQ(hash.HexDigest(), Sha256Hex("ab"));
  EXPECT_EQ(hash.HexDigest(), Sha256Hex("ab"));
  hash.Update("c");
  EXPECT_EQ(hash.HexDigest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, FileMatchesOneShotAcrossReadChunks) {
  const std::string dir = TempDirFor("chunks");
  const std::string content = Pattern((3 << 20) + 17);  // spans several 1 MiB reads
  ASSERT_TRUE(WriteFileAtomic(dir + "/f.bin", content).ok());
  absl::StatusOr<std::string> digest = Sha256File(dir + "/f.bin");
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, Sha256Hex(content));
}

// Padding boundaries (55/56/63/64 bytes mod 64) checked against an independent implementation.
TEST(Sha256, FileMatchesSystemSha256sum) {
  if (std::system("sha256sum --version > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "sha256sum not available";
  const std::string dir = TempDirFor("sum");
  for (size_t n : {0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 100003}) {
    const std::string path = dir + "/m" + std::to_string(n);
    ASSERT_TRUE(WriteFileAtomic(path, Pattern(n)).ok());
    std::string command = "sha256sum '" + path + "'";
    FILE* pipe = popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char line[128] = {0};
    ASSERT_NE(fgets(line, sizeof(line), pipe), nullptr);
    pclose(pipe);
    absl::StatusOr<std::string> digest = Sha256File(path);
    ASSERT_TRUE(digest.ok()) << digest.status();
    EXPECT_EQ(*digest, std::string(line, 64)) << "length " << n;
    EXPECT_EQ(Sha256Hex(Pattern(n)), std::string(line, 64)) << "length " << n;
  }
}

TEST(Sha256, MissingFileNamesThePath) {
  absl::StatusOr<std::string> digest = Sha256File("/nonexistent/dir/weights.bin");
  ASSERT_FALSE(digest.ok());
  EXPECT_EQ(digest.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(digest.status().message().find("/nonexistent/dir/weights.bin"), std::string::npos);
}

}  // namespace
}  // namespace fam::io
