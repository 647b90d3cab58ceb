// The CPU backend: OpenBLAS GEMM (or a built-in tiled GEMM), OpenMP-parallel kernels, f32/f64
// compute. Each kernel family lives in its own cpu_*.cc file; this header declares the class.
#pragma once

#include <memory>

#include "framework/backends/backend.h"

namespace fam {

class CpuBackend : public Backend {
 public:
  CpuBackend();
  DeviceType type() const override { return DeviceType::kCPU; }
  std::string name() const override { return "cpu"; }

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
  void AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                   const Tensor& exp_avg_sq, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int64_t step) override;
  void AdafactorUpdate(const AdafactorArgs& args) override;
};

std::unique_ptr<Backend> MakeCpuBackend();

}  // namespace fam
