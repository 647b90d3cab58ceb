// The CPU emulation of the fused CUDA attention kernels' tiling (framework/backends/cuda/
// attention_tiling.h: tile loops, tile skipping, online softmax, backward recompute, dK/dV
// query-tile ranges) against the CPU attention primitive, forward (out, lse) and backward (dq, dk,
// dv), for full causal, BSWA and FAM segment lists, GQA/MQA, uneven tile edges, strided segments,
// empty segments and rows that see no key. Runs without a GPU.
#include "framework/backends/cuda/attention_tiling.h"

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "framework/backends/registry.h"
#include "gtest/gtest.h"
#include "tests/gradcheck.h"

namespace fam {
namespace {

using cuda::TiledAttention;
using cuda::TiledSegment;
using cuda::TilingEmulation;
using testing::MaxAbsDiff;
using testing::RandomTensor;

struct SegSpec {
  int64_t len;
  KeyMask mask;
};

struct Case {
  std::string name;
  int64_t batch, hq, hkv, tq, d;
  std::vector<SegSpec> segs;
  bool strided = false;  // segments as views into a longer tensor
};

struct Inputs {
  Tensor q, grad_out;
  std::vector<Tensor> k, v;
  std::vector<KeyMask> masks;
  double scale;
};

Inputs MakeInputs(const Case& c, DType dtype) {
  Inputs in;
  uint64_t seed = 11;
  in.q = RandomTensor({c.batch, c.hq, c.tq, c.d}, dtype, seed++);
  in.grad_out = RandomTensor({c.batch, c.hq, c.tq, c.d}, dtype, seed++);
  for (const SegSpec& s : c.segs) {
    const int64_t pad = c.strided ? 3 : 0;
    Tensor k = RandomTensor({c.batch, c.hkv, s.len + pad, c.d}, dtype, seed++);
    Tensor v = RandomTensor({c.batch, c.hkv, s.len + pad, c.d}, dtype, seed++);
    if (c.strided) {
      k = k.slice(2, 1, 1 + s.len);
      v = v.slice(2, 2, 2 + s.len);
    }
    in.k.push_back(k);
    in.v.push_back(v);
    in.masks.push_back(s.mask);
  }
  in.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  return in;
}

TiledAttention Describe(const Inputs& in) {
  TiledAttention p;
  p.batch = in.q.size(0);
  p.hq = in.q.size(1);
  p.tq = in.q.size(2);
  p.d = in.q.size(3);
  p.hkv = in.k.empty() ? 1 : in.k[0].size(1);
  p.scale = in.scale;
  p.q = in.q.raw_data();
  p.q_sb = in.q.strides()[0];
  p.q_sh = in.q.strides()[1];
  p.q_st = in.q.strides()[2];
  p.nseg = static_cast<int>(in.k.size());
  for (size_t j = 0; j < in.k.size(); ++j) {
    TiledSegment& s = p.seg[j];
    s.k = in.k[j].raw_data();
    s.v = in.v[j].raw_data();
    s.k_sb = in.k[j].strides()[0];
    s.k_sh = in.k[j].strides()[1];
    s.k_st = in.k[j].strides()[2];
    s.v_sb = in.v[j].strides()[0];
    s.v_sh = in.v[j].strides()[1];
    s.v_st = in.v[j].strides()[2];
    s.len = in.k[j].size(2);
    s.causal = in.masks[j] == KeyMask::kCausal;
  }
  return p;
}

// Max |a − b| where −inf must match −inf exactly.
double LseDiff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.ToDoubles(), y = b.ToDoubles();
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isinf(x[i]) || std::isinf(y[i])) {
      if (x[i] != y[i]) return INFINITY;
      continue;
    }
    worst = std::max(worst, std::abs(x[i] - y[i]));
  }
  return worst;
}

