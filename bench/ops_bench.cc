// Fused-op throughput against this machine's own limits, both measured in the same run:
//   - the attention kernel (CpuBackend::AttentionForward/Backward) in GFLOP/s relative to the
//     machine's cblas_sgemm GFLOP/s (counter of_sgemm);
//   - RMSNorm and the fused softmax-cross-entropy in GB/s relative to the machine's memory
//     bandwidth from a STREAM-like copy/triad written here (counter of_stream).
// FLOPs and bytes are the compulsory work: attention counts 4·D per visible (query, key) pair
// forward (QKᵀ and PV) and 10·D backward (QKᵀ recompute, dO·Vᵀ, dS·K, dSᵀ·Q, Pᵀ·dO); norm and CE
// count each operand read or written once. Run: OMP_NUM_THREADS=2 ./ops_bench (bench/README.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "framework/backends/backend.h"
#include "framework/backends/registry.h"
#include "framework/core/tensor.h"

#ifdef FAM_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace fam {
namespace {

using Clock = std::chrono::steady_clock;

// The machine references (0 until measured; measured on first use when their bench was filtered
// out). Benchmarks run in registration order, so the reference benches below run first.
double g_sgemm_gflops = 0;
double g_stream_gbps = 0;

Tensor RandomTensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  float* p = t.data<float>();
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = lo + (hi - lo) * static_cast<float>((s >> 40) * (1.0 / (1ull << 24)));
  }
  return t;
}

// Runs the benchmark loop over `fn` and returns the wall seconds per call.
double TimedLoop(benchmark::State& state, const std::function<void()>& fn) {
  fn();  // warm-up (first-touch, packing buffers)
  const auto start = Clock::now();
  for (auto _ : state) fn();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return seconds / static_cast<double>(std::max<int64_t>(state.iterations(), 1));
}

// Wall seconds per call of fn, repeated for at least min_seconds (outside a benchmark loop).
double SecondsPerCall(const std::function<void()>& fn, double min_seconds) {
  fn();
  int64_t calls = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  while (elapsed < min_seconds || calls < 3) {
    fn();
    ++calls;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  }
  return elapsed / static_cast<double>(calls);
}

// ---- machine references ----

constexpr int64_t kSgemmSize = 1024;  // M = K = N of the reference sgemm

double SgemmGflops(double min_seconds) {
#ifdef FAM_HAVE_OPENBLAS
  const int64_t n = kSgemmSize;
  Tensor a = RandomTensor({n, n}, 1), b = RandomTensor({n, n}, 2), c = Tensor::Empty({n, n});
  const double s = SecondsPerCall(
      [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data<float>(), n,
                    b.data<float>(), n, 0.0f, c.data<float>(), n);
      },
      min_seconds);
  return 2.0 * n * n * n / s / 1e9;
#else
  return 0;
#endif
}

constexpr int64_t kStreamElems = int64_t{1} << 24;  // 64 MiB per array, well beyond the L3

struct StreamArrays {
  std::vector<float> a, b, c;
  StreamArrays() : a(kStreamElems), b(kStreamElems), c(kStreamElems) {
    float* pa = a.data();
    float* pb = b.data();
    float* pc = c.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < kStreamElems; ++i) {  // first touch by the threads that use them
      pa[i] = 1.0f;
      pb[i] = 2.0f;
      pc[i] = 0.5f;
    }
  }
  void Copy() {
    const float* pb = b.data();
    float* pa = a.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < kStreamElems; ++i) pa[i] = pb[i];
  }
  void Triad(float s) {
    const float* pb = b.data();
    const float* pc = c.data();
    float* pa = a.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < kStreamElems; ++i) pa[i] = pb[i] + s * pc[i];
  }
};

double StreamGbps(double min_seconds) {
  StreamArrays s;
  const double copy = 2.0 * 4 * kStreamElems / SecondsPerCall([&] { s.Copy(); }, min_seconds);
  const double triad = 3.0 * 4 * kStreamElems / SecondsPerCall([&] { s.Triad(3.0f); }, min_seconds);
  return std::max(copy, triad) / 1e9;
}

double SgemmReference() {
  if (g_sgemm_gflops == 0) g_sgemm_gflops = SgemmGflops(0.5);
  return g_sgemm_gflops;
}
double StreamReference() {
  if (g_stream_gbps == 0) g_stream_gbps = StreamGbps(0.5);
  return g_stream_gbps;
}

void BM_MachineSgemm(benchmark::State& state) {
#ifdef FAM_HAVE_OPENBLAS
  const int64_t n = kSgemmSize;
  Tensor a = RandomTensor({n, n}, 1), b = RandomTensor({n, n}, 2), c = Tensor::Empty({n, n});
  const double s = TimedLoop(state, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data<float>(), n,
                b.data<float>(), n, 0.0f, c.data<float>(), n);
  });
  g_sgemm_gflops = 2.0 * n * n * n / s / 1e9;
  state.counters["GFLOPs"] = g_sgemm_gflops;
  state.SetLabel("cblas_sgemm 1024^3 (reference)");
