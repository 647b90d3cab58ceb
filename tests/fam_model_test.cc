// TransformerFAM model: equivalences between attention types, streaming vs whole-sequence forward,
// gradient checks of the whole model, training tricks, parameter naming and counting.
#include "models/fam/model.h"

#include <cmath>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"
#include "tests/tiny_model_config.h"

namespace fam {
namespace {


Tensor Tokens(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed = 3) {
  std::vector<int64_t> ids(batch * seq);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (i * 7 + seed * 13 + i * i) % vocab;
  return Tensor::FromInts(ids, {batch, seq});
}

// Copies every parameter of `from` into `to` (same names required where present in `to`).
void CopyWeights(const FamModel& from, FamModel& to) {
  NoGradGuard no_grad;
  for (auto& [name, t] : to.NamedParameters()) {
    Tensor src = from.FindParameter(name);
    ASSERT_TRUE(src.defined()) << name;
    ops::CopyInPlace(t, src);
  }
}

TEST(FamModel, ParameterNamesFollowFormats) {
  ModelConfig c = testing::TinyModelConfig(AttentionType::kFam);
  FamModel model(c);
  auto params = model.NamedParameters();
  std::vector<std::string> names;
  for (auto& [n, t] : params) names.push_back(n);
  EXPECT_EQ(names.front(), "model.embed_tokens.weight");
  EXPECT_NE(std::find(names.begin(), names.end(), "model.layers.1.self_attn.k_proj.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "model.layers.0.mlp.down_proj.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "model.fam.embeddings"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "lm_head.weight"), names.end());
  EXPECT_EQ(model.FindParameter("model.layers.0.self_attn.k_proj.weight").shape(), (Shape{8, 16}));
  EXPECT_EQ(model.ParameterCount(), c.ParameterCount());
  c.tie_embeddings = true;
  FamModel tied(c);
  EXPECT_FALSE(tied.FindParameter("lm_head.weight").defined());
  EXPECT_EQ(tied.ParameterCount(), c.ParameterCount());
}

TEST(FamModel, FamWithZeroLengthEqualsBswa) {
  ModelConfig fc = testing::TinyModelConfig(AttentionType::kFam);
  fc.attention.fam_length = 0;
  ModelConfig bc = testing::TinyModelConfig(AttentionType::kBswa);
  FamModel fam_model(fc), bswa(bc);
  fam_model.InitializeWeights(11);
  CopyWeights(fam_model, bswa);
  Tensor tokens = Tokens(2, 11, fc.vocab_size);
  NoGradGuard no_grad;
  EXPECT_LT(testing::MaxAbsDiff(fam_model.Forward(tokens).logits, bswa.Forward(tokens).logits), 1e-5);
}

TEST(FamModel, BswaCoveringTheSequenceEqualsFull) {
  ModelConfig bc = testing::TinyModelConfig(AttentionType::kBswa);
  bc.attention.memory_segments = 3;  // 11 tokens = 3 blocks of 4
  ModelConfig full = testing::TinyModelConfig(AttentionType::kFull);
  FamModel bswa(bc), full_model(full);
  bswa.InitializeWeights(12);
  CopyWeights(bswa, full_model);
  Tensor tokens = Tokens(2, 11, bc.vocab_size);
  NoGradGuard no_grad;
  Tensor a = bswa.Forward(tokens).logits, b = full_model.Forward(tokens).logits;
  EXPECT_LT(testing::MaxAbsDiff(a, b), 1e-5);
  // And with too little memory it must differ (the window really is limited).
  ModelConfig narrow = bc;
  narrow.attention.memory_segments = 0;
  FamModel narrow_model(narrow);
  CopyWeights(bswa, narrow_model);
  EXPECT_GT(testing::MaxAbsDiff(narrow_model.Forward(tokens).logits, b), 1e-3);
}

TEST(FamModel, FamDiffersFromBswaAndDependsOnThePrompt) {
  ModelConfig fc = testing::TinyModelConfig(AttentionType::kFam);
  FamModel model(fc);
  model.InitializeWeights(5);
  ModelConfig bc = testing::TinyModelConfig(AttentionType::kBswa);
  FamModel bswa(bc);
  CopyWeights(model, bswa);
  Tensor tokens = Tokens(1, 11, fc.vocab_size);
  NoGradGuard no_grad;
  Tensor a = model.Forward(tokens).logits;
  EXPECT_GT(testing::MaxAbsDiff(a, bswa.Forward(tokens).logits), 1e-3);
  ops::FillInPlace(model.FindParameter("model.fam.embeddings"), 0.5);
  EXPECT_GT(testing::MaxAbsDiff(a, model.Forward(tokens).logits), 1e-4);
}

void ExpectStreamingMatches(AttentionType type, int64_t seq, const std::vector<int64_t>& chunks) {
  ModelConfig c = testing::TinyModelConfig(type);
  FamModel model(c);
  model.InitializeWeights(21);
  Tensor tokens = Tokens(2, seq, c.vocab_size, 9);
  NoGradGuard no_grad;
  Tensor whole = model.Forward(tokens).logits;
  StreamingState state = model.NewStreamingState(2);
  std::vector<Tensor> parts;
  int64_t done = 0;
  for (size_t i = 0; done < seq; ++i) {
    int64_t len = std::min(chunks[i % chunks.size()], seq - done);
    parts.push_back(model.ForwardStreaming(ops::Slice(tokens, 1, done, done + len), state));
    done += len;
  }
  Tensor streamed = ops::Concat(parts, 1);
  EXPECT_LT(testing::MaxAbsDiff(whole, streamed), 2e-5)
      << AttentionTypeName(type) << " seq " << seq << " chunk " << chunks[0];
  EXPECT_EQ(state.position, seq);
}

TEST(FamModel, StreamingEqualsWholeSequence) {
  for (AttentionType type : {AttentionType::kFull, AttentionType::kBswa, AttentionType::kFam}) {
    ExpectStreamingMatches(type, 11, {1});        // token by token, partial last block
    ExpectStreamingMatches(type, 11, {4});        // block by block
    ExpectStreamingMatches(type, 13, {3, 5, 2});  // ragged chunks crossing block boundaries
    ExpectStreamingMatches(type, 12, {12});       // all at once
  }
}

TEST(FamModel, StreamingStateStaysBounded) {
  ModelConfig c = testing::TinyModelConfig(AttentionType::kFam);
  FamModel model(c);
  model.InitializeWeights(2);
  StreamingState state = model.NewStreamingState(1);
  NoGradGuard no_grad;
  int64_t bytes_after_warmup = 0;
  for (int i = 0; i < 40; ++i) {
    model.ForwardStreaming(Tokens(1, 4, c.vocab_size, i), state);
    if (i == 4) bytes_after_warmup = state.Bytes();
  }
  EXPECT_EQ(state.Bytes(), bytes_after_warmup);
  EXPECT_EQ(state.position, 160);
}

TEST(FamModel, GradcheckWholeFamModel) {
  ModelConfig c = testing::TinyModelConfig(AttentionType::kFam);
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_dim = 8;
  c.attention.block_size = 3;
  c.attention.fam_length = 2;
  c.init_std = 0.5;
  FamModel model(c, DType::kF64);
  model.InitializeWeights(3);
  Tensor tokens = Tokens(1, 7, c.vocab_size);
  Tensor targets = Tokens(1, 7, c.vocab_size, 5);
  // Check the gradient of a handful of parameters (each element is two forwards).
  for (const char* name : {"model.fam.embeddings", "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.1.mlp.down_proj.weight", "model.norm.weight",
                           "model.layers.0.input_layernorm.weight"}) {
    Tensor p = model.FindParameter(name);
    ASSERT_TRUE(p.defined()) << name;
    model.ZeroGrad();
    auto fn = [&](const std::vector<Tensor>&) {
      return model.Loss(model.Forward(tokens).logits, targets);
    };
    EXPECT_TRUE(testing::Gradcheck(fn, {p}, {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-5})) << name;
  }
}

TEST(FamModel, TrainingTricksChangeTheComputation) {
  ModelConfig c = testing::TinyModelConfig(AttentionType::kFam);
  FamModel model(c);
  model.InitializeWeights(8);
  Tensor tokens = Tokens(2, 9, c.vocab_size);
  NoGradGuard no_grad;
  ForwardResult base = model.Forward(tokens);
  ASSERT_EQ(base.final_state.size(), 2u);
  EXPECT_EQ(base.final_state[0].shape(), (Shape{2, 3, 16}));
  // A position offset shifts every position: RoPE is relative, so attention scores within the
  // sequence are unchanged only up to float error... but the FAM prompt positions move too.
  ForwardOptions shifted;
  shifted.position_offsets = {0, 1000};
  ForwardResult off = model.Forward(tokens, shifted);
  EXPECT_LT(testing::MaxAbsDiff(ops::Slice(off.logits, 0, 0, 1), ops::Slice(base.logits, 0, 0, 1)), 1e-6);
  // Relative positions are preserved everywhere, so offsets change logits only by rounding.
  EXPECT_LT(testing::MaxAbsDiff(off.logits, base.logits), 1e-3);
  // A carried state (Random State Passing) changes the result.
  ForwardOptions carried;
  for (const Tensor& s : base.final_state) carried.initial_state.push_back(ops::Slice(s, 0, 0, 1).detach());
  EXPECT_GT(testing::MaxAbsDiff(model.Forward(tokens, carried).logits, base.logits), 1e-4);
}

TEST(FamModel, LossIgnoresAndWeightsTokens) {
  ModelConfig c = testing::TinyModelConfig(AttentionType::kBswa);
  FamModel model(c);
  model.InitializeWeights(4);
  Tensor tokens = Tokens(1, 6, c.vocab_size);
  NoGradGuard no_grad;
  Tensor logits = model.Forward(tokens).logits;
  Tensor targets = Tokens(1, 6, c.vocab_size, 2);
  double full = model.Loss(logits, targets).item();
  std::vector<int64_t> t = targets.ToInts();
  std::vector<int64_t> masked = t;
  masked[0] = masked[1] = -100;
  double part = model.Loss(logits, Tensor::FromInts(masked, {1, 6})).item();
  Tensor w = Tensor::FromVector({0, 0, 1, 1, 1, 1}, {1, 6});
  double weighted = model.Loss(logits, targets, w).item();
  EXPECT_NEAR(part, weighted, 1e-6);
  EXPECT_GT(std::abs(full - part), 1e-6);
  EXPECT_NEAR(full, std::log(static_cast<double>(c.vocab_size)), 1.5);
}

TEST(FamModel, BadInputsAreClearErrors) {
  ModelConfig c = testing::TinyModelConfig(AttentionType::kFam);
  c.n_kv_heads = 3;
  EXPECT_THROW(FamModel model(c), Error);
  FamModel model(testing::TinyModelConfig(AttentionType::kFam));
  try {
    model.Forward(Tensor::FromInts({1, 2, 41}, {1, 3}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("41"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model.Forward(Tensor::FromInts({1, 2, 3}, {3})), Error);
}

}  // namespace
}  // namespace fam
