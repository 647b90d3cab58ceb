#include "framework/data/loader.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "framework/core/error.h"
#include "framework/core/rng.h"

namespace fam::data {

absl::StatusOr<std::vector<std::string>> ExpandShardGlob(const std::string& patterns) {
  std::vector<std::string> paths;
  for (absl::string_view piece : absl::StrSplit(patterns, ',')) {
    std::string pattern(absl::StripAsciiWhitespace(piece));
    if (pattern.empty()) continue;
    if (pattern.find_first_of("*?[") == std::string::npos) {
      paths.push_back(pattern);
      continue;
    }
    glob_t matches;
    int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
    if (rc == GLOB_NOMATCH) {
      ::globfree(&matches);
      return absl::NotFoundError(absl::StrCat("no token shard matches '", pattern, "'"));
    }
    if (rc != 0) {
      ::globfree(&matches);
      return absl::InternalError(absl::StrCat("glob failed for '", pattern, "'"));
    }
    std::vector<std::string> found(matches.gl_pathv, matches.gl_pathv + matches.gl_pathc);
    ::globfree(&matches);
    std::sort(found.begin(), found.end());
    paths.insert(paths.end(), found.begin(), found.end());
  }
  if (paths.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("empty token shard list '", patterns, "'"));
  }
  return paths;
}

absl::StatusOr<DataLoader> DataLoader::Open(const LoaderOptions& options) {
  const LoaderOptions& o = options;
  if (o.shards.empty()) return absl::InvalidArgumentError("data loader: no shards given");
  if (o.seq_len <= 0 || o.micro_batch <= 0 || o.global_batch < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data loader: seq_len ", o.seq_len, ", micro_batch ", o.micro_batch, ", global_batch ",
        o.global_batch, " (seq_len and micro_batch must be > 0, global_batch >= 0)"));
  }
  if (o.world_size <= 0 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("data loader: rank ", o.rank, " of world_size ", o.world_size));
  }
  if (o.global_batch % (static_cast<int64_t>(o.world_size) * o.micro_batch) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("data loader: global_batch ", o.global_batch,
                                                   " is not a multiple of world_size ",
                                                   o.world_size, " x micro_batch ", o.micro_batch));
  }
  DataLoader loader;
  loader.options_ = options;
  for (const std::string& path : o.shards) {
    absl::StatusOr<TokenShard> shard = TokenShard::Open(path, o.verify_checksums);
    if (!shard.ok()) return shard.status();
    if (loader.shards_.empty()) {
      loader.vocab_size_ = shard->vocab_size();
    } else if (shard->vocab_size() != loader.vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data loader: shard ", path, " has vocab_size ", shard->vocab_size(), " but ",
          o.shards.front(), " has ", loader.vocab_size_, " (shards of different tokenizers?)"));
    }
    if (o.max_vocab_size > 0 && shard->vocab_size() > o.max_vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("data loader: shard ", path, " vocab_size ", shard->vocab_size(),
                       " exceeds the model's vocab_size ", o.max_vocab_size));
    }
    loader.shard_starts_.push_back(loader.total_tokens_);
    loader.total_tokens_ += shard->size();
    loader.shards_.push_back(*std::move(shard));
  }
  if (o.use_weights) {
    absl::Status status = loader.OpenWeights();
    if (!status.ok()) return status;
  }
  loader.num_windows_ = loader.total_tokens_ > 0 ? (loader.total_tokens_ - 1) / o.seq_len : 0;
  if (loader.num_windows_ == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data loader: ", loader.total_tokens_, " tokens in ", o.shards.size(),
                     " shard(s) do not fill one window of seq_len ", o.seq_len,
                     " + 1 (first: ", o.shards.front(), ")"));
  }
  return loader;
}

