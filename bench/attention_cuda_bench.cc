// The fused CUDA attention kernels (cuda::AttentionForward/Backward, framework/backends/cuda) on
// one causal block (default B=8, H=16, Tq=1024, D=128), f32 and bf16, against peers timed in the
// same run: cuDNN's SDPA (bf16, causal; backend graph API, when cuDNN is found at build time) and
// an unfused cuBLAS peer: S = scale·Q·Kᵀ (batched SGEMM, all Tq² scores), row softmax (the
// backend's softmax kernel), O = P·V (batched SGEMM), in plain f32 and with TF32 tensor cores. The
// cuBLAS peer does not mask (an unfused baseline computes every score anyway). TFLOP/s count
// attended FLOPs only (bench/README.md): 4·D per visible (query, key) pair forward, 10·D backward.
// Our forward is checked against cuBLAS (full attention, f32) and cuDNN (causal, bf16): max |diff|
// printed. Built only with the CUDA backend.
//
// Usage: attention_cuda_bench [--batch 8] [--heads 16] [--tq 1024] [--d 128] [--iters 20]
#include <cublas_v2.h>
#include <cuda_runtime.h>
#if defined(FAM_HAVE_CUDNN)
#include <cudnn.h>
#endif

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "framework/backends/cuda/cuda_attention.h"
#include "framework/backends/cuda/cuda_kernels.h"
#include "framework/backends/registry.h"

namespace fam {
namespace {

void CudaOk(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "attention_cuda_bench: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(1);
  }
}
void CublasOk(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "attention_cuda_bench: %s: cuBLAS status %d\n", what,
                 static_cast<int>(status));
    std::exit(1);
  }
}

// Mean milliseconds of fn over `iters` runs after two warm-up runs (CUDA events, default stream).
double TimeMs(const std::function<void()>& fn, int iters) {
  fn();
  fn();
  cudaEvent_t start, stop;
  CudaOk(cudaEventCreate(&start), "event");
  CudaOk(cudaEventCreate(&stop), "event");
  CudaOk(cudaEventRecord(start, nullptr), "event record");
  for (int i = 0; i < iters; ++i) fn();
  CudaOk(cudaEventRecord(stop, nullptr), "event record");
  CudaOk(cudaEventSynchronize(stop), "event sync");
  float ms = 0;
  CudaOk(cudaEventElapsedTime(&ms, start, stop), "elapsed");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / iters;
}

// N(0, 1) values on the host, in dtype.
Tensor RandomHost(const Shape& shape, DType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(static_cast<size_t>(NumElements(shape)));
  for (float& x : values) x = normal(rng);
  return Tensor::FromFloats(values, shape).to(dtype);
}

Tensor Upload(const Tensor& host) {
  Tensor dev = Tensor::Empty(host.shape(), host.dtype(), Device::CUDA());
  CudaOk(cudaMemcpy(dev.raw_data(), host.raw_data(), host.nbytes(), cudaMemcpyHostToDevice),
         "upload");
  return dev;
}
std::vector<float> Download(const Tensor& dev) {
  CudaOk(cudaDeviceSynchronize(), "sync");
  Tensor host = Tensor::Empty(dev.shape(), dev.dtype());
  CudaOk(cudaMemcpy(host.raw_data(), dev.raw_data(), dev.nbytes(), cudaMemcpyDeviceToHost),
         "download");
  return host.ToFloats();
}

struct Shapes {
  int64_t batch = 8, heads = 16, tq = 1024, d = 128;
  int iters = 20;
};

