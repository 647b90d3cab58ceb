// The memory planner (trainers/train/memory_plan.h) against values computed by hand from the preset
// dimensions (docs/memory.md gives each formula), its kept-activation formula against the measured
// heap of a CPU f32 run, and the `fam plan` / `fam train` start check as users run them.
#include "trainers/train/memory_plan.h"

#include <malloc.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "framework/autograd/node.h"
#include "gtest/gtest.h"
#include "models/fam/model.h"
#include "tests/gradcheck.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

// Preset dimensions, written out here (configs/models/*.yaml) so the expectations do not come from
// the code under test.
struct Dims {
  const char* preset;
  double d, layers, heads, kv_heads, ffn;
};
constexpr double kVocab = 256000, kHeadDim = 128, kFam = 64, kBlock = 1024, kSeq = 8704;
constexpr Dims k1b{"1b", 1536, 18, 12, 12, 12288};
constexpr Dims k8b{"8b", 4096, 32, 32, 32, 16384};
constexpr Dims k24b{"24b", 4096, 56, 32, 1, 32768};

double LayerParams(const Dims& m) {
  const double q = m.heads * kHeadDim, kv = m.kv_heads * kHeadDim;
  return 2 * m.d + 2 * m.d * q + 2 * m.d * kv + 3 * m.d * m.ffn;  // norms, q/o, k/v, gate/up/down
}
// Embeddings + LM head (untied) + layers + final norm + FAM prompt.
double TotalParams(const Dims& m) {
  return 2 * kVocab * m.d + m.layers * LayerParams(m) + m.d + kFam * m.d;
}
// Rank-64 adapters on the seven projections of every layer: A [64, in] and B [out, 64].
double LoraParams(const Dims& m) {
  const double q = m.heads * kHeadDim, kv = m.kv_heads * kHeadDim, r = 64;
  const double per_layer = (r * m.d + q * r) + 2 * (r * m.d + kv * r) + (r * q + m.d * r) +
                           2 * (r * m.d + m.ffn * r) + (r * m.ffn + m.d * r);
  return m.layers * per_layer;
}
// Adafactor (factored, β1 > 0): momentum like each parameter plus row + col statistics.
double LoraAdafactorValues(const Dims& m) {
  const double q = m.heads * kHeadDim, kv = m.kv_heads * kHeadDim, r = 64;
  const double stats = (r + m.d) + (q + r) + 2 * ((r + m.d) + (kv + r)) + (r + q) + (m.d + r) +
                       2 * ((r + m.d) + (m.ffn + r)) + (r + m.ffn) + (m.d + r);
  return LoraParams(m) + kFam * m.d + m.layers * stats + (kFam + m.d);
}
// Saved activation bytes of one row of one layer in bf16 (docs/memory.md): 4d + 3q + 2kv + 4ffn
// values (+ 7r with LoRA) and three f32 per row + one f32 per head.
double PerRow(const Dims& m, double lora_values) {
  const double q = m.heads * kHeadDim, kv = m.kv_heads * kHeadDim;
  return 2 * (4 * m.d + 3 * q + 2 * kv + 4 * m.ffn + lora_values) + 4 * (2 + m.heads);
}
constexpr double kRows = kSeq + kFam * 9;  // 8.5 blocks of 1024 -> 9 blocks, 64 FAM rows each

// loss_chunk_tokens: 0 = the full logits (the hand values below), else the chunked LM head.
RunConfig Config(const Dims& m, bool lora, int64_t loss_chunk_tokens = 0) {
  std::string yaml = std::string("name: t\nmodel:\n  preset: ") + m.preset +
                     "\ntrainer:\n  precision: bf16\n  seq_len: 8704\n  global_batch: 128\n"
                     "  micro_batch: 1\n  loss_chunk_tokens: " +
                     std::to_string(loss_chunk_tokens) + "\n";
  if (lora) {
    yaml += "  type: finetune\noptimizer:\n  type: adafactor\n  beta1: 0.9\n  beta2: 0.99\n";
    yaml += "lora:\n  rank: 64\n  targets: [attention, mlp]\n";
    yaml += "finetune:\n  base_weights: base.safetensors\n";
  }
  absl::StatusOr<RunConfig> c = ParseRunConfig(yaml, "memory_plan_test.yaml");
  if (!c.ok()) ADD_FAILURE() << c.status();
  return c.ok() ? *c : RunConfig();
}

