#include "framework/data/tokenizer.h"

#include <sys/stat.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <unordered_map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "framework/core/error.h"
#include "framework/core/printable_text.h"
#include "framework/data/corpus.h"
#include "framework/data/hf_tokenizer.h"
#include "framework/data/tokenizer_impl.h"

// sentencepiece_processor.h declares `namespace absl { using std::string_view; }`, which clashes
// with Debian's Abseil (its own absl::string_view class). The macro renames that namespace inside
// the two SentencePiece headers only; their API uses std::string_view, so the ABI is unchanged.
#define absl fam_sentencepiece_absl
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#undef absl

namespace fam::data {
namespace {

namespace spm = ::sentencepiece;

constexpr int kUnkId = 0, kBosId = 1, kEosId = 2, kPadId = 3;

// Feeds the non-blank lines of a list of files (each optionally transformed) to the trainer,
// reading one file at a time.
class FileLineIterator : public spm::SentenceIterator {
 public:
  FileLineIterator(const std::vector<std::string>& files,
                   const std::function<std::string(std::string)>& transform)
      : files_(files), transform_(transform) {
    Advance();
  }
  bool done() const override { return done_; }
  void Next() override { Advance(); }
  const std::string& value() const override { return line_; }
  spm::util::Status status() const override {
    if (error_.empty()) return spm::util::Status();
    return spm::util::Status(spm::util::StatusCode::kNotFound, std::string_view(error_));
  }

 private:
  // Moves to the next non-blank line, opening the next file when the current one is used up.
  void Advance() {
    while (true) {
      while (pos_ < text_.size()) {
        size_t nl = text_.find('\n', pos_);
        if (nl == std::string::npos) nl = text_.size();
        size_t begin = pos_, end = nl;
        pos_ = nl + 1;
        while (end > begin && (text_[end - 1] == '\r' || text_[end - 1] == ' ')) --end;
        if (end == begin) continue;
        line_.assign(text_, begin, end - begin);
        return;
      }
      if (next_file_ >= files_.size() || !error_.empty()) {
        done_ = true;
        return;
      }
      const std::string& path = files_[next_file_++];
      absl::StatusOr<std::string> text = ReadTextFile(path);
      if (!text.ok()) {
        error_ = std::string(text.status().message());
        done_ = true;
        return;
      }
      text_ = transform_ ? transform_(*std::move(text)) : *std::move(text);
      pos_ = 0;
    }
  }

  const std::vector<std::string>& files_;
  const std::function<std::string(std::string)>& transform_;
  size_t next_file_ = 0;
  std::string text_;
  size_t pos_ = 0;
  std::string line_;
  std::string error_;
  bool done_ = false;
};

// Decoding puts the word-start marker of every line back as a space after each newline; the
// encoder added exactly one such marker per non-empty line, so one space after each '\n' goes.
std::string DropLineStartSpaces(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    out += text[i];
    if (text[i] == '\n' && i + 1 < text.size() && text[i + 1] == ' ') ++i;
  }
  return out;
}

// A SentencePiece model, text handled line by line (see tokenizer.h).
class SentencePieceTokenizer : public TokenizerImpl {
 public:
  static absl::StatusOr<std::shared_ptr<const TokenizerImpl>> Load(const std::string& path) {
    auto sp = std::make_shared<spm::SentencePieceProcessor>();
    spm::util::Status status;
    try {
      status = sp->Load(std::string_view(path));
    } catch (const std::exception& e) {
      // The library throws from inside for some malformed models (an empty piece in its trie).
      // Tokenizer::Load, the caller, makes this and the message below printable.
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load tokenizer model ", path, ": ", e.what()));
    }
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load tokenizer model ", path, ": ", status.ToString()));
    }
    auto tok = std::make_shared<SentencePieceTokenizer>();
    int32_t nl = sp->PieceToId(std::string_view("<0x0A>"));
    if (nl == sp->unk_id()) nl = sp->PieceToId(std::string_view("\n"));
    tok->newline_id_ = (nl == sp->unk_id()) ? -1 : nl;
    std::vector<std::string> pieces = sp->EncodeAsPieces(std::string_view("a"));
    tok->marks_line_start_ = !pieces.empty() && pieces[0].rfind("\xE2\x96\x81", 0) == 0;  // "▁"
    tok->sp_ = std::move(sp);
    return std::shared_ptr<const TokenizerImpl>(std::move(tok));
  }

