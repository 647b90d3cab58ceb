// A Hugging Face tokenizer.json: the added tokens, the stages of hf_pipeline.h and the model of
// hf_model.h put together as the `tokenizers` library runs them (see hf_tokenizer.h).
#include "framework/data/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "framework/data/hf_model.h"
#include "framework/data/hf_pipeline.h"
#include "framework/io/atomic_file.h"

namespace fam::data {
namespace {

namespace fs = std::filesystem;
using hf::json;
using hf::JsonFile;

struct AddedToken {
  std::string content;  // for normalized tokens: the content after the normalizer
  int32_t id = -1;
  bool special = false, single_word = false, lstrip = false, rstrip = false;
};

// A piece of text between added tokens (id < 0), or an added token.
struct Segment {
  std::string_view text;
  int32_t id;
  size_t offset;  // of the piece in the text that was split
};

// Finds added tokens in text: leftmost match first, the longest of those starting there, matches
// not overlapping (the library's Aho-Corasick LeftmostLongest), then single_word / lstrip /
// rstrip as the library's AddedVocabulary::find_matches applies them.
class AddedMatcher {
 public:
  void Add(AddedToken token) {
    if (token.content.empty()) return;
    tokens_.push_back(std::move(token));
  }
  void Finish() {
    for (auto& bucket : by_first_byte_) bucket.clear();
    for (size_t i = 0; i < tokens_.size(); ++i) {
      by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
    }
    for (auto& bucket : by_first_byte_) {
      std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
        return tokens_[a].content.size() > tokens_[b].content.size();
      });
    }
  }
  bool empty() const { return tokens_.empty(); }

  void Split(std::string_view s, std::vector<Segment>* out) const {
    if (tokens_.empty()) {
      if (!s.empty()) out->push_back({s, -1, 0});
      return;
    }
    size_t start_offset = 0, pos = 0;
    while (pos < s.size()) {
      const AddedToken* match = nullptr;
      for (size_t i : by_first_byte_[static_cast<unsigned char>(s[pos])]) {
        const std::string& c = tokens_[i].content;
        if (s.compare(pos, c.size(), c) == 0) {
          match = &tokens_[i];
          break;
        }
      }
      if (match == nullptr) {
        ++pos;
        continue;
      }
      size_t start = pos, stop = pos + match->content.size();
      pos = stop;
      if (match->single_word) {
        const bool start_ok = start == 0 || !hf::IsWordChar(LastCodePoint(s.substr(0, start)));
        size_t p = stop;
        const bool stop_ok = stop == s.size() || !hf::IsWordChar(hf::NextCodePoint(s, &p));
        if (!start_ok || !stop_ok) continue;
      }
      if (match->lstrip) {
        size_t b = start;
        while (b > start_offset) {
          size_t c = b - 1;
          while (c > 0 && (static_cast<unsigned char>(s[c]) & 0xC0) == 0x80) --c;
          size_t p = c;
          if (!hf::IsWhitespace(hf::NextCodePoint(s, &p))) break;
          b = c;
        }
        start = b;
      }
      if (match->rstrip) {
        while (stop < s.size()) {
          size_t p = stop;
          if (!hf::IsWhitespace(hf::NextCodePoint(s, &p))) break;
          stop = p;
        }
      }
      start = std::max(start, start_offset);
      if (start_offset < start) {
        out->push_back({s.substr(start_offset, start - start_offset), -1, start_offset});
      }
      out->push_back({s.substr(start, stop - start), match->id, start});
      start_offset = stop;
      pos = std::max(pos, stop);
    }
    if (start_offset < s.size()) {
      out->push_back({s.substr(start_offset), -1, start_offset});
    }
  }

 private:
  static char32_t LastCodePoint(std::string_view s) {
    size_t c = s.size() - 1;
    while (c > 0 && (static_cast<unsigned char>(s[c]) & 0xC0) == 0x80) --c;
    return hf::NextCodePoint(s, &c);
  }

  std::vector<AddedToken> tokens_;
  std::vector<size_t> by_first_byte_[256];
};

