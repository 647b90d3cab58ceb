#include "framework/backends/emulation/host_emulation_backend.h"

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "framework/backends/cpu/cpu_backend.h"

namespace fam {

bool CudaEmulationEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("FAM_CUDA_EMULATION");
    return v != nullptr && std::string(v) == "host";
  }();
  return enabled;
}

namespace {

// A CPU-labelled view of an emulated-device tensor (same memory; keeps the original storage alive).
Tensor AsHost(const Tensor& t) {
  if (!t.defined() || t.device().is_cpu()) return t;
  const std::shared_ptr<Storage>& storage = t.storage();
  std::shared_ptr<Storage> host =
      Storage::Wrap(storage->data(), storage->nbytes(), Device::CPU(), [keep = storage] {});
  return Tensor::MakeView(std::move(host), t.shape(), t.strides(), t.offset(), t.dtype());
}

std::vector<Tensor> AsHost(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  out.reserve(ts.size());
  for (const Tensor& t : ts) out.push_back(AsHost(t));
  return out;
}

class HostEmulatedCudaBackend : public Backend {
 public:
  explicit HostEmulatedCudaBackend(int index) : index_(index), cpu_(MakeCpuBackend()) {}

  DeviceType type() const override { return DeviceType::kCUDA; }
  std::string name() const override {
    return "cuda:" + std::to_string(index_) + " (emulated on the host: FAM_CUDA_EMULATION=host)";
  }

  void* Allocate(size_t nbytes) override { return cpu_->Allocate(nbytes); }
  void Free(void* data, size_t nbytes) override { cpu_->Free(data, nbytes); }
  void CopyFromHost(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }
  void CopyToHost(void* dst, const void* src, size_t n) override { std::memcpy(dst, src, n); }

  void Copy(const Tensor& src, const Tensor& dst) override { cpu_->Copy(AsHost(src), AsHost(dst)); }
  void Fill(const Tensor& dst, double value) override { cpu_->Fill(AsHost(dst), value); }
  void Unary(UnaryOp op, const Tensor& x, const Tensor& out) override {
    cpu_->Unary(op, AsHost(x), AsHost(out));
  }
  void UnaryBackward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& grad_out,
                     const Tensor& grad_x) override {
    cpu_->UnaryBackward(op, AsHost(x), AsHost(y), AsHost(grad_out), AsHost(grad_x));
  }
  void Binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) override {
    cpu_->Binary(op, AsHost(a), AsHost(b), AsHost(out));
  }
  void Affine(const Tensor& x, double alpha, double beta, const Tensor& out) override {
    cpu_->Affine(AsHost(x), alpha, beta, AsHost(out));
  }
  void Axpy(const Tensor& src, double alpha, const Tensor& dst) override {
    cpu_->Axpy(AsHost(src), alpha, AsHost(dst));
  }
  void ReduceSum(const Tensor& x, const std::vector<int>& axes, const Tensor& out) override {
    cpu_->ReduceSum(AsHost(x), axes, AsHost(out));
  }
  double SumSquares(const Tensor& x) override { return cpu_->SumSquares(AsHost(x)); }

  void Gemm(const GemmArgs& args) override {
    GemmArgs host = args;
    host.a = AsHost(args.a);
    host.b = AsHost(args.b);
    host.c = AsHost(args.c);
    cpu_->Gemm(host);
  }

  void RmsNormForward(const Tensor& x, const Tensor& w, double eps, const Tensor& y,
                      const Tensor& rstd) override {
    cpu_->RmsNormForward(AsHost(x), AsHost(w), eps, AsHost(y), AsHost(rstd));
  }
  void RmsNormBackward(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& grad_y,
                       const Tensor& grad_x, const Tensor& grad_w) override {
    cpu_->RmsNormBackward(AsHost(x), AsHost(w), AsHost(rstd), AsHost(grad_y), AsHost(grad_x),
                          AsHost(grad_w));
  }
  void SoftmaxForward(const Tensor& x, const Tensor& y) override {
    cpu_->SoftmaxForward(AsHost(x), AsHost(y));
  }
  void SoftmaxBackward(const Tensor& y, const Tensor& grad_y, const Tensor& grad_x) override {
    cpu_->SoftmaxBackward(AsHost(y), AsHost(grad_y), AsHost(grad_x));
  }
  void CrossEntropyForward(const Tensor& logits, const Tensor& targets, const Tensor& weights,
                           int64_t ignore_index, const Tensor& losses, const Tensor& lse) override {
    cpu_->CrossEntropyForward(AsHost(logits), AsHost(targets), AsHost(weights), ignore_index,
                              AsHost(losses), AsHost(lse));
  }
  void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, const Tensor& weights,
                            int64_t ignore_index, const Tensor& lse, const Tensor& grad_losses,
                            const Tensor& grad_logits) override {
    cpu_->CrossEntropyBackward(AsHost(logits), AsHost(targets), AsHost(weights), ignore_index,
                               AsHost(lse), AsHost(grad_losses), AsHost(grad_logits));
  }
  void Rope(const Tensor& x, const Tensor& positions, double base, bool inverse,
            const Tensor& out) override {
    cpu_->Rope(AsHost(x), AsHost(positions), base, inverse, AsHost(out));
  }
  void EmbeddingForward(const Tensor& table, const Tensor& ids, const Tensor& out) override {
    cpu_->EmbeddingForward(AsHost(table), AsHost(ids), AsHost(out));
  }
  void EmbeddingBackward(const Tensor& ids, const Tensor& grad_out,
                         const Tensor& grad_table) override {
    cpu_->EmbeddingBackward(AsHost(ids), AsHost(grad_out), AsHost(grad_table));
  }

  void AttentionForward(const AttentionArgs& args) override {
    AttentionArgs host = args;
    host.q = AsHost(args.q);
    host.k = AsHost(args.k);
    host.v = AsHost(args.v);
    host.out = AsHost(args.out);
    host.lse = AsHost(args.lse);
    cpu_->AttentionForward(host);
  }
  void AttentionBackward(const AttentionGradArgs& args) override {
    AttentionGradArgs host = args;
    host.q = AsHost(args.q);
    host.k = AsHost(args.k);
    host.v = AsHost(args.v);
    host.out = AsHost(args.out);
    host.lse = AsHost(args.lse);
    host.grad_out = AsHost(args.grad_out);
    host.grad_q = AsHost(args.grad_q);
    host.grad_k = AsHost(args.grad_k);
    host.grad_v = AsHost(args.grad_v);
    cpu_->AttentionBackward(host);
  }

  void AdamWUpdate(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                   const Tensor& exp_avg_sq, double lr, double beta1, double beta2, double eps,
                   double weight_decay, int64_t step) override {
    cpu_->AdamWUpdate(AsHost(param), AsHost(grad), AsHost(exp_avg), AsHost(exp_avg_sq), lr, beta1,
                      beta2, eps, weight_decay, step);
  }
  void AdafactorUpdate(const AdafactorArgs& args) override {
    AdafactorArgs host = args;
    for (Tensor* t : {&host.param, &host.grad, &host.row, &host.col, &host.sq, &host.exp_avg})
      *t = AsHost(*t);
    cpu_->AdafactorUpdate(host);
  }

 private:
  int index_;
  std::unique_ptr<Backend> cpu_;
};

}  // namespace

std::unique_ptr<Backend> MakeHostEmulatedCudaBackend(int index) {
  return std::make_unique<HostEmulatedCudaBackend>(index);
}

}  // namespace fam
