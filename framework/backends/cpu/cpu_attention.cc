// CPU kernels of blockwise masked attention (see AttentionArgs in backend.h): one block of queries
// over a list of key/value segments, each fully visible (kAll) or bottom-right causal (kCausal),
// with one softmax over the union of the visible keys. Every row sees a prefix of each segment.
//
// Forward: per (batch, head, tile of query rows) the scaled scores of the tile against every
// visible key are computed (tile × keys, never more), softmaxed exactly and multiplied by V; lse is
// saved. Backward (flash-attention style): per tile and per chunk of keys, P is recomputed from q,
// k and lse, then dS = P ∘ (dO·Vᵀ − rowsum(dO∘O)), dQ += dS·K, dK += dSᵀ·Q, dV += Pᵀ·dO. dK/dV are
// made race-free either by giving each thread whole (batch, kv head) slices or, when there are
// fewer slices than threads, by per-thread partial sums that are reduced afterwards.
//
// Kᵀ (and Vᵀ for the backward) are packed once per call, so that every product is one small
// register-blocked GEMM (SmallGemm) over unit-stride rows; exp runs on whole vectors. Results are
// bitwise reproducible for a given thread count.
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "framework/backends/cpu/cpu_attention_kernels.h"
#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cpu/cpu_dispatch.h"

namespace fam {
namespace {

// The small dense kernels: cpu_attention_kernels.h.
using namespace cpu;  // NOLINT: Vec, SmallGemm, ExpShiftSum, ... read as local helpers

constexpr int64_t kKeyChunk = 256;  // keys per chunk (a multiple of every kCols)
constexpr int64_t kQueryTile = 32;  // query rows per task (smaller when work is scarce)
constexpr int64_t kMinParallelWork = int64_t{1} << 16;  // q·k products worth a parallel region

// x[c] = cap·tanh(x[c] / cap) for c < n (Gemma 2's score soft-capping); grad, when given,
// receives d(capped)/dx = 1 − tanh².
template <typename T>
void SoftCap(T* x, int64_t n, T cap, T* grad) {
  const T inv = T(1) / cap;
  for (int64_t c = 0; c < n; ++c) {
    const T t = std::tanh(x[c] * inv);
    x[c] = cap * t;
    if (grad) grad[c] = T(1) - t * t;
  }
}

// ---- problem description ----

// A [B, H, T, D] tensor read through its strides (last stride 1).
template <typename T>
struct Rows {
  const T* data = nullptr;
  int64_t sb = 0, sh = 0, st = 0;
  const T* row(int64_t b, int64_t h, int64_t t) const { return data + b * sb + h * sh + t * st; }
};

template <typename T>
Rows<T> RowsOf(const Tensor& x) {
  return {x.kernel_data<T>(), x.strides()[0], x.strides()[1], x.strides()[2]};
}

template <typename T>
struct Segment {
  Rows<T> k, v;
  int64_t len = 0;  // S_j
  KeyMask mask = KeyMask::kAll;
  int64_t width = 0;        // RoundUp(len, kCols): padded columns of a packed Kᵀ / score row
  int64_t row_offset = 0;   // first row of this segment in the concatenated key space
  int64_t pack_offset = 0;  // start of this segment in a packed Kᵀ / Vᵀ buffer
};

template <typename T>
struct Problem {
  int64_t batch = 0, hq = 0, hkv = 0, tq = 0, d = 0;
  T scale = 1;
  T softcap = 0;  // > 0: scores become softcap·tanh(s / softcap)
  Rows<T> q;
  std::vector<Segment<T>> segs;
  int64_t width_cap = 0;   // sum of segment widths
  int64_t total_keys = 0;  // sum of segment lengths
  int64_t pack_size = 0;   // elements of a packed Kᵀ / Vᵀ buffer
  int64_t tile = kQueryTile;