class HfTokenizer : public TokenizerImpl {
 public:
  static absl::StatusOr<std::shared_ptr<const TokenizerImpl>> Load(const std::string& path);

  std::vector<int32_t> Encode(std::string_view input) const override {
    const std::string text = hf::ValidUtf8(input);
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 1);
    std::vector<Segment> raw, normalized_parts;
    std::vector<hf::PreToken> pieces;
    raw_added_.Split(text, &raw);
    for (const Segment& seg : raw) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      std::string norm(seg.text);
      if (normalizer_ != nullptr) normalizer_->Apply(&norm);
      normalized_parts.clear();
      normalized_added_.Split(norm, &normalized_parts);
      for (const Segment& part : normalized_parts) {
        if (part.id >= 0) {
          ids.push_back(part.id);
          continue;
        }
        pieces.assign(1, {std::string(part.text), seg.offset == 0 && part.offset == 0});
        if (pre_tokenizer_ != nullptr) pre_tokenizer_->Apply(&pieces);
        for (const hf::PreToken& p : pieces) model_->Tokenize(p.text, &ids);
      }
    }
    return ids;
  }

  // Every token's string (an added token's content) goes through the decoder, as the library's
  // decode(ids, skip_special_tokens=False) does; without a decoder they are joined by spaces.
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      if (const std::string* added = AddedContent(id)) {
        tokens.push_back(*added);
      } else if (id < model_->size()) {
        tokens.push_back(model_->IdToToken(id));
      }
    }
    std::string text;
    if (decoder_ != nullptr) {
      decoder_->Apply(&tokens);
      for (const std::string& t : tokens) text += t;
    } else {
      for (size_t i = 0; i < tokens.size(); ++i) absl::StrAppend(&text, i ? " " : "", tokens[i]);
    }
    return text;
  }

  int64_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return bos_; }
  int32_t prompt_start_id() const override { return prompt_start_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  int32_t unk_id() const override { return unk_; }
  int32_t newline_id() const override { return newline_; }
  std::string IdToPiece(int32_t id) const override {
    if (const std::string* added = AddedContent(id)) return *added;
    return id < model_->size() ? model_->IdToToken(id) : std::string();
  }

 private:
  const std::string* AddedContent(int32_t id) const {
    auto it = added_content_.find(id);
    return it == added_content_.end() ? nullptr : &it->second;
  }
  // The id of `content`: an added token's, else the model's; -1 when neither has it.
  int32_t TokenId(std::string_view content) const {
    auto it = added_ids_.find(content);
    return it != added_ids_.end() ? it->second : model_->TokenToId(content);
  }

  absl::Status ParseAddedTokens(const json& list, const JsonFile& file);
  absl::Status SetSpecialIds(const json& root, const JsonFile& file);

  std::unique_ptr<hf::Model> model_;
  std::unique_ptr<hf::Normalizer> normalizer_;
  std::unique_ptr<hf::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<hf::Decoder> decoder_;
  AddedMatcher raw_added_, normalized_added_;
  std::unordered_map<int32_t, std::string> added_content_;
  hf::TokenMap added_ids_;
  int64_t vocab_size_ = 0;
  int32_t bos_ = -1, eos_ = -1, pad_ = -1, unk_ = -1, newline_ = -1, prompt_start_ = -1;
};

