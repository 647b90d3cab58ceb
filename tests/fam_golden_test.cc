// Golden tests: the real FamModel (f32 and f64) against the independent spec reference in
// tests/fam_reference.h, for full, BSWA and FAM attention on tiny configs (GQA, MQA and MHA, tied
// and untied, a partial last block). Weights travel model → safetensors file → reference by their
// FORMATS.md names. Also: structural facts of the spec checked on the reference, and proof that
// the comparison would catch real mistakes (a deliberately wrong reference must disagree).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "framework/io/safetensors.h"
#include "gtest/gtest.h"
#include "models/fam/model.h"
#include "tests/fam_reference.h"

namespace fam {
namespace {

using reference::RefAttention;
using reference::RefConfig;
using reference::Reference;
using reference::RefMistakes;
using reference::RefWeights;

constexpr int64_t kSeqLen = 11;  // blocks of 4: 4 + 4 + 3 (the last block is partial)

struct Case {
  std::string name;
  AttentionType type;
  int64_t n_layers;
  int64_t n_kv_heads;
  bool tie;
  int64_t memory;
  int64_t fam_length;
  int64_t head_dim = 4;
};

ModelConfig MakeConfig(const Case& c) {
  ModelConfig config;
  config.vocab_size = 37;
  config.d_model = 16;
  config.n_layers = c.n_layers;
  config.n_heads = 4;
  config.n_kv_heads = c.n_kv_heads;
  config.head_dim = c.head_dim;
  config.ffn_dim = 24;
  config.norm_eps = 1e-6;
  config.rope_base = 10000.0;
  config.tie_embeddings = c.tie;
  // Large enough weights that attention is far from uniform and FAM rows matter.
  config.init_std = 0.3;
  config.attention.type = c.type;
  config.attention.block_size = 4;
  config.attention.memory_segments = c.memory;
  config.attention.fam_length = c.fam_length;
  config.training.random_position_offset = false;
  config.training.state_passing_prob = 0.0;
  return config;
}

RefConfig ToRef(const ModelConfig& m) {
  RefConfig r;
  r.vocab_size = m.vocab_size;
  r.d_model = m.d_model;
  r.n_layers = m.n_layers;
  r.n_heads = m.n_heads;
  r.n_kv_heads = m.n_kv_heads;
  r.head_dim = m.head_dim;
  r.ffn_dim = m.ffn_dim;
  r.norm_eps = m.norm_eps;
  r.rope_base = m.rope_base;
  r.tie_embeddings = m.tie_embeddings;
  r.type = m.attention.type == AttentionType::kFull   ? RefAttention::kFull
           : m.attention.type == AttentionType::kBswa ? RefAttention::kBswa
                                                      : RefAttention::kFam;
  r.block_size = m.attention.block_size;
  r.memory_segments = m.attention.memory_segments;
  r.fam_length = m.attention.fam_length;
  return r;
}

void SetValues(const Tensor& t, const std::vector<double>& values) {
  ASSERT_EQ(t.numel(), static_cast<int64_t>(values.size())) << t.name();
  ASSERT_TRUE(t.is_contiguous()) << t.name();
  if (t.dtype() == DType::kF32) {
    float* p = t.data<float>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = static_cast<float>(values[i]);
  } else {
    double* p = t.data<double>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  }
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Norm scales at 1 would hide a norm that ignores its weight: move them off 1.
void PerturbNorms(const FamModel& model, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> u(0.6, 1.4);
  for (const auto& [name, t] : model.NamedParameters()) {
    if (!EndsWith(name, "norm.weight")) continue;
    std::vector<double> v(t.numel());
    for (double& x : v) x = u(gen);
    SetValues(t, v);
  }
}

std::vector<int64_t> Tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int64_t> ids(n);
  for (int64_t& id : ids) id = static_cast<int64_t>(gen() % static_cast<uint64_t>(vocab));
  return ids;
}

std::vector<double> ModelLogits(const FamModel& model, const std::vector<int64_t>& ids) {
  const int64_t T = static_cast<int64_t>(ids.size());
  Tensor logits = model.Forward(Tensor::FromInts(ids, {1, T})).logits;
  EXPECT_EQ(logits.shape(), (Shape{1, T, model.config().vocab_size}));
  return logits.ToDoubles();
}

std::string Sci(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", x);
  return buf;
}

// max |a - b| / max(1, max |b|).
double RelDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0, scale = 1.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

// A seeded f32 model with perturbed norms, saved to a safetensors file and read back by name.
struct Golden {
  ModelConfig config;
  std::unique_ptr<FamModel> model;
  std::string path;
  RefWeights weights;
};

Golden MakeGolden(const Case& c, uint64_t seed) {
  Golden g;
  g.config = MakeConfig(c);
  g.model = std::make_unique<FamModel>(g.config);
  g.model->InitializeWeights(seed);
  PerturbNorms(*g.model, seed + 1);
  g.path = ::testing::TempDir() + "fam_golden_" + c.name + ".safetensors";
  absl::Status written = io::WriteSafetensors(g.path, g.model->NamedParameters());
  EXPECT_TRUE(written.ok()) << written;
  auto file = io::SafetensorsFile::Open(g.path);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return g;
  for (const std::string& name : (*file)->names()) {
    auto t = (*file)->Load(name, DType::kF64);
    EXPECT_TRUE(t.ok()) << t.status();
    if (t.ok()) g.weights[name] = t->ToDoubles();
  }
  std::remove(g.path.c_str());  // the weights were copied out (converted to f64)
  return g;
}

// An f64 model holding the weights of the file (the f32 values, exactly).
std::unique_ptr<FamModel> LoadF64(const Golden& g) {
  auto model = std::make_unique<FamModel>(g.config, DType::kF64);
  for (const auto& [name, t] : model->NamedParameters()) {
    auto it = g.weights.find(name);
    EXPECT_NE(it, g.weights.end()) << "missing in file: " << name;
    if (it != g.weights.end()) SetValues(t, it->second);
  }
  return model;
}

class FamGolden : public ::testing::TestWithParam<Case> {};

TEST_P(FamGolden, ModelMatchesSpecReference) {
  const Case& c = GetParam();
  Golden g = MakeGolden(c, 1234);
  ASSERT_FALSE(g.weights.empty());

  // The file holds exactly the FORMATS.md names.
  const ModelConfig& m = g.config;
  size_t expected = 1 + 9 * m.n_layers + 1 + (m.tie_embeddings ? 0 : 1) +
                    (m.attention.type == AttentionType::kFam ? 1 : 0);
  EXPECT_EQ(g.weights.size(), expected);
  EXPECT_EQ(g.weights.count("lm_head.weight"), m.tie_embeddings ? 0u : 1u);
  EXPECT_EQ(g.weights.count("model.fam.embeddings"),
            m.attention.type == AttentionType::kFam ? 1u : 0u);

  const std::vector<int64_t> ids = Tokens(kSeqLen, m.vocab_size, 99);
  const std::vector<double> ref = Reference(ToRef(m), g.weights).Logits(ids);
  ASSERT_EQ(ref.size(), static_cast<size_t>(kSeqLen * m.vocab_size));

  const std::vector<double> f32 = ModelLogits(*g.model, ids);
  const double f32_diff = RelDiff(f32, ref);
  RecordProperty("f32_rel_diff", Sci(f32_diff));
  EXPECT_LT(f32_diff, 1e-4) << c.name << " (f32 model)";

  std::unique_ptr<FamModel> model64 = LoadF64(g);
  const std::vector<double> f64 = ModelLogits(*model64, ids);
  const double f64_diff = RelDiff(f64, ref);
  RecordProperty("f64_rel_diff", Sci(f64_diff));
  EXPECT_LT(f64_diff, 1e-9) << c.name << " (f64 model)";
}

INSTANTIATE_TEST_SUITE_P(
    Configs, FamGolden,
    ::testing::Values(Case{"full_gqa_tied", AttentionType::kFull, 2, 2, true, 0, 0},
                      Case{"full_mha_untied", AttentionType::kFull, 3, 4, false, 0, 0},
                      Case{"bswa_m1_mqa_untied", AttentionType::kBswa, 2, 1, false, 1, 0},
                      Case{"bswa_m2_gqa_tied", AttentionType::kBswa, 3, 2, true, 2, 0},
                      Case{"bswa_m0_mha_untied", AttentionType::kBswa, 2, 4, false, 0, 0},
                      Case{"fam_m1_f2_gqa_untied", AttentionType::kFam, 2, 2, false, 1, 2},
                      Case{"fam_m2_f3_mqa_tied", AttentionType::kFam, 3, 1, true, 2, 3},
                      Case{"fam_m0_f2_mha_untied", AttentionType::kFam, 2, 4, false, 0, 2},
                      Case{"fam_m1_f5_gqa_tied", AttentionType::kFam, 2, 2, true, 1, 5},
                      Case{"fam_m1_f3_dh6_untied", AttentionType::kFam, 2, 2, false, 1, 3, 6}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Random weights in the FORMATS.md layout for reference-only checks.
RefWeights RandomWeights(const RefConfig& c, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 0.3);
  std::uniform_real_distribution<double> scale(0.6, 1.4);
  RefWeights w;
  auto fill = [&](const std::string& name, int64_t n, bool is_norm) {
    std::vector<double> v(n);
    for (double& x : v) x = is_norm ? scale(gen) : normal(gen);
    w[name] = v;
  };
  const int64_t d = c.d_model, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  fill("model.embed_tokens.weight", c.vocab_size * d, false);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    fill(p + "input_layernorm.weight", d, true);
    fill(p + "self_attn.q_proj.weight", q * d, false);
    fill(p + "self_attn.k_proj.weight", kv * d, false);
    fill(p + "self_attn.v_proj.weight", kv * d, false);
    fill(p + "self_attn.o_proj.weight", d * q, false);
    fill(p + "post_attention_layernorm.weight", d, true);
    fill(p + "mlp.gate_proj.weight", c.ffn_dim * d, false);
    fill(p + "mlp.up_proj.weight", c.ffn_dim * d, false);
    fill(p + "mlp.down_proj.weight", d * c.ffn_dim, false);
  }
  fill("model.norm.weight", d, true);
  if (!c.tie_embeddings) fill("lm_head.weight", c.vocab_size * d, false);
  if (c.type == RefAttention::kFam) fill("model.fam.embeddings", c.fam_length * d, false);
  return w;
}

double MaxAbsDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    diff = std::max(diff, std::abs(a[i] - b[i]));
  return diff;
}

RefConfig SmallRef(RefAttention type, int64_t memory, int64_t fam_length) {
  Case c{"", AttentionType::kFull, 3, 2, false, memory, fam_length};
  RefConfig r = ToRef(MakeConfig(c));
  r.type = type;
  return r;
}

TEST(FamReference, FamWithoutRowsEqualsBswa) {
  for (int64_t m : {0, 1, 2}) {
    RefConfig bswa = SmallRef(RefAttention::kBswa, m, 0);
    RefConfig fam = SmallRef(RefAttention::kFam, m, 0);
    RefWeights w = RandomWeights(bswa, 5);
    const std::vector<int64_t> ids = Tokens(kSeqLen, bswa.vocab_size, 6);
    EXPECT_LT(MaxAbsDiff(Reference(fam, w).Logits(ids), Reference(bswa, w).Logits(ids)), 1e-12)
        << "m=" << m;
  }
}

TEST(FamReference, BswaWithMemoryCoveringTheSequenceEqualsFull) {
  RefConfig full = SmallRef(RefAttention::kFull, 0, 0);
  RefWeights w = RandomWeights(full, 7);
  const std::vector<int64_t> ids = Tokens(kSeqLen, full.vocab_size, 8);
  const std::vector<double> want = Reference(full, w).Logits(ids);
  for (int64_t m : {2, 3, 10}) {  // 3 blocks: m = 2 already reaches block 0 from block 2
    EXPECT_LT(MaxAbsDiff(Reference(SmallRef(RefAttention::kBswa, m, 0), w).Logits(ids), want),
              1e-12)
        << "m=" << m;
  }
  // A window that does not cover the sequence differs (the check has teeth).
  EXPECT_GT(MaxAbsDiff(Reference(SmallRef(RefAttention::kBswa, 1, 0), w).Logits(ids), want), 1e-3);
}

TEST(FamReference, CausalAndBlockLocal) {
  // Changing the last token changes only the last row; in FAM/BSWA, changing a token of block 0
  // leaves block 0's earlier rows alone.
  for (RefAttention type : {RefAttention::kFull, RefAttention::kBswa, RefAttention::kFam}) {
    RefConfig c = SmallRef(type, 1, type == RefAttention::kFam ? 2 : 0);
    RefWeights w = RandomWeights(c, 9);
    std::vector<int64_t> ids = Tokens(kSeqLen, c.vocab_size, 10);
    const std::vector<double> a = Reference(c, w).Logits(ids);
    ids[2] = (ids[2] + 1) % c.vocab_size;
    const std::vector<double> b = Reference(c, w).Logits(ids);
    const size_t V = static_cast<size_t>(c.vocab_size);
    for (size_t i = 0; i < 2 * V; ++i) EXPECT_EQ(a[i], b[i]);
    EXPECT_GT(MaxAbsDiff(a, b), 1e-3);
  }
}

// A reference with one deliberate departure from the spec disagrees with the model by far more
// than the golden tolerance, while the faithful reference agrees: the golden test has teeth.
TEST(FamGoldenMutation, WrongRulesAreCaught) {
  const Case c{"mutation", AttentionType::kFam, 2, 2, false, 1, 2};
  Golden g = MakeGolden(c, 4321);
  ASSERT_FALSE(g.weights.empty());
  std::unique_ptr<FamModel> model64 = LoadF64(g);
  const std::vector<int64_t> ids = Tokens(kSeqLen, g.config.vocab_size, 77);
  const std::vector<double> got = ModelLogits(*model64, ids);
  const RefConfig rc = ToRef(g.config);
  ASSERT_LT(RelDiff(got, Reference(rc, g.weights).Logits(ids)), 1e-9);

  std::vector<std::pair<std::string, RefMistakes>> mistakes(5);
  mistakes[0].first = "residual R = S on the first update";
  mistakes[0].second.residual_on_first_update = true;
  mistakes[1].first = "FAM rows see the memory segments";
  mistakes[1].second.fam_rows_see_memory = true;
  mistakes[2].first = "block tokens do not see the FAM";
  mistakes[2].second.tokens_skip_fam = true;
  mistakes[3].first = "state positions at the block start";
  mistakes[3].second.state_positions_at_block_start = true;
  mistakes[4].first = "initial FAM not propagated through the stack";
  mistakes[4].second.initial_fam_not_propagated = true;
  for (const auto& [what, mistake] : mistakes) {
    const std::vector<double> wrong = Reference(rc, g.weights, mistake).Logits(ids);
    const double diff = RelDiff(got, wrong);
    RecordProperty(what, Sci(diff));
    EXPECT_GT(diff, 1e-3) << "not caught: " << what;
  }
}

TEST(FamGoldenMutation, WrongWindowIsCaught) {
  // BSWA with m = 1 against references with the wrong window (m = 0, m = 2, full).
  const Case c{"mutation_bswa", AttentionType::kBswa, 2, 2, true, 1, 0};
  Golden g = MakeGolden(c, 555);
  ASSERT_FALSE(g.weights.empty());
  std::unique_ptr<FamModel> model64 = LoadF64(g);
  const std::vector<int64_t> ids = Tokens(kSeqLen, g.config.vocab_size, 78);
  const std::vector<double> got = ModelLogits(*model64, ids);
  RefConfig rc = ToRef(g.config);
  ASSERT_LT(RelDiff(got, Reference(rc, g.weights).Logits(ids)), 1e-9);
  for (int64_t m : {0, 2}) {
    RefConfig wrong = rc;
    wrong.memory_segments = m;
    EXPECT_GT(RelDiff(got, Reference(wrong, g.weights).Logits(ids)), 1e-3) << "m=" << m;
  }
  RefConfig full = rc;
  full.type = RefAttention::kFull;
  EXPECT_GT(RelDiff(got, Reference(full, g.weights).Logits(ids)), 1e-3);
}

}  // namespace
}  // namespace fam
