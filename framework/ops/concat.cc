// Concatenation along an axis and its inverse, split (a list of slice views).
#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

class ConcatBackward : public Node {
 public:
  ConcatBackward(std::vector<int64_t> sizes, int axis) : sizes_(std::move(sizes)), axis_(axis) {}
  std::vector<Tensor> Backward(const Tensor& g) override { return Split(g, sizes_, axis_); }
  std::string name() const override { return "Concat"; }

 private:
  std::vector<int64_t> sizes_;
  int axis_;
};

}  // namespace

Tensor Concat(const std::vector<Tensor>& xs, int64_t axis) {
  FAM_CHECK(!xs.empty(), "concat of an empty list");
  const Tensor& first = xs[0];
  int a = NormalizeAxis(axis, first.dim());
  Backend& backend = BackendFor("concat", xs);
  Shape shape = first.shape();
  std::vector<int64_t> sizes;
  int64_t total = 0;
  for (const Tensor& x : xs) {
    FAM_CHECK(x.dtype() == first.dtype(), "concat: dtype mismatch (", first.Describe(), " and ",
              x.Describe(), ")");
    FAM_CHECK(x.dim() == first.dim(), "concat: rank mismatch (", first.Describe(), " and ",
              x.Describe(), ")");
    for (int64_t d = 0; d < x.dim(); ++d)
      FAM_CHECK(d == a || x.shape()[d] == shape[d], "concat along axis ", a, ": shapes ",
                ShapeString(first.shape()), " and ", ShapeString(x.shape()), " differ off-axis");
    sizes.push_back(x.shape()[a]);
    total += x.shape()[a];
  }
  shape[a] = total;
  Tensor out = Tensor::Empty(shape, first.dtype(), first.device());
  int64_t start = 0;
  {
    NoGradGuard no_grad;
    for (const Tensor& x : xs) {
      backend.Copy(x, Slice(out, a, start, start + x.shape()[a]));
      start += x.shape()[a];
    }
  }
  RecordNode(std::make_shared<ConcatBackward>(sizes, a), xs, out);
  return out;
}

std::vector<Tensor> Split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  int a = NormalizeAxis(axis, x.dim());
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  FAM_CHECK(total == x.shape()[a], "split sizes sum to ", total, " but axis ", a, " of ",
            x.Describe(), " has ", x.shape()[a]);
  std::vector<Tensor> parts;
  int64_t start = 0;
  for (int64_t s : sizes) {
    parts.push_back(Slice(x, a, start, start + s));
    start += s;
  }
  return parts;
}

}  // namespace fam::ops