// Our fused kernels on one segment of Tq keys (causal or not) in `dtype`.
struct Ours {
  AttentionArgs fwd;
  AttentionGradArgs bwd;
  Ours(const Shapes& s, DType dtype, bool causal) {
    const Shape qs = {s.batch, s.heads, s.tq, s.d};
    auto random = [&](uint64_t seed) { return Upload(RandomHost(qs, dtype, seed)); };
    fwd.q = random(1);
    fwd.k = {random(2)};
    fwd.v = {random(3)};
    fwd.masks = {causal ? KeyMask::kCausal : KeyMask::kAll};
    fwd.scale = 1.0 / std::sqrt(static_cast<double>(s.d));
    fwd.out = Tensor::Empty(qs, dtype, Device::CUDA());
    fwd.lse = Tensor::Empty({s.batch, s.heads, s.tq}, dtype == DType::kBF16 ? DType::kF32 : dtype,
                            Device::CUDA());
    bwd.q = fwd.q;
    bwd.k = fwd.k;
    bwd.v = fwd.v;
    bwd.masks = fwd.masks;
    bwd.scale = fwd.scale;
    bwd.out = fwd.out;
    bwd.lse = fwd.lse;
    bwd.grad_out = random(4);
    bwd.grad_q = Tensor::Empty(qs, dtype, Device::CUDA());
    bwd.grad_k = {Tensor::Empty(qs, dtype, Device::CUDA())};
    bwd.grad_v = {Tensor::Empty(qs, dtype, Device::CUDA())};
  }
  void Forward() { cuda::AttentionForward(fwd, nullptr); }
  void Backward() { cuda::AttentionBackward(bwd, nullptr); }
};

// Unfused f32 peer on the same f32 inputs: two batched SGEMMs around a row softmax.
struct CublasPeer {
  cublasHandle_t handle = nullptr;
  const Shapes& s;
  const AttentionArgs& in;  // f32 q, k, v
  Tensor scores, probs, out;
  CublasPeer(const Shapes& shapes, const AttentionArgs& inputs) : s(shapes), in(inputs) {
    CublasOk(cublasCreate(&handle), "cublasCreate");
    const int64_t bh = s.batch * s.heads;
    scores = Tensor::Empty({bh, s.tq, s.tq}, DType::kF32, Device::CUDA());
    probs = Tensor::Empty({bh, s.tq, s.tq}, DType::kF32, Device::CUDA());
    out = Tensor::Empty({s.batch, s.heads, s.tq, s.d}, DType::kF32, Device::CUDA());
  }
  ~CublasPeer() { cublasDestroy(handle); }
  void Forward(bool tf32) {
    CublasOk(cublasSetMathMode(handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
             "math mode");
    const int t = static_cast<int>(s.tq), d = static_cast<int>(s.d);
    const int bh = static_cast<int>(s.batch * s.heads);
    const float alpha = static_cast<float>(in.scale), one = 1.0f, zero = 0.0f;
    // Column-major view: Sᵀ[key, query] = Kᵀᵀ·Qᵀ, i.e. row-major S = Q·Kᵀ.
    CublasOk(cublasSgemmStridedBatched(handle, CUBLAS_OP_T, CUBLAS_OP_N, t, t, d, &alpha,
                                       in.k[0].data<float>(), d, int64_t{t} * d, in.q.data<float>(),
                                       d, int64_t{t} * d, &zero, scores.data<float>(), t,
                                       int64_t{t} * t, bh),
             "QKᵀ");
    cuda::LaunchSoftmaxForward(DType::kF32, scores.raw_data(), probs.raw_data(), int64_t{bh} * t, t,
                               nullptr);
    // Oᵀ[dim, query] = Vᵀ·Pᵀ, i.e. row-major O = P·V.
    CublasOk(
        cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, d, t, t, &one,
                                  in.v[0].data<float>(), d, int64_t{t} * d, probs.data<float>(), t,
                                  int64_t{t} * t, &zero, out.data<float>(), d, int64_t{t} * d, bh),
        "PV");
  }
};