  int64_t KvHead(int64_t h) const { return h * hkv / hq; }
  int64_t Tiles() const { return CeilDiv(tq, tile); }
  // Whether the problem is big enough to be worth the threads (an upper bound of q·k products).
  bool Parallel() const { return batch * hq * tq * total_keys * d >= kMinParallelWork; }
  // Keys of a segment that query row `row` sees: always a prefix [0, n).
  int64_t Visible(const Segment<T>& s, int64_t row) const {
    if (s.mask == KeyMask::kAll) return s.len;
    return std::clamp<int64_t>(row + s.len - tq + 1, 0, s.len);
  }
  // Where the packed [D, width] transpose of segment j's keys (or values) for (batch, kv head)
  // starts in a packed buffer.
  int64_t PackOffset(size_t j, int64_t b, int64_t kv) const {
    return segs[j].pack_offset + (b * hkv + kv) * d * segs[j].width;
  }
};

// Kᵀ (or Vᵀ) of every segment, batch and kv head: [D, width] blocks, zero in the padding columns.
template <typename T>
std::vector<T> PackTransposed(const Problem<T>& p, bool values) {
  std::vector<T> buffer(p.pack_size);
  const int64_t slices = p.batch * p.hkv;
#pragma omp parallel for schedule(static) if (p.Parallel())
  for (int64_t slice = 0; slice < slices; ++slice) {
    const int64_t b = slice / p.hkv, kv = slice % p.hkv;
    for (size_t j = 0; j < p.segs.size(); ++j) {
      const Segment<T>& s = p.segs[j];
      const Rows<T>& rows = values ? s.v : s.k;
      T* out = buffer.data() + p.PackOffset(j, b, kv);
      // Blocks of 8 keys keep the strided writes within a few cache lines.
      for (int64_t c0 = 0; c0 < s.len; c0 += 8) {
        const int64_t c1 = std::min(c0 + 8, s.len);
        for (int64_t i = 0; i < p.d; ++i)
          for (int64_t c = c0; c < c1; ++c) out[i * s.width + c] = rows.row(b, kv, c)[i];
      }
    }
  }
  return buffer;
}

// The tensor itself when its last dim is unit-stride (or of size <= 1), else a contiguous copy.
Tensor UnitLastStride(Backend& backend, const Tensor& x) {
  if (x.shape()[3] <= 1 || x.strides()[3] == 1) return x;
  Tensor c = Tensor::Empty(x.shape(), x.dtype(), x.device());
  backend.Copy(x, c);
  return c;
}

// Contiguous, or empty (nothing is read or written).
bool Dense(const Tensor& t) { return t.numel() == 0 || t.is_contiguous(); }

void CheckArgs(const char* what, const Tensor& q, const std::vector<Tensor>& k,
               const std::vector<Tensor>& v, const std::vector<KeyMask>& masks) {
  FAM_CHECK(q.dim() == 4, what, ": q must be [B, Hq, Tq, D], got ", q.Describe());
  FAM_CHECK(k.size() == v.size() && k.size() == masks.size(), what, ": ", k.size(), " k, ",
            v.size(), " v and ", masks.size(), " masks");
  for (size_t j = 0; j < k.size(); ++j) {
    FAM_CHECK(k[j].dim() == 4 && v[j].dim() == 4 && k[j].dtype() == q.dtype() &&
                  v[j].dtype() == q.dtype() && k[j].shape() == v[j].shape() &&
                  k[j].shape()[0] == q.shape()[0] && k[j].shape()[3] == q.shape()[3] &&
                  k[j].shape()[1] > 0 && q.shape()[1] % k[j].shape()[1] == 0 &&
                  k[j].shape()[1] == k[0].shape()[1],
              what, ": segment ", j, " k ", k[j].Describe(), " / v ", v[j].Describe(),
              " does not fit q ", q.Describe());
  }
}

// Builds the kernel's view of the problem; `keep` holds any contiguous copies it had to make.
template <typename T>
Problem<T> MakeProblem(Backend& backend, const Tensor& q, const std::vector<Tensor>& k,
                       const std::vector<Tensor>& v, const std::vector<KeyMask>& masks,
                       double scale, double softcap, std::vector<Tensor>* keep) {
  Problem<T> p;
  p.batch = q.shape()[0];
  p.hq = q.shape()[1];
  p.tq = q.shape()[2];
  p.d = q.shape()[3];
  p.hkv = k.empty() ? 1 : k[0].shape()[1];
  p.scale = static_cast<T>(scale);
  p.softcap = static_cast<T>(softcap);
  keep->push_back(UnitLastStride(backend, q));
  p.q = RowsOf<T>(keep->back());
  for (size_t j = 0; j < k.size(); ++j) {
    Segment<T> s;
    keep->push_back(UnitLastStride(backend, k[j]));
    s.k = RowsOf<T>(keep->back());
    keep->push_back(UnitLastStride(backend, v[j]));
    s.v = RowsOf<T>(keep->back());
    s.len = k[j].shape()[2];
    s.mask = masks[j];
    s.width = RoundUp(s.len, kCols<T>);
    s.row_offset = p.total_keys;
    s.pack_offset = p.pack_size;
    p.width_cap += s.width;
    p.total_keys += s.len;
    p.pack_size += p.batch * p.hkv * p.d * s.width;
    p.segs.push_back(s);
  }
  // Smaller query tiles when there would be too few tasks to keep every thread busy.
  const int64_t threads = omp_get_max_threads();
  while (p.tile > 8 && p.batch * p.hq * p.Tiles() < 2 * threads) p.tile /= 2;
  return p;
}

// ---- forward ----

template <typename T>
struct ForwardScratch {
  std::vector<T> qs, o, s, inv;
  std::vector<int64_t> offset;
  explicit ForwardScratch(const Problem<T>& p)
      : qs(p.tile * p.d),
        o(p.tile * p.d),
        s(p.tile * p.width_cap),
        inv(p.tile),
        offset(p.segs.size()) {}
};

// Rows [r0, r0 + m) of query head h in batch b; kt: packed Kᵀ.
template <typename T>
void ForwardTile(const Problem<T>& p, const std::vector<T>& kt, int64_t b, int64_t h, int64_t r0,
                 int64_t m, T* out, T* lse, ForwardScratch<T>& w) {
  const int64_t d = p.d, kv = p.KvHead(h), last = r0 + m - 1;
  for (int64_t r = 0; r < m; ++r) {
    const T* qr = p.q.row(b, h, r0 + r);
    T* dst = w.qs.data() + r * d;
    for (int64_t i = 0; i < d; ++i) dst[i] = qr[i] * p.scale;
  }
  // Score columns: each segment gets RoundUp(visible keys of the tile's last row, kCols).
  std::vector<int64_t>& offset = w.offset;
  int64_t width = 0;
  for (size_t j = 0; j < p.segs.size(); ++j) {
    offset[j] = width;
    width += RoundUp(p.Visible(p.segs[j], last), kCols<T>);
  }
  T* s = w.s.data();
  for (size_t j = 0; j < p.segs.size(); ++j) {
    const int64_t npad = (j + 1 < p.segs.size() ? offset[j + 1] : width) - offset[j];
    SmallGemm<T>(m, npad, d, RowMajor(w.qs.data(), d), kt.data() + p.PackOffset(j, b, kv),
                 p.segs[j].width, s + offset[j], width, false);
  }
  // Exact softmax per row over its visible keys; masked and padding columns become 0.
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  T* inv = w.inv.data();
  for (int64_t r = 0; r < m; ++r) {
    T* row = s + r * width;
    T mx = kNegInf;
    for (size_t j = 0; j < p.segs.size(); ++j) {
      const int64_t end = j + 1 < p.segs.size() ? offset[j + 1] : width;
      const int64_t n = p.Visible(p.segs[j], r0 + r);
      T* seg_row = row + offset[j];
      if (p.softcap > 0) SoftCap<T>(seg_row, n, p.softcap, nullptr);
      for (int64_t c = 0; c < n; ++c) mx = seg_row[c] > mx ? seg_row[c] : mx;
      std::fill(row + offset[j] + n, row + end, kNegInf);
    }
    if (mx == kNegInf) {  // sees no key: zero output, lse = -inf
      std::fill(row, row + width, T(0));
      inv[r] = 0;
      lse[r] = kNegInf;
      continue;
    }
    const T sum = ExpShiftSum(row, width, mx);
    inv[r] = T(1) / sum;
    lse[r] = mx + std::log(sum);
  }
  T* o = w.o.data();
  std::fill(o, o + m * d, T(0));
  for (size_t j = 0; j < p.segs.size(); ++j) {
    const Segment<T>& seg = p.segs[j];
    const int64_t n = p.Visible(seg, last);
    for (int64_t c0 = 0; c0 < n; c0 += kKeyChunk) {
      const int64_t cw = std::min(kKeyChunk, n - c0);
      SmallGemm<T>(m, d, cw, RowMajor(s + offset[j] + c0, width), seg.v.row(b, kv, c0), seg.v.st, o,
                   d, true);
    }
  }
  for (int64_t r = 0; r < m; ++r) {
    T* dst = out + r * d;
    const T* src = o + r * d;
    for (int64_t i = 0; i < d; ++i) dst[i] = src[i] * inv[r];
  }
}

template <typename T>
void Forward(const Problem<T>& p, const Tensor& out_t, const Tensor& lse_t) {
  T* out = out_t.kernel_data<T>();
  T* lse = lse_t.kernel_data<T>();
  const int64_t tiles = p.Tiles(), tasks = p.batch * p.hq * tiles;
  if (tasks == 0) return;
  const std::vector<T> kt = PackTransposed(p, /*values=*/false);
#pragma omp parallel if (p.Parallel())
  {
    ForwardScratch<T> scratch(p);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t bh = task / tiles, r0 = (task % tiles) * p.tile;
      const int64_t b = bh / p.hq, h = bh % p.hq, m = std::min(p.tile, p.tq - r0);
      ForwardTile(p, kt, b, h, r0, m, out + (bh * p.tq + r0) * p.d, lse + bh * p.tq + r0, scratch);
    }
  }
}

// ---- backward ----

template <typename T>
struct BackwardScratch {
  std::vector<T> qs, dout, delta, dq, s, dp, cap_grad;
  explicit BackwardScratch(const Problem<T>& p)
      : qs(p.tile * p.d),
        dout(p.tile * p.d),
        delta(p.tile),
        dq(p.tile * p.d),
        s(p.tile * kKeyChunk),
        dp(p.tile * kKeyChunk),
        cap_grad(p.softcap > 0 ? kKeyChunk : 0) {}
};

template <typename T>
struct GradIo {
  Rows<T> out, grad_out;   // [B, Hq, Tq, D]
  const T* lse = nullptr;  // [B, Hq, Tq] contiguous
  T* grad_q = nullptr;     // [B, Hq, Tq, D] contiguous
  std::vector<T> kt, vt;   // packed Kᵀ, Vᵀ
};

// Accumulates the gradients of rows [r0, r0 + m) of query head h in batch b. dk[j] / dv[j] point
// at the [S_j, D] gradient rows of segment j for this (batch, kv head).
template <typename T>
void BackwardTile(const Problem<T>& p, const GradIo<T>& io, int64_t b, int64_t h, int64_t r0,
                  int64_t m, T* const* dk, T* const* dv, BackwardScratch<T>& w) {
  const int64_t d = p.d, kv = p.KvHead(h), last = r0 + m - 1;
  const T* lse = io.lse + (b * p.hq + h) * p.tq + r0;
  for (int64_t r = 0; r < m; ++r) {
    const T* qr = p.q.row(b, h, r0 + r);
    const T* gr = io.grad_out.row(b, h, r0 + r);
    const T* orow = io.out.row(b, h, r0 + r);
    T* qs = w.qs.data() + r * d;
    T* go = w.dout.data() + r * d;
    T delta = 0;
    for (int64_t i = 0; i < d; ++i) {
      qs[i] = qr[i] * p.scale;
      go[i] = gr[i];
      delta += gr[i] * orow[i];
    }
    w.delta[r] = delta;
  }
  T* dq = w.dq.data();
  std::fill(dq, dq + m * d, T(0));
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  for (size_t j = 0; j < p.segs.size(); ++j) {
    const Segment<T>& seg = p.segs[j];
    const int64_t n = p.Visible(seg, last);
    const T* kt = io.kt.data() + p.PackOffset(j, b, kv);
    const T* vt = io.vt.data() + p.PackOffset(j, b, kv);
    for (int64_t c0 = 0; c0 < n; c0 += kKeyChunk) {
      const int64_t cw = std::min(kKeyChunk, n - c0), cpad = RoundUp(cw, kCols<T>);
      T* sp = w.s.data();
      T* dp = w.dp.data();
      // S = (scale·Q)·Kᵀ and dP = dO·Vᵀ on this chunk.
      SmallGemm<T>(m, cpad, d, RowMajor(w.qs.data(), d), kt + c0, seg.width, sp, cpad, false);
      SmallGemm<T>(m, cpad, d, RowMajor(w.dout.data(), d), vt + c0, seg.width, dp, cpad, false);
      // P = exp(S − lse) on visible keys, dS = P ∘ (dP − delta); 0 elsewhere.
      for (int64_t r = 0; r < m; ++r) {
        T* prow = sp + r * cpad;
        T* dsrow = dp + r * cpad;
        const int64_t visible = std::clamp<int64_t>(p.Visible(seg, r0 + r) - c0, 0, cw);
        if (lse[r] == kNegInf || visible == 0) {
          std::fill(prow, prow + cw, T(0));
          std::fill(dsrow, dsrow + cw, T(0));
          continue;
        }
        if (p.softcap > 0) SoftCap<T>(prow, visible, p.softcap, w.cap_grad.data());
        ExpShiftSum(prow, visible, lse[r]);
        const T delta = w.delta[r];
        for (int64_t c = 0; c < visible; ++c) dsrow[c] = prow[c] * (dsrow[c] - delta);
        if (p.softcap > 0)
          for (int64_t c = 0; c < visible; ++c) dsrow[c] *= w.cap_grad[c];
        std::fill(prow + visible, prow + cw, T(0));
        std::fill(dsrow + visible, dsrow + cw, T(0));
      }
      // dQ += dS·K (scaled at the end), dK += dSᵀ·(scale·Q), dV += Pᵀ·dO.
      SmallGemm<T>(m, d, cw, RowMajor<T>(dp, cpad), seg.k.row(b, kv, c0), seg.k.st, dq, d, true);
      SmallGemm<T>(cw, d, m, Transposed<T>(dp, cpad), w.qs.data(), d, dk[j] + c0 * d, d, true);
      SmallGemm<T>(cw, d, m, Transposed<T>(sp, cpad), w.dout.data(), d, dv[j] + c0 * d, d, true);
    }
  }
  T* gq = io.grad_q + ((b * p.hq + h) * p.tq + r0) * d;
  for (int64_t i = 0; i < m * d; ++i) gq[i] = dq[i] * p.scale;
}

template <typename T>
void Backward(const Problem<T>& p, const GradIo<T>& io, const std::vector<Tensor>& grad_k,
              const std::vector<Tensor>& grad_v) {
  const int64_t nseg = static_cast<int64_t>(p.segs.size());
  std::vector<T*> gk(nseg), gv(nseg);
  for (int64_t j = 0; j < nseg; ++j) {
    gk[j] = grad_k[j].kernel_data<T>();
    gv[j] = grad_v[j].kernel_data<T>();
    std::fill(gk[j], gk[j] + grad_k[j].numel(), T(0));
    std::fill(gv[j], gv[j] + grad_v[j].numel(), T(0));
  }
  const int64_t tiles = p.Tiles(), group = p.hq / p.hkv;
  const int64_t slices = p.batch * p.hkv, items = group * tiles;
  if (p.batch * p.hq * p.tq == 0) return;
  const int threads = p.Parallel() ? omp_get_max_threads() : 1;
  if (slices >= threads || threads == 1 || nseg == 0) {
    // Each thread owns whole (batch, kv head) slices of dK/dV.
#pragma omp parallel if (threads > 1)
    {
      BackwardScratch<T> scratch(p);
      std::vector<T*> dk(nseg), dv(nseg);
#pragma omp for schedule(dynamic, 1)
      for (int64_t slice = 0; slice < slices; ++slice) {
        const int64_t b = slice / p.hkv, kv = slice % p.hkv;
        for (int64_t j = 0; j < nseg; ++j) {
          dk[j] = gk[j] + slice * p.segs[j].len * p.d;
          dv[j] = gv[j] + slice * p.segs[j].len * p.d;
        }
        for (int64_t item = 0; item < items; ++item) {
          const int64_t h = kv * group + item / tiles, r0 = (item % tiles) * p.tile;
          BackwardTile(p, io, b, h, r0, std::min(p.tile, p.tq - r0), dk.data(), dv.data(), scratch);
        }
      }
    }
    return;
  }
  // Fewer slices than threads: split each slice's query tiles over the threads, each summing its
  // own partial dK/dV, then reduce the partials into the slice.
  const int64_t slice_elems = p.total_keys * p.d;
  std::vector<std::vector<T>> partial_k(threads), partial_v(threads);
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
    const int nthreads = omp_get_num_threads();
    BackwardScratch<T> scratch(p);
    partial_k[tid].assign(slice_elems, T(0));
    partial_v[tid].assign(slice_elems, T(0));
    std::vector<T*> dk(nseg), dv(nseg);
    for (int64_t j = 0; j < nseg; ++j) {
      dk[j] = partial_k[tid].data() + p.segs[j].row_offset * p.d;
      dv[j] = partial_v[tid].data() + p.segs[j].row_offset * p.d;
    }
    for (int64_t slice = 0; slice < slices; ++slice) {
      const int64_t b = slice / p.hkv, kv = slice % p.hkv;
      std::fill(partial_k[tid].begin(), partial_k[tid].end(), T(0));
      std::fill(partial_v[tid].begin(), partial_v[tid].end(), T(0));
      // Static round-robin: which partial a tile lands in is fixed, so results are reproducible.
#pragma omp for schedule(static, 1)
      for (int64_t item = 0; item < items; ++item) {
        const int64_t h = kv * group + item / tiles, r0 = (item % tiles) * p.tile;
        BackwardTile(p, io, b, h, r0, std::min(p.tile, p.tq - r0), dk.data(), dv.data(), scratch);
      }
      // (implicit barrier) Reduce: each key row of the slice is summed over the threads.
#pragma omp for schedule(static)
      for (int64_t key = 0; key < p.total_keys; ++key) {
        int64_t j = 0;
        while (key >= p.segs[j].row_offset + p.segs[j].len) ++j;
        const int64_t row = key - p.segs[j].row_offset;
        T* dst_k = gk[j] + (slice * p.segs[j].len + row) * p.d;
        T* dst_v = gv[j] + (slice * p.segs[j].len + row) * p.d;
        for (int t = 0; t < nthreads; ++t) {
          const T* src_k = partial_k[t].data() + key * p.d;
          const T* src_v = partial_v[t].data() + key * p.d;
          for (int64_t i = 0; i < p.d; ++i) {
            dst_k[i] += src_k[i];
            dst_v[i] += src_v[i];
          }
        }
      }
      // (implicit barrier) before the partials are cleared for the next slice.
    }
  }
}

}  // namespace

