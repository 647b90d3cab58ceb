// Hugging Face tokenizer.json read natively: the ids of every fixture tokenizer
// (tests/fixtures/tokenizers, written by scripts/make_tokenizer_fixtures.py with the `tokenizers`
// library) and of pipeline variants of them equal the library's, Decode equals the library's
// decode, special ids come from tokenizer_config.json or the post-processor, and malformed or
// unsupported files are refused with one line naming the file and the JSON path.
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "framework/data/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace fam::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::Slurp;
using testing::Spit;

fs::path FixtureDir() {
  const char* root = std::getenv("FAM_SOURCE_DIR");
  return fs::path(root != nullptr ? root : ".") / "tests" / "fixtures" / "tokenizers";
}

const json& Expected() {
  static const json expected = json::parse(Slurp(FixtureDir() / "expected.json"));
  return expected;
}

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("fam_hf_tokenizer_test_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string Show(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20) {
      out += "\\x" + std::to_string(c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

void CheckCases(const Tokenizer& tok, const std::vector<std::string>& texts, const json& ids,
                const json& decoded) {
  ASSERT_EQ(texts.size(), ids.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int32_t> got = tok.Encode(texts[i]);
    EXPECT_EQ(got, ids[i].get<std::vector<int32_t>>()) << "text " << i << ": " << Show(texts[i]);
    const std::string back = tok.Decode(got);
    EXPECT_EQ(back, decoded[i].get<std::string>()) << "text " << i << ": " << Show(texts[i]);
    if (decoded[i].get<std::string>() == texts[i]) {
      EXPECT_EQ(back, texts[i]);  // round trip wherever the library's decode gives the text back
    }
  }
}

TEST(HfTokenizer, IdsEqualTheLibrary) {
  const json& e = Expected();
  const std::vector<std::string> texts = e["texts"].get<std::vector<std::string>>();
  ASSERT_GE(e["tokenizers"].size(), 8u);
  for (const auto& [name, expected] : e["tokenizers"].items()) {
    SCOPED_TRACE(name);
    absl::StatusOr<Tokenizer> tok =
        Tokenizer::Load((FixtureDir() / name / "tokenizer.json").string());
    ASSERT_TRUE(tok.ok()) << tok.status();
    EXPECT_EQ(tok->vocab_size(), expected["vocab_size"].get<int64_t>());
    EXPECT_EQ(tok->newline_id(), expected["newline_id"].get<int32_t>());
    CheckCases(*tok, texts, expected["ids"], expected["decoded"]);
  }
}

TEST(HfTokenizer, PipelineVariantsEqualTheLibrary) {
  const json& e = Expected();
  std::vector<std::string> texts;
  for (const json& i : e["variant_texts"]) texts.push_back(e["texts"][i.get<size_t>()]);
  const fs::path dir = TempDir("variants");
  for (const auto& [name, variant] : e["variants"].items()) {
    SCOPED_TRACE(name);
    const std::string base = variant["base"];
    json j = json::parse(Slurp(FixtureDir() / base / "tokenizer.json"));
    for (const auto& [key, value] : variant["patch"].items()) {
      if (key == "model") {
        j["model"].update(value);
      } else {
        j[key] = value;
      }
    }
    const fs::path path = dir / (name + ".json");
    Spit(path, j.dump());
    absl::StatusOr<Tokenizer> tok = Tokenizer::Load(path.string());
    ASSERT_TRUE(tok.ok()) << tok.status();
    CheckCases(*tok, texts, variant["ids"], variant["decoded"]);
  }
}

TEST(HfTokenizer, SpecialIdsFromConfigOrPostProcessor) {
  struct Case {
    const char* name;
    const char* bos;
    const char* eos;
    const char* pad;
    const char* unk;
    const char* prompt_start;  // what the TemplateProcessing puts before the text
  };
  // tokenizer_config.json: llama3 (strings), qwen2 ({"content"} objects, bos null), llama2,
  // unigram; the TemplateProcessing post-processor: smollm2 (bos and eos), mistral (bos only).
  const Case cases[] = {
      {"llama3", "<|begin_of_text|>", "<|end_of_text|>", nullptr, nullptr, "<|begin_of_text|>"},
      {"qwen2", nullptr, "<|im_end|>", "<|endoftext|>", nullptr, nullptr},
      {"llama2", "<s>", "</s>", nullptr, "<unk>", "<s>"},
      {"unigram", nullptr, "</s>", "<pad>", "<unk>", nullptr},
      {"smollm2", "<|im_start|>", "<|im_end|>", nullptr, nullptr, "<|im_start|>"},
      {"mistral", "<s>", nullptr, nullptr, "<unk>", "<s>"},
      {"gpt2", nullptr, nullptr, nullptr, nullptr, nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<Tokenizer> tok =
        Tokenizer::Load((FixtureDir() / c.name / "tokenizer.json").string());
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto piece = [&](int32_t id) { return id < 0 ? std::string("(none)") : tok->IdToPiece(id); };
    EXPECT_EQ(piece(tok->bos_id()), c.bos ? c.bos : "(none)");
    EXPECT_EQ(piece(tok->eos_id()), c.eos ? c.eos : "(none)");
    EXPECT_EQ(piece(tok->pad_id()), c.pad ? c.pad : "(none)");
    EXPECT_EQ(piece(tok->unk_id()), c.unk ? c.unk : "(none)");
    EXPECT_EQ(piece(tok->prompt_start_id()), c.prompt_start ? c.prompt_start : "(none)");
  }
}

TEST(HfTokenizer, RoundTripsArbitraryTextAndSurvivesInvalidUtf8) {
  absl::StatusOr<Tokenizer> tok =
      Tokenizer::Load((FixtureDir() / "llama3" / "tokenizer.json").string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::string all;
  for (const json& t : Expected()["texts"]) all += t.get<std::string>();
  EXPECT_EQ(tok->Decode(tok->Encode(all)), all);
  const std::string invalid = "ok \xFF\xFE bad \xE2\x82 cut \xC3";
  const std::vector<int32_t> ids = tok->Encode(invalid);
  EXPECT_EQ(tok->Decode(ids), "ok \xEF\xBF\xBD\xEF\xBF\xBD bad \xEF\xBF\xBD cut \xEF\xBF\xBD");
  EXPECT_THROW(tok->Decode({static_cast<int32_t>(tok->vocab_size())}), std::exception);
}

TEST(HfTokenizer, FindTokenizerFilePrefersTokenizerJson) {
  const fs::path dir = TempDir("find");
  EXPECT_EQ(FindTokenizerFile(dir.string()), "");
  Spit(dir / "tokenizer.model", "x");
  EXPECT_EQ(FindTokenizerFile(dir.string()), (dir / "tokenizer.model").string());
  Spit(dir / "tokenizer.json", "{}");
  EXPECT_EQ(FindTokenizerFile(dir.string()), (dir / "tokenizer.json").string());
}

// Loads gpt2's tokenizer.json edited by `edit` (or the text `raw`) and returns the error.
std::string LoadError(const std::string& name, void (*edit)(json*), const std::string& raw = "") {
  const fs::path dir = TempDir("errors_" + name);
  std::string text = raw;
  if (text.empty()) {
    json j = json::parse(Slurp(FixtureDir() / "gpt2" / "tokenizer.json"));
    edit(&j);
    text = j.dump();
  }
  Spit(dir / "tokenizer.json", text);
  absl::StatusOr<Tokenizer> tok = Tokenizer::Load((dir / "tokenizer.json").string());
  if (tok.ok()) return "(loaded)";
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << tok.status();
  const std::string message(tok.status().message());
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.rfind((dir / "tokenizer.json").string() + ": ", 0), 0u) << message;
  return message;
}

#define EXPECT_CONTAINS(text, part)                        \
  do {                                                     \
    const std::string got_ = (text);                       \
    EXPECT_NE(got_.find(part), std::string::npos) << got_; \
  } while (0)

TEST(HfTokenizer, MalformedOrUnsupportedFilesAreRefused) {
  const std::string full = Slurp(FixtureDir() / "gpt2" / "tokenizer.json");
  EXPECT_CONTAINS(LoadError("truncated", nullptr, full.substr(0, full.size() / 2)),
                  ("not valid JSON"));
  EXPECT_CONTAINS(
      LoadError("merge", [](json* j) { (*j)["model"]["merges"][5] = "Ġthe zzzunknown"; }),
      ("model.merges[5]: token 'zzzunknown' is not in model.vocab"));
  EXPECT_CONTAINS(LoadError("merge_shape", [](json* j) { (*j)["model"]["merges"][0] = "a b c"; }),
                  ("model.merges[0]: 'a b c' is not two tokens"));
  EXPECT_CONTAINS(
      LoadError("normalizer",
                [](json* j) {
                  (*j)["normalizer"] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
                }),
      ("normalizer.type: Precompiled is not supported"));
  EXPECT_CONTAINS(LoadError("nested",
                            [](json* j) {
                              (*j)["normalizer"] = {
                                  {"type", "Sequence"},
                                  {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}};
                            }),
                  ("normalizer.normalizers[1].type: Lowercase is not supported"));
  EXPECT_CONTAINS(LoadError("added_id", [](json* j) { (*j)["added_tokens"][0]["id"] = 5000000; }),
                  ("added_tokens[0].id: 5000000"));
  EXPECT_CONTAINS(LoadError("added_new",
                            [](json* j) {
                              (*j)["added_tokens"].push_back(
                                  {{"id", 12345}, {"content", "<|new|>"}, {"special", true}});
                            }),
                  ("added_tokens[1].id: 12345 is out of range: '<|new|>' would get id 900"));
  EXPECT_CONTAINS(LoadError("wordpiece", [](json* j) { (*j)["model"]["type"] = "WordPiece"; }),
                  ("model.type: WordPiece is not supported"));
  EXPECT_CONTAINS(LoadError("pretok",
                            [](json* j) {
                              (*j)["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
                            }),
                  ("pre_tokenizer.type: BertPreTokenizer is not supported"));
  EXPECT_CONTAINS(LoadError("regex",
                            [](json* j) {
                              (*j)["pre_tokenizer"] = {{"type", "Split"},
                                                       {"pattern", {{"Regex", "(unclosed"}}},
                                                       {"behavior", "Isolated"}};
                            }),
                  ("pre_tokenizer.pattern.Regex: pattern does not compile"));
  EXPECT_CONTAINS(LoadError("behavior",
                            [](json* j) {
                              (*j)["pre_tokenizer"] = {{"type", "Split"},
                                                       {"pattern", {{"String", " "}}},
                                                       {"behavior", "Sideways"}};
                            }),
                  ("pre_tokenizer.behavior: 'Sideways' is not supported"));
  EXPECT_CONTAINS(LoadError("decoder",
                            [](json* j) {
                              (*j)["decoder"] = {{"type", "WordPiece"}};
                            }),
                  ("decoder.type: WordPiece is not supported"));
  EXPECT_CONTAINS(LoadError("vocab_id", [](json* j) { (*j)["model"]["vocab"]["Ġthe"] = 99999; }),
                  ("model.vocab['Ġthe']: id 99999 out of range [0, 900)"));
  EXPECT_CONTAINS(LoadError("dropout", [](json* j) { (*j)["model"]["dropout"] = 0.1; }),
                  ("model.dropout"));
  EXPECT_CONTAINS(LoadError("unk", [](json* j) { (*j)["model"]["unk_token"] = "<nope>"; }),
                  ("model.unk_token: '<nope>' is not in model.vocab"));
  EXPECT_CONTAINS(LoadError("type",
                            [](json* j) {
                              (*j)["normalizer"] = {{"kind", "NFC"}};
                            }),
                  ("normalizer.type: missing"));
}

TEST(HfTokenizer, ConfigNamingAnUnknownTokenIsRefused) {
  const fs::path dir = TempDir("config");
  fs::copy_file(FixtureDir() / "gpt2" / "tokenizer.json", dir / "tokenizer.json");
  Spit(dir / "tokenizer_config.json", R"({"bos_token": "<|nothere|>"})");
  absl::StatusOr<Tokenizer> tok = Tokenizer::Load((dir / "tokenizer.json").string());
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(std::string(tok.status().message()),
                  ("tokenizer_config.json: bos_token: '<|nothere|>' is not in"));
  Spit(dir / "tokenizer_config.json", R"({"eos_token": {"content": "<|endoftext|>"}})");
  tok = Tokenizer::Load((dir / "tokenizer.json").string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->eos_id(), 0);
  EXPECT_EQ(tok->bos_id(), -1);
}

}  // namespace
}  // namespace fam::data