#if defined(FAM_HAVE_CUDNN)
// cuDNN SDPA forward through the backend (graph) API: bf16 q, k, v, o [B, H, T, D], causal, f32
// scores and softmax inside the graph: S = scale·Q·Kᵀ, causal select (row >= col) with the lowest
// float, softmax (max, sub, exp, sum, div), O = P·V. cuDNN's heuristics pick a fused engine when
// the graph matches its SDPA pattern; any failure is reported and the peer is skipped.
class CudnnSdpa {
 public:
  CudnnSdpa(const Shapes& s, const AttentionArgs& in, Tensor out) : in_(in), out_(std::move(out)) {
    scale_ = static_cast<float>(in.scale);
    if (!Ok(cudnnCreate(&handle_), "cudnnCreate")) return;
    const int64_t b = s.batch, h = s.heads, t = s.tq, d = s.d;
    const std::vector<int64_t> qdims = {b, h, t, d}, qstrides = {h * t * d, t * d, d, 1};
    const std::vector<int64_t> sdims = {b, h, t, t}, sstrides = {h * t * t, t * t, t, 1};
    const std::vector<int64_t> rdims = {b, h, t, 1}, rstrides = {h * t, t, 1, 1};
    const std::vector<int64_t> one = {1, 1, 1, 1};
    auto q = Tensor4(kQ, CUDNN_DATA_BFLOAT16, qdims, qstrides, false, false);
    // Kᵀ as a [B, H, D, T] view of k.
    auto kt =
        Tensor4(kK, CUDNN_DATA_BFLOAT16, {b, h, d, t}, {h * t * d, t * d, 1, d}, false, false);
    auto v = Tensor4(kV, CUDNN_DATA_BFLOAT16, qdims, qstrides, false, false);
    auto o = Tensor4(kO, CUDNN_DATA_BFLOAT16, qdims, qstrides, false, false);
    auto scale = Tensor4(kScale, CUDNN_DATA_FLOAT, one, one, false, true);
    auto lowest = Tensor4(kLowest, CUDNN_DATA_FLOAT, one, one, false, true);
    int64_t uid = 100;
    auto virt = [&](cudnnDataType_t type, const std::vector<int64_t>& dims,
                    const std::vector<int64_t>& strides) {
      return Tensor4(uid++, type, dims, strides, true, false);
    };
    auto s0 = virt(CUDNN_DATA_FLOAT, sdims, sstrides), s1 = virt(CUDNN_DATA_FLOAT, sdims, sstrides);
    auto row = virt(CUDNN_DATA_INT32, sdims, sstrides),
         col = virt(CUDNN_DATA_INT32, sdims, sstrides);
    auto mask = virt(CUDNN_DATA_BOOLEAN, sdims, sstrides);
    auto s2 = virt(CUDNN_DATA_FLOAT, sdims, sstrides);
    auto mx = virt(CUDNN_DATA_FLOAT, rdims, rstrides),
         sub = virt(CUDNN_DATA_FLOAT, sdims, sstrides);
    auto ex = virt(CUDNN_DATA_FLOAT, sdims, sstrides),
         sum = virt(CUDNN_DATA_FLOAT, rdims, rstrides);
    auto p = virt(CUDNN_DATA_BFLOAT16, sdims, sstrides);
    std::vector<cudnnBackendDescriptor_t> ops = {
        Matmul(q, kt, s0),
        Pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, s0, scale, s1),
        Pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s1, nullptr, row, nullptr, 2),
        Pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s1, nullptr, col, nullptr, 3),
        Pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, mask),
        Pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s1, lowest, s2, mask),
        Reduction(CUDNN_REDUCE_TENSOR_MAX, s2, mx),
        Pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, s2, mx, sub),
        Pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, sub, nullptr, ex),
        Reduction(CUDNN_REDUCE_TENSOR_ADD, ex, sum),
        Pointwise(CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, ex, sum, p),
        Matmul(p, v, o),
    };
    if (!ok_) return;
    auto graph = Make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    // CUDNN_ATTR_OPERATIONGRAPH_HANDLE (800): deprecated in 9.x but still accepted.
    Set(graph, static_cast<cudnnBackendAttributeName_t>(800), CUDNN_TYPE_HANDLE, 1, &handle_);
    Set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
        static_cast<int64_t>(ops.size()), ops.data());
    Finalize(graph, "operation graph");
    auto heur = Make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    Set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    Set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    Finalize(heur, "engine heuristics");
    if (!ok_) return;
    std::vector<cudnnBackendDescriptor_t> configs(8);
    for (auto& c : configs) c = Make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t count = 0;
    if (!Ok(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                     CUDNN_TYPE_BACKEND_DESCRIPTOR, 8, &count, configs.data()),
            "heuristic results"))
      return;
    for (int64_t i = 0; i < count && plan_ == nullptr; ++i) {
      cudnnBackendDescriptor_t plan = Make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      Set(plan, static_cast<cudnnBackendAttributeName_t>(400), CUDNN_TYPE_HANDLE, 1, &handle_);
      Set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
          &configs[i]);
      if (ok_ && cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS) plan_ = plan;
    }
    if (plan_ == nullptr) {
      Fail(CUDNN_STATUS_NOT_SUPPORTED, "no engine among the heuristic's " + std::to_string(count));
      return;
    }
    int64_t workspace = 0;
    Ok(cudnnBackendGetAttribute(plan_, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                1, &count, &workspace),
       "workspace size");
    if (workspace > 0)
      workspace_ = Tensor::Empty({(workspace + 3) / 4}, DType::kI32, Device::CUDA());
    // The variant pack: fixed device pointers, by-value scalars read from members.
    int64_t uids[] = {kQ, kK, kV, kO, kScale, kLowest};
    void* ptrs[] = {
        in_.q.raw_data(), in_.k[0].raw_data(), in_.v[0].raw_data(), out_.raw_data(), &scale_,
        &lowest_};
    void* ws = workspace_.defined() ? workspace_.raw_data() : nullptr;
    pack_ = Make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    Set(pack_, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 6, uids);
    Set(pack_, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 6, ptrs);
    Set(pack_, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    Finalize(pack_, "variant pack");
  }
  ~CudnnSdpa() {
    for (auto it = owned_.rbegin(); it != owned_.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
    if (handle_ != nullptr) cudnnDestroy(handle_);
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  const Tensor& out() const { return out_; }

  void Forward() {
    if (ok_) Ok(cudnnBackendExecute(handle_, plan_, pack_), "execute");
  }

 private:
  enum : int64_t { kQ = 1, kK = 2, kV = 3, kO = 4, kScale = 5, kLowest = 6 };

  bool Ok(cudnnStatus_t status, const std::string& what) {
    if (status != CUDNN_STATUS_SUCCESS) Fail(status, what);
    return ok_;
  }
  void Fail(cudnnStatus_t status, const std::string& what) {
    if (!ok_) return;
    ok_ = false;
    error_ = what + ": " + cudnnGetErrorString(status);
  }
  cudnnBackendDescriptor_t Make(cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t desc = nullptr;
    if (Ok(cudnnBackendCreateDescriptor(type, &desc), "create descriptor " + std::to_string(type)))
      owned_.push_back(desc);
    return desc;
  }
  void Set(cudnnBackendDescriptor_t desc, cudnnBackendAttributeName_t name,
           cudnnBackendAttributeType_t type, int64_t count, const void* value) {
    if (ok_)
      Ok(cudnnBackendSetAttribute(desc, name, type, count, value),
         "set attribute " + std::to_string(name));
  }
  void Finalize(cudnnBackendDescriptor_t desc, const std::string& what) {
    if (ok_) Ok(cudnnBackendFinalize(desc), "finalize " + what);
  }
  cudnnBackendDescriptor_t Tensor4(int64_t uid, cudnnDataType_t type,
                                   const std::vector<int64_t>& dims,
                                   const std::vector<int64_t>& strides, bool is_virtual,
                                   bool by_value) {
    cudnnBackendDescriptor_t t = Make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    Set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
    Set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    Set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    Set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    Set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    Set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual);
    if (by_value) Set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    Finalize(t, "tensor " + std::to_string(uid));
    return t;
  }
  cudnnBackendDescriptor_t Pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t prec,
                                     cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                                     cudnnBackendDescriptor_t y,
                                     cudnnBackendDescriptor_t t = nullptr, int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = Make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    Set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    Set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    if (axis >= 0) Set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    Finalize(pw, "pointwise " + std::to_string(mode));
    cudnnBackendDescriptor_t op = Make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    Set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    Set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (b != nullptr)
      Set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    Set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    if (t != nullptr)
      Set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    Finalize(op, "pointwise op " + std::to_string(mode));
    return op;
  }
  cudnnBackendDescriptor_t Reduction(cudnnReduceTensorOp_t kind, cudnnBackendDescriptor_t x,
                                     cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t red = Make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    Set(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &kind);
    Set(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    Finalize(red, "reduction");
    cudnnBackendDescriptor_t op = Make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    Set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    Set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    Set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &red);
    Finalize(op, "reduction op");
    return op;
  }
  cudnnBackendDescriptor_t Matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                                  cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm = Make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    Set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    Finalize(mm, "matmul");
    cudnnBackendDescriptor_t op = Make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    Set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm);
    Finalize(op, "matmul op");
    return op;
  }

  const AttentionArgs& in_;
  Tensor out_, workspace_;
  float scale_ = 1, lowest_ = std::numeric_limits<float>::lowest();
  cudnnHandle_t handle_ = nullptr;
  cudnnBackendDescriptor_t plan_ = nullptr, pack_ = nullptr;
  std::vector<cudnnBackendDescriptor_t> owned_;
  bool ok_ = true;
  std::string error_;
};
#endif  // FAM_HAVE_CUDNN

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

