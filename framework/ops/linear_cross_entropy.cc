// Chunked LM head + cross-entropy: the per-row losses of CrossEntropy(Linear(hidden, weight))
// computed a chunk of rows at a time, so the [N, V] logits and their gradient never exist at once.
// The forward keeps only the row log-sum-exp [N]; the backward recomputes each chunk's logits into
// one [chunk, V] buffer, turns it into grad_logits in place, and multiplies it out into grad_hidden
// and grad_weight (accumulated over chunks with GEMM beta = 1).
#include <algorithm>

#include "framework/ops/op_util.h"

namespace fam::ops {
namespace {

// Rows [start, start + rows) of a contiguous tensor (a view; shares storage).
Tensor Rows(const Tensor& t, int64_t start, int64_t rows) {
  NoGradGuard no_grad;
  return Slice(t, 0, start, start + rows);
}

// c [m, n] = alpha · op(a) · op(b) + beta · c for contiguous 2-D operands.
void Gemm2d(Backend& backend, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
            const Tensor& c, double beta) {
  GemmArgs g;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.m = c.size(0);
  g.n = c.size(1);
  g.k = trans_a ? a.size(0) : a.size(1);
  g.a = a;
  g.lda = a.size(1);
  g.b = b;
  g.ldb = b.size(1);
  g.c = c;
  g.ldc = c.size(1);
  g.beta = beta;
  if (g.k == 0) {
    if (beta == 0.0) backend.Fill(c, 0.0);
    return;
  }
  backend.Gemm(g);
}

int64_t ChunkRows(int64_t chunk_rows, int64_t n) {
  return chunk_rows <= 0 ? std::max<int64_t>(n, 1) : std::min(chunk_rows, std::max<int64_t>(n, 1));
}

class LinearCrossEntropyBackward : public Node {
 public:
  LinearCrossEntropyBackward(Tensor hidden, Tensor weight, Tensor targets, Tensor weights,
                             Tensor weights_stored, int64_t ignore_index, int64_t chunk_rows,
                             Tensor lse, Tensor nll)
      : hidden_(std::move(hidden)),
        weight_(std::move(weight)),
        targets_(std::move(targets)),
        weights_(std::move(weights)),
        weights_stored_(std::move(weights_stored)),
        ignore_index_(ignore_index),
        chunk_rows_(chunk_rows),
        lse_(std::move(lse)),
        nll_(std::move(nll)) {}

  std::vector<Tensor> Backward(const Tensor& g) override {
    Backend& backend = GetBackend(lse_.device());
    Tensor gc = ForCompute(g);
    const bool want_hidden = next[0] != nullptr, want_weight = next[1] != nullptr;
    Tensor grad_hidden, grad_weight, grad_weights;
    if (want_hidden || want_weight) {
      Tensor hc = ForCompute(hidden_), wc = ForCompute(weight_);
      const int64_t n = hc.size(0), vocab = wc.size(0);
      if (want_hidden) grad_hidden = Tensor::Empty(hc.shape(), hc.dtype(), hc.device());
      if (want_weight) grad_weight = Tensor::Empty(wc.shape(), wc.dtype(), wc.device());
      if (want_weight && n == 0) backend.Fill(grad_weight, 0.0);
      const int64_t chunk = ChunkRows(chunk_rows_, n);
      // One buffer: the chunk's logits, overwritten in place by its grad_logits.
      Tensor buffer = Tensor::Empty({chunk, vocab}, hc.dtype(), hc.device());
      for (int64_t start = 0; start < n; start += chunk) {
        const int64_t rows = std::min(chunk, n - start);
        Tensor h = Rows(hc, start, rows);
        Tensor buf = Rows(buffer, 0, rows);
        Gemm2d(backend, h, false, wc, true, buf, 0.0);  // logits = h · Wᵀ
        backend.CrossEntropyBackward(buf, Rows(targets_, start, rows),
                                     weights_.defined() ? Rows(weights_, start, rows) : Tensor(),
                                     ignore_index_, Rows(lse_, start, rows), Rows(gc, start, rows),
                                     buf);
        // grad_hidden rows = g · W;  grad_W (+)= gᵀ · h.
        if (want_hidden)
          Gemm2d(backend, buf, false, wc, false, Rows(grad_hidden, start, rows), 0.0);
        if (want_weight) Gemm2d(backend, buf, true, h, false, grad_weight, start == 0 ? 0.0 : 1.0);
      }
      if (want_hidden) grad_hidden = FromCompute(grad_hidden, hidden_.dtype());
      if (want_weight) grad_weight = FromCompute(grad_weight, weight_.dtype());
    }
    if (next.size() > 3 && next[3] && nll_.defined()) {
      grad_weights = Tensor::Empty(nll_.shape(), nll_.dtype(), nll_.device());
      backend.Binary(BinaryOp::kMul, gc, nll_, grad_weights);
      grad_weights = FromCompute(grad_weights, weights_stored_.dtype());
    }
    return {grad_hidden, grad_weight, Tensor(), grad_weights};
  }
  void Release() override {
    hidden_ = weight_ = targets_ = weights_ = weights_stored_ = lse_ = nll_ = Tensor();
  }
  std::string name() const override { return "LinearCrossEntropy"; }

