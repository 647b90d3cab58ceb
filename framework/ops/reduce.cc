// Sum and mean over axes (keepdim optional); backward broadcasts the gradient back.
#include <algorithm>

#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

class SumBackward : public Node {
 public:
  SumBackward(Shape input_shape, Shape kept_shape, double scale)
      : input_shape_(std::move(input_shape)), kept_shape_(std::move(kept_shape)), scale_(scale) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor gk = Reshape(g, kept_shape_);
    if (scale_ != 1.0) gk = Scale(gk, scale_);
    return {Contiguous(Expand(gk, input_shape_))};
  }
  std::string name() const override { return "Sum"; }

 private:
  Shape input_shape_, kept_shape_;
  double scale_;
};

Tensor SumImpl(const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim, bool mean) {
  CheckSameFloatDType(mean ? "mean" : "sum", {x});
  std::vector<int> axes;
  for (int64_t a : axes_in) axes.push_back(NormalizeAxis(a, x.dim()));
  std::sort(axes.begin(), axes.end());
  axes.erase(std::unique(axes.begin(), axes.end()), axes.end());
  Shape kept = x.shape();
  int64_t count = 1;
  for (int a : axes) {
    count *= kept[a];
    kept[a] = 1;
  }
  Tensor xc = ForCompute(x);
  Tensor out = Tensor::Empty(kept, xc.dtype(), x.device());
  Backend& backend = GetBackend(x.device());
  backend.ReduceSum(xc, axes, out);
  double scale = mean ? 1.0 / static_cast<double>(std::max<int64_t>(count, 1)) : 1.0;
  if (mean) backend.Affine(out, scale, 0.0, out);
  Shape shape;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (keepdim || !std::binary_search(axes.begin(), axes.end(), static_cast<int>(d)))
      shape.push_back(kept[d]);
  Tensor result = FromCompute(out, x.dtype());
  result = Tensor::MakeView(result.storage(), shape, ContiguousStrides(shape), 0, result.dtype());
  RecordNode(std::make_shared<SumBackward>(x.shape(), kept, scale), {x}, result);
  return result;
}

std::vector<int64_t> AllAxes(const Tensor& x) {
  std::vector<int64_t> axes(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) axes[i] = i;
  return axes;
}

}  // namespace

Tensor Sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  return SumImpl(x, axes, keepdim, false);
}
Tensor Mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  return SumImpl(x, axes, keepdim, true);
}
Tensor SumAll(const Tensor& x) { return SumImpl(x, AllAxes(x), false, false); }
Tensor MeanAll(const Tensor& x) { return SumImpl(x, AllAxes(x), false, true); }

}  // namespace fam::ops
