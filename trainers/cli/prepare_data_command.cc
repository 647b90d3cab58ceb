// `fam prepare-data`: text → tokenizer (trained SentencePiece, or a given .model / tokenizer.json)
// + binary token shards (train/val) + data.json.
#include <iostream>

#include "framework/data/prepare_data.h"
#include "trainers/cli/commands.h"

namespace fam {

Command PrepareDataCommand() {
  Command c;
  c.name = "prepare-data";
  c.synopsis =
      "--input <text file> [--input ...] --out <dir> "
      "[--vocab-size N | --tokenizer <tokenizer.json | .model>]";
  c.summary = "train a SentencePiece tokenizer (or apply a given one) and write token shards";
  c.flags = {{"input", "input text file (repeatable)"},
             {"out",
              "output directory (tokenizer.model or tokenizer.json, train-*.bin, val-*.bin, "
              "data.json)"},
             {"format", "input format: text (default) or kjv (raw `bible` output)"},
             {"documents", "document boundaries: paragraph (default), line or file"},
             {"tokenizer",
              "use this tokenizer instead of training one: a SentencePiece .model or a Hugging "
              "Face tokenizer.json (its tokenizer_config.json is copied along)"},
             {"vocab-size", "vocabulary size of a trained tokenizer (default 8192)"},
             {"model-type", "bpe (default) or unigram"},
             {"val-fraction", "fraction of documents held out for validation (default 0.02)"},
             {"shard-tokens", "maximum tokens per shard (default 1e8)"},
             {"force", "redo everything even when outputs are up to date", true}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"input", "out"}); !s.ok()) return s;
    data::PrepareDataOptions o;
    o.inputs = args.GetAll("input");
    o.out_dir = args.Get("out");
    o.input_format = args.Get("format", o.input_format);
    o.documents = args.Get("documents", o.documents);
    o.tokenizer = args.Get("tokenizer");
    o.model_type = args.Get("model-type", o.model_type);
    absl::StatusOr<int64_t> vocab = args.GetInt("vocab-size", o.vocab_size);
    absl::StatusOr<double> val = args.GetDouble("val-fraction", o.val_fraction);
    absl::StatusOr<int64_t> shard = args.GetInt("shard-tokens", o.shard_tokens);
    for (const absl::Status& s : {vocab.status(), val.status(), shard.status()})
      if (!s.ok()) return s;
    o.vocab_size = static_cast<int>(*vocab);
    o.val_fraction = *val;
    o.shard_tokens = *shard;
    o.force = args.GetBool("force");
    o.log = [](const std::string& line) { std::cout << line << "\n"; };
    return data::PrepareData(o);
  };
  return c;
}

}  // namespace fam
