// A Hugging Face `tokenizer.json` read natively, with ids equal to those of the `tokenizers`
// library's encode(text, add_special_tokens=False):
//   added_tokens  split the text first (longest match; single_word, lstrip, rstrip, normalized)
//   normalizer    NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, Sequence
//   pre_tokenizer Split, ByteLevel, Digits, Metaspace, Whitespace, WhitespaceSplit, Sequence
//   model         BPE (byte-level or SentencePiece-style: byte_fallback, fuse_unk, unk_token,
//                 ignore_merges), Unigram (byte_fallback, unk_id)
//   decoder       ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence
// Any other type (Precompiled, WordPiece, Lowercase, ...) is refused naming its JSON path.
// post_processor is not applied (Encode adds no special tokens) but its TemplateProcessing /
// Roberta / Bert special tokens give bos/eos when tokenizer_config.json does not; truncation and
// padding are ignored. Special ids: bos/eos/pad/unk_token of tokenizer_config.json beside the
// file when present; unk falls back to the model's unk. Text that is not valid UTF-8 is encoded
// with each ill-formed sequence replaced by U+FFFD. Decode renders special tokens as their text.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "framework/data/tokenizer_impl.h"

namespace fam::data {

// Reads `path` (a tokenizer.json) and the tokenizer_config.json in its directory, if any.
absl::StatusOr<std::shared_ptr<const TokenizerImpl>> LoadHfTokenizer(const std::string& path);

}  // namespace fam::data