template <typename T>
void CheckCase(const Case& c, int64_t bq, int64_t bk, double tol) {
  const DType dtype = DTypeOf<T>::value;
  SCOPED_TRACE(c.name + " bq=" + std::to_string(bq) + " bk=" + std::to_string(bk) + " " +
               DTypeName(dtype));
  const Inputs in = MakeInputs(c, dtype);
  Backend& cpu = GetBackend(Device::CPU());
  const Shape qs = in.q.shape();
  const Shape rows = {qs[0], qs[1], qs[2]};

  // Reference: the CPU primitive.
  AttentionArgs fa{
      in.q, in.k, in.v, in.masks, in.scale, Tensor::Empty(qs, dtype), Tensor::Empty(rows, dtype)};
  cpu.AttentionForward(fa);
  AttentionGradArgs ga{
      in.q, in.k, in.v, in.masks, in.scale, fa.out, fa.lse, in.grad_out, Tensor::Empty(qs, dtype),
      {},   {}};
  for (const Tensor& k : in.k) {
    ga.grad_k.push_back(Tensor::Empty(k.shape(), dtype));
    ga.grad_v.push_back(Tensor::Empty(k.shape(), dtype));
  }
  cpu.AttentionBackward(ga);

  // Emulation of the kernels.
  TiledAttention p = Describe(in);
  Tensor out = Tensor::Empty(qs, dtype), lse = Tensor::Empty(rows, dtype);
  p.out = out.raw_data();
  p.lse = lse.raw_data();
  TilingEmulation<T, T>{p, bq, bk}.Forward();
  EXPECT_LT(MaxAbsDiff(out, fa.out), tol);
  EXPECT_LT(LseDiff(lse, fa.lse), tol);

  // Backward from the reference forward's out/lse (as the op does), into NaN-filled buffers.
  Tensor gq = Tensor::Full(qs, NAN, dtype), delta = Tensor::Empty(rows, dtype);
  std::vector<Tensor> gk, gv;
  p.out = fa.out.raw_data();
  p.lse = fa.lse.raw_data();
  p.grad_out = in.grad_out.raw_data();
  p.grad_q = gq.raw_data();
  p.delta = delta.raw_data();
  for (size_t j = 0; j < in.k.size(); ++j) {
    gk.push_back(Tensor::Full(in.k[j].shape(), NAN, dtype));
    gv.push_back(Tensor::Full(in.k[j].shape(), NAN, dtype));
    p.seg[j].dk = gk[j].raw_data();
    p.seg[j].dv = gv[j].raw_data();
  }
  TilingEmulation<T, T>{p, bq, bk}.Backward();
  EXPECT_LT(MaxAbsDiff(gq, ga.grad_q), tol);
  for (size_t j = 0; j < in.k.size(); ++j) {
    EXPECT_LT(MaxAbsDiff(gk[j], ga.grad_k[j]), tol) << "dk of segment " << j;
    EXPECT_LT(MaxAbsDiff(gv[j], ga.grad_v[j]), tol) << "dv of segment " << j;
  }
}

std::vector<Case> Cases() {
  constexpr KeyMask kAll = KeyMask::kAll, kCausal = KeyMask::kCausal;
  return {
      // Full attention: one causal segment equal to the block.
      {"full_causal_gqa", 2, 4, 2, 37, 8, {{37, kCausal}}},
      // BSWA: [memory block (all), current block (causal)], and memory+block as one causal segment.
      {"bswa_two_segments", 1, 2, 2, 19, 8, {{19, kAll}, {19, kCausal}}},
      {"bswa_concatenated_mqa", 1, 3, 1, 21, 4, {{2 * 21, kCausal}}},
      // FAM block queries: [previous FAM (all), memory + block (causal)]; FAM queries: [previous
      // FAM,
      // whole block] both all.
      {"fam_block_queries", 2, 2, 1, 23, 8, {{5, kAll}, {2 * 23, kCausal}}},
      {"fam_rows", 2, 4, 2, 5, 8, {{5, kAll}, {23, kAll}}},
      // A causal segment shorter than the block: the first rows see no key at all.
      {"rows_without_keys", 1, 2, 1, 20, 4, {{9, kCausal}}},
      // An empty segment next to a strided one.
      {"strided_and_empty", 1, 2, 2, 13, 8, {{0, kAll}, {17, kCausal}}, true},
  };
}

TEST(AttentionTiling, MatchesCpuPrimitiveF64) {
  for (const Case& c : Cases())
    for (auto [bq, bk] : {std::pair<int64_t, int64_t>{64, 64}, {16, 8}, {5, 3}, {1, 1}})
      CheckCase<double>(c, bq, bk, 1e-11);
}

TEST(AttentionTiling, MatchesCpuPrimitiveF32) {
  for (const Case& c : Cases())
    for (auto [bq, bk] : {std::pair<int64_t, int64_t>{64, 64}, {7, 4}})
      CheckCase<float>(c, bq, bk, 2e-5);
}

TEST(AttentionTiling, IndexMath) {
  TiledSegment causal;
  causal.len = 10;
  causal.causal = true;
  // tq = 4 queries against 10 keys, bottom-right aligned: row r sees keys [0, r + 7).
  EXPECT_EQ(cuda::VisibleKeys(causal, 4, 0), 7);
  EXPECT_EQ(cuda::VisibleKeys(causal, 4, 3), 10);
  EXPECT_EQ(cuda::FirstRowSeeingKey(causal, 4, 6), 0);
  EXPECT_EQ(cuda::FirstRowSeeingKey(causal, 4, 9), 3);
  EXPECT_EQ(cuda::KeyTilesForRows(causal, 4, 0, 4), 2);  // keys 0..6 -> tiles 0, 1
  // tq = 12 queries against 10 keys: rows 0 and 1 see nothing.
  EXPECT_EQ(cuda::VisibleKeys(causal, 12, 1), 0);
  EXPECT_EQ(cuda::VisibleKeys(causal, 12, 2), 1);
  EXPECT_EQ(cuda::FirstRowSeeingKey(causal, 12, 0), 2);
  TiledAttention p;
  p.nseg = 3;
  p.seg[0].len = 5;
  p.seg[1].len = 0;
  p.seg[2].len = 9;
  EXPECT_EQ(cuda::TotalKeyTiles(p, 4), 2 + 0 + 3);
  int j;
  int64_t tile;
  cuda::LocateKeyTile(p, 2, 4, &j, &tile);
  EXPECT_EQ(j, 2);
  EXPECT_EQ(tile, 0);
  cuda::LocateKeyTile(p, 1, 4, &j, &tile);
  EXPECT_EQ(j, 0);
  EXPECT_EQ(tile, 1);
}

}  // namespace
}  // namespace fam
