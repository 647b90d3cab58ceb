// The CUDA backend: one instance per device, all work queued on one stream per device, memory from
// a caching allocator, GEMM through cuBLASLt/cuBLAS. Its methods live in files named like the CPU
// backend's: cuda_backend.cc (memory, copies, fill), cuda_elementwise, cuda_norm,
// cuda_cross_entropy, cuda_rope, cuda_embedding, cuda_optim (.cc: checks and launch; .cu: the
// kernels), cuda_gemm.cc and cuda_attention.cc. Compiled only when the CUDA toolkit is found
// (FAM_HAVE_CUDA); the registry creates it for a present device. Host<->device copies are
// synchronous; large ones are staged through pinned buffers.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <mutex>

#include "framework/backends/backend.h"
#include "framework/backends/cuda/cuda_allocator.h"

namespace fam::cuda {

class GemmRunner;

class CudaBackend : public Backend {
 public:
  static constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;
  static constexpr size_t kStagingBytes = size_t{8} << 20;     // per pinned staging buffer
  static constexpr size_t kDirectCopyBytes = size_t{1} << 20;  // below: no staging

  explicit CudaBackend(int device);
  ~CudaBackend() override;

  DeviceType type() const override { return DeviceType::kCUDA; }
  std::string name() const override;
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  CachingAllocator& allocator() { return *allocator_; }
  // Lets f32 GEMMs use TF32 tensor cores (off by default: exact f32 semantics).
  void set_allow_tf32(bool allow) { allow_tf32_ = allow; }
  // Waits for all queued work of this device (and surfaces asynchronous kernel faults).
  void Synchronize();

  void* Allocate(size_t nbytes) override;
  void Free(void* data, size_t nbytes) override;
  void CopyFromHost(void* dst, const void* src, size_t nbytes) override;
  void CopyToHost(void* dst, const void* src, size_t nbytes) override;
  void Copy(const Tensor& src, const Tensor& dst) override;
  void Fill(const Tensor& dst, double value) override;

  void Unary(UnaryOp op, const Tensor& x, const Tensor& out) override;
  void UnaryBackward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& grad_out,
                     const Tensor& grad_x) override;
  void Binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override;
  void Affine(const Tensor& x, double alpha, double beta, const Tensor& out) override;
  void Axpy(const Tensor& src, double alpha, const Tensor& dst) override;
  void ReduceSum(const Tensor& x, const std::vector<int>& axes, const Tensor& out) override;
  double SumSquares(const Tensor& x) override;

  void Gemm(const GemmArgs& args) override;

  void RmsNormForward(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                      const Tensor& rstd) override;
  void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& grad_y,
                       const Tensor& grad_x, const Tensor& grad_w) override;
  void SoftmaxForward(const Tensor& x, const Tensor& y) override;
  void SoftmaxBackward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x) override;
  void CrossEntropyForward(const Tensor& logits, const Tensor& targets, const Tensor& weights,
                           int64_t ignore_index, const Tensor& losses, const Tensor& lse) override;
  void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& weights,
                            int64_t ignore_index, const Tensor& lse, const Tensor& grad_losses,
                            const Tensor& grad_logits) override;
  void Rope(const Tensor& x, const Tensor& positions, const RopeSpec& rope, bool inverse,
            const Tensor& out) override;
  void EmbeddingForward(const Tensor& table, const Tensor& ids, const Tensor& out) override;
  void EmbeddingBackward(const Tensor& ids, const Tensor& grad_out,
                         const Tensor& grad_table) override;
  void AttentionForward(const AttentionArgs& args) override;
  void AttentionBackward(const AttentionGradArgs& args) override;
  void AdafactorUpdate(const AdafactorArgs& args) override;
  std::vector<double> SumSquaresEach(const std::vector<Tensor>& xs) override;
  void AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                   const Tensor& exp_avg_sq, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int64_t step) override;

 private:
  // Device memory returned to the allocator at scope exit (cuda_backend_internal.h).
  class Scratch;
  // Integer tensor (i32/i64) read back to the host as int64.
  std::vector<int64_t> ReadIndices(const Tensor& t);
  void EnsureStaging();

  int device_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CachingAllocator> allocator_;
  void* gemm_workspace_ = nullptr;
  std::unique_ptr<GemmRunner> gemm_;
  bool allow_tf32_ = false;
  bool poison_ = false;
  std::mutex staging_mu_;
  void* staging_[2] = {nullptr, nullptr};  // pinned host buffers
  cudaEvent_t staging_done_[2] = {nullptr, nullptr};
};

}  // namespace fam::cuda
