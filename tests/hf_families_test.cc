// Every Hugging Face family `fam import` reads, checked against transformers itself: the tiny
// random models in tests/fixtures/hf/ were saved by transformers' save_pretrained, with the logits
// transformers computed for a fixed token sequence (scripts/make_hf_fixtures.py regenerates them).
// Each is imported with full attention and must give those logits; block attention and streaming
// must agree with it where they see the same keys; switching off the family's feature must break
// the match (the fixture is sensitive to it); and export → import is the identity.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/io/atomic_file.h"
#include "framework/io/npy.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "models/fam/hf_import.h"
#include "models/fam/model.h"
#include "models/fam/weights_io.h"
#include "nlohmann/json.hpp"
#include "tests/gradcheck.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

fs::path FixtureDir(const std::string& name) {
  const char* source = std::getenv("FAM_SOURCE_DIR");
  return fs::path(source != nullptr && *source != '\0' ? source : ".") / "tests" / "fixtures" /
         "hf" / name;
}

struct Expected {
  std::vector<int64_t> tokens;
  std::vector<double> logits;  // [T, vocab] row-major
};

Expected ReadExpected(const std::string& name) {
  absl::StatusOr<Json> j = ReadJsonObject((FixtureDir(name) / "expected.json").string());
  EXPECT_TRUE(j.ok()) << j.status();
  Expected e;
  if (!j.ok()) return e;
  e.tokens = j->at("tokens").get<std::vector<int64_t>>();
  for (const Json& row : j->at("logits"))
    for (const Json& v : row) e.logits.push_back(v.get<double>());
  return e;
}

// max |a - b| / max |b|.
double RelDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

class HfFamiliesTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fam_hf_families_" + GetParam() + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Imports the fixture with the given attention; returns the model config read back.
  ModelConfig Import(const AttentionConfig& attention, std::vector<std::string>* notes = nullptr) {
    HfImportOptions options;
    options.attention = attention;
    absl::StatusOr<HfImportResult> r =
        ImportHfCheckpoint(FixtureDir(GetParam()).string(), (dir_ / "out").string(), options);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return ModelConfig();
    if (notes) *notes = r->notes;
    weights_ = r->weights;
    yaml_ = r->model_yaml;
    absl::StatusOr<ModelConfig> config = LoadModelConfig(r->model_yaml);
    EXPECT_TRUE(config.ok()) << config.status();
    return config.ok() ? *config : ModelConfig();
  }

  std::vector<double> Logits(const ModelConfig& config, const std::vector<int64_t>& tokens,
                             DType dtype = DType::kF32) {
    FamModel model(config, dtype);
    absl::Status loaded = LoadModelWeights(model, weights_);
    EXPECT_TRUE(loaded.ok()) << loaded;
    NoGradGuard no_grad;
    const int64_t t = static_cast<int64_t>(tokens.size());
    return model.Forward(Tensor::FromInts(tokens, {1, t})).logits.ToDoubles();
  }

  fs::path dir_;
  std::string weights_, yaml_;
};

const AttentionConfig kFull{AttentionType::kFull, 1024, 3, 0};

TEST_P(HfFamiliesTest, ImportedModelGivesTransformersLogits) {
  const Expected e = ReadExpected(GetParam());
  ASSERT_FALSE(e.tokens.empty());
  const ModelConfig config = Import(kFull);
  const std::string name = GetParam();
  const std::string family = name.rfind("llama", 0) == 0   ? "llama"
                             : name.rfind("qwen2", 0) == 0 ? "qwen2"
                                                           : name;
  EXPECT_EQ(config.family, family);
  const double f32 = RelDiff(Logits(config, e.tokens), e.logits);
  const double f64 = RelDiff(Logits(config, e.tokens, DType::kF64), e.logits);
  std::printf("%s: max relative logit error f32 %.2e, f64 %.2e\n", GetParam().c_str(), f32, f64);
  EXPECT_LT(f32, 1e-4);
  EXPECT_LT(f64, 1e-4);
}

TEST_P(HfFamiliesTest, BlockAttentionAndStreamingAgreeWhereTheySeeTheSameKeys) {
  const Expected e = ReadExpected(GetParam());
  ASSERT_EQ(e.tokens.size(), 16u);
  // BSWA with blocks of 4 and 3 memory blocks sees all 16 tokens: the same as full attention,
  // through the blockwise path (soft-capping, biases and norms included).
  const ModelConfig bswa = Import(AttentionConfig{AttentionType::kBswa, 4, 3, 0});
  EXPECT_LT(RelDiff(Logits(bswa, e.tokens), e.logits), 1e-4);
  // Streaming in uneven chunks.
  FamModel model(bswa);
  ASSERT_TRUE(LoadModelWeights(model, weights_).ok());
  StreamingState state = model.NewStreamingState(1);
  std::vector<double> streamed;
  for (size_t start = 0; start < e.tokens.size(); start += 5) {
    const size_t end = std::min(e.tokens.size(), start + 5);
    std::vector<int64_t> chunk(e.tokens.begin() + start, e.tokens.begin() + end);
    std::vector<double> l =
        model
            .ForwardStreaming(Tensor::FromInts(chunk, {1, static_cast<int64_t>(chunk.size())}),
                              state)
            .ToDoubles();
    streamed.insert(streamed.end(), l.begin(), l.end());
  }
  EXPECT_LT(RelDiff(streamed, e.logits), 1e-4);
}