#else
  state.SkipWithError("no OpenBLAS in this build");
#endif
}

void BM_MachineStream(benchmark::State& state) {
  StreamArrays s;
  const bool triad = state.range(0) == 1;
  const double sec = TimedLoop(state, [&] {
    if (triad) {
      s.Triad(3.0f);
    } else {
      s.Copy();
    }
  });
  const double gbps = (triad ? 3.0 : 2.0) * 4 * kStreamElems / sec / 1e9;
  g_stream_gbps = std::max(g_stream_gbps, gbps);
  state.counters["GBps"] = gbps;
  state.SetLabel(triad ? "triad a=b+s*c (reference)" : "copy a=b (reference)");
}

// ---- attention ----

constexpr int64_t kHeads = 4;

// One block of Tq queries over [memory: one previous block, all visible] + [the block, causal],
// B = 1, H = Hkv = 4, the shapes of BSWA/FAM with block size Tq and one memory segment.
struct AttentionCase {
  AttentionArgs fwd;
  AttentionGradArgs bwd;
  double pairs = 0;  // visible (query, key) pairs per head
};

AttentionCase MakeAttention(int64_t tq, int64_t d) {
  AttentionCase c;
  Tensor q = RandomTensor({1, kHeads, tq, d}, 11);
  std::vector<Tensor> k = {RandomTensor({1, kHeads, tq, d}, 12), RandomTensor({1, kHeads, tq, d}, 13)};
  std::vector<Tensor> v = {RandomTensor({1, kHeads, tq, d}, 14), RandomTensor({1, kHeads, tq, d}, 15)};
  const std::vector<KeyMask> masks = {KeyMask::kAll, KeyMask::kCausal};
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  c.fwd.q = q;
  c.fwd.k = k;
  c.fwd.v = v;
  c.fwd.masks = masks;
  c.fwd.scale = scale;
  c.fwd.out = Tensor::Empty({1, kHeads, tq, d});
  c.fwd.lse = Tensor::Empty({1, kHeads, tq});
  c.bwd.q = q;
  c.bwd.k = k;
  c.bwd.v = v;
  c.bwd.masks = masks;
  c.bwd.scale = scale;
  c.bwd.out = c.fwd.out;
  c.bwd.lse = c.fwd.lse;
  c.bwd.grad_out = RandomTensor({1, kHeads, tq, d}, 16);
  c.bwd.grad_q = Tensor::Empty(q.shape());
  for (int j = 0; j < 2; ++j) {
    c.bwd.grad_k.push_back(Tensor::Empty(k[j].shape()));
    c.bwd.grad_v.push_back(Tensor::Empty(v[j].shape()));
  }
  c.pairs = static_cast<double>(tq) * tq + static_cast<double>(tq) * (tq + 1) / 2.0;
  return c;
}

void BM_AttentionForward(benchmark::State& state) {
  const int64_t tq = state.range(0), d = state.range(1);
  Backend& cpu = GetBackend(Device::CPU());
  AttentionCase c = MakeAttention(tq, d);
  const double s = TimedLoop(state, [&] { cpu.AttentionForward(c.fwd); });
  const double gflops = 4.0 * d * kHeads * c.pairs / s / 1e9;
  state.counters["GFLOPs"] = gflops;
  state.counters["of_sgemm"] = gflops / SgemmReference();
  state.SetLabel("keys=" + std::to_string(tq) + " memory + " + std::to_string(tq) + " causal");
}

void BM_AttentionBackward(benchmark::State& state) {
  const int64_t tq = state.range(0), d = state.range(1);
  Backend& cpu = GetBackend(Device::CPU());
  AttentionCase c = MakeAttention(tq, d);
  cpu.AttentionForward(c.fwd);  // out and lse for the backward
  const double s = TimedLoop(state, [&] { cpu.AttentionBackward(c.bwd); });
  const double gflops = 10.0 * d * kHeads * c.pairs / s / 1e9;
  state.counters["GFLOPs"] = gflops;
  state.counters["of_sgemm"] = gflops / SgemmReference();
  state.SetLabel("keys=" + std::to_string(tq) + " memory + " + std::to_string(tq) + " causal");
}

void AttentionShapes(benchmark::internal::Benchmark* b) {
  for (int64_t d : {32, 64, 128})
    for (int64_t tq : {64, 128, 256, 512, 1024}) b->Args({tq, d});
  b->ArgNames({"Tq", "D"})->Unit(benchmark::kMicrosecond)->MinTime(0.2)->UseRealTime();
}

// ---- RMSNorm and fused softmax-cross-entropy ----

