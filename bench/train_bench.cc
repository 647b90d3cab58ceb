// Training-step throughput of the real model (models/fam FamModel: Forward, Loss, backward, AdamW
// Step) on synthetic random tokens, in tokens/s:
//   BM_TrainGpt2Small  a GPT-2-like small config with full attention (the config that
//                      scripts/bench_llmc.sh compares with llm.c's CPU trainer);
//   BM_TrainTiny       the tiny FAM preset (configs/models/tiny.yaml) against the same model with
//                      full attention and with BSWA, one step of each per iteration (interleaved,
//                      so all see the same machine load); ratio fam_vs_full > 1 means FAM is faster.
// Counters: tokens_per_s, model GFLOPs (ModelConfig::TrainingFlopsPerToken × tokens/s) and of_sgemm
// (that over the machine's cblas_sgemm GFLOP/s measured in the same run: a CPU "MFU").
// Run: OMP_NUM_THREADS=2 ./train_bench  (bench/README.md).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "framework/core/tensor.h"
#include "framework/optim/adamw.h"
#include "models/fam/model.h"

#ifdef FAM_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace fam {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The machine's cblas_sgemm GFLOP/s at 1024³ (measured once per process, ~0.5 s).
double SgemmGflops() {
  static double gflops = [] {
#ifdef FAM_HAVE_OPENBLAS
    const int n = 1024;
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
    auto call = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                  n, 0.0f, c.data(), n);
    };
    call();
    int calls = 0;
    const auto start = Clock::now();
    while (Seconds(start) < 0.5 || calls < 3) {
      call();
      ++calls;
    }
    return 2.0 * n * n * n * calls / Seconds(start) / 1e9;
#else
    return 0.0;
#endif
  }();
  return gflops;
}

// GPT-2-like small model (config (a) of bench/README.md): 4 layers, d_model 256, 4 heads of 64,
// vocab 8192, tied embeddings, full attention. SwiGLU with ffn_dim 683: 3·d·f = 524,544 weights
// per layer vs 8·d² = 524,288 for GPT-2's 4·d GELU MLP (+0.05%), the same parameters and FLOPs.
ModelConfig Gpt2SmallConfig() {
  ModelConfig c;
  c.vocab_size = 8192;
  c.d_model = 256;
  c.n_layers = 4;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.head_dim = 64;
  c.ffn_dim = 683;
  c.tie_embeddings = true;
  c.attention.type = AttentionType::kFull;
  c.attention.block_size = 256;
  c.attention.memory_segments = 0;
  c.attention.fam_length = 0;
  return c;
}

// configs/models/tiny.yaml, with the attention type replaced.
ModelConfig TinyConfig(AttentionType type) {
  ModelConfig c;
  c.vocab_size = 2048;
  c.d_model = 128;
  c.n_layers = 4;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 32;
  c.ffn_dim = 384;
  c.norm_eps = 1e-6;
  c.rope_base = 10000;
  c.tie_embeddings = true;
  c.attention.type = type;
  c.attention.block_size = 64;
  c.attention.memory_segments = 1;
  c.attention.fam_length = 8;
  return c;
}

// One model + AdamW + a few synthetic batches; Step() is one full training step.
class TrainHarness {
 public:
  TrainHarness(const ModelConfig& config, int64_t batch, int64_t seq)
      : config_(config), batch_(batch), seq_(seq) {
    const absl::Status valid = config.Validate();
    FAM_CHECK(valid.ok(), "bench model config: ", valid.ToString());
    model_ = std::make_unique<FamModel>(config, DType::kF32);
    model_->InitializeWeights(1234);
    std::vector<NamedParameter> params;
    for (auto& [name, t] : model_->NamedParameters()) params.push_back({name, t, false});
    AdamWOptions o;  // llm.c's CPU trainer: beta 0.9/0.999, eps 1e-8, no weight decay
    optimizer_ = std::make_unique<AdamW>(std::move(params), o);
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<int64_t> token(0, config.vocab_size - 1);
    for (int i = 0; i < kBatches; ++i) {
      std::vector<int64_t> ids(batch * (seq + 1));
      for (int64_t& id : ids) id = token(rng);
      Tensor all = Tensor::FromInts(ids, {batch, seq + 1});
      inputs_.push_back(all.slice(1, 0, seq).contiguous());
      targets_.push_back(all.slice(1, 1, seq + 1).contiguous());
    }
  }

  // Forward, loss, backward and an AdamW update; returns the loss.
  double Step() {
    const int i = step_++ % kBatches;
    optimizer_->ZeroGrad();
    ForwardResult out = model_->Forward(inputs_[i]);
    Tensor loss = model_->Loss(out.logits, targets_[i]);
    loss.backward();
    optimizer_->Step(1e-4);
    return loss.item();
  }