MemoryBreakdown Estimate(const RunConfig& c, int gpus, ZeroStage zero, bool recompute,
                         int64_t micro_batch = 1) {
  absl::StatusOr<MemoryBreakdown> b = EstimateMemory(c, gpus, {zero, recompute, micro_batch});
  if (!b.ok()) ADD_FAILURE() << b.status();
  return b.ok() ? *b : MemoryBreakdown();
}

double PlannedTotal(const RunConfig& c, bool trainable_only) {
  absl::StatusOr<std::vector<PlannedParameter>> ps = PlannedParameters(c);
  if (!ps.ok()) ADD_FAILURE() << ps.status();
  if (!ps.ok()) return -1;
  double n = 0;
  for (const PlannedParameter& p : *ps)
    if (p.trainable || !trainable_only) n += static_cast<double>(p.numel());
  return n;
}

TEST(MemoryPlanTest, ParameterCountsOfThePresets) {
  EXPECT_EQ(TotalParams(k1b), 1975672320.0);  // 2.0 B, as configs/models/1b.yaml says
  EXPECT_EQ(TotalParams(k8b), 10687614976.0);
  EXPECT_EQ(TotalParams(k24b), 26584223744.0);
  for (const Dims& m : {k1b, k8b, k24b}) {
    SCOPED_TRACE(m.preset);
    EXPECT_EQ(PlannedTotal(Config(m, false), false), TotalParams(m));
    EXPECT_EQ(PlannedTotal(Config(m, true), false), TotalParams(m) + LoraParams(m));
    EXPECT_EQ(PlannedTotal(Config(m, true), true), LoraParams(m) + kFam * m.d);
  }
  EXPECT_EQ(LoraParams(k24b) + kFam * k24b.d, 485621760.0);
}

TEST(MemoryPlanTest, PretrainingOnOneGpu) {
  for (const Dims& m : {k1b, k8b, k24b}) {
    SCOPED_TRACE(m.preset);
    const double n = TotalParams(m);
    MemoryBreakdown b = Estimate(Config(m, false), 1, ZeroStage::kNone, false);
    EXPECT_EQ(b.weights, 2 * n);    // bf16 working copy
    EXPECT_EQ(b.master, 4 * n);     // f32 master
    EXPECT_EQ(b.gradients, 4 * n);  // f32 accumulation of the bf16 gradients
    EXPECT_EQ(b.optimizer, 8 * n);  // AdamW: two f32 moments
    EXPECT_EQ(b.communication, 0);
    // Every layer keeps its rows (tokens + FAM rows of each block); the initial FAM state adds 64
    // rows per layer.
    const double kept = m.layers * (kRows + kFam) * PerRow(m, 0);
    EXPECT_NEAR(b.activations_kept, kept, 1e-6 * kept);
    // LM head: norm in/out bf16 + 1/rms + logits bf16 + lse, then CE backward: f32 logits, f32 and
    // bf16 grad_logits. At 256k vocabulary this beats one layer's backward.
    const double head = kSeq * (2 * m.d * 2 + 4 + kVocab * 2 + 4) + kSeq * kVocab * 10;
    EXPECT_NEAR(b.activations_peak, head, 1e-9 * head);
    const double other = 2 * n + 4 * n + 4 * n + 8 * n + kept + head;
    // Workspace: 1 GiB + the largest parameter in f32 (the embeddings) + 5 % slack.
    const double workspace = 1073741824.0 + 4 * kVocab * m.d + 0.05 * other;
    EXPECT_NEAR(b.workspace, workspace, 1e-9 * workspace);
    EXPECT_NEAR(b.total(), other + workspace, 1e-9 * b.total());
  }
}