TEST_P(HfFamiliesTest, TheFamilysFeatureMatters) {
  const Expected e = ReadExpected(GetParam());
  ModelConfig c = Import(kFull);
  ModelConfig off = c;
  const std::string name = GetParam();
  if (name == "llama3_scaled_biases" || name == "llama_linear_tied") {
    ASSERT_NE(c.rope_scaling, RopeScaling::kNone);
    off.rope_scaling = RopeScaling::kNone;
  } else if (name == "gemma") {
    EXPECT_EQ(c.activation, FfnActivation::kGeluTanh);
    EXPECT_TRUE(c.embedding_scale);
    off.norm_weight_offset = 0;
  } else if (name == "gemma2") {
    EXPECT_TRUE(c.sandwich_norms);
    EXPECT_EQ(c.query_scale_dim, 24);
    off.attn_softcap = 0;
    EXPECT_GT(RelDiff(Logits(off, e.tokens), e.logits), 1e-2) << "attention soft-capping";
    off = c;
    off.final_softcap = 0;
    EXPECT_GT(RelDiff(Logits(off, e.tokens), e.logits), 1e-2) << "final soft-capping";
    off = c;
    off.query_scale_dim = 0;
  } else if (name == "qwen2_sharded") {
    EXPECT_TRUE(c.qkv_bias);
    EXPECT_FALSE(c.o_bias);
    off.rope_base = 10000;  // its rope_theta is 1e6
  } else if (name == "mistral") {
    off.activation = FfnActivation::kGeluTanh;
  }
  EXPECT_GT(RelDiff(Logits(off, e.tokens), e.logits), 1e-2);
}

TEST_P(HfFamiliesTest, ExportThenImportIsTheIdentity) {
  std::vector<std::string> notes;
  const ModelConfig c = Import(kFull, &notes);
  absl::StatusOr<Json> hf = HfConfigJson(c);
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_EQ(hf->at("model_type"), c.family);
  absl::StatusOr<ModelConfig> back = ModelConfigFromHf(*hf, "exported", std::nullopt);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ModelConfigYaml(*back), ModelConfigYaml(c));
  // The exported directory imports to the same logits.
  const fs::path exported = dir_ / "exported";
  fs::create_directories(exported);
  ASSERT_TRUE(io::WriteFileAtomic((exported / "config.json").string(), hf->dump(2)).ok());
  fs::copy_file(weights_, exported / "model.safetensors");
  const Expected e = ReadExpected(GetParam());
  HfImportOptions options;
  absl::StatusOr<HfImportResult> again =
      ImportHfCheckpoint(exported.string(), (dir_ / "again").string(), options);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->config.attention.type, AttentionType::kFull);  // from famtrain_attention
  weights_ = again->weights;
  EXPECT_LT(RelDiff(Logits(again->config, e.tokens), e.logits), 1e-4);
  // Windows in the source config are reported.
  bool window_noted = false;
  for (const std::string& n : notes) window_noted |= n.find("sliding_window") != std::string::npos;
  EXPECT_EQ(window_noted, GetParam() == "mistral" || GetParam() == "gemma2");
}

INSTANTIATE_TEST_SUITE_P(Families, HfFamiliesTest,
                         ::testing::Values("llama3_scaled_biases", "llama_linear_tied", "mistral",
                                           "qwen2_sharded", "gemma", "gemma2"));

// `fam import` + `fam forward` from the command line on the most involved family.
TEST(HfFamiliesCli, ImportAndForwardGiveTransformersLogits) {
  const fs::path dir = fs::temp_directory_path() / ("fam_hf_cli_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const Expected e = ReadExpected("gemma2");
  testing::CommandResult imported =
      testing::RunFam("import --hf " + FixtureDir("gemma2").string() + " --out " +
                      (dir / "m").string() + " --attention full");
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  EXPECT_NE(imported.output.find("sliding_window 4096 on 1 alternating layers"), std::string::npos)
      << imported.output;
  std::string ids;
  for (int64_t t : e.tokens) ids += std::to_string(t) + " ";
  ASSERT_TRUE(io::WriteFileAtomic((dir / "tokens.txt").string(), ids).ok());
  testing::CommandResult fwd =
      testing::RunFam("forward --model " + (dir / "m/model.yaml").string() + " --weights " +
                      (dir / "m/model.safetensors").string() + " --tokens " +
                      (dir / "tokens.txt").string() + " --out " + (dir / "logits.npy").string());
  ASSERT_EQ(fwd.exit_code, 0) << fwd.output;
  absl::StatusOr<Tensor> logits = io::ReadNpy((dir / "logits.npy").string());
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LT(RelDiff(logits->ToDoubles(), e.logits), 1e-4);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fam