  int64_t tokens_per_step() const { return batch_ * seq_; }
  double flops_per_token() const { return config_.TrainingFlopsPerToken(seq_); }

 private:
  static constexpr int kBatches = 2;
  ModelConfig config_;
  int64_t batch_, seq_;
  std::unique_ptr<FamModel> model_;
  std::unique_ptr<AdamW> optimizer_;
  std::vector<Tensor> inputs_, targets_;
  int64_t step_ = 0;
};

void SetThroughput(benchmark::State& state, const std::string& prefix, const TrainHarness& h,
                   double seconds_per_step) {
  const double tps = static_cast<double>(h.tokens_per_step()) / seconds_per_step;
  const double gflops = tps * h.flops_per_token() / 1e9;
  state.counters[prefix + "tokens_per_s"] = tps;
  state.counters[prefix + "GFLOPs"] = gflops;
  if (SgemmGflops() > 0) state.counters[prefix + "of_sgemm"] = gflops / SgemmGflops();
}

// (a) GPT-2-like small model, batch 8 × seq 256, full attention (args: batch, seq).
void BM_TrainGpt2Small(benchmark::State& state) {
  const int64_t batch = state.range(0), seq = state.range(1);
  TrainHarness h(Gpt2SmallConfig(), batch, seq);
  h.Step();  // warm-up: optimizer state and the allocator's free lists
  double loss = 0;
  const auto start = Clock::now();
  for (auto _ : state) loss = h.Step();
  const double per_step = Seconds(start) / static_cast<double>(state.iterations());
  SetThroughput(state, "", h, per_step);
  state.counters["loss"] = loss;
  state.SetLabel("gpt2-like L4 d256 H4x64 V8192 ffn683 full, AdamW");
}

// (b) tiny FAM vs the same model with full attention and with BSWA (args: batch, seq). The
// benchmark's time is the FAM step; every iteration also runs one full and one BSWA step.
void BM_TrainTiny(benchmark::State& state) {
  const int64_t batch = state.range(0), seq = state.range(1);
  TrainHarness fam(TinyConfig(AttentionType::kFam), batch, seq);
  TrainHarness bswa(TinyConfig(AttentionType::kBswa), batch, seq);
  TrainHarness full(TinyConfig(AttentionType::kFull), batch, seq);
  TrainHarness* order[3] = {&fam, &bswa, &full};
  double total[3] = {0, 0, 0};
  for (TrainHarness* h : order) h->Step();  // warm-up
  int64_t iteration = 0;
  for (auto _ : state) {
    double seconds[3];
    for (int j = 0; j < 3; ++j) {
      const int which = static_cast<int>((iteration + j) % 3);  // rotate the order
      const auto start = Clock::now();
      order[which]->Step();
      seconds[which] = Seconds(start);
    }
    ++iteration;
    state.SetIterationTime(seconds[0]);
    for (int j = 0; j < 3; ++j) total[j] += seconds[j];
  }
  const double n = static_cast<double>(state.iterations());
  SetThroughput(state, "fam_", fam, total[0] / n);
  SetThroughput(state, "bswa_", bswa, total[1] / n);
  SetThroughput(state, "full_", full, total[2] / n);
  state.counters["fam_vs_full"] = total[2] / total[0];
  state.counters["fam_vs_bswa"] = total[1] / total[0];
  state.SetLabel("tiny L4 d128 H4/kv2 block64 mem1 fam8, AdamW");
}

// FAM_BENCH_STEPS=N runs every benchmark for exactly N timed steps (iterations) instead of a
// minimum time: scripts/bench_llmc.sh uses it to time the same number of steps as llm.c.
void Register() {
  const char* env = std::getenv("FAM_BENCH_STEPS");
  const int64_t steps = env != nullptr ? std::atoll(env) : 0;
  auto* gpt = benchmark::RegisterBenchmark("BM_TrainGpt2Small", BM_TrainGpt2Small)
                  ->Args({8, 256})
                  ->ArgNames({"batch", "seq"})
                  ->Unit(benchmark::kMillisecond)
                  ->UseRealTime();
  auto* tiny = benchmark::RegisterBenchmark("BM_TrainTiny", BM_TrainTiny)
                   ->Args({1, 1024})
                   ->Args({1, 4096})
                   ->ArgNames({"batch", "seq"})
                   ->Unit(benchmark::kMillisecond)
                   ->UseManualTime();
  if (steps > 0) {
    gpt->Iterations(steps);
    tiny->Iterations(steps);
  } else {
    gpt->MinTime(3.0);
    tiny->MinTime(2.0);
  }
}

}  // namespace
}  // namespace fam

int main(int argc, char** argv) {
  fam::Register();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
