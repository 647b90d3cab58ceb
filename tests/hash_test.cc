// FNV-1a 64 against the published test vectors, and the byte-range form continuing a hash.
#include "framework/core/hash.h"

#include <string>

#include "gtest/gtest.h"

namespace fam {
namespace {

TEST(HashTest, Fnv1a64MatchesPublishedVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ull);
}

TEST(HashTest, ContinuingAHashEqualsHashingTheConcatenation) {
  const std::string a = "layers.0.attn.wq:[64, 64]\n", b = "layers.0.attn.wk:[16, 64]\n";
  EXPECT_EQ(Fnv1a64(b, Fnv1a64(a)), Fnv1a64(a + b));
  EXPECT_EQ(Fnv1a64(a.data(), a.size()), Fnv1a64(a));
  EXPECT_NE(Fnv1a64(a), Fnv1a64(b));
}

// Parameter names keep the basis model initialisation has always used: the byte loop written out.
TEST(HashTest, ParameterNameHashKeepsItsBasis) {
  for (const std::string name : {"", "tok_embeddings.weight", "layers.3.ffn.w2.weight"}) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : name) {
      h ^= c;
      h *= 1099511628211ull;
    }
    EXPECT_EQ(ParameterNameHash(name), h) << name;
  }
  EXPECT_NE(kParameterNameBasis, kFnv1a64Basis);
}

}  // namespace
}  // namespace fam
