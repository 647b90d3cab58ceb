// The tiling algorithm of the fused CUDA attention kernels (cuda_attention.cu), shared between the
// device code and a plain C++ emulation that runs on the CPU (tests/attention_tiling_test.cc), so
// that the tile loops, per-tile masking, online-softmax rescaling and the backward recompute are
// checked on machines without a GPU.
//
// Scheme (flash-attention style, no score matrix in memory):
//   forward:  one CTA per (batch, query head, tile of kBq query rows); it walks the segments and
//             their key tiles of kBk keys, skipping the tiles no row of the query tile sees, and
//             keeps a running max m, sum l and output accumulator per row (online softmax).
//   backward: delta_r = rowsum(dO ∘ O); dQ: one CTA per (batch, query head, query tile) recomputing
//             P = exp(S − lse) and dS = P ∘ (dP − delta) per key tile; dK/dV: one CTA per (batch,
//             kv head, segment, key tile) looping over the query heads of its GQA group and the
//             query tiles that see the tile — deterministic, no atomics.
// Every query row sees a prefix of each segment (kAll: all of it; kCausal, bottom-right aligned:
// keys c <= row + S − Tq), so masking is "key index < VisibleKeys(row)".
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#if defined(__CUDACC__)
#define FAM_TILING_HD __host__ __device__ __forceinline__
#else
#define FAM_TILING_HD inline
#endif

namespace fam::cuda {

inline constexpr int kMaxAttentionSegments = 8;

// One key/value segment: k, v [B, Hkv, len, D] read through strides (last stride 1); dk, dv
// (backward) contiguous [B, Hkv, len, D].
struct TiledSegment {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_sb = 0, k_sh = 0, k_st = 0;
  int64_t v_sb = 0, v_sh = 0, v_st = 0;
  int64_t len = 0;
  bool causal = false;
  void* dk = nullptr;
  void* dv = nullptr;
};

// The whole problem, passed by value to the kernels (plain pointers: device memory there, host
// memory in the emulation). Element types are the kernel's input type; lse and delta are in the
// accumulation type.
struct TiledAttention {
  int64_t batch = 0, hq = 0, hkv = 1, tq = 0, d = 0;
  double scale = 1.0;
  const void* q = nullptr;  // [B, Hq, Tq, D] strided
  int64_t q_sb = 0, q_sh = 0, q_st = 0;
  int nseg = 0;
  TiledSegment seg[kMaxAttentionSegments];
  void* out = nullptr;  // [B, Hq, Tq, D] contiguous (forward output, backward input)
  void* lse = nullptr;  // [B, Hq, Tq] contiguous
  // Backward only.
  const void* grad_out = nullptr;  // [B, Hq, Tq, D] contiguous
  void* grad_q = nullptr;          // [B, Hq, Tq, D] contiguous
  void* delta = nullptr;           // [B, Hq, Tq] scratch
};

// ---- index math (shared by kernels and emulation) ----

FAM_TILING_HD int64_t TilingCeilDiv(int64_t x, int64_t m) { return (x + m - 1) / m; }

FAM_TILING_HD int64_t KvHeadOf(const TiledAttention& p, int64_t h) { return h * p.hkv / p.hq; }

// Keys [0, n) of segment s that query row `row` (0 <= row < tq) sees.
FAM_TILING_HD int64_t VisibleKeys(const TiledSegment& s, int64_t tq, int64_t row) {
  if (!s.causal) return s.len;
  const int64_t n = row + s.len - tq + 1;
  return n < 0 ? 0 : (n > s.len ? s.len : n);
}

// Key tiles of segment s that query rows [.., last_row] may see (later tiles are fully masked).
FAM_TILING_HD int64_t KeyTilesForRows(const TiledSegment& s, int64_t tq, int64_t last_row,
                                      int64_t bk) {
  return TilingCeilDiv(VisibleKeys(s, tq, last_row), bk);
}

// The first query row that sees key `key` of segment s (>= tq when none does).
FAM_TILING_HD int64_t FirstRowSeeingKey(const TiledSegment& s, int64_t tq, int64_t key) {
  if (!s.causal) return 0;
  const int64_t row = key - (s.len - tq);
  return row < 0 ? 0 : row;
}

// Key tiles of segment j: the dK/dV grid enumerates (segment, key tile) pairs in order.
FAM_TILING_HD int64_t KeyTilesOfSegment(const TiledAttention& p, int j, int64_t bk) {
  return TilingCeilDiv(p.seg[j].len, bk);
}
FAM_TILING_HD int64_t TotalKeyTiles(const TiledAttention& p, int64_t bk) {
  int64_t n = 0;
  for (int j = 0; j < p.nseg; ++j) n += KeyTilesOfSegment(p, j, bk);
  return n;
}
// Maps a flat key-tile index to (segment, tile within it).
FAM_TILING_HD void LocateKeyTile(const TiledAttention& p, int64_t flat, int64_t bk, int* j,
                                 int64_t* tile) {
  int s = 0;
  while (s + 1 < p.nseg && flat >= KeyTilesOfSegment(p, s, bk))
    flat -= KeyTilesOfSegment(p, s++, bk);
  *j = s;
  *tile = flat;
}

// ---- online softmax (shared scalar steps) ----

template <typename A>
FAM_TILING_HD A TilingNegInf() {
  return -static_cast<A>(INFINITY);  // (INFINITY: usable in host and device code)
}
template <typename A>
FAM_TILING_HD A TilingExp(A x) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(A) == 4) {
    return expf(x);
  } else {
    return exp(x);
  }