// Ids are assigned as the library does: an added token already in the model (or added before)
// keeps that id, a new one takes the next id after the model's and the added ones'. A file whose
// ids disagree is refused.
absl::Status HfTokenizer::ParseAddedTokens(const json& list, const JsonFile& file) {
  if (list.is_null()) return absl::OkStatus();
  if (!list.is_array()) return file.Error("added_tokens", "expected a list");
  const int64_t model_size = model_->size();
  int64_t max_added = -1;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    const json& t = list[i];
    if (!t.is_object()) return file.Error(where, "expected an object");
    absl::StatusOr<std::string> content = file.String(t, "content", where);
    if (!content.ok()) return content.status();
    if (content->empty()) return file.Error(where + ".content", "missing or empty");
    if (!t.contains("id") || !t["id"].is_number_integer()) {
      return file.Error(where + ".id", "expected an integer");
    }
    const int64_t id = t["id"].get<int64_t>();
    AddedToken token;
    bool normalized = false;
    for (auto [key, field] :
         {std::pair{"special", &token.special}, std::pair{"single_word", &token.single_word},
          std::pair{"lstrip", &token.lstrip}, std::pair{"rstrip", &token.rstrip},
          std::pair{"normalized", &normalized}}) {
      absl::StatusOr<bool> v =
          file.Bool(t, key, where, key == std::string("normalized") ? !token.special : false);
      if (!v.ok()) return v.status();
      *field = *v;
    }
    int64_t expected = TokenId(*content);
    const bool known = expected >= 0;
    if (!known) expected = max_added >= model_size || model_size == 0 ? max_added + 1 : model_size;
    if (id != expected) {
      return file.Error(where + ".id",
                        known ? absl::StrCat(id, " but '", *content, "' already has id ", expected)
                              : absl::StrCat(id, " is out of range: '", *content, "' would get id ",
                                             expected, " (the next after the model's ", model_size,
                                             " tokens and the added ones before it)"));
    }
    if (id > std::numeric_limits<int32_t>::max() - 1) {
      return file.Error(where + ".id", absl::StrCat(id, " is out of range"));
    }
    token.id = static_cast<int32_t>(id);
    max_added = std::max(max_added, id);
    if (added_ids_.count(*content)) continue;  // a repeated token changes nothing
    added_ids_.emplace(*content, token.id);
    added_content_.emplace(token.id, *content);
    if (normalized && normalizer_ != nullptr) normalizer_->Apply(&*content);
    token.content = *content;
    (normalized ? normalized_added_ : raw_added_).Add(std::move(token));
  }
  raw_added_.Finish();
  normalized_added_.Finish();
  vocab_size_ = std::max(model_size, max_added + 1);
  return absl::OkStatus();
}

// The text of a special token in tokenizer_config.json: a string, {"content": ...} or null.
absl::StatusOr<std::optional<std::string>> ConfigToken(const json& config, const char* key,
                                                       const JsonFile& file) {
  const json& v = config[key];
  if (v.is_null()) return std::optional<std::string>();
  if (v.is_string()) return std::optional<std::string>(v.get<std::string>());
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return std::optional<std::string>(v["content"].get<std::string>());
  }
  return file.Error(key, "expected a string, {\"content\": ...} or null");
}

