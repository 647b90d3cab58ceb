// Activation recomputation: the Checkpoint op against the same function without it (gradients of
// inputs and parameters, a finite-difference check, nesting, the capture boundary), and the whole
// model with ForwardOptions::recompute on vs off (full/BSWA/FAM, learned or carried FAM state,
// LoRA with dropout, position offsets): same loss, every gradient, once-per-backward grad hooks.
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "models/fam/lora.h"
#include "models/fam/model.h"
#include "tests/gradcheck.h"
#include "tests/tiny_model_config.h"

namespace fam {
namespace {

using testing::MaxAbsDiff;
using testing::RandomTensor;

// A small two-layer block that uses w1 twice: silu(x·w1ᵀ) ⊙ (y·w1ᵀ), then ·w2ᵀ, + x.
Tensor Block(const Tensor& x, const Tensor& y, const Tensor& w1, const Tensor& w2) {
  Tensor h = ops::Mul(ops::Silu(ops::Linear(x, w1)), ops::Linear(y, w1));
  return ops::Add(x, ops::Linear(h, w2));
}

struct Leaves {
  Tensor x, y, w1, w2;
};

Leaves MakeLeaves() {
  return {RandomTensor({2, 3, 4}, DType::kF64, 1, 1.0, true),
          RandomTensor({2, 3, 4}, DType::kF64, 2, 1.0, true),
          RandomTensor({5, 4}, DType::kF64, 3, 0.5, true),
          RandomTensor({4, 5}, DType::kF64, 4, 0.5, true)};
}

// loss = sum((Block(x, y) ⊙ w-dependent tail)²): w2 is also used after the block, so it gets
// gradient from inside and outside the checkpoint.
Tensor Loss(const Leaves& l, bool checkpoint) {
  Tensor x0 = ops::Scale(l.x, 1.5);  // a non-leaf input with its own graph
  Tensor out;
  if (checkpoint) {
    ops::CheckpointFn fn = [&](const std::vector<Tensor>& in) {
      return Block(in[0], in[1], l.w1, l.w2);
    };
    out = ops::Checkpoint(fn, {x0, l.y}, {l.w1, l.w2});
  } else {
    out = Block(x0, l.y, l.w1, l.w2);
  }
  Tensor tail = ops::Linear(ops::Linear(out, ops::Transpose(l.w2, 0, 1)), l.w2);
  return ops::SumAll(ops::Square(tail));
}

TEST(Checkpoint, GradientsEqualTheUncheckpointedOnes) {
  Leaves a = MakeLeaves(), b = MakeLeaves();
  Tensor la = Loss(a, false), lb = Loss(b, true);
  EXPECT_EQ(la.item(), lb.item());
  // The checkpoint kept no graph of the block: its output's node is the Checkpoint node.
  la.backward(Tensor());
  lb.backward(Tensor());
  const std::vector<std::tuple<Tensor, Tensor, std::string>> pairs = {
      {a.x, b.x, "x"}, {a.y, b.y, "y"}, {a.w1, b.w1, "w1"}, {a.w2, b.w2, "w2"}};
  for (const auto& [ga, gb, name] : pairs) {
    ASSERT_TRUE(ga.grad().defined()) << name;
    ASSERT_TRUE(gb.grad().defined()) << name;
    EXPECT_LE(MaxAbsDiff(ga.grad(), gb.grad()), 1e-12) << name;
    EXPECT_GT(MaxAbsDiff(ga.grad(), Tensor::Zeros(ga.shape(), DType::kF64)), 1e-3) << name;
  }
}

TEST(Checkpoint, OutputNodeIsTheCheckpointAndForwardKeepsNoGraph) {
  Leaves l = MakeLeaves();
  ops::CheckpointFn fn = [&](const std::vector<Tensor>& in) {
    EXPECT_FALSE(GradEnabled());  // the first call records nothing
    return Block(in[0], in[1], l.w1, l.w2);
  };
  Tensor out = ops::Checkpoint(fn, {l.x, l.y}, {l.w1, l.w2});
  ASSERT_TRUE(out.grad_fn());
  EXPECT_EQ(out.grad_fn()->name(), "Checkpoint");
  // Edges: x, y, w1, w2, all leaves (AccumulateGrad).
  ASSERT_EQ(out.grad_fn()->next.size(), 4u);
  for (const auto& edge : out.grad_fn()->next) EXPECT_EQ(edge->name(), "AccumulateGrad");
}

TEST(Checkpoint, Gradcheck) {
  auto fn = [](const std::vector<Tensor>& in) {
    ops::CheckpointFn block = [&](const std::vector<Tensor>& xs) {
      return Block(xs[0], xs[1], in[2], in[3]);
    };
    return ops::Checkpoint(block, {in[0], in[1]}, {in[2], in[3]});
  };
  Leaves l = MakeLeaves();
  EXPECT_TRUE(testing::Gradcheck(fn, {l.x, l.y, l.w1, l.w2}));
}

TEST(Checkpoint, NestedCheckpointsAndGradHooksFireOnce) {
  Leaves a = MakeLeaves(), b = MakeLeaves();
  std::map<std::string, int> fired;
  b.w1.impl().grad_ready_hook = [&fired] { ++fired["w1"]; };
  b.w2.impl().grad_ready_hook = [&fired] { ++fired["w2"]; };
  // Outer checkpoint of (inner checkpoint of the block) followed by another block.
  ops::CheckpointFn inner = [&](const std::vector<Tensor>& in) {
    return Block(in[0], in[1], b.w1, b.w2);
  };
  ops::CheckpointFn outer = [&](const std::vector<Tensor>& in) {
    Tensor h = ops::Checkpoint(inner, {in[0], in[1]}, {b.w1, b.w2});
    return Block(h, in[1], b.w1, b.w2);
  };
  Tensor lb = ops::SumAll(ops::Square(ops::Checkpoint(outer, {b.x, b.y}, {b.w1, b.w2})));
  Tensor la = ops::SumAll(ops::Square(Block(Block(a.x, a.y, a.w1, a.w2), a.y, a.w1, a.w2)));
  EXPECT_EQ(la.item(), lb.item());
  la.backward(Tensor());
  lb.backward(Tensor());
  EXPECT_EQ(fired["w1"], 1);
  EXPECT_EQ(fired["w2"], 1);
  EXPECT_LE(MaxAbsDiff(a.x.grad(), b.x.grad()), 1e-12);
  EXPECT_LE(MaxAbsDiff(a.y.grad(), b.y.grad()), 1e-12);
  EXPECT_LE(MaxAbsDiff(a.w1.grad(), b.w1.grad()), 1e-12);
  EXPECT_LE(MaxAbsDiff(a.w2.grad(), b.w2.grad()), 1e-12);
}

TEST(Checkpoint, AnUnlistedParameterIsAnErrorNamingIt) {
  Leaves l = MakeLeaves();
  l.w2.set_name("block.w2");
  ops::CheckpointFn fn = [&](const std::vector<Tensor>& in) {
    return Block(in[0], in[1], l.w1, l.w2);
  };
  Tensor out = ops::Checkpoint(fn, {l.x, l.y}, {l.w1});  // w2 missing
  try {
    ops::SumAll(out).backward(Tensor());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("block.w2"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(l.w1.grad().defined());  // nothing was accumulated before the error
}

TEST(Checkpoint, WithoutGradientsItIsAPlainCall) {
  Leaves l = MakeLeaves();
  NoGradGuard no_grad;
  int calls = 0;
  ops::CheckpointFn fn = [&](const std::vector<Tensor>& in) {
    ++calls;
    return Block(in[0], in[1], l.w1, l.w2);
  };
  Tensor out = ops::Checkpoint(fn, {l.x, l.y}, {l.w1, l.w2});
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(out.grad_fn());
  EXPECT_EQ(MaxAbsDiff(out, Block(l.x, l.y, l.w1, l.w2)), 0.0);
}

// ---- the whole model ----


Tensor Tokens(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> ids(batch * seq);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = (i * 7 + seed * 13 + i * i) % vocab;
  return Tensor::FromInts(ids, {batch, seq});
}

// A f64 model with LoRA (dropout 0.3) on every projection, nonzero adapters, everything trainable.
std::unique_ptr<FamModel> LoraModel(AttentionType type) {
  auto model = std::make_unique<FamModel>(testing::TinyModelConfig(type), DType::kF64);
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4;
  lora.dropout = 0.3;
  EXPECT_TRUE(AttachLora(*model, lora).ok());
  model->InitializeWeights(11);  // B nonzero too, so A gets gradient
  for (auto& [name, t] : model->NamedParameters()) t.set_requires_grad(true);
  return model;
}

struct StepResult {
  std::vector<double> losses;
  std::map<std::string, Tensor> grads;
  std::vector<Tensor> final_state;
};

// Two forward/backward passes (gradient accumulation; dropout keeps advancing between them) with
// position offsets and the given carried state.
StepResult RunSteps(FamModel& model, bool recompute, const std::vector<Tensor>& state) {
  model.ZeroGrad();
  SetLoraDropout(model, true, 5, 17);
  StepResult r;
  for (int micro = 0; micro < 2; ++micro) {
    ForwardOptions fo;
    fo.recompute = recompute;
    fo.position_offsets = {3, 40 + micro};
    fo.initial_state = state;
    Tensor tokens = Tokens(2, 14, model.config().vocab_size, 3 + micro);  // 3.5 blocks of 4
    Tensor targets = Tokens(2, 14, model.config().vocab_size, 9 + micro);
    ForwardResult out = model.Forward(tokens, fo);
    Tensor loss = model.Loss(out.logits, targets);
    loss.backward(Tensor());
    r.losses.push_back(loss.item());
    if (micro == 0) r.final_state = out.final_state;
  }
  for (auto& [name, t] : model.NamedParameters()) r.grads[name] = t.grad();
  return r;
}

void ExpectSameSteps(AttentionType type, bool carried) {
  std::unique_ptr<FamModel> model = LoraModel(type);
  std::vector<Tensor> state;
  if (carried) {
    NoGradGuard no_grad;
    ForwardResult first = model->Forward(Tokens(1, 9, model->config().vocab_size, 1));
    for (const Tensor& s : first.final_state) state.push_back(s.detach());
    ASSERT_EQ(state.size(), 2u);
  }
  StepResult off = RunSteps(*model, false, state);
  StepResult on = RunSteps(*model, true, state);
  ASSERT_EQ(off.losses.size(), on.losses.size());
  for (size_t i = 0; i < off.losses.size(); ++i) EXPECT_EQ(off.losses[i], on.losses[i]) << i;
  // Dropout is active (so replaying its masks matters): without it the first loss differs.
  {
    NoGradGuard no_grad;
    SetLoraDropout(*model, false, 0, 0);
    ForwardOptions fo;
    fo.position_offsets = {3, 40};
    fo.initial_state = state;
    Tensor tokens = Tokens(2, 14, model->config().vocab_size, 3);
    const double plain = model->Loss(model->Forward(tokens, fo).logits,
                                     Tokens(2, 14, model->config().vocab_size, 9)).item();
    EXPECT_GT(std::abs(plain - off.losses[0]), 1e-6);
  }
  for (auto& [name, g] : off.grads) {
    // With a carried state the learned initial FAM is unused: no gradient either way.
    const bool unused = carried && name == "model.fam.embeddings";
    ASSERT_EQ(on.grads[name].defined(), !unused) << name;
    if (unused) {
      EXPECT_FALSE(g.defined()) << name;
      continue;
    }
    ASSERT_TRUE(g.defined()) << name;
    EXPECT_LE(MaxAbsDiff(g, on.grads[name]), 1e-12) << name;
  }
  ASSERT_EQ(off.final_state.size(), on.final_state.size());
  for (size_t l = 0; l < off.final_state.size(); ++l)
    EXPECT_EQ(MaxAbsDiff(off.final_state[l], on.final_state[l]), 0.0) << "layer " << l;
}

TEST(RecomputeModel, FullAttentionSameLossAndGradients) { ExpectSameSteps(AttentionType::kFull, false); }
TEST(RecomputeModel, BswaSameLossAndGradients) { ExpectSameSteps(AttentionType::kBswa, false); }
TEST(RecomputeModel, FamLearnedStateSameLossAndGradients) { ExpectSameSteps(AttentionType::kFam, false); }
TEST(RecomputeModel, FamCarriedStateSameLossAndGradients) { ExpectSameSteps(AttentionType::kFam, true); }

TEST(RecomputeModel, GradReadyHookFiresOncePerParameter) {
  std::unique_ptr<FamModel> model = LoraModel(AttentionType::kFam);
  std::map<std::string, int> fired;
  for (auto& [name, t] : model->NamedParameters())
    t.impl().grad_ready_hook = [&fired, n = name] { ++fired[n]; };
  SetLoraDropout(*model, true, 5, 17);
  ForwardOptions fo;
  fo.recompute = true;
  Tensor tokens = Tokens(2, 14, model->config().vocab_size, 3);
  model->Loss(model->Forward(tokens, fo).logits, Tokens(2, 14, model->config().vocab_size, 4))
      .backward(Tensor());
  for (auto& [name, t] : model->NamedParameters()) EXPECT_EQ(fired[name], 1) << name;
  for (auto& [name, t] : model->NamedParameters()) t.impl().grad_ready_hook = nullptr;
}

TEST(RecomputeModel, LayerOutputsKeepOnlyTheCheckpointNode) {
  // With recompute the graph holds one Checkpoint node per layer, not the layer's op nodes.
  std::unique_ptr<FamModel> model = LoraModel(AttentionType::kFam);
  ForwardOptions fo;
  fo.recompute = true;
  fo.compute_logits = false;
  ForwardResult out = model->Forward(Tokens(1, 8, model->config().vocab_size, 2), fo);
  // hidden = RmsNorm(x_last); its first edge is the last layer's output.
  ASSERT_TRUE(out.hidden.grad_fn());
  const std::shared_ptr<Node>& layer_out = out.hidden.grad_fn()->next[0];
  ASSERT_TRUE(layer_out);
  EXPECT_EQ(layer_out->name(), "Checkpoint");
  EXPECT_FALSE(out.final_state[0].grad_fn());  // from the no-grad forward
}

}  // namespace
}  // namespace fam
