// Batched matrix products through the backend GEMM. Views with unit stride in either of the two
// matrix dims are passed as (transposed) operands without copying; broadcast batch dims use batch
// stride 0.
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

struct Operand {
  Tensor t;  // expanded to the batch shape, possibly copied to be GEMM-able
  bool trans = false;
  int64_t ld = 0;
  int64_t batch_stride = 0;
};

// Whether the batch dims [0, nb) of x can be walked with a single stride; sets it.
bool FlatBatchStride(const Tensor& x, int64_t nb, int64_t* stride) {
  int64_t s = 0;
  bool all_zero = true, first = true;
  int64_t expected = 0;
  for (int64_t d = nb - 1; d >= 0; --d) {
    if (x.shape()[d] == 1) continue;
    if (x.strides()[d] != 0) all_zero = false;
    if (first) {
      s = x.strides()[d];
      expected = s * x.shape()[d];
      first = false;
    } else {
      if (x.strides()[d] != expected) return false;
      expected *= x.shape()[d];
    }
  }
  if (all_zero) s = 0;
  else if (s == 0) return false;
  *stride = s;
  return true;
}

Operand Prepare(const Tensor& x, const Shape& batch) {
  NoGradGuard no_grad;
  Shape shape = batch;
  shape.push_back(x.shape()[x.dim() - 2]);
  shape.push_back(x.shape()[x.dim() - 1]);
  Operand op;
  op.t = Expand(x, shape);
  const int64_t r = op.t.dim(), rows = shape[r - 2], cols = shape[r - 1];
  const int64_t nb = r - 2;
  auto layout_ok = [&](const Tensor& t) {
    const int64_t s_rows = t.strides()[r - 2], s_cols = t.strides()[r - 1];
    if ((cols == 1 || s_cols == 1) && (rows == 1 || s_rows >= cols)) {
      op.trans = false;
      op.ld = rows == 1 ? std::max<int64_t>(cols, 1) : s_rows;
      return true;
    }
    if ((rows == 1 || s_rows == 1) && (cols == 1 || s_cols >= rows)) {
      op.trans = true;
      op.ld = cols == 1 ? std::max<int64_t>(rows, 1) : s_cols;
      return true;
    }
    return false;
  };
  if (!layout_ok(op.t) || !FlatBatchStride(op.t, nb, &op.batch_stride)) {
    op.t = Contiguous(op.t);
    op.trans = false;
    op.ld = std::max<int64_t>(cols, 1);
    op.batch_stride = rows * cols;
  }
  if (cols == 1 && rows == 1) op.ld = 1;
  return op;
}

Tensor MatmulForward(const Tensor& a, const Tensor& b) {
  Backend& backend = BackendFor("matmul", {a, b});
  CheckSameFloatDType("matmul", {a, b});
  FAM_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul needs operands of rank >= 2, got ", a.Describe(),
            " and ", b.Describe());
  const int64_t m = a.shape()[a.dim() - 2], k = a.shape()[a.dim() - 1];
  const int64_t kb = b.shape()[b.dim() - 2], n = b.shape()[b.dim() - 1];
  FAM_CHECK(k == kb, "matmul: inner dimensions differ: ", a.Describe(), " · ", b.Describe());
  Shape batch_a(a.shape().begin(), a.shape().end() - 2);
  Shape batch_b(b.shape().begin(), b.shape().end() - 2);
  Shape batch = BroadcastShapes(batch_a, batch_b);

  Tensor ac = a.dtype() == ComputeDType(a.dtype()) ? a.detach() : ForCompute(a);
  Tensor bc = b.dtype() == ComputeDType(b.dtype()) ? b.detach() : ForCompute(b);
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = Tensor::Empty(out_shape, ac.dtype(), a.device());

  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.ldc = n;
  g.stride_c = m * n;
  g.batch = NumElements(batch);
  g.c = out;
  // A batch of matrices times one shared matrix: fold the batch into M (one big GEMM).
  Operand ob = Prepare(bc, batch);
  Tensor a_flat;
  if (ob.batch_stride == 0 && g.batch > 1 && ac.dim() >= 2) {
    NoGradGuard no_grad;
    Tensor ae = Contiguous(Expand(ac, [&] {
      Shape s = batch;
      s.push_back(m);
      s.push_back(k);
      return s;
    }()));
    g.m = g.batch * m;
    g.batch = 1;
    g.a = ae;
    g.trans_a = false;
    g.lda = std::max<int64_t>(k, 1);
    g.stride_a = 0;
  } else {
    Operand oa = Prepare(ac, batch);
    g.a = oa.t;
    g.trans_a = oa.trans;
    g.lda = oa.ld;
    g.stride_a = oa.batch_stride;
  }
  g.b = ob.t;
  g.trans_b = ob.trans;
  g.ldb = ob.ld;
  g.stride_b = ob.batch_stride;
  if (k == 0) {
    backend.Fill(out, 0.0);
  } else {
    backend.Gemm(g);
  }
  return FromCompute(out, a.dtype());
}

class MatmulBackward : public Node {
 public:
  MatmulBackward(Tensor a, Tensor b) : a_(std::move(a)), b_(std::move(b)) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor ga, gb;
    if (next[0]) ga = SumToShape(MatmulForward(g, Transpose(b_, -1, -2)), a_.shape());
    if (next[1]) {
      if (b_.dim() == 2 && a_.dim() > 2) {
        // Shared weight: one GEMM over the flattened batch instead of a batch of partial sums.
        const int64_t k = a_.shape().back(), n = b_.shape().back();
        gb = MatmulForward(Transpose(Reshape(a_, {-1, k}), 0, 1), Reshape(Contiguous(g), {-1, n}));
      } else {
        gb = SumToShape(MatmulForward(Transpose(a_, -1, -2), g), b_.shape());
      }
    }
    return {ga, gb};
  }
  void Release() override { a_ = b_ = Tensor(); }
  std::string name() const override { return "Matmul"; }

 private:
  Tensor a_, b_;
};

}  // namespace

Tensor Matmul(const Tensor& a, const Tensor& b) {
  if (b.dim() == 1) return Squeeze(Matmul(a, Unsqueeze(b, 1)), -1);
  Tensor out = MatmulForward(a, b);
  if (GradEnabled() && AnyRequiresGrad({a, b}))
    RecordNode(std::make_shared<MatmulBackward>(a.detach(), b.detach()), {a, b}, out);
  return out;
}

Tensor Linear(const Tensor& x, const Tensor& w) {
  FAM_CHECK(w.dim() == 2, "linear: weight must be [out, in], got ", w.Describe());
  FAM_CHECK(x.dim() >= 1 && x.shape().back() == w.shape()[1], "linear: input ", x.Describe(),
            " does not match weight ", w.Describe(), " (in_features ", w.shape()[1], ")");
  if (x.dim() == 1) return Squeeze(Linear(Unsqueeze(x, 0), w), 0);
  return Matmul(x, Transpose(w, 0, 1));
}

}  // namespace fam::ops
