// Kernels of the fused blockwise attention on CUDA (flash-attention style, SIMT): forward and
// backward over a list of key/value segments with per-segment kAll / kCausal masks and GQA/MQA,
// never materialising the score matrix in global memory. The tile loops, masking and online softmax
// follow attention_tiling.h, whose CPU emulation is tested against the CPU primitive.
//
// Layout: 256 threads per CTA as a 16 × 16 grid (ty, tx). A score tile of kBq × kBk is held as
// kBq/16 rows × kBk/16 columns per thread (rows ty·R + r, columns tx + 16·c); an output tile of
// kBq × kD as the same rows × columns tx + 16·c. Row max/sum reductions are shuffles over the 16
// lanes sharing ty. Tiles are staged in shared memory in the accumulation type (f32, or f64 for f64
// inputs); rows read "across" threads are padded by one element to avoid bank conflicts.
// Input dtypes: f32 and bf16 (f32 accumulation, tiles 64 × 64), f64 (f64, tiles 32 × 32); head
// dims up to 128 (padded to 64 or 128). lse (and the delta scratch) are f32 for bf16 inputs.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "framework/backends/cuda/attention_tiling.h"
#include "framework/backends/cuda/cuda_attention_launch.h"
#include "framework/backends/cuda/cuda_common.cuh"