TEST(MemoryPlanTest, RecomputeKeepsOnlyLayerInputs) {
  const Dims& m = k8b;
  MemoryBreakdown b = Estimate(Config(m, false), 1, ZeroStage::kNone, true);
  const double kept = m.layers * (kSeq + kFam) * m.d * 2 + m.layers * kFam * PerRow(m, 0);
  EXPECT_NEAR(b.activations_kept, kept, 1e-9 * kept);
  // One layer recomputed + its gradients (3 ffn + 2 d per row) vs the LM head: the head wins.
  const double layer = kRows * PerRow(m, 0) + kRows * 2 * (3 * m.ffn + 2 * m.d);
  const double head = kSeq * (2 * m.d * 2 + 8 + kVocab * 2) + kSeq * kVocab * 10;
  EXPECT_LT(layer, head);
  EXPECT_NEAR(b.activations_peak, head, 1e-9 * head);
}

TEST(MemoryPlanTest, ChunkedLossHoldsOneChunkOfLogits) {
  for (const Dims& m : {k1b, k8b}) {
    SCOPED_TRACE(m.preset);
    // 1024 tokens per chunk: kept = norm in/out bf16 + 1/rms + lse; backward = one f32 chunk of
    // logits + f32 grad_hidden and grad_weight + f32 copies of hidden and weight + their bf16
    // gradient casts (10 bytes per element of [S, d] and [V, d]).
    const double head = kSeq * (2 * m.d * 2 + 8) + 1024 * kVocab * 4 + (kSeq + kVocab) * m.d * 10;
    MemoryBreakdown b = Estimate(Config(m, false, 1024), 1, ZeroStage::kNone, true);
    EXPECT_NEAR(b.activations_peak, head, 1e-9 * head);
    // Still larger than one recomputed layer's backward (1.8 / 2.8 GiB), so it is the peak.
    MemoryBreakdown full = Estimate(Config(m, false, 0), 1, ZeroStage::kNone, true);
    EXPECT_EQ(b.activations_kept, full.activations_kept);  // the layers do not change
    EXPECT_GT(full.activations_peak - b.activations_peak, 13.0 * 1073741824.0);
    // LoRA: the head is frozen, so no grad_weight (only the f32 copy of the weight).
    const double lora_head =
        kSeq * (2 * m.d * 2 + 8) + 1024 * kVocab * 4 + kSeq * m.d * 10 + kVocab * m.d * 4;
    MemoryBreakdown lora = Estimate(Config(m, true, 1024), 1, ZeroStage::kNone, true);
    EXPECT_NEAR(lora.activations_peak, lora_head, 1e-9 * lora_head);
  }
  // A chunk larger than the micro-batch's tokens holds all of them at once.
  const Dims& m = k1b;
  MemoryBreakdown big = Estimate(Config(m, false, 100000), 1, ZeroStage::kNone, false);
  const double head = kSeq * (2 * m.d * 2 + 8) + kSeq * kVocab * 4 + (kSeq + kVocab) * m.d * 10;
  EXPECT_NEAR(big.activations_peak, head, 1e-9 * head);
}