int Main(int argc, char** argv) {
  Shapes s;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t value = std::atoll(argv[i + 1]);
    if (flag == "--batch")
      s.batch = value;
    else if (flag == "--heads")
      s.heads = value;
    else if (flag == "--tq")
      s.tq = value;
    else if (flag == "--d")
      s.d = value;
    else if (flag == "--iters")
      s.iters = static_cast<int>(value);
    else {
      std::fprintf(stderr, "attention_cuda_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  std::string why;
  if (!DeviceAvailable(Device::CUDA(), &why)) {
    std::fprintf(stderr, "attention_cuda_bench: no GPU: %s\n", why.c_str());
    return 1;
  }
  cudaDeviceProp prop;
  CudaOk(cudaGetDeviceProperties(&prop, 0), "device properties");
  std::printf("device: %s; B=%lld H=%lld Tq=%lld D=%lld, %d iterations\n", prop.name,
              static_cast<long long>(s.batch), static_cast<long long>(s.heads),
              static_cast<long long>(s.tq), static_cast<long long>(s.d), s.iters);

  // Correctness on the GPU against the independent peer (full attention, f32).
  {
    Ours full(s, DType::kF32, /*causal=*/false);
    CublasPeer peer(s, full.fwd);
    full.Forward();
    peer.Forward(/*tf32=*/false);
    std::printf("check (full attention, f32): max |ours - cuBLAS| = %.3g\n",
                MaxAbsDiff(Download(full.fwd.out), Download(peer.out)));
  }

  const double bh = static_cast<double>(s.batch * s.heads);
  const double pairs = static_cast<double>(s.tq) * (s.tq + 1) / 2;  // causal
  const double fwd_flops = 4.0 * s.d * pairs * bh, bwd_flops = 10.0 * s.d * pairs * bh;
  auto report = [&](const char* name, double ms, double flops) {
    std::printf("%-34s %9.3f ms %8.2f TFLOP/s\n", name, ms, flops / (ms * 1e-3) / 1e12);
  };
  std::printf("causal, attended FLOPs: forward %.3g, backward %.3g\n", fwd_flops, bwd_flops);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Ours ours(s, dtype, /*causal=*/true);
    const std::string tag = std::string(" ") + DTypeName(dtype);
    report(("ours forward" + tag).c_str(), TimeMs([&] { ours.Forward(); }, s.iters), fwd_flops);
    ours.Forward();
    report(("ours backward" + tag).c_str(), TimeMs([&] { ours.Backward(); }, s.iters), bwd_flops);
#if defined(FAM_HAVE_CUDNN)
    if (dtype == DType::kBF16) {
      CudnnSdpa sdpa(s, ours.fwd, Tensor::Empty(ours.fwd.out.shape(), dtype, Device::CUDA()));
      sdpa.Forward();
      if (sdpa.ok()) {
        ours.Forward();
        std::printf("check (causal, bf16): max |ours - cuDNN| = %.3g\n",
                    MaxAbsDiff(Download(ours.fwd.out), Download(sdpa.out())));
        report("cuDNN SDPA forward bf16", TimeMs([&] { sdpa.Forward(); }, s.iters), fwd_flops);
      } else {
        std::printf("cuDNN SDPA forward bf16: unavailable (%s)\n", sdpa.error().c_str());
      }
    }
#endif
    if (dtype == DType::kF32) {
      CublasPeer peer(s, ours.fwd);
      report("cuBLAS unfused forward f32", TimeMs([&] { peer.Forward(false); }, s.iters),
             fwd_flops);
      report("cuBLAS unfused forward tf32", TimeMs([&] { peer.Forward(true); }, s.iters),
             fwd_flops);
    }
  }
  return 0;
}

}  // namespace
}  // namespace fam

int main(int argc, char** argv) {
  try {
    return fam::Main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_cuda_bench: %s\n", e.what());
    return 1;
  }
}