namespace fam::cuda {
namespace {

constexpr int kThreads = 256;

template <typename In, typename A>
__device__ __forceinline__ A LoadAs(const In* p) {
  if constexpr (std::is_same_v<In, Bf16Bits>) {
    return static_cast<A>(Bf16ToFloat(p->bits));
  } else {
    return static_cast<A>(*p);
  }
}
template <typename In, typename A>
__device__ __forceinline__ void StoreAs(In* p, A v) {
  if constexpr (std::is_same_v<In, Bf16Bits>) {
    p->bits = FloatToBf16(static_cast<float>(v));
  } else {
    *p = static_cast<In>(v);
  }
}

// Max / sum over the 16 lanes that share ty (xor offsets < 16 stay within the half warp).
template <typename A>
__device__ __forceinline__ A GroupMax(A v) {
  for (int o = 8; o > 0; o >>= 1) {
    const A w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}
template <typename A>
__device__ __forceinline__ A GroupSum(A v) {
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// rows × kD tile (row stride `stride`) of rows [t0, t0 + rows_valid) of a [.., T, D] tensor at
// `base` with row stride `st`; optionally scaled; zero beyond the valid rows and d.
template <typename In, typename A, int kRows, int kD>
__device__ void LoadTile(A* dst, int stride, const In* base, int64_t st, int64_t t0,
                         int64_t rows_valid, int64_t d, A scale) {
  for (int e = threadIdx.x; e < kRows * kD; e += kThreads) {
    const int r = e / kD, i = e % kD;
    A v = 0;
    if (r < rows_valid && i < d) v = LoadAs<In, A>(base + (t0 + r) * st + i) * scale;
    dst[r * stride + i] = v;
  }
}

template <typename A, int kBq, int kBk, int kD>
constexpr size_t ForwardSmem() {
  return sizeof(A) * (kBq * kD + kBk * (kD + 1) + kBk * kD + kBq * (kBk + 1));
}

template <typename In, typename A, int kBq, int kBk, int kD>
__global__ void __launch_bounds__(kThreads) AttentionForwardKernel(TiledAttention p) {
  constexpr int R = kBq / 16, C = kBk / 16, CD = kD / 16, KS = kD + 1, PS = kBk + 1;
  extern __shared__ __align__(16) unsigned char fam_attention_smem[];
  A* qs = reinterpret_cast<A*>(fam_attention_smem);
  A* ks = qs + kBq * kD;
  A* vs = ks + kBk * KS;
  A* ps = vs + kBk * kD;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t qtiles = TilingCeilDiv(p.tq, kBq);
  const int64_t bh = blockIdx.x / qtiles, b = bh / p.hq, h = bh % p.hq, g = KvHeadOf(p, h);
  const int64_t r0 = (blockIdx.x % qtiles) * kBq;
  const int64_t m = p.tq - r0 < kBq ? p.tq - r0 : kBq;
  const In* q = static_cast<const In*>(p.q) + b * p.q_sb + h * p.q_sh;
  LoadTile<In, A, kBq, kD>(qs, kD, q, p.q_st, r0, m, p.d, static_cast<A>(p.scale));

  A acc[R][CD], mrow[R], lrow[R];
  for (int r = 0; r < R; ++r) {
    mrow[r] = TilingNegInf<A>();
    lrow[r] = 0;
    for (int c = 0; c < CD; ++c) acc[r][c] = 0;
  }
  for (int j = 0; j < p.nseg; ++j) {
    const TiledSegment& seg = p.seg[j];
    int64_t vis[R];
    for (int r = 0; r < R; ++r) {
      const int64_t row = r0 + ty * R + r;
      vis[r] = row < p.tq ? VisibleKeys(seg, p.tq, row) : 0;
    }
    const In* kb = static_cast<const In*>(seg.k) + b * seg.k_sb + g * seg.k_sh;
    const In* vb = static_cast<const In*>(seg.v) + b * seg.v_sb + g * seg.v_sh;
    const int64_t tiles = KeyTilesForRows(seg, p.tq, r0 + m - 1, kBk);
    for (int64_t kt = 0; kt < tiles; ++kt) {
      const int64_t key0 = kt * kBk, nk = seg.len - key0 < kBk ? seg.len - key0 : kBk;
      __syncthreads();  // the previous tile's K, V, P are no longer read
      LoadTile<In, A, kBk, kD>(ks, KS, kb, seg.k_st, key0, nk, p.d, A(1));
      LoadTile<In, A, kBk, kD>(vs, kD, vb, seg.v_st, key0, nk, p.d, A(1));
      __syncthreads();
      A s[R][C];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) s[r][c] = 0;
#pragma unroll 8
      for (int i = 0; i < kD; ++i) {
        A qv[R], kv[C];
        for (int r = 0; r < R; ++r) qv[r] = qs[(ty * R + r) * kD + i];
        for (int c = 0; c < C; ++c) kv[c] = ks[(tx + 16 * c) * KS + i];
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < C; ++c) s[r][c] += qv[r] * kv[c];
      }
      for (int r = 0; r < R; ++r) {
        A tile_max = TilingNegInf<A>();
        for (int c = 0; c < C; ++c) {
          if (key0 + tx + 16 * c >= vis[r]) s[r][c] = TilingNegInf<A>();
          tile_max = s[r][c] > tile_max ? s[r][c] : tile_max;
        }
        tile_max = GroupMax(tile_max);
        const A m_new = mrow[r] > tile_max ? mrow[r] : tile_max;
        const A alpha = RescaleFactor(mrow[r], m_new);
        A sum = 0;
        for (int c = 0; c < C; ++c) {
          const A pr = ProbAgainst(s[r][c], m_new);
          sum += pr;
          ps[(ty * R + r) * PS + tx + 16 * c] = pr;
        }
        lrow[r] = lrow[r] * alpha + GroupSum(sum);
        mrow[r] = m_new;
        for (int c = 0; c < CD; ++c) acc[r][c] *= alpha;
      }
      __syncthreads();
#pragma unroll 4
      for (int c = 0; c < kBk; ++c) {
        A pv[R];
        for (int r = 0; r < R; ++r) pv[r] = ps[(ty * R + r) * PS + c];
        for (int dc = 0; dc < CD; ++dc) {
          const A vv = vs[c * kD + tx + 16 * dc];
          for (int r = 0; r < R; ++r) acc[r][dc] += pv[r] * vv;
        }
      }
    }
  }
  In* out = static_cast<In*>(p.out);
  A* lse = static_cast<A*>(p.lse);
  for (int r = 0; r < R; ++r) {
    const int64_t row = r0 + ty * R + r;
    if (row >= p.tq) continue;
    A inv, row_lse;
    FinishRow(mrow[r], lrow[r], &inv, &row_lse);
    const int64_t index = bh * p.tq + row;
    if (tx == 0) lse[index] = row_lse;
    for (int c = 0; c < CD; ++c) {
      const int i = tx + 16 * c;
      if (i < p.d) StoreAs<In, A>(out + index * p.d + i, acc[r][c] * inv);
    }
  }
}

// delta_r = rowsum(dO ∘ O): one warp per row.
template <typename In, typename A>
__global__ void AttentionDeltaKernel(const In* out, const In* grad_out, A* delta, int64_t rows,
                                     int64_t d) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
       row < rows; row += warps) {
    A sum = 0;
    for (int64_t i = lane; i < d; i += 32)
      sum += LoadAs<In, A>(out + row * d + i) * LoadAs<In, A>(grad_out + row * d + i);
    sum = WarpSum(sum);
    if (lane == 0) delta[row] = sum;
  }
}