TEST(MemoryPlanTest, ZeroStagesShardByWholeParameters) {
  // 1B on 8 GPUs: N/8 = 247 M is less than one embedding matrix (393 M): the greedy owner
  // assignment gives the embeddings and the LM head a rank each and spreads the rest (about 1.19 B
  // over 6 ranks) below that, so the most loaded rank holds exactly one 256000 x 1536 matrix.
  const Dims& m = k1b;
  const double n = TotalParams(m), biggest = kVocab * m.d;
  RunConfig c = Config(m, false);
  MemoryBreakdown z1 = Estimate(c, 8, ZeroStage::kZero1, false);
  EXPECT_EQ(z1.weights, 2 * n);
  EXPECT_EQ(z1.master, 4 * biggest);
  EXPECT_EQ(z1.optimizer, 8 * biggest);
  EXPECT_EQ(z1.gradients, 4 * n);                    // f32 (bf16 run)
  EXPECT_EQ(z1.communication, 4 * n + 4 * biggest);  // all buckets + the owned shard, f32
  MemoryBreakdown none = Estimate(c, 8, ZeroStage::kNone, false);
  EXPECT_EQ(none.communication, 4 * n);
  MemoryBreakdown z2 = Estimate(c, 8, ZeroStage::kZero2, false);
  // ZeRO-2: owned gradient accumulators; buffers for one gradient unit filling + two reducing,
  // the largest unit being a root parameter of its own (the LM head or embeddings); f32 (bf16 run).
  EXPECT_EQ(z2.gradients, 4 * biggest);
  EXPECT_EQ(z2.communication, 3 * 4 * biggest);
  EXPECT_EQ(z2.master, 4 * biggest);
  EXPECT_EQ(z2.weights, 2 * n);
  MemoryBreakdown z3 = Estimate(c, 8, ZeroStage::kZero3, false);
  // Parameters: own shard + the gathered root unit (embeddings, norm, FAM prompt, LM head) + two
  // decoder layers.
  const double root = 2 * biggest + m.d + kFam * m.d;
  EXPECT_EQ(z3.weights, 2 * biggest + 2 * (root + 2 * LayerParams(m)));
  EXPECT_EQ(z3.gradients, 4 * biggest);
  EXPECT_EQ(z3.master, 4 * biggest);
  // 64 GPUs: still one embedding matrix per rank at most.
  EXPECT_EQ(Estimate(c, 64, ZeroStage::kZero1, false).master, 4 * biggest);
}

TEST(MemoryPlanTest, Lora24bOnEightGpus) {
  const Dims& m = k24b;
  RunConfig c = Config(m, true);
  const double base = TotalParams(m), adapters = LoraParams(m) + kFam * m.d;
  MemoryBreakdown b = Estimate(c, 8, ZeroStage::kNone, false);
  EXPECT_EQ(b.weights, 2 * (base - kFam * m.d + adapters));  // FAM prompt counted once
  EXPECT_EQ(b.master, 4 * adapters);
  EXPECT_EQ(b.gradients, 4 * adapters);  // f32
  EXPECT_EQ(b.optimizer, 4 * LoraAdafactorValues(m));
  EXPECT_NEAR(b.activations_kept, m.layers * (kRows + kFam) * PerRow(m, 7 * 64), 1.0);
  // ZeRO-3 shards the frozen base too: the most loaded rank holds about N/8, plus the gathered
  // root unit and two layers.
  const double all = base - kFam * m.d + adapters;
  MemoryBreakdown z3 = Estimate(c, 8, ZeroStage::kZero3, true);
  // Frozen and trainable parameters get owners separately; each greedy share is at most the
  // average plus its largest item.
  const double layer = LayerParams(m) + LoraParams(m) / m.layers;
  const double gathered = 2 * ((2 * kVocab * m.d + m.d + kFam * m.d) + 2 * layer);
  EXPECT_GE(z3.weights, 2 * all / 8 + gathered);
  EXPECT_LE(z3.weights, 2 * (all / 8 + kVocab * m.d + m.ffn * 64) + gathered);
  EXPECT_EQ(z3.communication, 3 * 4 * (LoraParams(m) / m.layers));  // f32 adapter gradient units

  // The paper's setup as shipped (no ZeRO, no recompute) does not fit 8 x 80 GB; the planner finds
  // ZeRO-3 with recomputation.
  absl::StatusOr<MemoryPlan> plan = PlanMemory(c, 8, 79.6 * 1073741824.0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->configured_fits);
  ASSERT_GE(plan->suggestion, 0);
  const PlanCandidate& s = plan->options[plan->suggestion];
  EXPECT_TRUE(s.fits);
  EXPECT_EQ(s.settings.zero, ZeroStage::kZero3);
  EXPECT_TRUE(s.settings.recompute);
  EXPECT_LE(s.memory.total(), 79.6 * 1073741824.0);
  // The suggestion leaves the planner's headroom; every cheaper option either does not fit or
  // would not leave it.
  const double budget = 79.6 * 1073741824.0;
  EXPECT_LE(s.memory.total(), (1 - kSuggestionHeadroom) * budget);
  for (int i = 0; i < plan->suggestion; ++i)
    EXPECT_FALSE(plan->options[i].fits &&
                 plan->options[i].memory.total() <= (1 - kSuggestionHeadroom) * budget)
        << i;
}

