// The implementation behind data::Tokenizer: one subclass per file format (a SentencePiece .model
// in tokenizer.cc, a Hugging Face tokenizer.json in hf_tokenizer.cc). Internal to framework/data.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fam::data {

class TokenizerImpl {
 public:
  virtual ~TokenizerImpl() = default;
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  // Ids are checked against vocab_size() by Tokenizer::Decode before this is called.
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  virtual int32_t unk_id() const = 0;
  virtual int32_t newline_id() const = 0;
  virtual int32_t prompt_start_id() const = 0;
  // `id` is in [0, vocab_size()).
  virtual std::string IdToPiece(int32_t id) const = 0;
};

}  // namespace fam::data
