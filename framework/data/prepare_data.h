// prepare-data: text files → tokenizer (a trained SentencePiece model, or a given .model or
// Hugging Face tokenizer.json) + train/val token shards + data.json.
//
// Steps: (1) the tokenizer is copied from `tokenizer` or trained on the inputs (after the input
// format's cleaning); (2) every input, in order, is cleaned and cut into documents (`documents`:
// "paragraph" = blank-line separated, "line", or "file"); each document is encoded and followed by
// eos; (3) documents are split deterministically: document i (counted over all inputs) goes to val
// when floor((i+1)·val_fraction) > floor(i·val_fraction), i.e. evenly spaced, about val_fraction
// of them; if that selects none (fewer than 1/val_fraction documents), the last val_fraction of
// the train tokens (at most the unwritten tail of the last shard) becomes val; (4) each stream is
// cut into shards of at most shard_tokens tokens.
//
// Output in out_dir: tokenizer.model (+ tokenizer.vocab), or tokenizer.json (+
// tokenizer_config.json) when `tokenizer` is one, train-00000.bin …, val-00000.bin …, data.json
// (written last, atomically):
//   {"format": "famtrain-data", "version": 1, "vocab_size": V, "bos_id", "eos_id", "pad_id",
//    "newline_id", "tokenizer": "tokenizer.model" | "tokenizer.json",
//    "train": {"tokens": N, "documents": D, "shards": [{"file", "tokens", "bytes"}, …]},
//    "val": {…}, "sources": [{"path", "bytes"}, …], "request": {the options that shape the output},
//    "files": [{"file", "bytes"}, …]}
// Idempotent: when data.json exists, its request equals this one (same input paths and sizes, same
// options, same tokenizer source size) and every listed file exists with its recorded size, nothing
// is redone (force = true redoes it). Otherwise data.json is removed first and everything is
// rewritten; stale train-/val- shards beyond the new count are deleted.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fam::data {

struct PrepareDataOptions {
  std::vector<std::string> inputs;  // text files
  std::string out_dir;
  std::string input_format = "text";    // "text" or "kjv" (raw `bible` output, see corpus.h)
  std::string documents = "paragraph";  // "paragraph", "line" or "file"
  std::string tokenizer;                // existing .model or tokenizer.json; empty: train one
  int vocab_size = 8192;                // when training
  std::string model_type = "bpe";       // when training: "bpe" or "unigram"
  double val_fraction = 0.02;           // in [0, 0.5]
  int64_t shard_tokens = 100000000;     // max tokens per shard
  uint32_t seed = 0;                    // tokenizer training sample seed
  bool force = false;                   // redo even when the outputs are up to date
  std::function<void(const std::string&)> log;  // progress lines (optional)
};

absl::Status PrepareData(const PrepareDataOptions& options);

// The parts of data.json that training needs; shard and tokenizer paths are joined with the
// directory.
struct DataManifest {
  int64_t vocab_size = 0;
  int32_t bos_id = -1, eos_id = -1, pad_id = -1;
  std::string tokenizer;
  std::vector<std::string> train_shards, val_shards;
  int64_t train_tokens = 0, val_tokens = 0;
};

// Reads dir/data.json (or a path to a data.json). Errors name the file and key.
absl::StatusOr<DataManifest> ReadDataManifest(const std::string& dir_or_file);

}  // namespace fam::data