#else
  return std::exp(x);
#endif
}
template <typename A>
FAM_TILING_HD A TilingLog(A x) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(A) == 4) {
    return logf(x);
  } else {
    return log(x);
  }
#else
  return std::log(x);
#endif
}

// Factor applied to the running sum and accumulator when the running max goes m_old -> m_new.
template <typename A>
FAM_TILING_HD A RescaleFactor(A m_old, A m_new) {
  return m_old == TilingNegInf<A>() ? A(0) : TilingExp(m_old - m_new);
}
// exp(s − m) for a score against a running max (0 for a masked score, also when m is −inf).
template <typename A>
FAM_TILING_HD A ProbAgainst(A s, A m) {
  return s == TilingNegInf<A>() ? A(0) : TilingExp(s - m);
}
// The end of a row: 1/l to scale the accumulator by, and lse (−inf with a zero row when l == 0).
template <typename A>
FAM_TILING_HD void FinishRow(A m, A l, A* inv, A* lse) {
  if (l > A(0)) {
    *inv = A(1) / l;
    *lse = m + TilingLog(l);
  } else {
    *inv = A(0);
    *lse = TilingNegInf<A>();
  }
}
// Backward: P recomputed from the saved lse (0 for a masked score or a row that saw no key).
template <typename A>
FAM_TILING_HD A ProbFromLse(A s, A lse) {
  return (s == TilingNegInf<A>() || lse == TilingNegInf<A>()) ? A(0) : TilingExp(s - lse);
}

// ---- CPU emulation of the kernels (same tiles, same loops; In = float or double) ----

template <typename In, typename A>
struct TilingEmulation {
  const TiledAttention& p;
  int64_t bq, bk;

  const In* QRow(int64_t b, int64_t h, int64_t t) const {
    return static_cast<const In*>(p.q) + b * p.q_sb + h * p.q_sh + t * p.q_st;
  }
  const In* KRow(int j, int64_t b, int64_t g, int64_t c) const {
    const TiledSegment& s = p.seg[j];
    return static_cast<const In*>(s.k) + b * s.k_sb + g * s.k_sh + c * s.k_st;
  }
  const In* VRow(int j, int64_t b, int64_t g, int64_t c) const {
    const TiledSegment& s = p.seg[j];
    return static_cast<const In*>(s.v) + b * s.v_sb + g * s.v_sh + c * s.v_st;
  }
  int64_t RowIndex(int64_t b, int64_t h, int64_t t) const { return (b * p.hq + h) * p.tq + t; }

  // Scaled scores of query rows [r0, r0 + m) (already scaled: qs) against key tile kt of segment
  // j; masked entries are −inf. s: [m, bk].
  void ScoreTile(const std::vector<A>& qs, int64_t r0, int64_t m, int j, int64_t b, int64_t g,
                 int64_t kt, std::vector<A>& s) const {
    const TiledSegment& seg = p.seg[j];
    for (int64_t r = 0; r < m; ++r) {
      const int64_t vis = VisibleKeys(seg, p.tq, r0 + r);
      for (int64_t c = 0; c < bk; ++c) {
        const int64_t key = kt * bk + c;
        A dot = TilingNegInf<A>();
        if (key < vis) {
          dot = 0;
          const In* kr = KRow(j, b, g, key);
          for (int64_t i = 0; i < p.d; ++i) dot += qs[r * p.d + i] * static_cast<A>(kr[i]);
        }
        s[r * bk + c] = dot;
      }
    }
  }

