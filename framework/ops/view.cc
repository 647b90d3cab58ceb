// Views: reshape, transpose, permute, slice, (un)squeeze, expand. They share storage with their
// input; backward maps the gradient back to the input's shape.
#include <numeric>

#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

Tensor ViewOf(const Tensor& x, const Shape& shape, const Strides& strides, int64_t offset) {
  return Tensor::MakeView(x.storage(), shape, strides, offset, x.dtype());
}

class ReshapeBackward : public Node {
 public:
  explicit ReshapeBackward(Shape input_shape) : input_shape_(std::move(input_shape)) {}
  std::vector<Tensor> Backward(const Tensor& g) override { return {Reshape(g, input_shape_)}; }
  std::string name() const override { return "Reshape"; }

 private:
  Shape input_shape_;
};

class PermuteBackward : public Node {
 public:
  explicit PermuteBackward(std::vector<int64_t> inverse) : inverse_(std::move(inverse)) {}
  std::vector<Tensor> Backward(const Tensor& g) override { return {Permute(g, inverse_)}; }
  std::string name() const override { return "Permute"; }

 private:
  std::vector<int64_t> inverse_;
};

class SliceBackward : public Node {
 public:
  SliceBackward(Shape input_shape, int axis, int64_t start)
      : input_shape_(std::move(input_shape)), axis_(axis), start_(start) {}
  std::vector<Tensor> Backward(const Tensor& g) override {
    Tensor grad = Tensor::Zeros(input_shape_, g.dtype(), g.device());
    CopyInPlace(Slice(grad, axis_, start_, start_ + g.shape()[axis_]), g);
    return {grad};
  }
  bool BackwardRegion(const Tensor& g, GradRegion* region) override {
    *region = {g, axis_, start_, input_shape_};
    return true;
  }
  std::string name() const override { return "Slice"; }

 private:
  Shape input_shape_;
  int axis_;
  int64_t start_;
};

class ExpandBackward : public Node {
 public:
  explicit ExpandBackward(Shape input_shape) : input_shape_(std::move(input_shape)) {}
  std::vector<Tensor> Backward(const Tensor& g) override { return {SumToShape(g, input_shape_)}; }
  std::string name() const override { return "Expand"; }

 private:
  Shape input_shape_;
};

}  // namespace

Tensor Reshape(const Tensor& x, Shape shape) {
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      FAM_CHECK(infer < 0, "reshape ", ShapeString(shape), ": only one dimension may be -1");
      infer = static_cast<int>(i);
    } else {
      FAM_CHECK(shape[i] >= 0, "reshape: invalid dimension in ", ShapeString(shape));
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    FAM_CHECK(known > 0 && x.numel() % known == 0, "cannot reshape ", x.Describe(), " to ",
              ShapeString(shape));
    shape[infer] = x.numel() / known;
  }
  FAM_CHECK(NumElements(shape) == x.numel(), "cannot reshape ", x.Describe(), " to ",
            ShapeString(shape), " (", x.numel(), " elements vs ", NumElements(shape), ")");
  if (shape == x.shape()) return x;
  Tensor base = x.is_contiguous() ? x : Contiguous(x);
  Tensor out = ViewOf(base, shape, ContiguousStrides(shape), base.offset());
  RecordNode(std::make_shared<ReshapeBackward>(x.shape()), {base}, out);
  return out;
}

Tensor Permute(const Tensor& x, const std::vector<int64_t>& dims) {
  const int64_t rank = x.dim();
  FAM_CHECK(static_cast<int64_t>(dims.size()) == rank, "permute: ", dims.size(),
            " dims for a tensor of rank ", rank);
  std::vector<int64_t> inverse(rank, -1);
  Shape shape(rank);
  Strides strides(rank);
  for (int64_t i = 0; i < rank; ++i) {
    int d = NormalizeAxis(dims[i], rank);
    FAM_CHECK(inverse[d] < 0, "permute: axis ", d, " repeated");
    inverse[d] = i;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor out = ViewOf(x, shape, strides, x.offset());
  RecordNode(std::make_shared<PermuteBackward>(inverse), {x}, out);
  return out;
}

Tensor Transpose(const Tensor& x, int64_t a, int64_t b) {
  std::vector<int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[NormalizeAxis(a, x.dim())], dims[NormalizeAxis(b, x.dim())]);
  return Permute(x, dims);
}

Tensor Slice(const Tensor& x, int64_t axis, int64_t start, int64_t end) {
  int a = NormalizeAxis(axis, x.dim());
  const int64_t n = x.shape()[a];
  if (start < 0) start += n;
  if (end < 0) end += n;
  FAM_CHECK(0 <= start && start <= end && end <= n, "slice [", start, ", ", end,
            ") out of range for axis ", a, " of ", x.Describe());
  Shape shape = x.shape();
  shape[a] = end - start;
  Tensor out = ViewOf(x, shape, x.strides(), x.offset() + start * x.strides()[a]);
  RecordNode(std::make_shared<SliceBackward>(x.shape(), a, start), {x}, out);
  return out;
}

Tensor Unsqueeze(const Tensor& x, int64_t axis) {
  int a = NormalizeAxis(axis, x.dim() + 1);
  Shape shape = x.shape();
  shape.insert(shape.begin() + a, 1);
  return Reshape(x, shape);
}

Tensor Squeeze(const Tensor& x, int64_t axis) {
  int a = NormalizeAxis(axis, x.dim());
  FAM_CHECK(x.shape()[a] == 1, "squeeze: axis ", a, " of ", x.Describe(), " is not 1");
  Shape shape = x.shape();
  shape.erase(shape.begin() + a);
  return Reshape(x, shape);
}

Tensor Expand(const Tensor& x, const Shape& shape) {
  FAM_CHECK(shape.size() >= x.shape().size(), "cannot expand ", x.Describe(), " to ",
            ShapeString(shape));
  if (shape == x.shape()) return x;
  const size_t lead = shape.size() - x.shape().size();
  Strides strides(shape.size(), 0);
  for (size_t i = 0; i < x.shape().size(); ++i) {
    int64_t d = x.shape()[i];
    FAM_CHECK(d == shape[lead + i] || d == 1, "cannot expand ", x.Describe(), " to ",
              ShapeString(shape));
    strides[lead + i] = d == 1 && shape[lead + i] != 1 ? 0 : x.strides()[i];
  }
  Tensor out = ViewOf(x, shape, strides, x.offset());
  RecordNode(std::make_shared<ExpandBackward>(x.shape()), {x}, out);
  return out;
}

Tensor SumToShape(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const size_t lead = grad.shape().size() - shape.size();
  std::vector<int64_t> axes;
  for (size_t i = 0; i < grad.shape().size(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && grad.shape()[i] != 1))
      axes.push_back(static_cast<int64_t>(i));
  }
  Tensor summed = Sum(grad, axes, /*keepdim=*/true);
  return Reshape(summed, shape);
}

}  // namespace fam::ops
