// The GGUF reader and `fam import --gguf`: a tiny llama written by the `gguf` package itself
// (tests/fixtures/gguf, scripts/make_gguf_fixture.py) imports to exactly the tensors the `gguf`
// package dequantizes (F16, BF16, Q8_0, Q4_0, Q4_1; q/k rows back in HF order), and hand-made
// files that lie about sizes, types or counts are refused with the file and the key or tensor
// named, never read out of bounds.
#include "framework/io/gguf.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/io/safetensors.h"
#include "gtest/gtest.h"
#include "models/fam/gguf_import.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

fs::path Fixture(const std::string& name) {
  const char* source = std::getenv("FAM_SOURCE_DIR");
  return fs::path(source != nullptr && *source != '\0' ? source : ".") / "tests" / "fixtures" /
         "gguf" / name;
}

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fam_gguf_test_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  fs::path dir_;
};

// Little-endian GGUF pieces for hand-made files.
struct Bytes {
  std::string s;
  template <typename T>
  Bytes& Put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& Str(const std::string& v) {
    Put<uint64_t>(v.size());
    s += v;
    return *this;
  }
};

// A GGUF v3 with general.architecture = arch and one tensor `name` [rows, cols] of `type`.
std::string MakeGguf(const std::string& arch, const std::string& name, uint32_t type, uint64_t rows,
                     uint64_t cols, uint64_t data_bytes, uint64_t offset = 0) {
  Bytes b;
  b.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put<uint64_t>(1).Put<uint64_t>(1);
  b.Str("general.architecture").Put<uint32_t>(8).Str(arch);
  b.Str(name).Put<uint32_t>(2).Put<uint64_t>(cols).Put<uint64_t>(rows).Put<uint32_t>(type);
  b.Put<uint64_t>(offset);
  while (b.s.size() % 32 != 0) b.s.push_back('\0');
  b.s.append(data_bytes, '\0');
  return b.s;
}

TEST_F(GgufTest, ImportEqualsTheGgufPackagesDequantization) {
  HfImportOptions options;
  options.attention = AttentionConfig{AttentionType::kFull, 1024, 3, 0};
  absl::StatusOr<HfImportResult> r =
      ImportGgufCheckpoint(Fixture("tiny_llama.gguf").string(), (dir_ / "out").string(), options);
  ASSERT_TRUE(r.ok()) << r.status();
  const ModelConfig& c = r->config;
  EXPECT_EQ(c.d_model, 32);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.ffn_dim, 64);
  EXPECT_EQ(c.vocab_size, 64);
  EXPECT_EQ(c.rope_base, 50000.0);
  EXPECT_NEAR(c.norm_eps, 1e-5, 1e-12);
  EXPECT_FALSE(c.tie_embeddings);
  bool all_types = false;
  for (const std::string& n : r->notes)
    all_types |= n.find("BF16") != std::string::npos && n.find("Q4_0") != std::string::npos &&
                 n.find("Q4_1") != std::string::npos && n.find("Q8_0") != std::string::npos &&
                 n.find("F16") != std::string::npos;
  EXPECT_TRUE(all_types) << "the fixture covers every supported type";
  absl::StatusOr<ModelConfig> yaml = LoadModelConfig(r->model_yaml);
  ASSERT_TRUE(yaml.ok()) << yaml.status();

  auto ours = io::SafetensorsFile::Open(r->weights);
  auto expected = io::SafetensorsFile::Open(Fixture("expected.safetensors").string());
  ASSERT_TRUE(ours.ok() && expected.ok());
  EXPECT_EQ((*ours)->names().size(), (*expected)->names().size());
  for (const std::string& name : (*expected)->names()) {
    SCOPED_TRACE(name);
    absl::StatusOr<Tensor> a = (*ours)->Load(name, DType::kF32);
    absl::StatusOr<Tensor> b = (*expected)->Load(name, DType::kF32);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->shape(), b->shape());
    EXPECT_EQ(a->ToDoubles(), b->ToDoubles());
  }
}

TEST_F(GgufTest, TruncatedFilesAreRefusedAtEveryLength) {
  std::ifstream in(Fixture("tiny_llama.gguf"), std::ios::binary);
  const std::string whole((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(whole.size(), 30000u);
  for (size_t n : {size_t{0}, size_t{3}, size_t{8}, size_t{23}, size_t{100}, size_t{700},
                   size_t{1500}, whole.size() / 2, whole.size() - 1}) {
    const std::string path = Write("cut.gguf", whole.substr(0, n));
    absl::StatusOr<std::unique_ptr<io::GgufFile>> g = io::GgufFile::Open(path);
    ASSERT_FALSE(g.ok()) << n;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << n << g.status();
    EXPECT_NE(g.status().message().find("cut.gguf"), std::string::npos) << g.status();
  }
}

TEST_F(GgufTest, LiesAboutSizesTypesAndCountsAreNamed) {
  struct Case {
    std::string bytes, expect;
  };
  Bytes huge_count;
  huge_count.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put<uint64_t>(1).Put<uint64_t>(1ull << 60);
  Bytes huge_string;
  huge_string.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(1);
  huge_string.Put<uint64_t>(1ull << 50);
  Bytes huge_array;
  huge_array.Put<uint32_t>(0x46554747).Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(1);
  huge_array.Str("tokens").Put<uint32_t>(9).Put<uint32_t>(6).Put<uint64_t>(1ull << 61);
  const std::vector<Case> cases = {
      {"GGML" + std::string(40, '\0'), "bad magic"},
      {Bytes().Put<uint32_t>(0x46554747).Put<uint32_t>(9).s + std::string(32, '\0'), "version 9"},
      {huge_count.s, "exceed what the file could hold"},
      {huge_string.s, "runs past the end"},
      {huge_array.s, "tokens: array"},
      {MakeGguf("llama", "w", 8, 4, 31, 64), "not whole Q8_0 blocks"},
      {MakeGguf("llama", "w", 0, 4, 8, 64, 4096), "w: data runs past the end"},
      {MakeGguf("llama", "w", 0, 1ull << 40, 1ull << 40, 16), "impossible"},
  };
  for (const Case& c : cases) {
    const std::string path = Write("lie.gguf", c.bytes);
    absl::StatusOr<std::unique_ptr<io::GgufFile>> g = io::GgufFile::Open(path);
    ASSERT_FALSE(g.ok()) << c.expect;
    EXPECT_NE(g.status().message().find(c.expect), std::string::npos) << g.status();
  }
  // A type the reader does not dequantize is named.
  absl::StatusOr<std::unique_ptr<io::GgufFile>> q5 =
      io::GgufFile::Open(Write("q5.gguf", MakeGguf("llama", "w", 6, 2, 32, 44)));
  ASSERT_TRUE(q5.ok()) << q5.status();
  absl::Status s = (*q5)->Dequantize("w").status();
  EXPECT_NE(s.message().find("Q5_0"), std::string::npos) << s;
}

TEST_F(GgufTest, ImportRefusesOtherArchitecturesAndMissingTensors) {
  HfImportOptions options;
  absl::StatusOr<HfImportResult> r = ImportGgufCheckpoint(
      Write("gemma.gguf", MakeGguf("gemma", "token_embd.weight", 0, 4, 8, 128)),
      (dir_ / "out").string(), options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("general.architecture: \"gemma\""), std::string::npos)
      << r.status();
  r = ImportGgufCheckpoint(Write("bare.gguf", MakeGguf("llama", "token_embd.weight", 0, 4, 8, 128)),
                           (dir_ / "out").string(), options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("llama.embedding_length: missing"), std::string::npos)
      << r.status();
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

}  // namespace
}  // namespace fam