  void LoadScaledQ(int64_t b, int64_t h, int64_t r0, int64_t m, std::vector<A>& qs) const {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < p.d; ++i)
        qs[r * p.d + i] = static_cast<A>(QRow(b, h, r0 + r)[i]) * static_cast<A>(p.scale);
  }

  void Forward() const {
    In* out = static_cast<In*>(p.out);
    A* lse = static_cast<A*>(p.lse);
    const int64_t qtiles = TilingCeilDiv(p.tq, bq);
    std::vector<A> qs(bq * p.d), s(bq * bk), acc(bq * p.d), mrow(bq), lrow(bq);
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < p.hq; ++h)
        for (int64_t qt = 0; qt < qtiles; ++qt) {  // one CTA
          const int64_t r0 = qt * bq, m = std::min(bq, p.tq - r0), g = KvHeadOf(p, h);
          LoadScaledQ(b, h, r0, m, qs);
          std::fill(acc.begin(), acc.end(), A(0));
          std::fill(mrow.begin(), mrow.end(), TilingNegInf<A>());
          std::fill(lrow.begin(), lrow.end(), A(0));
          for (int j = 0; j < p.nseg; ++j) {
            const int64_t tiles = KeyTilesForRows(p.seg[j], p.tq, r0 + m - 1, bk);
            for (int64_t kt = 0; kt < tiles; ++kt) {
              ScoreTile(qs, r0, m, j, b, g, kt, s);
              for (int64_t r = 0; r < m; ++r) {
                A tile_max = TilingNegInf<A>();
                for (int64_t c = 0; c < bk; ++c) tile_max = std::max(tile_max, s[r * bk + c]);
                const A m_new = std::max(mrow[r], tile_max);
                const A alpha = RescaleFactor(mrow[r], m_new);
                A sum = 0;
                for (int64_t c = 0; c < bk; ++c)
                  sum += (s[r * bk + c] = ProbAgainst(s[r * bk + c], m_new));
                lrow[r] = lrow[r] * alpha + sum;
                mrow[r] = m_new;
                for (int64_t i = 0; i < p.d; ++i) {
                  A o = acc[r * p.d + i] * alpha;
                  for (int64_t c = 0; c < bk; ++c) {
                    const int64_t key = kt * bk + c;
                    if (key < p.seg[j].len)
                      o += s[r * bk + c] * static_cast<A>(VRow(j, b, g, key)[i]);
                  }
                  acc[r * p.d + i] = o;
                }
              }
            }
          }
          for (int64_t r = 0; r < m; ++r) {
            A inv, row_lse;
            FinishRow(mrow[r], lrow[r], &inv, &row_lse);
            lse[RowIndex(b, h, r0 + r)] = row_lse;
            for (int64_t i = 0; i < p.d; ++i)
              out[RowIndex(b, h, r0 + r) * p.d + i] = static_cast<In>(acc[r * p.d + i] * inv);
          }
        }
  }

  void Backward() const {
    const In* out = static_cast<const In*>(p.out);
    const In* gout = static_cast<const In*>(p.grad_out);
    const A* lse = static_cast<const A*>(p.lse);
    A* delta = static_cast<A*>(p.delta);
    In* gq = static_cast<In*>(p.grad_q);
    const int64_t rows = p.batch * p.hq * p.tq;
    // delta_r = rowsum(dO ∘ O).
    for (int64_t r = 0; r < rows; ++r) {
      A sum = 0;
      for (int64_t i = 0; i < p.d; ++i)
        sum += static_cast<A>(gout[r * p.d + i]) * static_cast<A>(out[r * p.d + i]);
      delta[r] = sum;
    }
    const int64_t qtiles = TilingCeilDiv(p.tq, bq);
    std::vector<A> qs(bq * p.d), s(bq * bk), dacc(bq * p.d);
    // dQ CTAs.
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < p.hq; ++h)
        for (int64_t qt = 0; qt < qtiles; ++qt) {
          const int64_t r0 = qt * bq, m = std::min(bq, p.tq - r0), g = KvHeadOf(p, h);
          LoadScaledQ(b, h, r0, m, qs);
          std::fill(dacc.begin(), dacc.end(), A(0));
          for (int j = 0; j < p.nseg; ++j) {
            const int64_t tiles = KeyTilesForRows(p.seg[j], p.tq, r0 + m - 1, bk);
            for (int64_t kt = 0; kt < tiles; ++kt) {
              ScoreTile(qs, r0, m, j, b, g, kt, s);
              for (int64_t r = 0; r < m; ++r) {
                const int64_t row = RowIndex(b, h, r0 + r);
                for (int64_t c = 0; c < bk; ++c) {
                  const int64_t key = kt * bk + c;
                  const A prob = ProbFromLse(s[r * bk + c], lse[row]);
                  if (prob == A(0)) continue;
                  A dp = 0;
                  for (int64_t i = 0; i < p.d; ++i)
                    dp +=
                        static_cast<A>(gout[row * p.d + i]) * static_cast<A>(VRow(j, b, g, key)[i]);
                  const A ds = prob * (dp - delta[row]);
                  for (int64_t i = 0; i < p.d; ++i)
                    dacc[r * p.d + i] += ds * static_cast<A>(KRow(j, b, g, key)[i]);
                }
              }
            }
          }
          for (int64_t r = 0; r < m; ++r)
            for (int64_t i = 0; i < p.d; ++i)
              gq[RowIndex(b, h, r0 + r) * p.d + i] =
                  static_cast<In>(dacc[r * p.d + i] * static_cast<A>(p.scale));
        }
    // dK/dV CTAs: (batch, kv head, segment, key tile).
    const int64_t group = p.hq / p.hkv, flat_tiles = TotalKeyTiles(p, bk);
    std::vector<A> dk(bk * p.d), dv(bk * p.d);
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t g = 0; g < p.hkv; ++g)
        for (int64_t flat = 0; flat < flat_tiles; ++flat) {
          int j;
          int64_t kt;
          LocateKeyTile(p, flat, bk, &j, &kt);
          const TiledSegment& seg = p.seg[j];
          const int64_t key0 = kt * bk, nk = std::min(bk, seg.len - key0);
          std::fill(dk.begin(), dk.end(), A(0));
          std::fill(dv.begin(), dv.end(), A(0));
          const int64_t first_row = FirstRowSeeingKey(seg, p.tq, key0);
          for (int64_t h = g * group; h < (g + 1) * group; ++h)
            for (int64_t qt = first_row / bq; qt < qtiles; ++qt) {
              const int64_t r0 = qt * bq, m = std::min(bq, p.tq - r0);
              LoadScaledQ(b, h, r0, m, qs);
              ScoreTile(qs, r0, m, j, b, g, kt, s);
              for (int64_t r = 0; r < m; ++r) {
                const int64_t row = RowIndex(b, h, r0 + r);
                for (int64_t c = 0; c < nk; ++c) {
                  const A prob = ProbFromLse(s[r * bk + c], lse[row]);
                  if (prob == A(0)) continue;
                  A dp = 0;
                  for (int64_t i = 0; i < p.d; ++i)
                    dp += static_cast<A>(gout[row * p.d + i]) *
                          static_cast<A>(VRow(j, b, g, key0 + c)[i]);
                  const A ds = prob * (dp - delta[row]);
                  for (int64_t i = 0; i < p.d; ++i) {
                    dv[c * p.d + i] += prob * static_cast<A>(gout[row * p.d + i]);
                    dk[c * p.d + i] += ds * qs[r * p.d + i];
                  }
                }
              }
            }
          In* gk = static_cast<In*>(seg.dk) + ((b * p.hkv + g) * seg.len + key0) * p.d;
          In* gv = static_cast<In*>(seg.dv) + ((b * p.hkv + g) * seg.len + key0) * p.d;
          for (int64_t i = 0; i < nk * p.d; ++i) {
            gk[i] = static_cast<In>(dk[i]);
            gv[i] = static_cast<In>(dv[i]);
          }
        }
  }
};

}  // namespace fam::cuda