template <typename A, int kBq, int kBk, int kD>
constexpr size_t GradQSmem() {
  return sizeof(A) * (2 * kBq * kD + 2 * kBk * (kD + 1) + kBq * (kBk + 1));
}

// dQ: one CTA per (batch, query head, query tile); dQ = scale · Σ_tiles dS · K.
template <typename In, typename A, int kBq, int kBk, int kD>
__global__ void __launch_bounds__(kThreads) AttentionGradQKernel(TiledAttention p) {
  constexpr int R = kBq / 16, C = kBk / 16, CD = kD / 16, KS = kD + 1, PS = kBk + 1;
  extern __shared__ __align__(16) unsigned char fam_attention_smem[];
  A* qs = reinterpret_cast<A*>(fam_attention_smem);
  A* dos = qs + kBq * kD;
  A* ks = dos + kBq * kD;
  A* vs = ks + kBk * KS;
  A* dss = vs + kBk * KS;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t qtiles = TilingCeilDiv(p.tq, kBq);
  const int64_t bh = blockIdx.x / qtiles, b = bh / p.hq, h = bh % p.hq, g = KvHeadOf(p, h);
  const int64_t r0 = (blockIdx.x % qtiles) * kBq;
  const int64_t m = p.tq - r0 < kBq ? p.tq - r0 : kBq;
  const In* q = static_cast<const In*>(p.q) + b * p.q_sb + h * p.q_sh;
  const In* gout = static_cast<const In*>(p.grad_out) + bh * p.tq * p.d;
  LoadTile<In, A, kBq, kD>(qs, kD, q, p.q_st, r0, m, p.d, static_cast<A>(p.scale));
  LoadTile<In, A, kBq, kD>(dos, kD, gout, p.d, r0, m, p.d, A(1));
  const A* lse = static_cast<const A*>(p.lse) + bh * p.tq;
  const A* delta = static_cast<const A*>(p.delta) + bh * p.tq;
  A row_lse[R], row_delta[R], dacc[R][CD];
  for (int r = 0; r < R; ++r) {
    const int64_t row = r0 + ty * R + r;
    row_lse[r] = row < p.tq ? lse[row] : TilingNegInf<A>();
    row_delta[r] = row < p.tq ? delta[row] : A(0);
    for (int c = 0; c < CD; ++c) dacc[r][c] = 0;
  }
  for (int j = 0; j < p.nseg; ++j) {
    const TiledSegment& seg = p.seg[j];
    int64_t vis[R];
    for (int r = 0; r < R; ++r) {
      const int64_t row = r0 + ty * R + r;
      vis[r] = row < p.tq ? VisibleKeys(seg, p.tq, row) : 0;
    }
    const In* kb = static_cast<const In*>(seg.k) + b * seg.k_sb + g * seg.k_sh;
    const In* vb = static_cast<const In*>(seg.v) + b * seg.v_sb + g * seg.v_sh;
    const int64_t tiles = KeyTilesForRows(seg, p.tq, r0 + m - 1, kBk);
    for (int64_t kt = 0; kt < tiles; ++kt) {
      const int64_t key0 = kt * kBk, nk = seg.len - key0 < kBk ? seg.len - key0 : kBk;
      __syncthreads();
      LoadTile<In, A, kBk, kD>(ks, KS, kb, seg.k_st, key0, nk, p.d, A(1));
      LoadTile<In, A, kBk, kD>(vs, KS, vb, seg.v_st, key0, nk, p.d, A(1));
      __syncthreads();
      A s[R][C], dp[R][C];
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) s[r][c] = dp[r][c] = 0;
#pragma unroll 4
      for (int i = 0; i < kD; ++i) {
        A qv[R], dov[R], kv[C], vv[C];
        for (int r = 0; r < R; ++r) {
          qv[r] = qs[(ty * R + r) * kD + i];
          dov[r] = dos[(ty * R + r) * kD + i];
        }
        for (int c = 0; c < C; ++c) {
          kv[c] = ks[(tx + 16 * c) * KS + i];
          vv[c] = vs[(tx + 16 * c) * KS + i];
        }
        for (int r = 0; r < R; ++r)
          for (int c = 0; c < C; ++c) {
            s[r][c] += qv[r] * kv[c];
            dp[r][c] += dov[r] * vv[c];
          }
      }
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
          const bool visible = key0 + tx + 16 * c < vis[r];
          const A pr = visible ? ProbFromLse(s[r][c], row_lse[r]) : A(0);
          dss[(ty * R + r) * PS + tx + 16 * c] = pr * (dp[r][c] - row_delta[r]);
        }
      __syncthreads();
#pragma unroll 4
      for (int c = 0; c < kBk; ++c) {
        A dsv[R];
        for (int r = 0; r < R; ++r) dsv[r] = dss[(ty * R + r) * PS + c];
        for (int dc = 0; dc < CD; ++dc) {
          const A kv = ks[c * KS + tx + 16 * dc];
          for (int r = 0; r < R; ++r) dacc[r][dc] += dsv[r] * kv;
        }
      }
    }
  }
  In* gq = static_cast<In*>(p.grad_q) + bh * p.tq * p.d;
  for (int r = 0; r < R; ++r) {
    const int64_t row = r0 + ty * R + r;
    if (row >= p.tq) continue;
    for (int c = 0; c < CD; ++c) {
      const int i = tx + 16 * c;
      if (i < p.d) StoreAs<In, A>(gq + row * p.d + i, dacc[r][c] * static_cast<A>(p.scale));
    }
  }
}

