// The fused CUDA attention kernels (framework/backends/cuda/cuda_attention.*) against the CPU
// attention primitive: forward (out, lse) and backward (dq, dk, dv) for full causal, BSWA and FAM
// segment lists, GQA/MQA, rows that see no key, strided segments, head dims 16..128; f64, f32
// and bf16 (bf16 inputs are compared with an f64 reference on the same rounded values). Also: the
// backward is bitwise deterministic, ops::Attention on CUDA tensors (through CudaBackend and
// autograd) matches the CPU, and bad arguments are refused with a message. Skips without a
// GPU (or when the CUDA backend is not built).
#include <cmath>
#include <string>
#include <vector>

#include "framework/backends/registry.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"

#if defined(FAM_HAVE_CUDA_BACKEND)
#include <cuda_runtime.h>

#include "framework/backends/cuda/cuda_attention.h"
#endif

namespace fam {
namespace {

#if defined(FAM_HAVE_CUDA_BACKEND)

using testing::RandomTensor;

struct SegSpec {
  int64_t len;
  KeyMask mask;
};

struct Case {
  std::string name;
  int64_t batch, hq, hkv, tq, d;
  std::vector<SegSpec> segs;
  bool strided = false;
};

std::vector<Case> Cases() {
  constexpr KeyMask kAll = KeyMask::kAll, kCausal = KeyMask::kCausal;
  return {
      {"full_causal_gqa", 2, 4, 2, 131, 64, {{131, kCausal}}},
      {"bswa_mqa", 1, 4, 1, 70, 128, {{70, kAll}, {70, kCausal}}},
      {"fam_block_queries", 2, 2, 2, 96, 32, {{8, kAll}, {2 * 96, kCausal}}},
      {"fam_rows", 2, 2, 1, 8, 64, {{8, kAll}, {96, kAll}}},
      {"rows_without_keys", 1, 2, 2, 80, 16, {{33, kCausal}}},
      {"strided_and_empty", 1, 2, 1, 65, 100, {{0, kAll}, {65, kCausal}}, true},
  };
}

Tensor Upload(const Tensor& host) {
  Tensor c = host.contiguous();
  Tensor dev = Tensor::Empty(c.shape(), c.dtype(), Device::CUDA());
  if (c.nbytes() > 0) {
    EXPECT_EQ(cudaMemcpy(dev.raw_data(), c.raw_data(), c.nbytes(), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  return dev;
}

// Device tensor (contiguous) → host f64 values.
std::vector<double> Download(const Tensor& dev) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  Tensor host = Tensor::Empty(dev.shape(), dev.dtype());
  if (dev.nbytes() > 0) {
    EXPECT_EQ(cudaMemcpy(host.raw_data(), dev.raw_data(), dev.nbytes(), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host.ToDoubles();
}

// max |a − b| / max(1, max |b|); −inf must match −inf.
double RelDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0, scale = 1;
  for (double x : b)
    if (std::isfinite(x)) scale = std::max(scale, std::abs(x));
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i]) || std::isnan(a[i])) {
      if (a[i] != b[i]) return INFINITY;
      continue;
    }
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst / scale;
}

struct Problem {
  Tensor q, grad_out;  // host f64 (values representable in the tested dtype)
  std::vector<Tensor> k, v;
  std::vector<KeyMask> masks;
  double scale;
};

Problem MakeProblem(const Case& c, DType dtype) {
  Problem p;
  uint64_t seed = 3;
  auto rounded = [&](const Shape& shape) {
    return RandomTensor(shape, DType::kF64, seed++).to(dtype).to(DType::kF64);
  };
  p.q = rounded({c.batch, c.hq, c.tq, c.d});
  p.grad_out = rounded({c.batch, c.hq, c.tq, c.d});
  for (const SegSpec& s : c.segs) {
    p.k.push_back(rounded({c.batch, c.hkv, s.len, c.d}));
    p.v.push_back(rounded({c.batch, c.hkv, s.len, c.d}));
    p.masks.push_back(s.mask);
  }
  p.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  return p;
}

// A device copy of a [B, H, S, D] segment, as a strided view into a longer tensor when asked.
Tensor UploadSegment(const Tensor& host, DType dtype, bool strided) {
  if (!strided) return Upload(host.to(dtype));
  const Shape& s = host.shape();
  Tensor big = Tensor::Zeros({s[0], s[1], s[2] + 5, s[3]}, DType::kF64);
  std::vector<double> values = big.ToDoubles();
  const std::vector<double> src = host.ToDoubles();
  for (int64_t bh = 0; bh < s[0] * s[1]; ++bh)
    for (int64_t t = 0; t < s[2]; ++t)
      for (int64_t i = 0; i < s[3]; ++i)
        values[(bh * (s[2] + 5) + t + 2) * s[3] + i] = src[(bh * s[2] + t) * s[3] + i];
  Tensor dev = Upload(Tensor::FromVector(values, big.shape(), dtype));
  return dev.slice(2, 2, 2 + s[2]);
}

void CheckCase(const Case& c, DType dtype, double tol) {
  SCOPED_TRACE(c.name + " " + DTypeName(dtype));
  const Problem p = MakeProblem(c, dtype);
  const Shape qs = p.q.shape(), rows = {qs[0], qs[1], qs[2]};
  Backend& cpu = GetBackend(Device::CPU());
  AttentionArgs ref{p.q,
                    p.k,
                    p.v,
                    p.masks,
                    p.scale,
                    Tensor::Empty(qs, DType::kF64),
                    Tensor::Empty(rows, DType::kF64)};
  cpu.AttentionForward(ref);
  AttentionGradArgs gref{
      p.q, p.k, p.v, p.masks, p.scale, ref.out, ref.lse, p.grad_out, Tensor::Empty(qs, DType::kF64),
      {},  {}};
  for (const Tensor& k : p.k) {
    gref.grad_k.push_back(Tensor::Empty(k.shape(), DType::kF64));
    gref.grad_v.push_back(Tensor::Empty(k.shape(), DType::kF64));
  }
  cpu.AttentionBackward(gref);

  const DType lse_dtype = dtype == DType::kBF16 ? DType::kF32 : dtype;
  AttentionArgs fa;
  fa.q = Upload(p.q.to(dtype));
  for (size_t j = 0; j < p.k.size(); ++j) {
    fa.k.push_back(UploadSegment(p.k[j], dtype, c.strided));
    fa.v.push_back(UploadSegment(p.v[j], dtype, c.strided));
  }
  fa.masks = p.masks;
  fa.scale = p.scale;
  fa.out = Tensor::Empty(qs, dtype, Device::CUDA());
  fa.lse = Tensor::Empty(rows, lse_dtype, Device::CUDA());
  cuda::AttentionForward(fa, nullptr);
  EXPECT_LT(RelDiff(Download(fa.out), ref.out.ToDoubles()), tol) << "out";
  EXPECT_LT(RelDiff(Download(fa.lse), ref.lse.ToDoubles()), tol) << "lse";

  AttentionGradArgs ga;
  ga.q = fa.q;
  ga.k = fa.k;
  ga.v = fa.v;
  ga.masks = fa.masks;
  ga.scale = fa.scale;
  ga.out = fa.out;
  ga.lse = fa.lse;
  ga.grad_out = Upload(p.grad_out.to(dtype));
  ga.grad_q = Tensor::Empty(qs, dtype, Device::CUDA());
  for (const Tensor& k : p.k) {
    ga.grad_k.push_back(Tensor::Empty(k.shape(), dtype, Device::CUDA()));
    ga.grad_v.push_back(Tensor::Empty(k.shape(), dtype, Device::CUDA()));
  }
  cuda::AttentionBackward(ga, nullptr);
  const std::vector<double> dq = Download(ga.grad_q);
  EXPECT_LT(RelDiff(dq, gref.grad_q.ToDoubles()), tol) << "dq";
  std::vector<std::vector<double>> dk, dv;
  for (size_t j = 0; j < p.k.size(); ++j) {
    dk.push_back(Download(ga.grad_k[j]));
    dv.push_back(Download(ga.grad_v[j]));
    EXPECT_LT(RelDiff(dk[j], gref.grad_k[j].ToDoubles()), tol) << "dk of segment " << j;
    EXPECT_LT(RelDiff(dv[j], gref.grad_v[j].ToDoubles()), tol) << "dv of segment " << j;
  }
  // Deterministic: a second backward gives the same bits.
  cuda::AttentionBackward(ga, nullptr);
  EXPECT_EQ(Download(ga.grad_q), dq);
  for (size_t j = 0; j < p.k.size(); ++j) {
    EXPECT_EQ(Download(ga.grad_k[j]), dk[j]);
    EXPECT_EQ(Download(ga.grad_v[j]), dv[j]);
  }
}

#define FAM_REQUIRE_GPU()                                                          \
  do {                                                                             \
    std::string why;                                                               \
    if (!DeviceAvailable(Device::CUDA(), &why)) GTEST_SKIP() << "no GPU: " << why; \
  } while (0)

TEST(CudaAttention, MatchesCpuPrimitiveF64) {
  FAM_REQUIRE_GPU();
  for (const Case& c : Cases()) CheckCase(c, DType::kF64, 1e-10);
}

TEST(CudaAttention, MatchesCpuPrimitiveF32) {
  FAM_REQUIRE_GPU();
  for (const Case& c : Cases()) CheckCase(c, DType::kF32, 1e-4);
}

TEST(CudaAttention, MatchesCpuPrimitiveBf16) {
  FAM_REQUIRE_GPU();
  // Outputs and gradients are rounded to bf16 (relative 2^-9); sums over ~200 keys in f32.
  for (const Case& c : Cases()) CheckCase(c, DType::kBF16, 2e-2);
}

// The whole path: ops::Attention on CUDA tensors (CudaBackend, its stream, autograd) against the
// same op on the CPU, FAM block queries [FAM (all), memory + block (causal)] with GQA, f32.
TEST(CudaAttention, ThroughTheOpMatchesCpu) {
  FAM_REQUIRE_GPU();
  const std::vector<Tensor> host = {
      RandomTensor({2, 4, 40, 32}, DType::kF32, 21), RandomTensor({2, 2, 6, 32}, DType::kF32, 22),
      RandomTensor({2, 2, 80, 32}, DType::kF32, 23), RandomTensor({2, 2, 6, 32}, DType::kF32, 24),
      RandomTensor({2, 2, 80, 32}, DType::kF32, 25)};
  const Tensor grad = RandomTensor({2, 4, 40, 32}, DType::kF32, 26);
  auto run = [&](Device device) {
    std::vector<Tensor> leaves;
    for (const Tensor& x : host) {
      Tensor leaf = ops::To(x, device).detach();
      leaf.set_requires_grad(true);
      leaves.push_back(leaf);
    }
    Tensor out = ops::Attention(leaves[0], {leaves[1], leaves[2]}, {leaves[3], leaves[4]},
                                {KeyMask::kAll, KeyMask::kCausal}, 0.17);
    out.backward(ops::To(grad, device));
    std::vector<std::vector<double>> values = {ops::To(out, Device::CPU()).ToDoubles()};
    for (const Tensor& leaf : leaves)
      values.push_back(ops::To(leaf.grad(), Device::CPU()).ToDoubles());
    return values;
  };
  const auto cpu = run(Device::CPU()), gpu = run(Device::CUDA());
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_LT(RelDiff(gpu[i], cpu[i]), 1e-4) << (i == 0 ? "out" : "grad of input ") << i;
}

TEST(CudaAttention, RefusesBadArguments) {
  FAM_REQUIRE_GPU();
  AttentionArgs args;
  args.q = Tensor::Zeros({1, 1, 4, 160}, DType::kF32, Device::CUDA());
  args.k = {Tensor::Zeros({1, 1, 4, 160}, DType::kF32, Device::CUDA())};
  args.v = args.k;
  args.masks = {KeyMask::kCausal};
  args.out = Tensor::Empty({1, 1, 4, 160}, DType::kF32, Device::CUDA());
  args.lse = Tensor::Empty({1, 1, 4}, DType::kF32, Device::CUDA());
  try {
    cuda::AttentionForward(args, nullptr);
    FAIL() << "head dim 160 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head dim 160"), std::string::npos) << e.what();
  }
}

#else

TEST(CudaAttention, NotBuilt) { GTEST_SKIP() << "no GPU: the CUDA backend is not built"; }

#endif

}  // namespace
}  // namespace fam
