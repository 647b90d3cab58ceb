// Blockwise masked attention: one block of queries over a list of key/value segments, each fully
// visible (KeyMask::kAll) or bottom-right causal (KeyMask::kCausal), one softmax over the union.
// This one primitive expresses full causal attention, BSWA (memory blocks + causal block) and FAM
// (FAM rows and block tokens) — see FAM_SPEC.md §2. Forward and backward kernels live in the
// backends; this file checks the arguments, converts bf16 to f32 compute and records the node.
#include <cmath>

#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

// Compute-dtype view of x: x itself (strides kept; the kernels read strided views) when it is
// already f32/f64, else a contiguous f32 copy.
Tensor InComputeDType(const Tensor& x) {
  if (x.dtype() == ComputeDType(x.dtype())) return x.detach();
  return ForCompute(x);
}

void CheckAttentionArgs(const Tensor& q, const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                        const std::vector<KeyMask>& masks, double scale, double softcap) {
  FAM_CHECK(q.defined() && q.dim() == 4, "attention: q must be [B, Hq, Tq, D], got ",
            q.defined() ? q.Describe() : std::string("an undefined tensor"));
  FAM_CHECK(k.size() == v.size(), "attention: ", k.size(), " key segments but ", v.size(),
            " value segments");
  FAM_CHECK(masks.size() == k.size(), "attention: ", k.size(), " segments but ", masks.size(),
            " masks");
  FAM_CHECK(std::isfinite(scale), "attention: scale must be finite, got ", scale);
  FAM_CHECK(std::isfinite(softcap) && softcap >= 0,
            "attention: softcap must be finite and >= 0 (0 = off), got ", softcap);
  const int64_t batch = q.shape()[0], hq = q.shape()[1], d = q.shape()[3];
  for (size_t j = 0; j < k.size(); ++j) {
    FAM_CHECK(k[j].defined() && v[j].defined(), "attention: segment ", j, " is undefined");
    FAM_CHECK(k[j].dim() == 4 && v[j].dim() == 4, "attention: segment ", j,
              " must be k, v [B, Hkv, S, D], got k ", k[j].Describe(), " and v ", v[j].Describe());
    FAM_CHECK(k[j].shape() == v[j].shape(), "attention: segment ", j, " k ", k[j].Describe(),
              " and v ", v[j].Describe(), " differ in shape");
    const int64_t hkv = k[j].shape()[1];
    FAM_CHECK(k[j].shape()[0] == batch && k[j].shape()[3] == d, "attention: segment ", j, " k ",
              k[j].Describe(), " does not match q ", q.Describe(), " in batch or head_dim");
    FAM_CHECK(hkv > 0 && hq % hkv == 0, "attention: query heads of q ", q.Describe(),
              " are not a multiple of the kv heads of segment ", j, " k ", k[j].Describe());
    FAM_CHECK(hkv == k[0].shape()[1], "attention: segments 0 ", k[0].Describe(), " and ", j, " ",
              k[j].Describe(), " have different kv heads");
  }
}

class AttentionBackwardNode : public Node {
 public:
  AttentionBackwardNode(Tensor q, std::vector<Tensor> k, std::vector<Tensor> v,
                        std::vector<KeyMask> masks, double scale, double softcap, Tensor out,
                        Tensor lse, DType storage_dtype)
      : q_(std::move(q)),
        k_(std::move(k)),
        v_(std::move(v)),
        masks_(std::move(masks)),
        scale_(scale),
        softcap_(softcap),
        out_(std::move(out)),
        lse_(std::move(lse)),
        storage_dtype_(storage_dtype) {}

  std::vector<Tensor> Backward(const Tensor& g) override {
    AttentionGradArgs args;
    args.q = q_;
    args.k = k_;
    args.v = v_;
    args.masks = masks_;
    args.scale = scale_;
    args.softcap = softcap_;
    args.out = out_;
    args.lse = lse_;
    args.grad_out = ForCompute(g);
    const DType compute = out_.dtype();
    args.grad_q = Tensor::Empty(q_.shape(), compute, q_.device());
    for (size_t j = 0; j < k_.size(); ++j) {
      args.grad_k.push_back(Tensor::Empty(k_[j].shape(), compute, k_[j].device()));
      args.grad_v.push_back(Tensor::Empty(v_[j].shape(), compute, v_[j].device()));
    }
    GetBackend(q_.device()).AttentionBackward(args);
    std::vector<Tensor> grads;
    grads.push_back(FromCompute(args.grad_q, storage_dtype_));
    for (const Tensor& gk : args.grad_k) grads.push_back(FromCompute(gk, storage_dtype_));
    for (const Tensor& gv : args.grad_v) grads.push_back(FromCompute(gv, storage_dtype_));
    return grads;
  }
  void Release() override {
    q_ = out_ = lse_ = Tensor();
    k_.clear();
    v_.clear();
  }
  std::string name() const override { return "Attention"; }

 private:
  Tensor q_;
  std::vector<Tensor> k_, v_;  // compute dtype, possibly strided views
  std::vector<KeyMask> masks_;
  double scale_, softcap_;
  Tensor out_, lse_;  // compute dtype, contiguous
  DType storage_dtype_;
};

}  // namespace

Tensor Attention(const Tensor& q, const std::vector<Tensor>& k, const std::vector<Tensor>& v,
                 const std::vector<KeyMask>& masks, double scale, double softcap) {
  CheckAttentionArgs(q, k, v, masks, scale, softcap);
  std::vector<Tensor> inputs{q};
  inputs.insert(inputs.end(), k.begin(), k.end());
  inputs.insert(inputs.end(), v.begin(), v.end());
  Backend& backend = BackendFor("attention", inputs);
  CheckSameFloatDType("attention", inputs);

  AttentionArgs args;
  args.q = InComputeDType(q);
  for (const Tensor& t : k) args.k.push_back(InComputeDType(t));
  for (const Tensor& t : v) args.v.push_back(InComputeDType(t));
  args.masks = masks;
  args.scale = scale;
  args.softcap = softcap;
  const DType compute = args.q.dtype();
  const Shape& qs = q.shape();
  args.out = Tensor::Empty(qs, compute, q.device());
  args.lse = Tensor::Empty({qs[0], qs[1], qs[2]}, compute, q.device());
  backend.AttentionForward(args);
  Tensor out = FromCompute(args.out, q.dtype());
  if (GradEnabled() && AnyRequiresGrad(inputs)) {
    // Saved tensors are detached handles so the node never holds its own output's TensorImpl.
    auto node = std::make_shared<AttentionBackwardNode>(args.q, std::move(args.k),
                                                        std::move(args.v), masks, scale, softcap,
                                                        args.out.detach(), args.lse, q.dtype());
    RecordNode(node, inputs, out);
  }
  return out;
}

}  // namespace fam::ops
