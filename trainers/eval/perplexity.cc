#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/data/loader.h"
#include "framework/data/token_shard.h"
#include "framework/ops/ops.h"
#include "trainers/eval/evaluate.h"

namespace fam::eval {

double SumCrossEntropy(const FamModel& model, const Tensor& inputs, const Tensor& targets) {
  NoGradGuard no_grad;
  // The chunked LM head + cross-entropy: at most 2048 × vocab logits at once.
  ForwardOptions fo;
  fo.compute_logits = false;
  Tensor hidden = model.Forward(inputs, fo).hidden;
  Tensor losses = model.TokenLosses(hidden, ops::Reshape(targets, {-1}), Tensor(), 2048);
  double sum = 0;
  for (double x : losses.ToDoubles()) sum += x;
  return sum;
}

absl::StatusOr<PerplexityResult> WindowPerplexity(const FamModel& model,
                                                  const std::string& val_glob, int64_t seq_len,
                                                  int64_t max_windows) {
  absl::StatusOr<std::vector<std::string>> shards = data::ExpandShardGlob(val_glob);
  if (!shards.ok()) return shards.status();
  data::LoaderOptions lo;
  lo.shards = *shards;
  lo.seq_len = seq_len;
  lo.global_batch = 1;
  lo.micro_batch = 1;
  lo.shuffle = false;
  lo.max_vocab_size = model.config().vocab_size;
  absl::StatusOr<data::DataLoader> loader = data::DataLoader::Open(lo);
  if (!loader.ok()) return loader.status();
  int64_t windows = loader->NumWindows();
  if (max_windows > 0) windows = std::min(windows, max_windows);
  PerplexityResult r;
  r.mode = "windows";
  double total = 0;
  for (int64_t w = 0; w < windows; ++w) {
    absl::StatusOr<data::Batch> batch = loader->ReadWindows({w});
    if (!batch.ok()) return batch.status();
    absl::Status s =
        CatchToStatus([&] { total += SumCrossEntropy(model, batch->inputs, batch->targets); });
    if (!s.ok()) return s;
    r.tokens += batch->targets.numel();
  }
  r.sequences = windows;
  r.loss = r.tokens > 0 ? total / static_cast<double>(r.tokens) : 0.0;
  r.ppl = std::exp(r.loss);
  return r;
}

PerplexityResult StreamingPerplexity(const FamModel& model, const std::vector<int64_t>& tokens,
                                     int64_t chunk) {
  FAM_CHECK(tokens.size() >= 2, "streaming perplexity needs at least 2 tokens, got ",
            tokens.size());
  if (chunk <= 0) chunk = DefaultChunk(model.config());
  NoGradGuard no_grad;
  StreamingState state = model.NewStreamingState(1);
  const int64_t n = static_cast<int64_t>(tokens.size()) - 1;  // predicted positions
  double total = 0;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    std::vector<int64_t> in(tokens.begin() + begin, tokens.begin() + begin + len);
    std::vector<int64_t> target(tokens.begin() + begin + 1, tokens.begin() + begin + len + 1);
    Tensor logits = model.ForwardStreaming(Tensor::FromInts(in, {1, len}), state);
    Tensor losses = ops::CrossEntropy(ops::Reshape(logits, {len, logits.size(-1)}),
                                      model.OnDevice(Tensor::FromInts(target, {len})));
    for (double x : losses.ToDoubles()) total += x;
  }
  PerplexityResult r;
  r.mode = "stream";
  r.tokens = n;
  r.sequences = 1;
  r.loss = total / static_cast<double>(n);
  r.ppl = std::exp(r.loss);
  return r;
}

absl::StatusOr<std::vector<int64_t>> ReadShardTokens(const std::string& glob, int64_t max_tokens,
                                                     int64_t vocab_size) {
  absl::StatusOr<std::vector<std::string>> paths = data::ExpandShardGlob(glob);
  if (!paths.ok()) return paths.status();
  std::vector<int64_t> tokens;
  for (const std::string& path : *paths) {
    if (max_tokens > 0 && static_cast<int64_t>(tokens.size()) >= max_tokens) break;
    absl::StatusOr<data::TokenShard> shard = data::TokenShard::Open(path);
    if (!shard.ok()) return shard.status();
    if (shard->vocab_size() > vocab_size)
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": shard vocabulary ", shard->vocab_size(), " exceeds the model's ", vocab_size));
    int64_t count = shard->size();
    if (max_tokens > 0) count = std::min(count, max_tokens - static_cast<int64_t>(tokens.size()));
    const size_t at = tokens.size();
    tokens.resize(at + count);
    absl::Status s = CatchToStatus([&] { shard->Read(0, count, tokens.data() + at); });
    if (!s.ok()) return s;
  }
  return tokens;
}

}  // namespace fam::eval