  std::vector<int32_t> Encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 1);
    size_t pos = 0;
    while (true) {
      size_t nl = text.find('\n', pos);
      std::string_view line = text.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
      if (!line.empty()) {
        for (int id : sp_->EncodeAsIds(line)) ids.push_back(id);
      }
      if (nl == std::string_view::npos) break;
      if (newline_id_ >= 0) {
        ids.push_back(newline_id_);
      } else {
        for (int id : sp_->EncodeAsIds(std::string_view(" "))) ids.push_back(id);
      }
      pos = nl + 1;
    }
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> sp_ids(ids.begin(), ids.end());
    std::string text = sp_->DecodeIds(sp_ids);
    return newline_id_ >= 0 && marks_line_start_ ? DropLineStartSpaces(text) : text;
  }

  int64_t vocab_size() const override { return sp_->GetPieceSize(); }
  int32_t bos_id() const override { return sp_->bos_id(); }
  // Models trained here see the document separator (eos) before every document.
  int32_t prompt_start_id() const override { return sp_->eos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }
  int32_t pad_id() const override { return sp_->pad_id(); }
  int32_t unk_id() const override { return sp_->unk_id(); }
  int32_t newline_id() const override { return newline_id_; }
  std::string IdToPiece(int32_t id) const override { return sp_->IdToPiece(id); }

 private:
  std::shared_ptr<const spm::SentencePieceProcessor> sp_;
  int32_t newline_id_ = -1;
  bool marks_line_start_ = true;  // the model adds a word-start marker at the start of a line
};

}  // namespace

std::string FindTokenizerFile(const std::string& dir) {
  std::error_code ec;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const std::filesystem::path p = std::filesystem::path(dir) / name;
    if (std::filesystem::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

bool IsTokenizerJson(const std::string& path) {
  const std::filesystem::path extension = std::filesystem::path(path).extension();
  if (extension == ".json") return true;
  if (extension == ".model") return false;
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c)) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return c == '{';
  }
  return false;
}

absl::StatusOr<std::string> CopyTokenizer(const std::string& src, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(src, ec)) {
    return absl::NotFoundError(absl::StrCat("tokenizer not found: ", src));
  }
  const bool is_json = IsTokenizerJson(src);
  const fs::path d(dir);
  const fs::path dst = d / (is_json ? "tokenizer.json" : "tokenizer.model");
  // (companion beside src, its name in dir)
  const fs::path companion_src = is_json ? fs::path(src).parent_path() / "tokenizer_config.json"
                                         : fs::path(src).replace_extension(".vocab");
  const fs::path companion_dst = d / (is_json ? "tokenizer_config.json" : "tokenizer.vocab");
  static const char* const kJsonFiles[] = {"tokenizer.json", "tokenizer_config.json"};
  static const char* const kModelFiles[] = {"tokenizer.model", "tokenizer.vocab"};
  for (const char* stale : is_json ? kModelFiles : kJsonFiles) {
    if (!fs::equivalent(src, d / stale, ec)) fs::remove(d / stale, ec);
  }
  if (fs::equivalent(src, dst, ec)) return dst.string();
  fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot copy tokenizer ", src, " to ", dst.string(), ": ", ec.message()));
  }
  fs::remove(companion_dst, ec);
  if (fs::is_regular_file(companion_src, ec)) {
    fs::copy_file(companion_src, companion_dst, ec);
    if (ec) {
      return absl::InternalError(absl::StrCat("cannot copy ", companion_src.string(), " to ",
                                              companion_dst.string(), ": ", ec.message()));
    }
  }
  return dst.string();
}

std::vector<std::string> TokenizerFilesIn(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const char* name :
       {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "tokenizer.vocab"}) {
    if (std::filesystem::is_regular_file(std::filesystem::path(dir) / name, ec)) {
      names.push_back(name);
    }
  }
  return names;
}