void CpuBackend::AttentionForward(const AttentionArgs& args) {
  CheckArgs("attention forward", args.q, args.k, args.v, args.masks);
  FAM_CHECK(Dense(args.out) && Dense(args.lse) && args.out.shape() == args.q.shape() &&
                args.out.dtype() == args.q.dtype() && args.lse.dtype() == args.q.dtype() &&
                args.lse.shape() == Shape(args.q.shape().begin(), args.q.shape().end() - 1),
            "attention forward: out ", args.out.Describe(), " / lse ", args.lse.Describe(),
            " do not fit q ", args.q.Describe());
  DispatchFloat(args.q.dtype(), "attention", [&](auto tag) {
    using T = decltype(tag);
    std::vector<Tensor> keep;
    Problem<T> p =
        MakeProblem<T>(*this, args.q, args.k, args.v, args.masks, args.scale, args.softcap, &keep);
    Forward(p, args.out, args.lse);
  });
}

void CpuBackend::AttentionBackward(const AttentionGradArgs& args) {
  CheckArgs("attention backward", args.q, args.k, args.v, args.masks);
  const Shape& qs = args.q.shape();
  FAM_CHECK(args.out.shape() == qs && args.grad_out.shape() == qs && args.grad_q.shape() == qs &&
                Dense(args.grad_q) && Dense(args.lse) &&
                args.lse.shape() == Shape(qs.begin(), qs.end() - 1) &&
                args.grad_k.size() == args.k.size() && args.grad_v.size() == args.v.size(),
            "attention backward: out ", args.out.Describe(), ", grad_out ",
            args.grad_out.Describe(), ", grad_q ", args.grad_q.Describe(), ", lse ",
            args.lse.Describe(), " do not fit q ", args.q.Describe());
  for (size_t j = 0; j < args.k.size(); ++j) {
    const Tensor& gk = args.grad_k[j];
    const Tensor& gv = args.grad_v[j];
    FAM_CHECK(gk.shape() == args.k[j].shape() && gv.shape() == args.v[j].shape() && Dense(gk) &&
                  Dense(gv),
              "attention backward: grad_k ", gk.Describe(), " / grad_v ", gv.Describe(),
              " do not fit segment ", j, " ", args.k[j].Describe());
  }
  DispatchFloat(args.q.dtype(), "attention", [&](auto tag) {
    using T = decltype(tag);
    std::vector<Tensor> keep;
    Problem<T> p =
        MakeProblem<T>(*this, args.q, args.k, args.v, args.masks, args.scale, args.softcap, &keep);
    GradIo<T> io;
    keep.push_back(UnitLastStride(*this, args.out));
    io.out = RowsOf<T>(keep.back());
    keep.push_back(UnitLastStride(*this, args.grad_out));
    io.grad_out = RowsOf<T>(keep.back());
    io.lse = args.lse.kernel_data<T>();
    io.grad_q = args.grad_q.kernel_data<T>();
    if (p.batch * p.hq * p.tq > 0) {
      io.kt = PackTransposed(p, /*values=*/false);
      io.vt = PackTransposed(p, /*values=*/true);
    }
    Backward(p, io, args.grad_k, args.grad_v);
  });
}

}  // namespace fam
