// Tokenizer: a SentencePiece model (.model: BPE or unigram, byte fallback) or a Hugging Face
// tokenizer.json (hf_tokenizer.h: byte-level BPE, SentencePiece-style BPE, Unigram) behind one
// small value type; Load picks the format from the file.
// A SentencePiece model handles text line by line: Encode splits on '\n', encodes every line with
// SentencePiece (which marks the line start as a word start, like a sentence of the training data)
// and joins the lines with the newline token (the byte-fallback piece <0x0A>). Decode undoes this,
// so Decode(Encode(text)) == text for any text (models are trained with the identity normalizer and
// extra whitespace kept). Special ids of models trained here: unk 0, bos 1, eos 2, pad 3.
// A tokenizer.json encodes the whole text as the `tokenizers` library does (no special tokens
// added); special tokens written in the text become their ids.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fam::data {

class TokenizerImpl;

// The tokenizer file in `dir`: tokenizer.json when present, else tokenizer.model; empty when
// neither exists.
std::string FindTokenizerFile(const std::string& dir);
// True when `path` is a Hugging Face tokenizer.json: its name ends in .json, or it does not end in
// .model and its text starts with '{' (a SentencePiece model is a binary protobuf).
bool IsTokenizerJson(const std::string& path);
// Copies the tokenizer at `src` into `dir`, keeping its kind: a tokenizer.json becomes
// dir/tokenizer.json, with the tokenizer_config.json beside it when there is one; a SentencePiece
// model becomes dir/tokenizer.model, with its .vocab when there is one. Tokenizer files of the
// other kind (or a stale companion) are removed from dir. Returns the copied tokenizer's path.
absl::StatusOr<std::string> CopyTokenizer(const std::string& src, const std::string& dir);
// The names of the tokenizer files present in `dir`, of tokenizer.json, tokenizer_config.json,
// tokenizer.model and tokenizer.vocab, in that order.
std::vector<std::string> TokenizerFilesIn(const std::string& dir);

struct TokenizerTrainOptions {
  std::string model_type = "bpe";         // "bpe" or "unigram"
  int64_t input_sentence_size = 2000000;  // lines sampled for training (0 = all)
  double character_coverage = 1.0;        // rare characters fall back to bytes
  uint32_t seed = 0;                      // sampling / unigram seed
  int num_threads = 1;                    // 1 keeps unigram training deterministic
  bool hard_vocab_limit = true;           // false: vocab_size is an upper bound
  // Optional transform of each file's whole text before its lines are used (e.g. CleanKjvText).
  std::function<std::string(std::string)> transform;
};

class Tokenizer {
 public:
  Tokenizer() = default;  // empty; use Load

  // Loads a SentencePiece .model or a Hugging Face tokenizer.json (see IsTokenizerJson).
  // NotFound / InvalidArgument name the path.
  static absl::StatusOr<Tokenizer> Load(const std::string& path);

  // Trains a SentencePiece model on the lines of text_files (each line a sentence; blank lines
  // skipped) and writes model_prefix.model and model_prefix.vocab. Deterministic for the same
  // inputs and options.
  static absl::Status Train(const std::vector<std::string>& text_files,
                            const std::string& model_prefix, int vocab_size,
                            const TokenizerTrainOptions& options = {});

  std::vector<int32_t> Encode(std::string_view text) const;
  // Ids out of [0, vocab_size) throw fam::Error naming the id.
  std::string Decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  // The id generation and PassKey put before a prompt (-1: none). A SentencePiece model: eos, the
  // document separator of the data pipeline. A tokenizer.json: the special token its
  // post_processor's TemplateProcessing places before a single sequence (Llama 3's
  // <|begin_of_text|>), else none, as the `tokenizers` library encodes with special tokens.
  int32_t prompt_start_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  // The id of "\n": SentencePiece's newline piece (-1 when it has none: newlines become spaces);
  // for a tokenizer.json the one token "\n" encodes to (-1 when it takes several).
  int32_t newline_id() const;
  std::string IdToPiece(int32_t id) const;
  const std::string& path() const { return path_; }

 private:
  std::shared_ptr<const TokenizerImpl> impl_;
  std::string path_;
};

}  // namespace fam::data