template <typename A, int kBq, int kBk, int kD>
constexpr size_t GradKVSmem() {
  return sizeof(A) * (2 * kBk * (kD + 1) + 2 * kBq * (kD + 1) + 2 * kBk * (kBq + 1));
}

// dK, dV: one CTA per (batch, kv head, segment, key tile); loops over the query heads of the GQA
// group and the query tiles that see the key tile (deterministic: no atomics).
template <typename In, typename A, int kBq, int kBk, int kD>
__global__ void __launch_bounds__(kThreads) AttentionGradKVKernel(TiledAttention p) {
  // Thread (ty, tx) owns keys ty·CK + c and query columns tx + 16·r of the transposed tiles.
  constexpr int CK = kBk / 16, RQ = kBq / 16, CD = kD / 16, KS = kD + 1, PS = kBq + 1;
  extern __shared__ __align__(16) unsigned char fam_attention_smem[];
  A* ks = reinterpret_cast<A*>(fam_attention_smem);
  A* vs = ks + kBk * KS;
  A* qs = vs + kBk * KS;
  A* dos = qs + kBq * KS;
  A* pts = dos + kBq * KS;
  A* dsts = pts + kBk * PS;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t flat_tiles = TotalKeyTiles(p, kBk);
  const int64_t bg = blockIdx.x / flat_tiles, b = bg / p.hkv, g = bg % p.hkv;
  int j;
  int64_t kt;
  LocateKeyTile(p, blockIdx.x % flat_tiles, kBk, &j, &kt);
  const TiledSegment& seg = p.seg[j];
  const int64_t key0 = kt * kBk, nk = seg.len - key0 < kBk ? seg.len - key0 : kBk;
  LoadTile<In, A, kBk, kD>(ks, KS, static_cast<const In*>(seg.k) + b * seg.k_sb + g * seg.k_sh,
                           seg.k_st, key0, nk, p.d, A(1));
  LoadTile<In, A, kBk, kD>(vs, KS, static_cast<const In*>(seg.v) + b * seg.v_sb + g * seg.v_sh,
                           seg.v_st, key0, nk, p.d, A(1));
  A dk[CK][CD], dv[CK][CD];
  for (int c = 0; c < CK; ++c)
    for (int dc = 0; dc < CD; ++dc) dk[c][dc] = dv[c][dc] = 0;
  const int64_t qtiles = TilingCeilDiv(p.tq, kBq), group = p.hq / p.hkv;
  const int64_t first_tile = FirstRowSeeingKey(seg, p.tq, key0) / kBq;
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    const int64_t bh = b * p.hq + h;
    const In* q = static_cast<const In*>(p.q) + b * p.q_sb + h * p.q_sh;
    const In* gout = static_cast<const In*>(p.grad_out) + bh * p.tq * p.d;
    const A* lse = static_cast<const A*>(p.lse) + bh * p.tq;
    const A* delta = static_cast<const A*>(p.delta) + bh * p.tq;
    for (int64_t qt = first_tile; qt < qtiles; ++qt) {
      const int64_t r0 = qt * kBq, m = p.tq - r0 < kBq ? p.tq - r0 : kBq;
      __syncthreads();  // the previous query tile's Q, dO, Pᵀ, dSᵀ are no longer read
      LoadTile<In, A, kBq, kD>(qs, KS, q, p.q_st, r0, m, p.d, static_cast<A>(p.scale));
      LoadTile<In, A, kBq, kD>(dos, KS, gout, p.d, r0, m, p.d, A(1));
      __syncthreads();
      A s[CK][RQ], dp[CK][RQ];
      for (int c = 0; c < CK; ++c)
        for (int r = 0; r < RQ; ++r) s[c][r] = dp[c][r] = 0;
#pragma unroll 4
      for (int i = 0; i < kD; ++i) {
        A kv[CK], vv[CK], qv[RQ], dov[RQ];
        for (int c = 0; c < CK; ++c) {
          kv[c] = ks[(ty * CK + c) * KS + i];
          vv[c] = vs[(ty * CK + c) * KS + i];
        }
        for (int r = 0; r < RQ; ++r) {
          qv[r] = qs[(tx + 16 * r) * KS + i];
          dov[r] = dos[(tx + 16 * r) * KS + i];
        }
        for (int c = 0; c < CK; ++c)
          for (int r = 0; r < RQ; ++r) {
            s[c][r] += kv[c] * qv[r];
            dp[c][r] += vv[c] * dov[r];
          }
      }
      for (int r = 0; r < RQ; ++r) {
        const int64_t row = r0 + tx + 16 * r;
        const int64_t vis = row < p.tq ? VisibleKeys(seg, p.tq, row) : 0;
        const A row_lse = row < p.tq ? lse[row] : TilingNegInf<A>();
        const A row_delta = row < p.tq ? delta[row] : A(0);
        for (int c = 0; c < CK; ++c) {
          const bool visible = key0 + ty * CK + c < vis;
          const A pr = visible ? ProbFromLse(s[c][r], row_lse) : A(0);
          pts[(ty * CK + c) * PS + tx + 16 * r] = pr;
          dsts[(ty * CK + c) * PS + tx + 16 * r] = pr * (dp[c][r] - row_delta);
        }
      }
      __syncthreads();
#pragma unroll 4
      for (int r = 0; r < kBq; ++r) {
        A pv[CK], dsv[CK];
        for (int c = 0; c < CK; ++c) {
          pv[c] = pts[(ty * CK + c) * PS + r];
          dsv[c] = dsts[(ty * CK + c) * PS + r];
        }
        for (int dc = 0; dc < CD; ++dc) {
          const A dov = dos[r * KS + tx + 16 * dc], qv = qs[r * KS + tx + 16 * dc];
          for (int c = 0; c < CK; ++c) {
            dv[c][dc] += pv[c] * dov;
            dk[c][dc] += dsv[c] * qv;
          }
        }
      }
    }
  }
  In* gk = static_cast<In*>(seg.dk) + ((b * p.hkv + g) * seg.len + key0) * p.d;
  In* gv = static_cast<In*>(seg.dv) + ((b * p.hkv + g) * seg.len + key0) * p.d;
  for (int c = 0; c < CK; ++c) {
    const int key = ty * CK + c;
    if (key >= nk) continue;
    for (int dc = 0; dc < CD; ++dc) {
      const int i = tx + 16 * dc;
      if (i >= p.d) continue;
      StoreAs<In, A>(gk + key * p.d + i, dk[c][dc]);
      StoreAs<In, A>(gv + key * p.d + i, dv[c][dc]);
    }
  }
}

