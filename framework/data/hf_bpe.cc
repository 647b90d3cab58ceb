// The BPE model of a Hugging Face tokenizer.json (declared in hf_model.h). A pre-token starts as
// its characters (a character missing from the vocabulary becomes its <0xNN> byte pieces with
// byte_fallback, else the unk token, runs of them fused with fuse_unk); then the lowest-ranked
// merge of two neighbours is applied, leftmost first, until none applies, as the `tokenizers`
// library does. Results are cached per pre-token.
#include <mutex>
#include <queue>

#include "absl/strings/str_cat.h"
#include "framework/data/hf_model.h"

namespace fam::data::hf {
namespace {

struct MergeTarget {
  int32_t rank;
  int32_t id;
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

class Bpe : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Parse(const json& j, const JsonFile& file);

  void Tokenize(std::string_view piece, std::vector<int32_t>* ids) const override {
    if (piece.empty()) return;
    if (ignore_merges_) {
      if (int32_t id = TokenToId(piece); id >= 0) {
        ids->push_back(id);
        return;
      }
    }
    cache_.Append(piece, ids, [this](std::string_view p) { return MergeWord(p); });
  }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool removed;
  };

  std::vector<int32_t> MergeWord(std::string_view w) const {
    std::vector<Symbol> symbols;
    symbols.reserve(w.size());
    auto add = [&](int32_t id) {
      const int32_t n = static_cast<int32_t>(symbols.size());
      symbols.push_back({id, n - 1, n + 1, false});
    };
    int32_t unk = -1;  // a pending unk run (fuse_unk)
    for (size_t pos = 0; pos < w.size();) {
      const size_t start = pos;
      NextCodePoint(w, &pos);
      const std::string_view ch = w.substr(start, pos - start);
      if (int32_t id = TokenToId(ch); id >= 0) {
        if (unk >= 0) add(unk);
        unk = -1;
        add(id);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (unsigned char b : ch) all = all && byte_ids_[b] >= 0;
        if (all) {
          for (unsigned char b : ch) add(byte_ids_[b]);
          continue;
        }
      }
      if (unk_id_ >= 0) {
        if (unk >= 0 && !fuse_unk_) add(unk);
        unk = unk_id_;
      }  // without an unk token the character is dropped, as the tokens library does
    }
    if (unk >= 0) add(unk);
    if (!symbols.empty()) symbols.back().next = -1;

    // Merge candidates, lowest rank first, then leftmost.
    struct Candidate {
      int32_t rank, pos, id;
      bool operator<(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::priority_queue<Candidate> queue;
    auto push = [&](int32_t pos) {
      const int32_t next = symbols[pos].next;
      if (next < 0) return;
      auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
      if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.id});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push(i);
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = symbols[top.pos];
      if (left.removed || left.next < 0) continue;
      const int32_t right_pos = left.next;
      Symbol& right = symbols[right_pos];
      auto it = merges_.find(PairKey(left.id, right.id));
      if (it == merges_.end() || it->second.id != top.id) continue;  // an outdated candidate
      left.id = top.id;
      right.removed = true;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      if (left.prev >= 0) push(left.prev);
      push(top.pos);
    }
    std::vector<int32_t> out;
    out.reserve(symbols.size());
    for (const Symbol& s : symbols) {
      if (!s.removed) out.push_back(s.id);
    }
    return out;
  }

  std::unordered_map<uint64_t, MergeTarget> merges_;
  std::vector<int32_t> byte_ids_ = std::vector<int32_t>(256, -1);  // <0xNN> pieces
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  PieceCache cache_;
};

absl::StatusOr<std::unique_ptr<Model>> Bpe::Parse(const json& j, const JsonFile& file) {
  auto bpe = std::make_unique<Bpe>();
  // Options.
  if (j.contains("dropout") && !j["dropout"].is_null() &&
      !(j["dropout"].is_number() && j["dropout"].get<double>() == 0.0)) {
    return file.Error("model.dropout", "BPE dropout (random segmentation) is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    absl::StatusOr<std::string> v = file.String(j, key, "model");
    if (!v.ok()) return v.status();
    if (!v->empty()) {
      return file.Error(absl::StrCat("model.", key), absl::StrCat(Quoted(*v), " is not supported"));
    }
  }
  for (auto [key, field] :
       {std::pair{"byte_fallback", &bpe->byte_fallback_}, std::pair{"fuse_unk", &bpe->fuse_unk_},
        std::pair{"ignore_merges", &bpe->ignore_merges_}}) {
    absl::StatusOr<bool> v = file.Bool(j, key, "model", false);
    if (!v.ok()) return v.status();
    *field = *v;
  }
  // Vocabulary: {"token": id}, ids 0..n-1 each given once.
  const json& vocab = j.value("vocab", json());
  if (!vocab.is_object()) return file.Error("model.vocab", "expected an object {token: id}");
  const int64_t n = static_cast<int64_t>(vocab.size());
  bpe->pieces_.assign(n, std::string());
  std::vector<bool> seen(n, false);
  bpe->to_id_.reserve(n);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::string where = absl::StrCat("model.vocab[", Quoted(it.key()), "]");
    if (!it.value().is_number_integer()) return file.Error(where, "expected an integer id");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= n) {
      return file.Error(where, absl::StrCat("id ", id, " out of range [0, ", n, ")"));
    }
    if (seen[id]) return file.Error(where, absl::StrCat("id ", id, " is given twice"));
    seen[id] = true;
    bpe->pieces_[id] = it.key();
    bpe->to_id_.emplace(it.key(), static_cast<int32_t>(id));
  }
  for (int b = 0; b < 256; ++b) bpe->byte_ids_[b] = bpe->TokenToId(BytePiece(b));
  absl::StatusOr<std::string> unk = file.String(j, "unk_token", "model");
  if (!unk.ok()) return unk.status();
  if (!unk->empty()) {
    bpe->unk_id_ = bpe->TokenToId(*unk);
    if (bpe->unk_id_ < 0) {
      return file.Error("model.unk_token", absl::StrCat(Quoted(*unk), " is not in model.vocab"));
    }
  }
  // Merges: "a b" or ["a", "b"], rank = position; a later duplicate replaces an earlier one.
  const json& merges = j.value("merges", json::array());
  if (!merges.is_array()) return file.Error("model.merges", "expected a list");
  bpe->merges_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string where = absl::StrCat("model.merges[", i, "]");
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return file.Error(where,
                          absl::StrCat(Quoted(s), " is not two tokens separated by a space"));
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return file.Error(where, "expected \"a b\" or [\"a\", \"b\"]");
    }
    const int32_t ia = bpe->TokenToId(a), ib = bpe->TokenToId(b), im = bpe->TokenToId(a + b);
    for (const auto& [t, id] : {std::pair{a, ia}, std::pair{b, ib}, std::pair{a + b, im}}) {
      if (id < 0)
        return file.Error(where, absl::StrCat("token ", Quoted(t), " is not in model.vocab"));
    }
    bpe->merges_[PairKey(ia, ib)] = {static_cast<int32_t>(i), im};
  }
  return std::unique_ptr<Model>(std::move(bpe));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> ParseBpe(const json& j, const JsonFile& file) {
  return Bpe::Parse(j, file);
}

}  // namespace fam::data::hf
