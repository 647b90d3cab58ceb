// The Unigram model of a Hugging Face tokenizer.json (declared in hf_model.h): the segmentation of
// a pre-token into vocabulary pieces with the highest total score (Viterbi, SentencePiece's
// rules as the `tokenizers` library has them: a character no piece covers is the unk token with
// the lowest score minus 10, neighbouring unknowns fused into one; with byte_fallback an unknown
// run becomes its <0xNN> byte pieces). Results are cached per pre-token.
#include <limits>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "framework/data/hf_model.h"

namespace fam::data::hf {
namespace {

constexpr double kUnkPenalty = 10.0;

class Unigram : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Parse(const json& j, const JsonFile& file);

  void Tokenize(std::string_view piece, std::vector<int32_t>* ids) const override {
    if (piece.empty()) return;
    cache_.Append(piece, ids, [this](std::string_view p) { return Segment(p); });
  }

 private:
  std::vector<int32_t> Segment(std::string_view s) const {
    struct Node {
      int32_t id = -1;
      double score = 0;
      int64_t starts_at = -1;
    };
    const size_t n = s.size();
    std::vector<Node> best(n + 1);
    const double unk_score = min_score_ - kUnkPenalty;
    for (size_t start = 0; start < n;) {
      const double here = best[start].score;
      size_t next = start;
      NextCodePoint(s, &next);
      const size_t char_len = next - start;
      bool single = false;
      const size_t longest = std::min(max_piece_bytes_, n - start);
      for (size_t len = 1; len <= longest; ++len) {
        const int32_t id = TokenToId(s.substr(start, len));
        if (id < 0) continue;
        Node& target = best[start + len];
        const double candidate = scores_[id] + here;
        if (target.starts_at < 0 || candidate > target.score) {
          target = {id, candidate, static_cast<int64_t>(start)};
        }
        if (len == char_len) single = true;
      }
      if (!single) {
        Node& target = best[next];
        const double candidate = unk_score + here;
        if (target.starts_at < 0 || candidate > target.score) {
          target = {unk_id_, candidate, static_cast<int64_t>(start)};
        }
      }
      start = next;
    }
    // Back from the end; neighbouring unk pieces are fused into one string.
    std::vector<std::pair<std::string_view, int32_t>> pieces;  // reversed
    size_t end = n, unk_end = std::string::npos;
    while (end > 0) {
      const Node& node = best[end];
      const size_t start = static_cast<size_t>(node.starts_at);
      if (node.id < 0 || node.id == unk_id_) {
        if (unk_end == std::string::npos) unk_end = end;
      } else {
        if (unk_end != std::string::npos) pieces.emplace_back(s.substr(end, unk_end - end), -1);
        unk_end = std::string::npos;
        pieces.emplace_back(s.substr(start, end - start), node.id);
      }
      end = start;
    }
    if (unk_end != std::string::npos) pieces.emplace_back(s.substr(0, unk_end), -1);
    std::vector<int32_t> out;
    out.reserve(pieces.size());
    for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
      const auto [text, known] = *it;
      if (known >= 0) {
        out.push_back(known);
        continue;
      }
      if (int32_t id = TokenToId(text); id >= 0) {  // e.g. the text "<unk>" itself
        out.push_back(id);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (unsigned char b : text) all = all && byte_ids_[b] >= 0;
        if (all) {
          for (unsigned char b : text) out.push_back(byte_ids_[b]);
          continue;
        }
      }
      if (unk_id_ >= 0) out.push_back(unk_id_);  // without an unk id the text is dropped
    }
    return out;
  }

  std::vector<double> scores_;
  double min_score_ = 0;
  size_t max_piece_bytes_ = 0;
  std::vector<int32_t> byte_ids_ = std::vector<int32_t>(256, -1);
  bool byte_fallback_ = false;
  PieceCache cache_;
};

absl::StatusOr<std::unique_ptr<Model>> Unigram::Parse(const json& j, const JsonFile& file) {
  auto model = std::make_unique<Unigram>();
  const json& vocab = j.value("vocab", json());
  if (!vocab.is_array()) return file.Error("model.vocab", "expected a list of [piece, score]");
  model->pieces_.reserve(vocab.size());
  model->scores_.reserve(vocab.size());
  model->min_score_ = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < vocab.size(); ++i) {
    const json& e = vocab[i];
    if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number()) {
      return file.Error(absl::StrCat("model.vocab[", i, "]"), "expected [piece, score]");
    }
    const std::string piece = e[0].get<std::string>();
    model->pieces_.push_back(piece);
    model->scores_.push_back(e[1].get<double>());
    model->min_score_ = std::min(model->min_score_, e[1].get<double>());
    model->max_piece_bytes_ = std::max(model->max_piece_bytes_, piece.size());
    model->to_id_[piece] = static_cast<int32_t>(i);  // a later duplicate wins, as in the library
  }
  if (vocab.empty()) model->min_score_ = 0;
  absl::StatusOr<int64_t> unk =
      j.contains("unk_id") ? file.Int(j, "unk_id", "model", -1) : absl::StatusOr<int64_t>(-1);
  if (!unk.ok()) return unk.status();
  if (*unk < -1 || *unk >= static_cast<int64_t>(vocab.size())) {
    return file.Error("model.unk_id", absl::StrCat(*unk, " out of range [0, ", vocab.size(), ")"));
  }
  model->unk_id_ = static_cast<int32_t>(*unk);
  absl::StatusOr<bool> bf = file.Bool(j, "byte_fallback", "model", false);
  if (!bf.ok()) return bf.status();
  model->byte_fallback_ = *bf;
  for (int b = 0; b < 256; ++b) model->byte_ids_[b] = model->TokenToId(BytePiece(b));
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> ParseUnigram(const json& j, const JsonFile& file) {
  return Unigram::Parse(j, file);
}

}  // namespace fam::data::hf