 private:
  Tensor hidden_;          // [N, d] as given (storage dtype)
  Tensor weight_;          // [V, d] as given
  Tensor targets_;         // contiguous i32/i64 [N]
  Tensor weights_;         // compute dtype [N] or undefined
  Tensor weights_stored_;  // as given, for the gradient's dtype
  int64_t ignore_index_;
  int64_t chunk_rows_;
  Tensor lse_;  // [N], compute dtype
  Tensor nll_;  // unweighted losses [N] when the weights need a gradient
};

}  // namespace

Tensor LinearCrossEntropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                          const Tensor& weights, int64_t chunk_rows, int64_t ignore_index) {
  Backend& backend = BackendFor("linear_cross_entropy", {hidden, weight, targets, weights});
  CheckSameFloatDType("linear_cross_entropy", {hidden, weight, weights});
  FAM_CHECK(hidden.dim() == 2, "linear_cross_entropy: hidden must be [N, d], got ",
            hidden.Describe());
  FAM_CHECK(weight.dim() == 2 && weight.size(1) == hidden.size(1), "linear_cross_entropy: weight ",
            weight.Describe(), " does not match hidden ", hidden.Describe(), " (need [V, d])");
  const int64_t n = hidden.size(0), vocab = weight.size(0);
  CheckCrossEntropyInputs("linear_cross_entropy", "hidden " + hidden.Describe(), targets, weights,
                          n, vocab, ignore_index);

  Tensor hc = ForCompute(hidden), wc = ForCompute(weight);
  Tensor tc = ContiguousIndices(targets);
  Tensor wtc = weights.defined() ? ForCompute(weights) : Tensor();
  const bool weights_need_grad = weights.defined() && AnyRequiresGrad({weights});
  Tensor nll = Tensor::Empty({n}, hc.dtype(), hc.device());
  Tensor lse = Tensor::Empty({n}, hc.dtype(), hc.device());
  const int64_t chunk = ChunkRows(chunk_rows, n);
  Tensor buffer = Tensor::Empty({n == 0 ? 0 : chunk, vocab}, hc.dtype(), hc.device());
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t rows = std::min(chunk, n - start);
    Tensor buf = Rows(buffer, 0, rows);
    Gemm2d(backend, Rows(hc, start, rows), false, wc, true, buf, 0.0);  // logits = h · Wᵀ
    // With weights needing a gradient, keep the unweighted losses and weight them below.
    backend.CrossEntropyForward(
        buf, Rows(tc, start, rows),
        wtc.defined() && !weights_need_grad ? Rows(wtc, start, rows) : Tensor(), ignore_index,
        Rows(nll, start, rows), Rows(lse, start, rows));
  }
  buffer = Tensor();
  Tensor losses = nll;
  if (weights_need_grad) {
    losses = Tensor::Empty({n}, hc.dtype(), hc.device());
    backend.Binary(BinaryOp::kMul, nll, wtc, losses);
  }
  if (GradEnabled() && AnyRequiresGrad({hidden, weight, weights})) {
    auto node = std::make_shared<LinearCrossEntropyBackward>(
        hidden.detach(), weight.detach(), tc, wtc, weights.defined() ? weights.detach() : Tensor(),
        ignore_index, chunk_rows, lse, weights_need_grad ? nll : Tensor());
    RecordNode(node, {hidden, weight, targets, weights}, losses);
  }
  return losses;
}

}  // namespace fam::ops