absl::StatusOr<Tokenizer> Tokenizer::Load(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("tokenizer model not found: ", path));
  }
  absl::StatusOr<std::shared_ptr<const TokenizerImpl>> impl =
      IsTokenizerJson(path) ? LoadHfTokenizer(path) : SentencePieceTokenizer::Load(path);
  if (!impl.ok()) return PrintableStatus(impl.status());  // may quote the file's tokens
  Tokenizer tok;
  tok.path_ = path;
  tok.impl_ = *std::move(impl);
  return tok;
}

absl::Status Tokenizer::Train(const std::vector<std::string>& text_files,
                              const std::string& model_prefix, int vocab_size,
                              const TokenizerTrainOptions& options) {
  if (text_files.empty()) return absl::InvalidArgumentError("tokenizer training: no text files");
  if (options.model_type != "bpe" && options.model_type != "unigram") {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer training: model_type '",
                                                   options.model_type, "' (expected bpe|unigram)"));
  }
  if (vocab_size < 260 + 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer training: vocab_size ", vocab_size,
        " too small (byte fallback needs 256 byte pieces + 4 special + some merges; use >= 264)"));
  }
  std::unordered_map<std::string, std::string> args = {
      {"model_prefix", model_prefix},
      {"vocab_size", std::to_string(vocab_size)},
      {"model_type", options.model_type},
      {"byte_fallback", "true"},
      {"character_coverage", absl::StrCat(options.character_coverage)},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(options.num_threads)},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"max_sentence_length", "16384"},
      {"hard_vocab_limit", options.hard_vocab_limit ? "true" : "false"},
      {"unk_id", std::to_string(kUnkId)},
      {"bos_id", std::to_string(kBosId)},
      {"eos_id", std::to_string(kEosId)},
      {"pad_id", std::to_string(kPadId)},
      {"minloglevel", "2"},
  };
  spm::SetRandomGeneratorSeed(options.seed);
  FileLineIterator lines(text_files, options.transform);
  spm::util::Status status = spm::SentencePieceTrainer::Train(args, &lines);
  if (!lines.status().ok()) {
    return absl::NotFoundError(absl::StrCat("tokenizer training: ", lines.status().message()));
  }
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer training (", model_prefix, ".model): ", status.ToString()));
  }
  return absl::OkStatus();
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text) const {
  FAM_CHECK(impl_ != nullptr, "Tokenizer::Encode on an empty tokenizer (use Tokenizer::Load)");
  return impl_->Encode(text);
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  FAM_CHECK(impl_ != nullptr, "Tokenizer::Decode on an empty tokenizer (use Tokenizer::Load)");
  const int64_t n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    FAM_CHECK(ids[i] >= 0 && ids[i] < n, "Tokenizer::Decode: id ", ids[i], " at position ", i,
              " out of range [0, ", n, ") of ", path_);
  }
  return impl_->Decode(ids);
}

int64_t Tokenizer::vocab_size() const { return impl_ ? impl_->vocab_size() : 0; }
int32_t Tokenizer::bos_id() const { return impl_ ? impl_->bos_id() : -1; }
int32_t Tokenizer::prompt_start_id() const { return impl_ ? impl_->prompt_start_id() : -1; }
int32_t Tokenizer::eos_id() const { return impl_ ? impl_->eos_id() : -1; }
int32_t Tokenizer::pad_id() const { return impl_ ? impl_->pad_id() : -1; }
int32_t Tokenizer::unk_id() const { return impl_ ? impl_->unk_id() : -1; }
int32_t Tokenizer::newline_id() const { return impl_ ? impl_->newline_id() : -1; }

std::string Tokenizer::IdToPiece(int32_t id) const {
  FAM_CHECK(impl_ != nullptr && id >= 0 && id < vocab_size(), "Tokenizer::IdToPiece: id ", id,
            " out of range [0, ", vocab_size(), ")");
  return impl_->IdToPiece(id);
}

}  // namespace fam::data