// bos/eos from a post_processor: TemplateProcessing's special tokens before / after $A, or the
// cls / sep of RobertaProcessing and BertProcessing; a Sequence is searched in order.
void PostProcessorIds(const json& p, int32_t* bos, int32_t* eos) {
  if (!p.is_object()) return;
  const std::string type = p.value("type", "");
  auto id_of = [](const json& pair) {
    return pair.is_array() && pair.size() == 2 && pair[1].is_number_integer()
               ? pair[1].get<int32_t>()
               : -1;
  };
  if (type == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (const json& q : p["processors"]) PostProcessorIds(q, bos, eos);
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    if (*bos < 0 && p.contains("cls")) *bos = id_of(p["cls"]);
    if (*eos < 0 && p.contains("sep")) *eos = id_of(p["sep"]);
  } else if (type == "TemplateProcessing" && p.contains("single") && p["single"].is_array()) {
    const json& specials = p.value("special_tokens", json::object());
    bool after = false;
    for (const json& item : p["single"]) {
      if (item.contains("Sequence")) {
        after = true;
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id")) continue;
      const json& name = item["SpecialToken"]["id"];
      if (!name.is_string() || !specials.contains(name.get<std::string>())) continue;
      const json& ids = specials[name.get<std::string>()].value("ids", json::array());
      if (!ids.is_array() || ids.size() != 1 || !ids[0].is_number_integer()) continue;
      int32_t* target = after ? eos : bos;
      if (*target < 0) *target = ids[0].get<int32_t>();
    }
  }
}

absl::Status HfTokenizer::SetSpecialIds(const json& root, const JsonFile& file) {
  unk_ = model_->unk_id();
  PostProcessorIds(root.value("post_processor", json()), &bos_, &eos_);
  // Only a template places tokens before the text (the Roberta/Bert processors are encoders').
  int32_t template_eos = -1;
  const json post = root.value("post_processor", json());
  std::vector<json> processors{post};
  if (post.is_object() && post.value("type", "") == "Sequence" && post.contains("processors") &&
      post["processors"].is_array())
    processors.assign(post["processors"].begin(), post["processors"].end());
  for (const json& q : processors)
    if (q.is_object() && q.value("type", "") == "TemplateProcessing")
      PostProcessorIds(q, &prompt_start_, &template_eos);
  const fs::path config_path = fs::path(file.path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (fs::exists(config_path, ec)) {
    const JsonFile config_file{config_path.string()};
    absl::StatusOr<std::string> bytes = io::ReadFile(config_file.path);
    if (!bytes.ok()) return bytes.status();
    const json config = json::parse(*bytes, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_file.path, ": not a JSON object"));
    }
    for (auto [key, field] : {std::pair{"bos_token", &bos_}, std::pair{"eos_token", &eos_},
                              std::pair{"pad_token", &pad_}, std::pair{"unk_token", &unk_}}) {
      if (!config.contains(key)) continue;
      absl::StatusOr<std::optional<std::string>> token = ConfigToken(config, key, config_file);
      if (!token.ok()) return token.status();
      *field = -1;
      if (!token->has_value()) continue;
      *field = TokenId(**token);
      if (*field < 0) {
        return config_file.Error(key, absl::StrCat(hf::Quoted(**token), " is not in ", file.path));
      }
    }
  }
  for (int32_t* id : {&bos_, &eos_, &pad_, &unk_}) {
    if (*id >= vocab_size_) *id = -1;
  }
  const std::vector<int32_t> nl = Encode("\n");
  newline_ = nl.size() == 1 ? nl[0] : -1;
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const TokenizerImpl>> HfTokenizer::Load(const std::string& path) {
  absl::StatusOr<std::string> bytes = io::ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  const JsonFile file{path};
  json root;
  try {
    root = json::parse(*bytes);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) return file.Error("(top level)", "expected an object");
  auto tok = std::make_shared<HfTokenizer>();

  const json& model = root.value("model", json());
  if (!model.is_object()) return file.Error("model", "missing");
  std::string type;
  if (model.contains("type")) {
    absl::StatusOr<std::string> t = file.String(model, "type", "model");
    if (!t.ok()) return t.status();
    type = *t;
  } else {  // files of old versions name no type
    type = model.contains("merges")                  ? "BPE"
           : model.value("vocab", json()).is_array() ? "Unigram"
                                                     : "";
  }
  absl::StatusOr<std::unique_ptr<hf::Model>> m =
      type == "BPE"       ? hf::ParseBpe(model, file)
      : type == "Unigram" ? hf::ParseUnigram(model, file)
                          : file.Error("model.type", absl::StrCat(type.empty() ? "(none)" : type,
                                                                  " is not supported"));
  if (!m.ok()) return m.status();
  tok->model_ = *std::move(m);

  auto normalizer = hf::ParseNormalizer(root.value("normalizer", json()), file, "normalizer");
  if (!normalizer.ok()) return normalizer.status();
  tok->normalizer_ = *std::move(normalizer);
  auto pre = hf::ParsePreTokenizer(root.value("pre_tokenizer", json()), file, "pre_tokenizer");
  if (!pre.ok()) return pre.status();
  tok->pre_tokenizer_ = *std::move(pre);
  auto decoder = hf::ParseDecoder(root.value("decoder", json()), file, "decoder");
  if (!decoder.ok()) return decoder.status();
  tok->decoder_ = *std::move(decoder);

  tok->vocab_size_ = tok->model_->size();
  absl::Status status = tok->ParseAddedTokens(root.value("added_tokens", json()), file);
  if (!status.ok()) return status;
  status = tok->SetSpecialIds(root, file);
  if (!status.ok()) return status;
  return std::shared_ptr<const TokenizerImpl>(std::move(tok));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TokenizerImpl>> LoadHfTokenizer(const std::string& path) {
  return HfTokenizer::Load(path);
}

}  // namespace fam::data
