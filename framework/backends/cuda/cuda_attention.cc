// Fused blockwise attention on CUDA, host side: checks the tensors of AttentionArgs /
// AttentionGradArgs (dtype f32, f64 or bf16 with f32 lse; head dim <= 128; k/v strided views with a
// unit last stride; at most kMaxAttentionSegments segments), describes them as a TiledAttention
// and launches the kernels of cuda_attention.cu on the given stream.
#include "framework/backends/cuda/cuda_attention.h"

#include <cstdint>
#include <vector>

#include "framework/backends/cuda/attention_tiling.h"
#include "framework/backends/cuda/cuda_attention_launch.h"
#include "framework/backends/cuda/cuda_backend.h"
#include "framework/backends/cuda/cuda_device.h"
#include "framework/backends/cuda/cuda_kernels.h"

namespace fam::cuda {
namespace {

DType LseDType(DType dtype) { return dtype == DType::kBF16 ? DType::kF32 : dtype; }

int TileOf(DType dtype) { return dtype == DType::kF64 ? kAttentionTileF64 : kAttentionTileF32; }

// The launchers take grids of at most 2^31 − 1 CTAs.
void CheckGrid(const char* what, const TiledAttention& p, DType dtype) {
  const int64_t tile = TileOf(dtype), limit = (int64_t{1} << 31) - 1;
  FAM_CHECK(p.batch * p.hq * TilingCeilDiv(p.tq, tile) <= limit &&
                p.batch * p.hkv * TotalKeyTiles(p, tile) <= limit,
            what, ": too many tiles for one grid (batch ", p.batch, ", heads ", p.hq, ", Tq ", p.tq,
            ")");
}

bool Dense(const Tensor& t) { return t.numel() == 0 || t.is_contiguous(); }

bool LastDimUnit(const Tensor& t) {
  return t.dim() == 4 && (t.size(3) <= 1 || t.strides()[3] == 1);
}

TiledAttention Describe(const char* what, const Tensor& q, const std::vector<Tensor>& k,
                        const std::vector<Tensor>& v, const std::vector<KeyMask>& masks,
                        double scale) {
  FAM_CHECK(q.dim() == 4 && LastDimUnit(q), what, ": q must be [B, Hq, Tq, D] with a unit last ",
            "stride, got ", q.Describe());
  FAM_CHECK(k.size() == v.size() && k.size() == masks.size(), what, ": ", k.size(), " k, ",
            v.size(), " v and ", masks.size(), " masks");
  FAM_CHECK(q.size(3) <= 128, what, ": head dim ", q.size(3), " is not supported (at most 128)");
  FAM_CHECK(k.size() <= static_cast<size_t>(kMaxAttentionSegments), what, ": ", k.size(),
            " segments (at most ", kMaxAttentionSegments, ")");
  TiledAttention p;
  p.batch = q.size(0);
  p.hq = q.size(1);
  p.tq = q.size(2);
  p.d = q.size(3);
  p.hkv = k.empty() ? 1 : k[0].size(1);
  p.scale = scale;
  p.q = q.raw_data();
  p.q_sb = q.strides()[0];
  p.q_sh = q.strides()[1];
  p.q_st = q.strides()[2];
  p.nseg = static_cast<int>(k.size());
  for (size_t j = 0; j < k.size(); ++j) {
    FAM_CHECK(LastDimUnit(k[j]) && LastDimUnit(v[j]) && k[j].dtype() == q.dtype() &&
                  v[j].dtype() == q.dtype() && k[j].shape() == v[j].shape() &&
                  k[j].size(0) == p.batch && k[j].size(3) == p.d && k[j].size(1) == p.hkv &&
                  p.hkv > 0 && p.hq % p.hkv == 0 && k[j].device() == q.device() &&
                  v[j].device() == q.device(),
              what, ": segment ", j, " k ", k[j].Describe(), " / v ", v[j].Describe(),
              " does not fit q ", q.Describe());
    TiledSegment& s = p.seg[j];
    s.k = k[j].raw_data();
    s.v = v[j].raw_data();
    s.k_sb = k[j].strides()[0];
    s.k_sh = k[j].strides()[1];
    s.k_st = k[j].strides()[2];
    s.v_sb = v[j].strides()[0];
    s.v_sh = v[j].strides()[1];
    s.v_st = v[j].strides()[2];
    s.len = k[j].size(2);
    s.causal = masks[j] == KeyMask::kCausal;
  }
  return p;
}

}  // namespace

void AttentionForward(const AttentionArgs& args, cudaStream_t stream) {
  const char* what = "cuda attention forward";
  FAM_CHECK(args.softcap == 0, what,
            ": score soft-capping (Gemma 2's attn_logit_softcapping) is not implemented on CUDA");
  TiledAttention p = Describe(what, args.q, args.k, args.v, args.masks, args.scale);
  const Shape& qs = args.q.shape();
  FAM_CHECK(Dense(args.out) && Dense(args.lse) && args.out.shape() == qs &&
                args.out.dtype() == args.q.dtype() &&
                args.lse.dtype() == LseDType(args.q.dtype()) &&
                args.lse.shape() == Shape(qs.begin(), qs.end() - 1),
            what, ": out ", args.out.Describe(), " / lse ", args.lse.Describe(), " do not fit q ",
            args.q.Describe(), " (lse is f32 for bf16 inputs)");
  p.out = args.out.raw_data();
  p.lse = args.lse.raw_data();
  if (args.q.numel() == 0) return;
  CheckGrid(what, p, args.q.dtype());
  LaunchAttentionForward(p, args.q.dtype(), stream);
}

void AttentionBackward(const AttentionGradArgs& args, cudaStream_t stream) {
  const char* what = "cuda attention backward";
  FAM_CHECK(args.softcap == 0, what,
            ": score soft-capping (Gemma 2's attn_logit_softcapping) is not implemented on CUDA");
  TiledAttention p = Describe(what, args.q, args.k, args.v, args.masks, args.scale);
  const Shape& qs = args.q.shape();
  const DType dtype = args.q.dtype();
  FAM_CHECK(args.out.shape() == qs && args.grad_out.shape() == qs && args.grad_q.shape() == qs &&
                Dense(args.out) && Dense(args.grad_out) && Dense(args.grad_q) && Dense(args.lse) &&
                args.out.dtype() == dtype && args.grad_out.dtype() == dtype &&
                args.grad_q.dtype() == dtype && args.lse.dtype() == LseDType(dtype) &&
                args.lse.shape() == Shape(qs.begin(), qs.end() - 1) &&
                args.grad_k.size() == args.k.size() && args.grad_v.size() == args.v.size(),
            what, ": out ", args.out.Describe(), ", grad_out ", args.grad_out.Describe(),
            ", grad_q ", args.grad_q.Describe(), ", lse ", args.lse.Describe(), " do not fit q ",
            args.q.Describe());
  for (size_t j = 0; j < args.k.size(); ++j) {
    const Tensor& gk = args.grad_k[j];
    const Tensor& gv = args.grad_v[j];
    FAM_CHECK(gk.shape() == args.k[j].shape() && gv.shape() == args.v[j].shape() && Dense(gk) &&
                  Dense(gv) && gk.dtype() == dtype && gv.dtype() == dtype,
              what, ": grad_k ", gk.Describe(), " / grad_v ", gv.Describe(), " do not fit segment ",
              j, " ", args.k[j].Describe());
    p.seg[j].dk = gk.raw_data();
    p.seg[j].dv = gv.raw_data();
  }
  p.out = args.out.raw_data();
  p.lse = args.lse.raw_data();
  p.grad_out = args.grad_out.raw_data();
  p.grad_q = args.grad_q.raw_data();
  if (p.batch * p.hkv == 0 || p.d == 0) return;
  CheckGrid(what, p, dtype);
  const size_t delta_bytes =
      static_cast<size_t>(p.batch * p.hq * p.tq) * DTypeSize(LseDType(dtype));
  void* delta = nullptr;
  if (delta_bytes > 0) {
    const cudaError_t err = cudaMallocAsync(&delta, delta_bytes, stream);
    if (err != cudaSuccess) LaunchFailure("attention backward scratch", err);
  }
  p.delta = delta;
  try {
    LaunchAttentionBackward(p, dtype, stream);
  } catch (...) {
    if (delta != nullptr) cudaFreeAsync(delta, stream);
    throw;
  }
  if (delta != nullptr) {
    const cudaError_t err = cudaFreeAsync(delta, stream);
    if (err != cudaSuccess) LaunchFailure("attention backward scratch", err);
  }
}

void CudaBackend::AttentionForward(const AttentionArgs& args) {
  DeviceGuard guard(device_);
  cuda::AttentionForward(args, stream_);
}

void CudaBackend::AttentionBackward(const AttentionGradArgs& args) {
  DeviceGuard guard(device_);
  cuda::AttentionBackward(args, stream_);
}

}  // namespace fam::cuda