absl::Status DataLoader::OpenWeights() {
  std::vector<std::string> paths;
  std::string with, without;  // a shard with a weight shard, one without
  for (const TokenShard& shard : shards_) {
    std::error_code ec;
    paths.push_back(WeightShardPath(shard.path()));
    (std::filesystem::exists(paths.back(), ec) ? with : without) = shard.path();
  }
  if (with.empty()) return absl::OkStatus();
  if (!without.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data loader: shard ", with, " has loss weights (", WeightShardPath(with),
                     ") but ", without, " has none (", WeightShardPath(without),
                     " missing); mix instruction data and plain text only as separate runs"));
  }
  for (size_t s = 0; s < shards_.size(); ++s) {
    absl::StatusOr<WeightShard> weights = WeightShard::Open(paths[s], options_.verify_checksums);
    if (!weights.ok()) return weights.status();
    if (weights->size() != shards_[s].size() ||
        weights->token_checksum() != shards_[s].checksum()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data loader: weight shard ", paths[s], " (", weights->size(), " tokens, token checksum ",
          absl::Hex(weights->token_checksum()), ") does not belong to token shard ",
          shards_[s].path(), " (", shards_[s].size(), " tokens, checksum ",
          absl::Hex(shards_[s].checksum()), ")"));
    }
    weight_tables_.push_back(weights->Weights(options_.role_weights));
    weight_shards_.push_back(*std::move(weights));
  }
  return absl::OkStatus();
}

std::vector<int64_t> DataLoader::EpochOrder(int64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(num_windows_));
  for (int64_t i = 0; i < num_windows_; ++i) order[i] = i;
  if (options_.shuffle) {
    Generator gen(options_.seed, kDataOrderStream + static_cast<uint64_t>(epoch), 0);
    for (int64_t i = num_windows_ - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(gen.UniformInt(static_cast<uint64_t>(i + 1)));
      std::swap(order[i], order[j]);
    }
  }
  return order;
}

void DataLoader::EnsureOrder(int64_t epoch) const {
  if (order_epoch_ == epoch) return;
  order_ = EpochOrder(epoch);
  order_epoch_ = epoch;
}

LoaderState DataLoader::StepStart(LoaderState state) const {
  if (options_.global_batch > 0 && state.samples_consumed + options_.global_batch > num_windows_) {
    state.epoch += 1;
    state.samples_consumed = 0;
  }
  return state;
}

std::vector<int64_t> DataLoader::StepWindows(LoaderState state) const {
  state = StepStart(state);
  EnsureOrder(state.epoch);
  const int64_t begin = state.samples_consumed;
  FAM_CHECK(begin >= 0 && begin + options_.global_batch <= num_windows_, "data loader: step at ",
            begin, " + global_batch ", options_.global_batch, " beyond ", num_windows_, " windows");
  return std::vector<int64_t>(order_.begin() + begin,
                              order_.begin() + begin + options_.global_batch);
}

std::vector<int64_t> DataLoader::RankMicroWindows(LoaderState state, int64_t micro) const {
  state = StepStart(state);
  FAM_CHECK(micro >= 0 && micro < accumulation_steps(), "data loader: micro batch ", micro, " of ",
            accumulation_steps());
  EnsureOrder(state.epoch);
  const int64_t per_rank = options_.global_batch / options_.world_size;
  const int64_t begin =
      state.samples_consumed + options_.rank * per_rank + micro * options_.micro_batch;
  FAM_CHECK(state.samples_consumed >= 0 && begin + options_.micro_batch <= num_windows_,
            "data loader: micro batch beyond ", num_windows_, " windows");
  return std::vector<int64_t>(order_.begin() + begin,
                              order_.begin() + begin + options_.micro_batch);
}

void DataLoader::ReadStream(int64_t begin, int64_t count, int64_t* out) const {
  auto it = std::upper_bound(shard_starts_.begin(), shard_starts_.end(), begin);
  size_t s = static_cast<size_t>(it - shard_starts_.begin()) - 1;
  while (count > 0) {
    FAM_ASSERT(s < shards_.size());
    const int64_t local = begin - shard_starts_[s];
    const int64_t n = std::min(count, shards_[s].size() - local);
    if (n > 0) shards_[s].Read(local, n, out);  // throws fam::Error naming shard and offset
    out += n;
    begin += n;
    count -= n;
    ++s;
  }
}

