// Embedding gather: table [V, D] and integer ids of any shape → ids.shape + [D]. Ids are checked
// against V (the error names the id, its flat position and V). The backward scatter-adds the
// output gradient rows into a zero gradient table.
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

// A contiguous copy of t in its own dtype (t itself, detached, when already contiguous).
Tensor ContiguousSameDType(const Tensor& t) {
  if (t.is_contiguous()) return t.detach();
  Tensor out = Tensor::Empty(t.shape(), t.dtype(), t.device());
  GetBackend(t.device()).Copy(t, out);
  return out;
}

class EmbeddingBackward : public Node {
 public:
  EmbeddingBackward(Tensor ids, int64_t vocab, int64_t dim, DType table_dtype)
      : ids_(std::move(ids)), vocab_(vocab), dim_(dim), table_dtype_(table_dtype) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor gc = ForCompute(g);
    const int64_t n = ids_.numel();
    Tensor rows = Tensor::MakeView(gc.storage(), {n, dim_}, ContiguousStrides({n, dim_}),
                                   gc.offset(), gc.dtype());
    Tensor grad_table = Tensor::Zeros({vocab_, dim_}, gc.dtype(), gc.device());
    GetBackend(gc.device()).EmbeddingBackward(ids_, rows, grad_table);
    return {FromCompute(grad_table, table_dtype_), Tensor()};
  }
  void Release() override { ids_ = Tensor(); }
  std::string name() const override { return "Embedding"; }

 private:
  Tensor ids_;  // contiguous i32/i64, flattened [N]
  int64_t vocab_, dim_;
  DType table_dtype_;
};

}  // namespace

Tensor Embedding(const Tensor& table, const Tensor& ids) {
  Backend& backend = BackendFor("embedding", {table, ids});
  CheckSameFloatDType("embedding", {table});
  FAM_CHECK(table.dim() == 2, "embedding: table must be [V, D], got ", table.Describe());
  FAM_CHECK(ids.dtype() == DType::kI32 || ids.dtype() == DType::kI64,
            "embedding: ids must be i32 or i64, got ", ids.Describe());
  const int64_t vocab = table.shape()[0], dim = table.shape()[1], n = ids.numel();
  CheckIndexRange("embedding", "id", ids, vocab);

  // A gather is a copy: it runs in the table's storage dtype (bf16 included) without conversion.
  Tensor tc = ContiguousSameDType(table);
  Tensor flat = ContiguousSameDType(ids);
  flat = Tensor::MakeView(flat.storage(), {n}, {1}, flat.offset(), flat.dtype());
  Shape out_shape = ids.shape();
  out_shape.push_back(dim);
  Tensor out = Tensor::Empty(out_shape, table.dtype(), table.device());
  backend.EmbeddingForward(
      tc, flat,
      Tensor::MakeView(out.storage(), {n, dim}, ContiguousStrides({n, dim}), 0, out.dtype()));
  if (GradEnabled() && AnyRequiresGrad({table}))
    RecordNode(std::make_shared<EmbeddingBackward>(flat, vocab, dim, table.dtype()), {table, ids},
               out);
  return out;
}

}  // namespace fam::ops
