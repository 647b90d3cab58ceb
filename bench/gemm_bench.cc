// GEMM throughput: our ops::Matmul / ops::Linear (f32, through the CPU backend) and the built-in
// tiled fallback (fam::cpu::GemmTiled) against raw cblas_sgemm on the same buffers, at transformer
// shapes. Each "ours" benchmark runs ours and the peer alternately in every iteration, so both see
// the same machine load; it reports GFLOPs (ours), peer_GFLOPs and ratio = ours / peer (target for
// Matmul/Linear: >= 0.9). Run: OMP_NUM_THREADS=2 ./gemm_bench  (see bench/README.md).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/backends/backend.h"
#include "framework/backends/cpu/cpu_gemm.h"
#include "framework/core/tensor.h"
#include "framework/ops/ops.h"

#ifdef FAM_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace fam {
namespace {

// M × K × N of C[M, N] = A[M, K] · B[K, N]: the transformer shapes we care about.
struct GemmShape {
  int64_t m, k, n;
  const char* what;
};
const std::vector<GemmShape>& Shapes() {
  static const std::vector<GemmShape> shapes = {
      {512, 512, 2048, "mlp-up d512"},        {2048, 512, 512, "proj d512"},
      {1536, 1536, 4096, "1b-like d1536"},    {4096, 128, 384, "tiny ffn T4096"},
      {4096, 384, 128, "tiny ffn-down"},      {2048, 256, 8192, "gpt-small lm-head"},
  };
  return shapes;
}

// Deterministic pseudo-random values in [-1, 1) (an LCG: the values only need to be finite).
Tensor RandomTensor(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  float* p = t.data<float>();
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (int64_t i = 0; i < t.numel(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    p[i] = static_cast<float>((s >> 40) * (1.0 / (1ull << 24)) * 2.0 - 1.0);
  }
  return t;
}

double SecondsOf(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs `ours` and `peer` alternately (order flipped every iteration); the benchmark's time is
// ours'. Counters: GFLOPs (ours), peer_GFLOPs, ratio = ours / peer.
void RunAgainstPeer(benchmark::State& state, double flops, const std::function<void()>& ours,
                    const std::function<void()>& peer) {
  ours();
  peer();
  double t_ours = 0, t_peer = 0;
  bool ours_first = true;
  for (auto _ : state) {
    double a, b;
    if (ours_first) {
      a = SecondsOf(ours);
      b = SecondsOf(peer);
    } else {
      b = SecondsOf(peer);
      a = SecondsOf(ours);
    }
    ours_first = !ours_first;
    state.SetIterationTime(a);
    t_ours += a;
    t_peer += b;
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["GFLOPs"] = flops * n / t_ours / 1e9;
  state.counters["peer_GFLOPs"] = flops * n / t_peer / 1e9;
  state.counters["ratio"] = t_peer / t_ours;
}

const GemmShape& ShapeOf(const benchmark::State& state) { return Shapes()[state.range(0)]; }
double FlopsOf(const GemmShape& s) { return 2.0 * s.m * s.k * s.n; }
void Label(benchmark::State& state, const GemmShape& s) {
  state.SetLabel(std::to_string(s.m) + "x" + std::to_string(s.k) + "x" + std::to_string(s.n) +
                 " " + s.what);
}

void AllShapes(benchmark::internal::Benchmark* b) {
  for (size_t i = 0; i < Shapes().size(); ++i) b->Arg(static_cast<int64_t>(i));
  b->ArgName("shape")->Unit(benchmark::kMillisecond)->MinTime(0.3);
}

#ifdef FAM_HAVE_OPENBLAS
// C = A · B (trans_b = false, B [K, N]) or C = A · Bᵀ (trans_b = true, B [N, K]) on raw pointers.
void Sgemm(const Tensor& a, const Tensor& b, const Tensor& c, bool trans_b) {
  const int64_t m = a.size(0), k = a.size(1), n = c.size(1);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
              a.data<float>(), k, b.data<float>(), trans_b ? k : n, 0.0f, c.data<float>(), n);
}

// The peer alone: cblas_sgemm, A [M, K] · B [K, N].
void BM_OpenBlasSgemm(benchmark::State& state) {
  const GemmShape& s = ShapeOf(state);
  Tensor a = RandomTensor({s.m, s.k}, 1), b = RandomTensor({s.k, s.n}, 2);
  Tensor c = Tensor::Empty({s.m, s.n});
  Sgemm(a, b, c, false);
  for (auto _ : state) Sgemm(a, b, c, false);
  state.counters["GFLOPs"] = benchmark::Counter(FlopsOf(s) * state.iterations() / 1e9,
                                                benchmark::Counter::kIsRate);
  Label(state, s);
}

// ops::Matmul(a [M, K], b [K, N]) (allocates its output, no autograd) vs cblas_sgemm NN.
void BM_Matmul(benchmark::State& state) {
  const GemmShape& s = ShapeOf(state);
  NoGradGuard no_grad;
  Tensor a = RandomTensor({s.m, s.k}, 1), b = RandomTensor({s.k, s.n}, 2);
  Tensor c = Tensor::Empty({s.m, s.n});
  RunAgainstPeer(
      state, FlopsOf(s), [&] { benchmark::DoNotOptimize(ops::Matmul(a, b)); },
      [&] { Sgemm(a, b, c, false); });
  Label(state, s);
}

// ops::Linear(x [M, K], w [N, K]) = x · wᵀ (the model's projections) vs cblas_sgemm NT.
void BM_Linear(benchmark::State& state) {
  const GemmShape& s = ShapeOf(state);
  NoGradGuard no_grad;
  Tensor x = RandomTensor({s.m, s.k}, 3), w = RandomTensor({s.n, s.k}, 4);
  Tensor c = Tensor::Empty({s.m, s.n});
  RunAgainstPeer(
      state, FlopsOf(s), [&] { benchmark::DoNotOptimize(ops::Linear(x, w)); },
      [&] { Sgemm(x, w, c, true); });
  Label(state, s);
}

// The built-in tiled kernel (used when the build has no OpenBLAS) vs cblas_sgemm NN.
void BM_GemmTiled(benchmark::State& state) {
  const GemmShape& s = ShapeOf(state);
  Tensor a = RandomTensor({s.m, s.k}, 5), b = RandomTensor({s.k, s.n}, 6);
  Tensor c = Tensor::Empty({s.m, s.n}), c_peer = Tensor::Empty({s.m, s.n});
  GemmArgs g;
  g.m = s.m;
  g.n = s.n;
  g.k = s.k;
  g.lda = s.k;
  g.ldb = s.n;
  g.ldc = s.n;
  g.a = a;
  g.b = b;
  g.c = c;
  RunAgainstPeer(
      state, FlopsOf(s), [&] { cpu::GemmTiled(g); }, [&] { Sgemm(a, b, c_peer, false); });
  Label(state, s);
}

BENCHMARK(BM_OpenBlasSgemm)->Apply(AllShapes)->UseRealTime();
BENCHMARK(BM_Matmul)->Apply(AllShapes)->UseManualTime();
BENCHMARK(BM_Linear)->Apply(AllShapes)->UseManualTime();
BENCHMARK(BM_GemmTiled)->Apply(AllShapes)->UseManualTime();
#else
// Without OpenBLAS there is no peer: report the tiled kernel (what ops::Matmul runs) alone.
void BM_GemmTiledAlone(benchmark::State& state) {
  const GemmShape& s = ShapeOf(state);
  NoGradGuard no_grad;
  Tensor a = RandomTensor({s.m, s.k}, 5), b = RandomTensor({s.k, s.n}, 6);
  for (auto _ : state) benchmark::DoNotOptimize(ops::Matmul(a, b));
  state.counters["GFLOPs"] = benchmark::Counter(FlopsOf(s) * state.iterations() / 1e9,
                                                benchmark::Counter::kIsRate);
  Label(state, s);
}
BENCHMARK(BM_GemmTiledAlone)->Apply(AllShapes)->UseRealTime();
#endif

}  // namespace
}  // namespace fam

BENCHMARK_MAIN();