void DataLoader::ReadStreamWeights(int64_t begin, int64_t count, float* out) const {
  auto it = std::upper_bound(shard_starts_.begin(), shard_starts_.end(), begin);
  size_t s = static_cast<size_t>(it - shard_starts_.begin()) - 1;
  while (count > 0) {
    FAM_ASSERT(s < weight_shards_.size());
    const int64_t local = begin - shard_starts_[s];
    const int64_t n = std::min(count, weight_shards_[s].size() - local);
    if (n > 0) weight_shards_[s].Read(local, n, weight_tables_[s], out);
    out += n;
    begin += n;
    count -= n;
    ++s;
  }
}

absl::StatusOr<Batch> DataLoader::ReadWindows(const std::vector<int64_t>& window_ids) const {
  const int64_t rows = static_cast<int64_t>(window_ids.size());
  const int64_t len = options_.seq_len;
  Batch batch;
  batch.inputs = Tensor::Empty({rows, len}, DType::kI64);
  batch.targets = Tensor::Empty({rows, len}, DType::kI64);
  int64_t* inputs = batch.inputs.data<int64_t>();
  int64_t* targets = batch.targets.data<int64_t>();
  float* weights = nullptr;
  if (has_weights()) {
    batch.weights = Tensor::Empty({rows, len}, DType::kF32);
    weights = batch.weights.data<float>();
  }
  std::vector<int64_t> window(static_cast<size_t>(len + 1));
  absl::Status status = CatchToStatus([&] {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t w = window_ids[r];
      FAM_CHECK(w >= 0 && w < num_windows_, "data loader: window ", w, " outside [0, ",
                num_windows_, ")");
      ReadStream(w * len, len + 1, window.data());
      std::copy(window.begin(), window.end() - 1, inputs + r * len);
      std::copy(window.begin() + 1, window.end(), targets + r * len);
      if (weights != nullptr) ReadStreamWeights(w * len + 1, len, weights + r * len);
    }
  });
  if (!status.ok()) return status;
  return batch;
}

absl::StatusOr<std::vector<Batch>> DataLoader::NextStep() {
  if (options_.global_batch <= 0 || steps_per_epoch() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data loader: global_batch ", options_.global_batch, " needs at least that many windows; ",
        options_.shards.size(), " shard(s) (first: ", options_.shards.front(), ") hold ",
        num_windows_, " windows of seq_len ", options_.seq_len));
  }
  state_ = StepStart(state_);
  std::vector<Batch> batches;
  for (int64_t micro = 0; micro < accumulation_steps(); ++micro) {
    absl::StatusOr<Batch> batch = ReadWindows(RankMicroWindows(state_, micro));
    if (!batch.ok()) return batch.status();
    batches.push_back(*std::move(batch));
  }
  state_.samples_consumed += options_.global_batch;
  return batches;
}

absl::Status DataLoader::Restore(const LoaderState& state) {
  if (state.epoch < 0 || state.samples_consumed < 0 || state.samples_consumed > num_windows_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data loader: cannot restore epoch ", state.epoch, ", samples_consumed ",
        state.samples_consumed, " (this data has ", num_windows_, " windows per epoch)"));
  }
  state_ = state;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Batch>> DataLoader::ValBatches(int64_t max_batches) const {
  const int64_t mb = options_.micro_batch;
  int64_t total = num_windows_ / mb;
  if (total == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("data loader: validation data (first shard ", options_.shards.front(),
                     ") holds ", num_windows_, " windows, fewer than micro_batch ", mb));
  }
  if (max_batches > 0) total = std::min(total, max_batches);
  std::vector<Batch> batches;
  for (int64_t b = options_.rank; b < total; b += options_.world_size) {
    std::vector<int64_t> ids(static_cast<size_t>(mb));
    for (int64_t i = 0; i < mb; ++i) ids[i] = b * mb + i;
    absl::StatusOr<Batch> batch = ReadWindows(ids);
    if (!batch.ok()) return batch.status();
    batches.push_back(*std::move(batch));
  }
  return batches;
}

}  // namespace fam::data
