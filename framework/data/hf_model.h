// The model of a Hugging Face tokenizer.json: BPE (hf_bpe.cc: byte-level or SentencePiece-style,
// with byte fallback, unk fusing and ignore_merges) or Unigram (hf_unigram.cc: Viterbi over the
// piece scores). A model turns one pre-token into ids. Internal to framework/data.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "framework/data/hf_pipeline.h"

namespace fam::data::hf {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// The ids of recently seen pre-tokens (text repeats words): thread-safe, cleared when full;
// pieces longer than kMaxBytes (text without a pre-tokenizer) are not kept.
class PieceCache {
 public:
  // Appends the ids of `piece`: from the cache, or compute(piece) remembered.
  template <typename Compute>
  void Append(std::string_view piece, std::vector<int32_t>* ids, const Compute& compute) const {
    const bool cacheable = piece.size() <= kMaxBytes;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = map_.find(piece);
      if (it != map_.end()) {
        ids->insert(ids->end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> out = compute(piece);
    ids->insert(ids->end(), out.begin(), out.end());
    if (!cacheable) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.emplace(std::string(piece), std::move(out));
  }

 private:
  static constexpr size_t kMaxEntries = 1 << 18;
  static constexpr size_t kMaxBytes = 256;
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map_;
};

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one (non-empty) pre-token. Thread-safe.
  virtual void Tokenize(std::string_view piece, std::vector<int32_t>* ids) const = 0;
  // Ids are [0, size()).
  int64_t size() const { return static_cast<int64_t>(pieces_.size()); }
  const std::string& IdToToken(int32_t id) const { return pieces_[id]; }
  // -1 when `token` is not in the vocabulary.
  int32_t TokenToId(std::string_view token) const {
    auto it = to_id_.find(token);
    return it == to_id_.end() ? -1 : it->second;
  }
  int32_t unk_id() const { return unk_id_; }

 protected:
  std::vector<std::string> pieces_;
  TokenMap to_id_;
  int32_t unk_id_ = -1;
};

// `j` is the "model" object of the file.
absl::StatusOr<std::unique_ptr<Model>> ParseBpe(const json& j, const JsonFile& file);
absl::StatusOr<std::unique_ptr<Model>> ParseUnigram(const json& j, const JsonFile& file);

}  // namespace fam::data::hf