TEST(MemoryPlanTest, Lora1bOnOneGpuAndNothingFits) {
  absl::StatusOr<MemoryPlan> one = PlanMemory(Config(k1b, true), 1, 79.6 * 1073741824.0);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_TRUE(one->configured_fits);
  EXPECT_EQ(one->suggestion, 0);
  EXPECT_EQ(one->options.size(), 2u);  // one GPU: no ZeRO stages, recompute off/on
  // 24B pretraining with AdamW needs 16 bytes per parameter before activations: not on 8 GPUs.
  absl::StatusOr<MemoryPlan> none = PlanMemory(Config(k24b, false), 8, 79.6 * 1073741824.0);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->suggestion, -1);
  EXPECT_NE(FormatMemoryPlan(Config(k24b, false), *none).find("nothing fits"), std::string::npos);
}

TEST(MemoryPlanTest, BadInputIsNamed) {
  absl::StatusOr<MemoryPlan> odd = PlanMemory(Config(k1b, false), 3, 1e12);
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.status().message().find("trainer.global_batch"), std::string::npos);
  RunConfig c = Config(k1b, true);
  c.lora.targets = {"nope_proj"};
  absl::StatusOr<MemoryBreakdown> b = EstimateMemory(c, 1, {});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("lora.targets"), std::string::npos);
  c.lora.targets = {"layers.0.*", "q_proj"};  // globs and suffixes as models/fam/lora.h has them
  absl::StatusOr<std::vector<PlannedParameter>> ps = PlannedParameters(c);
  ASSERT_TRUE(ps.ok()) << ps.status();
  int adapters = 0;
  for (const PlannedParameter& p : *ps) adapters += p.name.find(".lora_A.") != std::string::npos;
  EXPECT_EQ(adapters, 7 + 17);  // all seven of layer 0, q_proj of the other 17
}

// The binary: `fam plan` and the refusal at `fam train` start.
using RunOutput = testing::CommandResult;
using testing::RunFam;

TEST(MemoryPlanCliTest, PlanAndStartCheck) {
  const fs::path dir = testing::FreshTestDir("fam_memory_plan_test_");
  const char* src = std::getenv("FAM_SOURCE_DIR");
  const std::string finetune_24b =
      std::string(src ? src : ".") + "/configs/experiments/finetune_24b.yaml";
  RunOutput plan = RunFam("plan --config " + finetune_24b + " --gpus 8 --gpu-memory-gb 79.6");
  EXPECT_EQ(plan.exit_code, 0) << plan.output;
  // With the chunked LM head + loss (default trainer.loss_chunk_tokens) the cheapest fit within
  // the 10 % headroom is ZeRO-1 with recomputation at micro-batch 1 (the replicated base, 73.3 GiB
  // with its f32 gradients and buckets, leaves less than 10 %).
  EXPECT_NE(
      plan.output.find("suggestion: --set distributed.zero=zero1 --set trainer.recompute=true "
                       "--set trainer.micro_batch=1"),
      std::string::npos)
      << plan.output;
  RunOutput json = RunFam("plan --config " + finetune_24b + " --gpus 8 --gpu-memory-gb 79.6 --json");
  EXPECT_EQ(json.exit_code, 0) << json.output;
  EXPECT_NE(json.output.find("\"zero\": \"zero3\""), std::string::npos) << json.output;
  EXPECT_EQ(RunFam("plan --config " + finetune_24b + " --gpus 0 --gpu-memory-gb 80").exit_code, 2);

  // A CPU run with a budget: refused before any data is read (the shards do not exist) with the
  // breakdown and exit code 2; with enough budget it goes on and fails on the missing data.
  const std::string config = (dir / "tiny.yaml").string();
  std::ofstream(config) << "name: tiny\nrun_dir: " << (dir / "runs").string()
                        << "\nmodel:\n  preset: tiny\ndata:\n  train: "
                        << (dir / "none-*.bin").string()
                        << "\ntrainer:\n  seq_len: 256\n  global_batch: 8\n  micro_batch: 4\n";
  RunOutput refused = RunFam("train --config " + config + " --set trainer.memory_budget_gb=0.5");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("does NOT fit"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("trainer.memory_budget_gb: the run would not fit"),
            std::string::npos)
      << refused.output;
  EXPECT_FALSE(fs::exists(dir / "runs"));
  RunOutput goes_on = RunFam("train --config " + config + " --set trainer.memory_budget_gb=4");
  EXPECT_NE(goes_on.output.find("memory plan: "), std::string::npos) << goes_on.output;
  EXPECT_EQ(goes_on.output.find("would not fit"), std::string::npos) << goes_on.output;
  EXPECT_NE(goes_on.exit_code, 0);  // no data
  fs::remove_all(dir);
}

