// Rotary position embedding (rotate-half convention of FORMATS.md) on x [B, H, T, D] with integer
// positions [T] or [B, T] (negative for the initial FAM, large with the random position offset).
// The backward is the inverse rotation of the incoming gradient.
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

class RopeBackward : public Node {
 public:
  RopeBackward(Tensor positions, const RopeSpec& rope, DType input_dtype)
      : positions_(std::move(positions)), rope_(rope), input_dtype_(input_dtype) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor gc = ForCompute(g);
    Tensor gx = Tensor::Empty(gc.shape(), gc.dtype(), gc.device());
    GetBackend(gc.device()).Rope(gc, positions_, rope_, /*inverse=*/true, gx);
    return {FromCompute(gx, input_dtype_), Tensor()};
  }
  void Release() override { positions_ = Tensor(); }
  std::string name() const override { return "Rope"; }

 private:
  Tensor positions_;  // [B, T] i64, contiguous
  RopeSpec rope_;
  DType input_dtype_;
};

}  // namespace

Tensor Rope(const Tensor& x, const Tensor& positions, const RopeSpec& rope) {
  Backend& backend = BackendFor("rope", {x, positions});
  CheckSameFloatDType("rope", {x});
  FAM_CHECK(x.dim() == 4, "rope: x must be [B, H, T, D], got ", x.Describe());
  const int64_t b = x.shape()[0], t = x.shape()[2], d = x.shape()[3];
  FAM_CHECK(d % 2 == 0, "rope: head dim D must be even, got x ", x.Describe());
  FAM_CHECK(rope.base > 0, "rope: base must be > 0, got ", rope.base);
  FAM_CHECK(rope.scaling == RopeScaling::kNone || rope.factor > 0,
            "rope: scaling factor must be > 0, got ", rope.factor);
  FAM_CHECK(rope.scaling != RopeScaling::kLlama3 ||
                (rope.high_freq_factor > rope.low_freq_factor && rope.low_freq_factor > 0 &&
                 rope.original_context > 0),
            "rope: llama3 scaling needs 0 < low_freq_factor < high_freq_factor and a positive "
            "original context, got ",
            rope.low_freq_factor, ", ", rope.high_freq_factor, ", ", rope.original_context);
  const bool index_dtype = positions.dtype() == DType::kI32 || positions.dtype() == DType::kI64;
  const bool shape_ok = (positions.dim() == 1 && positions.shape()[0] == t) ||
                        (positions.dim() == 2 && positions.shape()[1] == t &&
                         (positions.shape()[0] == b || positions.shape()[0] == 1));
  FAM_CHECK(index_dtype && shape_ok, "rope: positions ", positions.Describe(), " do not match x ",
            x.Describe(), " (need i32/i64 [T] or [B, T])");

  Tensor pos = Tensor::Empty({b, t}, DType::kI64, x.device());
  {
    NoGradGuard no_grad;
    backend.Copy(Expand(positions.detach(), {b, t}), pos);
  }
  Tensor xc = ForCompute(x);
  Tensor y = Tensor::Empty(x.shape(), xc.dtype(), x.device());
  backend.Rope(xc, pos, rope, /*inverse=*/false, y);
  Tensor out = FromCompute(y, x.dtype());
  if (GradEnabled() && AnyRequiresGrad({x}))
    RecordNode(std::make_shared<RopeBackward>(pos, rope, x.dtype()), {x, positions}, out);
  return out;
}

}  // namespace fam::ops