void SetBandwidth(benchmark::State& state, double bytes, double seconds) {
  const double gbps = bytes / seconds / 1e9;
  state.counters["GBps"] = gbps;
  state.counters["of_stream"] = gbps / StreamReference();
}

void BM_RmsNormForward(benchmark::State& state) {
  const int64_t n = state.range(0), d = state.range(1);
  Backend& cpu = GetBackend(Device::CPU());
  Tensor x = RandomTensor({n, d}, 21), w = RandomTensor({d}, 22, 0.5f, 1.5f);
  Tensor y = Tensor::Empty({n, d}), rstd = Tensor::Empty({n});
  const double s = TimedLoop(state, [&] { cpu.RmsNormForward(x, w, 1e-6, y, rstd); });
  SetBandwidth(state, 2.0 * 4 * n * d, s);  // read x, write y
}

void BM_RmsNormBackward(benchmark::State& state) {
  const int64_t n = state.range(0), d = state.range(1);
  Backend& cpu = GetBackend(Device::CPU());
  Tensor x = RandomTensor({n, d}, 21), w = RandomTensor({d}, 22, 0.5f, 1.5f);
  Tensor y = Tensor::Empty({n, d}), rstd = Tensor::Empty({n});
  cpu.RmsNormForward(x, w, 1e-6, y, rstd);
  Tensor gy = RandomTensor({n, d}, 23), gx = Tensor::Empty({n, d}), gw = Tensor::Empty({d});
  const double s = TimedLoop(state, [&] { cpu.RmsNormBackward(x, w, rstd, gy, gx, gw); });
  SetBandwidth(state, 3.0 * 4 * n * d, s);  // read x and grad_y, write grad_x
}

void NormShapes(benchmark::internal::Benchmark* b) {
  b->Args({2048, 256})->Args({4096, 128})->Args({16384, 1024});
  b->ArgNames({"N", "D"})->Unit(benchmark::kMicrosecond)->MinTime(0.2)->UseRealTime();
}

struct CrossEntropyCase {
  Tensor logits, targets, losses, lse, grad_losses, grad_logits;
};

CrossEntropyCase MakeCrossEntropy(int64_t n, int64_t v) {
  CrossEntropyCase c;
  c.logits = RandomTensor({n, v}, 31, -4.0f, 4.0f);
  std::vector<int64_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = (i * 7919) % v;
  c.targets = Tensor::FromInts(t, {n});
  c.losses = Tensor::Empty({n});
  c.lse = Tensor::Empty({n});
  c.grad_losses = Tensor::Full({n}, 1.0 / static_cast<double>(n));
  c.grad_logits = Tensor::Empty({n, v});
  return c;
}

void BM_CrossEntropyForward(benchmark::State& state) {
  const int64_t n = state.range(0), v = state.range(1);
  Backend& cpu = GetBackend(Device::CPU());
  CrossEntropyCase c = MakeCrossEntropy(n, v);
  const double s = TimedLoop(
      state, [&] { cpu.CrossEntropyForward(c.logits, c.targets, Tensor(), -100, c.losses, c.lse); });
  SetBandwidth(state, 4.0 * n * v, s);  // read the logits
}

void BM_CrossEntropyBackward(benchmark::State& state) {
  const int64_t n = state.range(0), v = state.range(1);
  Backend& cpu = GetBackend(Device::CPU());
  CrossEntropyCase c = MakeCrossEntropy(n, v);
  cpu.CrossEntropyForward(c.logits, c.targets, Tensor(), -100, c.losses, c.lse);
  const double s = TimedLoop(state, [&] {
    cpu.CrossEntropyBackward(c.logits, c.targets, Tensor(), -100, c.lse, c.grad_losses,
                             c.grad_logits);
  });
  SetBandwidth(state, 2.0 * 4 * n * v, s);  // read the logits, write their gradient
}

void CrossEntropyShapes(benchmark::internal::Benchmark* b) {
  b->Args({2048, 8192})->Args({4096, 2048});
  b->ArgNames({"N", "V"})->Unit(benchmark::kMillisecond)->MinTime(0.2)->UseRealTime();
}

BENCHMARK(BM_MachineSgemm)->Unit(benchmark::kMillisecond)->MinTime(0.5)->UseRealTime();
BENCHMARK(BM_MachineStream)
    ->Arg(0)
    ->Arg(1)
    ->ArgName("triad")
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->UseRealTime();
BENCHMARK(BM_AttentionForward)->Apply(AttentionShapes);
BENCHMARK(BM_AttentionBackward)->Apply(AttentionShapes);
BENCHMARK(BM_RmsNormForward)->Apply(NormShapes);
BENCHMARK(BM_RmsNormBackward)->Apply(NormShapes);
BENCHMARK(BM_CrossEntropyForward)->Apply(CrossEntropyShapes);
BENCHMARK(BM_CrossEntropyBackward)->Apply(CrossEntropyShapes);

}  // namespace
}  // namespace fam

BENCHMARK_MAIN();