// ---- host side ----

template <typename Kernel>
void LaunchWithSmem(Kernel kernel, int64_t blocks, size_t smem, const TiledAttention& p,
                    cudaStream_t stream, const char* what) {
  if (blocks == 0) return;
  // (the caller has checked that grids fit in 2^31 − 1 CTAs)
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) LaunchFailure(what, err);
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
  CheckLaunch(what);
}

// Tile sizes per accumulation type; head dims padded to 64 or 128.
template <typename A>
constexpr int kTile = sizeof(A) == 4 ? kAttentionTileF32 : kAttentionTileF64;

template <typename In, typename A, int kD>
void ForwardTyped(const TiledAttention& p, cudaStream_t stream) {
  constexpr int B = kTile<A>;
  LaunchWithSmem(AttentionForwardKernel<In, A, B, B, kD>, p.batch * p.hq * TilingCeilDiv(p.tq, B),
                 ForwardSmem<A, B, B, kD>(), p, stream, "attention forward kernel");
}

template <typename In, typename A, int kD>
void BackwardTyped(const TiledAttention& p, cudaStream_t stream) {
  constexpr int B = kTile<A>;
  const int64_t rows = p.batch * p.hq * p.tq;
  if (rows > 0) {
    const int64_t blocks = std::min<int64_t>(TilingCeilDiv(rows, 8), 65535);
    AttentionDeltaKernel<In, A><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        static_cast<const In*>(p.out), static_cast<const In*>(p.grad_out), static_cast<A*>(p.delta),
        rows, p.d);
    CheckLaunch("attention delta kernel");
  }
  LaunchWithSmem(AttentionGradQKernel<In, A, B, B, kD>, p.batch * p.hq * TilingCeilDiv(p.tq, B),
                 GradQSmem<A, B, B, kD>(), p, stream, "attention dq kernel");
  LaunchWithSmem(AttentionGradKVKernel<In, A, B, B, kD>, p.batch * p.hkv * TotalKeyTiles(p, B),
                 GradKVSmem<A, B, B, kD>(), p, stream, "attention dk/dv kernel");
}