// Measured check of the activation formula on the CPU, where an f32 run saves exactly what the
// planner assumes for a GPU run (attention keeps views of q, k, v and its output; the fused
// cross-entropy keeps f32 logits): heap bytes alive after forward + loss, before backward, against
// the planner's kept activations plus the LM head's kept tensors.
namespace measure {
double HeapBytes() {
  struct mallinfo2 mi = mallinfo2();
  return static_cast<double>(mi.uordblks + mi.hblkhd);
}
}  // namespace measure

TEST(MemoryPlanTest, KeptActivationsMatchMeasuredHeapOnCpu) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer replaces malloc: mallinfo2() does not see its heap";
#endif
  absl::StatusOr<RunConfig> c = ParseRunConfig(
      "name: m\nmodel:\n  preset: tiny\n  attention: {block_size: 64, fam_length: 8}\n"
      "trainer:\n  seq_len: 512\n  global_batch: 2\n  micro_batch: 2\n",
      "measure.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  // (recompute, chunked LM head + cross-entropy): the chunked head keeps no logits.
  for (auto [recompute, chunked] : {std::pair{false, false}, {true, false}, {false, true}}) {
    SCOPED_TRACE(recompute ? "recompute" : "no recompute");
    SCOPED_TRACE(chunked ? "chunked loss" : "full logits");
    absl::StatusOr<MemoryBreakdown> plan = EstimateMemory(*c, 1, {ZeroStage::kNone, recompute, 2});
    ASSERT_TRUE(plan.ok()) << plan.status();
    const ModelConfig& m = c->model;
    const double tokens = 2.0 * 512;
    const double head_kept = tokens * (2 * m.d_model * 4 + 8 + (chunked ? 0 : m.vocab_size * 4.0));
    const double expected = plan->activations_kept + head_kept;
    FamModel model(m, DType::kF32);
    model.InitializeWeights(1);
    std::vector<int64_t> ids(2 * 512), next(2 * 512);
    for (size_t i = 0; i < ids.size(); ++i) {
      ids[i] = static_cast<int64_t>((i * 7919) % m.vocab_size);
      next[i] = static_cast<int64_t>((i * 104729 + 1) % m.vocab_size);
    }
    Tensor tokens_t = Tensor::FromInts(ids, {2, 512});
    Tensor targets = Tensor::FromInts(next, {2, 512});
    ForwardOptions fo;
    fo.recompute = recompute;
    fo.compute_logits = !chunked;
    if (!recompute) {
      NoGradGuard warm_up;  // thread pools and BLAS buffers allocated outside the measurement
      model.Forward(tokens_t, fo);
    }
    const double before = measure::HeapBytes();
    double measured = 0;
    {
      ForwardResult out = model.Forward(tokens_t, fo);
      Tensor loss = chunked ? model.LossFromHidden(out.hidden, targets, Tensor(), 256)
                            : model.Loss(out.logits, targets, Tensor());
      out = ForwardResult();  // only what backward keeps stays alive
      measured = measure::HeapBytes() - before;
      loss.backward();
    }
    std::printf("kept activations: estimated %.2f MiB, measured %.2f MiB (recompute %d, "
                "chunked %d)\n",
                expected / 1048576, measured / 1048576, recompute ? 1 : 0, chunked ? 1 : 0);
    EXPECT_NEAR(measured, expected, 0.05 * expected);
  }
}

}  // namespace
}  // namespace fam