// Calls fn(In{}, A{}, integral_constant<kD>) for the input dtype and head dim.
template <typename Fn>
void Dispatch(DType dtype, int64_t d, const char* what, Fn&& fn) {
  // (the caller has checked 1 <= d <= 128)
  auto with_dim = [&](auto in, auto acc) {
    if (d <= 64) {
      fn(in, acc, std::integral_constant<int, 64>{});
    } else {
      fn(in, acc, std::integral_constant<int, 128>{});
    }
  };
  switch (dtype) {
    case DType::kF32:
      return with_dim(float{}, float{});
    case DType::kF64:
      return with_dim(double{}, double{});
    case DType::kBF16:
      return with_dim(Bf16Bits{}, float{});
    default:
      BadDType(what, dtype);
  }
}

}  // namespace

void LaunchAttentionForward(const TiledAttention& p, DType dtype, cudaStream_t stream) {
  Dispatch(dtype, p.d, "attention forward", [&](auto in, auto acc, auto dim) {
    ForwardTyped<decltype(in), decltype(acc), decltype(dim)::value>(p, stream);
  });
}

void LaunchAttentionBackward(const TiledAttention& p, DType dtype, cudaStream_t stream) {
  Dispatch(dtype, p.d, "attention backward", [&](auto in, auto acc, auto dim) {
    BackwardTyped<decltype(in), decltype(acc), decltype(dim)::value>(p, stream);
  });
}

}  // namespace fam::cuda
