// framework/data: KJV cleaning, document splitting, token shard files (round trip, corruption,
// out-of-range ids), the SentencePiece tokenizer (train, encode, decode) and prepare-data.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/data/corpus.h"
#include "framework/data/prepare_data.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace fam::data {
namespace {

namespace fs = std::filesystem;

std::string TempDirFor(const std::string& test) {
  fs::path dir =
      fs::path(::testing::TempDir()) / ("fam_data_" + test + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

using testing::Slurp;

bool Contains(const absl::Status& status, const std::string& part) {
  return std::string(status.message()).find(part) != std::string::npos;
}

// Raw `bible` output: header between blank lines, indented verse numbers, wrapped lines.
constexpr char kRawKjv[] =
    "\n"
    "Genesis 1\n"
    "\n"
    "  1 In the beginning God created the heaven and the earth.\n"
    "  2 And the earth was without form, and void; and darkness was upon the face of\n"
    "the deep. And the Spirit of God moved upon the face of the waters.\n"
    "\n"
    "1 Samuel 3\n"
    "\n"
    "  9 Therefore Eli said unto Samuel, Go, lie down: and it shall be, if he call\n"
    "thee, that thou shalt say, Speak, LORD; for thy servant heareth. So Samuel went\n"
    "and lay down in his place.\n"
    "  10 And the LORD came, and stood, and called as at other times, Samuel, Samuel. \n"
    "\n"
    "Psalms 3\n"
    "\n"
    "  2 Many there be which say of my soul, There is no help for him in God.\n"
    "Selah.\n";

constexpr char kCleanKjv[] =
    "In the beginning God created the heaven and the earth.\n"
    "And the earth was without form, and void; and darkness was upon the face of the deep. And "
    "the Spirit of God moved upon the face of the waters.\n"
    "\n"
    "Therefore Eli said unto Samuel, Go, lie down: and it shall be, if he call thee, that thou "
    "shalt say, Speak, LORD; for thy servant heareth. So Samuel went and lay down in his place.\n"
    "And the LORD came, and stood, and called as at other times, Samuel, Samuel.\n"
    "\n"
    "Many there be which say of my soul, There is no help for him in God. Selah.\n";

TEST(Corpus, CleanKjvTextOnLiteralSample) {
  EXPECT_EQ(CleanKjvText(kRawKjv), kCleanKjv);
  EXPECT_EQ(CleanKjvText(""), "");
  // CRLF line ends and a missing final newline give the same text.
  std::string crlf;
  for (char c : std::string(kRawKjv)) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  crlf.pop_back();
  crlf.pop_back();
  EXPECT_EQ(CleanKjvText(crlf), kCleanKjv);
}

TEST(Corpus, SplitDocumentsAtBlankLines) {
  const std::string text = "\n\na b\nc\n  \n\nd\n\n\ne f\n";
  std::vector<std::string_view> docs = SplitDocuments(text);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0], "a b\nc");
  EXPECT_EQ(docs[1], "d");
  EXPECT_EQ(docs[2], "e f");
  EXPECT_EQ(SplitDocuments(kCleanKjv).size(), 3u);
  EXPECT_TRUE(SplitDocuments("\n \n").empty());
  EXPECT_FALSE(ApplyInputFormat("html", "x").ok());
  EXPECT_EQ(*ApplyInputFormat("kjv", kRawKjv), kCleanKjv);
}

// scripts/get_kjv.sh (awk) and CleanKjvText apply the same rules to the real `bible` output.
TEST(Corpus, GetKjvScriptMatchesCleanKjvText) {
  if (std::system("command -v bible > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "bible (bible-kjv) not installed; run scripts/setup.sh";
  }
  const char* env = std::getenv("FAM_SOURCE_DIR");
  const fs::path source = env ? fs::path(env) : fs::path(__FILE__).parent_path().parent_path();
  const std::string dir = TempDirFor("kjv");
  const std::string script = (source / "scripts" / "get_kjv.sh").string();
  ASSERT_EQ(std::system((script + " " + dir + "/clean.txt > /dev/null").c_str()), 0);
  ASSERT_EQ(std::system((script + " --raw " + dir + "/raw.txt > /dev/null").c_str()), 0);
  const std::string clean = Slurp(dir + "/clean.txt");
  EXPECT_EQ(CleanKjvText(Slurp(dir + "/raw.txt")), clean);
  EXPECT_EQ(SplitDocuments(clean).size(), 1189u);  // chapters
  EXPECT_EQ(clean.rfind("In the beginning God created the heaven and the earth.\n", 0), 0u);
  // --verse-numbers: the same lines, each verse prefixed by its number and one space.
  ASSERT_EQ(std::system((script + " --verse-numbers " + dir + "/numbered.txt > /dev/null").c_str()),
            0);
  std::istringstream clean_lines(clean), numbered_lines(Slurp(dir + "/numbered.txt"));
  std::string c, n;
  int64_t verses = 0, mismatches = 0, last_number = 0;
  while (std::getline(clean_lines, c)) {
    ASSERT_TRUE(static_cast<bool>(std::getline(numbered_lines, n))) << "numbered text is shorter";
    if (c.empty()) {
      mismatches += !n.empty();
      continue;
    }
    const size_t space = n.find(' ');
    const std::string number = n.substr(0, space);
    const bool digits = !number.empty() && std::all_of(number.begin(), number.end(), ::isdigit);
    mismatches += !digits || space == std::string::npos || n.substr(space + 1) != c;
    if (digits) last_number = std::stoll(number);
    ++verses;
  }
  EXPECT_FALSE(static_cast<bool>(std::getline(numbered_lines, n))) << "numbered text is longer";
  EXPECT_EQ(verses, 31102);
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(last_number, 21);  // Revelation 22:21
  fs::remove_all(dir);
}

// scripts/make_copy_shard.py writes shards our reader accepts (header, checksum), with the copies
// where its documentation says.
TEST(Corpus, CopyShardScriptWritesValidShardsWithCopies) {
  if (std::system("command -v python3 > /dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const char* env = std::getenv("FAM_SOURCE_DIR");
  const fs::path source = env ? fs::path(env) : fs::path(__FILE__).parent_path().parent_path();
  const std::string dir = TempDirFor("copy_shard");
  const std::string script = "python3 " + (source / "scripts" / "make_copy_shard.py").string();
  auto run = [&](const std::string& args) {
    return std::system((script + " --out " + dir + "/" + args).c_str());
  };
  ASSERT_EQ(run("repeat.bin --tokens 1024 --probe repeat"), 0);
  ASSERT_EQ(run("random.bin --tokens 1024 --probe random"), 0);
  ASSERT_EQ(run("copies.bin --tokens 5000 --min-span 3 --max-span 3 --copies 3"), 0);
  EXPECT_NE(run("bad.bin --copies 1 2> /dev/null"), 0);
  absl::StatusOr<TokenShard> repeat = TokenShard::Open(dir + "/repeat.bin");
  absl::StatusOr<TokenShard> random = TokenShard::Open(dir + "/random.bin");
  absl::StatusOr<TokenShard> copies = TokenShard::Open(dir + "/copies.bin");
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  ASSERT_TRUE(random.ok()) << random.status();
  ASSERT_TRUE(copies.ok()) << copies.status();
  ASSERT_EQ(repeat->size(), 1025);  // + 1 for the loader's shifted targets
  ASSERT_EQ(copies->size(), 5000);
  EXPECT_EQ(repeat->vocab_size(), 2048);
  int64_t repeat_same = 0, random_same = 0;
  for (int64_t i = 0; i < 1024; ++i) {
    EXPECT_GE(repeat->at(i), 260);
    EXPECT_LT(repeat->at(i), 2048);
    if (i % 128 < 64) {
      repeat_same += repeat->at(i) == repeat->at(i + 64);
      random_same += random->at(i) == random->at(i + 64);
    }
  }
  EXPECT_EQ(repeat_same, 512);
  EXPECT_LT(random_same, 10);
  for (int64_t i = 0; i + 9 <= 5000; i += 9) {
    EXPECT_EQ(copies->at(i), copies->at(i + 3));
    EXPECT_EQ(copies->at(i + 2), copies->at(i + 8));
  }
  fs::remove_all(dir);
}

TEST(TokenShard, RoundTripUint16AndUint32) {
  const std::string dir = TempDirFor("shard_rt");
  const std::vector<int32_t> tokens = {0, 1, 65535, 7, 300, 42};
  const std::string p16 = dir + "/a.bin", p32 = dir + "/b.bin";
  ASSERT_TRUE(WriteTokenShard(p16, tokens, 65536).ok());
  std::vector<int32_t> big = tokens;
  big.push_back(100000);
  ASSERT_TRUE(WriteTokenShard(p32, big, 100001).ok());
  EXPECT_EQ(fs::file_size(p16), 64u + 2 * tokens.size());
  EXPECT_EQ(fs::file_size(p32), 64u + 4 * big.size());
  EXPECT_FALSE(fs::exists(p16 + ".tmp-" + std::to_string(::getpid())));

  absl::StatusOr<TokenShard> a = TokenShard::Open(p16);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->bytes_per_token(), 2);
  EXPECT_EQ(a->vocab_size(), 65536);
  ASSERT_EQ(a->size(), static_cast<int64_t>(tokens.size()));
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(a->at(i), tokens[i]);
  std::vector<int64_t> out(3);
  a->Read(2, 3, out.data());
  EXPECT_EQ(out, (std::vector<int64_t>{65535, 7, 300}));

  absl::StatusOr<TokenShard> b = TokenShard::Open(p32);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->bytes_per_token(), 4);
  ASSERT_EQ(b->size(), static_cast<int64_t>(big.size()));
  for (size_t i = 0; i < big.size(); ++i) EXPECT_EQ(b->at(i), big[i]);
  EXPECT_TRUE(b->CheckIds().ok());

  // Header fields at the documented offsets; checksum = FNV-1a of the token bytes.
  const std::string bytes = Slurp(p16);
  EXPECT_EQ(bytes.substr(0, 8), "FAMTOK01");
  uint32_t version, dtype;
  uint64_t vocab, count, checksum;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&dtype, bytes.data() + 12, 4);
  std::memcpy(&vocab, bytes.data() + 16, 8);
  std::memcpy(&count, bytes.data() + 24, 8);
  std::memcpy(&checksum, bytes.data() + 32, 8);
  EXPECT_EQ(version, 1u);
  EXPECT_EQ(dtype, 2u);
  EXPECT_EQ(vocab, 65536u);
  EXPECT_EQ(count, tokens.size());
  uint64_t fnv = 0xcbf29ce484222325ull;  // independent byte-wise FNV-1a
  for (size_t i = 64; i < bytes.size(); ++i) {
    fnv = (fnv ^ static_cast<unsigned char>(bytes[i])) * 0x100000001b3ull;
  }
  EXPECT_EQ(checksum, fnv);
  EXPECT_EQ(static_cast<unsigned char>(bytes[64 + 4]), 0xff);  // 65535 little-endian
  EXPECT_EQ(static_cast<unsigned char>(bytes[64 + 6]), 7);

  // An empty shard is valid.
  ASSERT_TRUE(WriteTokenShard(dir + "/e.bin", {}, 10).ok());
  absl::StatusOr<TokenShard> e = TokenShard::Open(dir + "/e.bin");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->size(), 0);
  fs::remove_all(dir);
}

TEST(TokenShard, CorruptionIsDetectedAndNamesTheFile) {
  const std::string dir = TempDirFor("shard_bad");
  const std::string path = dir + "/s.bin";
  std::vector<int32_t> tokens(100);
  for (int i = 0; i < 100; ++i) tokens[i] = (i * 37) % 500;
  ASSERT_TRUE(WriteTokenShard(path, tokens, 500).ok());
  const std::string good = Slurp(path);

  std::string flipped = good;
  flipped[64 + 77] ^= 0x10;
  WriteFile(path, flipped);
  absl::StatusOr<TokenShard> s = TokenShard::Open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s.status(), "checksum")) << s.status();
  EXPECT_TRUE(Contains(s.status(), path)) << s.status();
  // Skipping verification opens it; Verify() then reports the mismatch.
  absl::StatusOr<TokenShard> unchecked = TokenShard::Open(path, /*verify_checksum=*/false);
  ASSERT_TRUE(unchecked.ok()) << unchecked.status();
  EXPECT_EQ(unchecked->Verify().code(), absl::StatusCode::kDataLoss);

  WriteFile(path, good.substr(0, good.size() - 3));
  s = TokenShard::Open(path, /*verify_checksum=*/false);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s.status(), "truncated")) << s.status();
  EXPECT_TRUE(Contains(s.status(), path)) << s.status();

  WriteFile(path, good.substr(0, 20));
  s = TokenShard::Open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.status(), "truncated")) << s.status();

  std::string magic = good;
  magic[3] = 'X';
  WriteFile(path, magic);
  s = TokenShard::Open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s.status(), "magic")) << s.status();
  EXPECT_TRUE(Contains(s.status(), path)) << s.status();

  std::string version = good;
  version[8] = 9;
  WriteFile(path, version);
  s = TokenShard::Open(path);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(Contains(s.status(), "version 9")) << s.status();

  s = TokenShard::Open(dir + "/missing.bin");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s.status(), "missing.bin"));
  fs::remove_all(dir);
}

TEST(TokenShard, OutOfRangeIds) {
  const std::string dir = TempDirFor("shard_ids");
  const std::string path = dir + "/s.bin";
  absl::Status w = WriteTokenShard(path, {1, 2, 10}, 10);
  EXPECT_EQ(w.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(w, "token 2 = 10")) << w;
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(WriteTokenShard(path, {-1}, 10).ok());

  // A shard whose header claims a smaller vocabulary than its ids (the checksum covers only the
  // tokens, so it still opens): CheckIds and Read name the file and the offset.
  ASSERT_TRUE(WriteTokenShard(path, {1, 2, 3, 900, 4}, 1000).ok());
  std::string bytes = Slurp(path);
  const uint64_t small_vocab = 100;
  std::memcpy(bytes.data() + 16, &small_vocab, 8);
  WriteFile(path, bytes);
  absl::StatusOr<TokenShard> s = TokenShard::Open(path);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->CheckIds(0, 3).ok());
  absl::Status c = s->CheckIds();
  EXPECT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c, "offset 3")) << c;
  EXPECT_TRUE(Contains(c, path)) << c;
  std::vector<int64_t> out(5);
  try {
    s->Read(0, 5, out.data());
    ADD_FAILURE() << "Read of an out-of-range id did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("offset 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// A small deterministic corpus: sentences from a fixed word list.
std::string GeneratedCorpus(int lines, uint32_t seed) {
  static const char* kWords[] = {"the",   "river", "stone",  "light", "walks",  "under", "over",
                                 "green", "quiet", "garden", "of",    "and",    "a",     "tower",
                                 "north", "winds", "carry",  "seven", "houses", "bright"};
  uint32_t x = seed;
  std::string text;
  for (int l = 0; l < lines; ++l) {
    x = x * 1664525u + 1013904223u;
    const int n = 4 + (x >> 28) % 8;
    for (int w = 0; w < n; ++w) {
      x = x * 1664525u + 1013904223u;
      if (w > 0) text += ' ';
      std::string word = kWords[(x >> 16) % 20];
      if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      text += word;
    }
    text += ".\n";
    if (l % 10 == 9) text += '\n';  // paragraphs of 10 lines
  }
  return text;
}

TEST(Tokenizer, TrainEncodeDecodeRoundTrip) {
  const std::string dir = TempDirFor("tok");
  WriteFile(dir + "/corpus.txt", GeneratedCorpus(400, 1));
  ASSERT_TRUE(Tokenizer::Train({dir + "/corpus.txt"}, dir + "/tok", 400).ok());
  ASSERT_TRUE(fs::exists(dir + "/tok.model"));
  ASSERT_TRUE(fs::exists(dir + "/tok.vocab"));
  absl::StatusOr<Tokenizer> tok = Tokenizer::Load(dir + "/tok.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->unk_id(), 0);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->pad_id(), 3);
  ASSERT_GE(tok->newline_id(), 0);
  EXPECT_EQ(tok->IdToPiece(tok->newline_id()), "<0x0A>");

  // Exact round trip, including newlines, repeated spaces, tabs and unseen (byte-fallback) text.
  for (const std::string& text :
       {std::string("The river walks under the green tower."), std::string(""),
        std::string("Seven  houses\n\nand a\tquiet garden\n"), std::string("\n leading space"),
        std::string("naïve café 123 — ✓"), std::string("  \n\n  x  ")}) {
    std::vector<int32_t> ids = tok->Encode(text);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, 400);
    }
    EXPECT_EQ(tok->Decode(ids), text);
  }
  // Frequent words become single pieces; lines are joined by the newline token.
  std::vector<int32_t> ids = tok->Encode("the river\nthe river");
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_EQ(tok->IdToPiece(ids[0]), "\xE2\x96\x81the");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok->newline_id()), 1);
  EXPECT_THROW(tok->Decode({5, 400}), Error);

  // Deterministic: a second training gives the same vocabulary.
  ASSERT_TRUE(Tokenizer::Train({dir + "/corpus.txt"}, dir + "/tok2", 400).ok());
  EXPECT_EQ(Slurp(dir + "/tok.vocab"), Slurp(dir + "/tok2.vocab"));

  EXPECT_EQ(Tokenizer::Load(dir + "/nope.model").status().code(), absl::StatusCode::kNotFound);
  WriteFile(dir + "/junk.model", "not a model");
  EXPECT_FALSE(Tokenizer::Load(dir + "/junk.model").ok());
  EXPECT_FALSE(Tokenizer::Train({dir + "/missing.txt"}, dir + "/t3", 300).ok());
  EXPECT_FALSE(Tokenizer::Train({dir + "/corpus.txt"}, dir + "/t4", 100).ok());
  fs::remove_all(dir);
}

TEST(PrepareData, WritesShardsManifestAndIsIdempotent) {
  const std::string dir = TempDirFor("prep");
  WriteFile(dir + "/a.txt", GeneratedCorpus(300, 2));  // 30 paragraphs
  WriteFile(dir + "/b.txt", GeneratedCorpus(200, 3));  // 20 paragraphs
  PrepareDataOptions o;
  o.inputs = {dir + "/a.txt", dir + "/b.txt"};
  o.out_dir = dir + "/out";
  o.vocab_size = 300;
  o.val_fraction = 0.1;  // documents 9, 19, 29, 39, 49
  o.shard_tokens = 1000;
  std::vector<std::string> log;
  o.log = [&](const std::string& line) { log.push_back(line); };
  ASSERT_TRUE(PrepareData(o).ok());

  absl::StatusOr<DataManifest> m = ReadDataManifest(o.out_dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->vocab_size, 300);
  EXPECT_EQ(m->eos_id, 2);
  EXPECT_EQ(m->tokenizer, o.out_dir + "/tokenizer.model");
  ASSERT_GE(m->train_shards.size(), 2u);
  ASSERT_GE(m->val_shards.size(), 1u);
  EXPECT_EQ(m->train_shards[0], o.out_dir + "/train-00000.bin");
  EXPECT_EQ(m->val_shards[0], o.out_dir + "/val-00000.bin");
  EXPECT_TRUE(fs::exists(o.out_dir + "/tokenizer.vocab"));

  // Independent truth: encode the documents with the tokenizer and rebuild both streams.
  absl::StatusOr<Tokenizer> tok = Tokenizer::Load(m->tokenizer);
  ASSERT_TRUE(tok.ok());
  std::vector<int32_t> want_train, want_val;
  int doc = 0;
  for (const std::string& input : o.inputs) {
    const std::string text = Slurp(input);
    for (std::string_view d : SplitDocuments(text)) {
      std::vector<int32_t>& dst = (doc % 10 == 9) ? want_val : want_train;
      std::vector<int32_t> ids = tok->Encode(d);
      dst.insert(dst.end(), ids.begin(), ids.end());
      dst.push_back(2);
      ++doc;
    }
  }
  EXPECT_EQ(doc, 50);
  auto read_all = [](const std::vector<std::string>& shards) {
    std::vector<int32_t> all;
    for (const std::string& p : shards) {
      absl::StatusOr<TokenShard> s = TokenShard::Open(p);
      EXPECT_TRUE(s.ok()) << s.status();
      EXPECT_LE(s->size(), 1000);
      for (int64_t i = 0; i < s->size(); ++i) all.push_back(static_cast<int32_t>(s->at(i)));
    }
    return all;
  };
  EXPECT_EQ(read_all(m->train_shards), want_train);
  EXPECT_EQ(read_all(m->val_shards), want_val);
  EXPECT_EQ(m->train_tokens, static_cast<int64_t>(want_train.size()));
  EXPECT_EQ(m->val_tokens, static_cast<int64_t>(want_val.size()));

  nlohmann::json j = nlohmann::json::parse(Slurp(o.out_dir + "/data.json"));
  EXPECT_EQ(j["train"]["documents"], 45);
  EXPECT_EQ(j["val"]["documents"], 5);
  EXPECT_EQ(j["sources"].size(), 2u);

  // Second run: up to date, nothing rewritten.
  const auto stamp = fs::last_write_time(m->train_shards[0]);
  log.clear();
  ASSERT_TRUE(PrepareData(o).ok());
  ASSERT_FALSE(log.empty());
  EXPECT_NE(log.back().find("up to date"), std::string::npos) << log.back();
  EXPECT_EQ(fs::last_write_time(m->train_shards[0]), stamp);

  // Changed input size → redone; larger shards leave fewer files and stale ones are removed.
  WriteFile(dir + "/b.txt", GeneratedCorpus(100, 3));
  o.shard_tokens = 1000000;
  ASSERT_TRUE(PrepareData(o).ok());
  absl::StatusOr<DataManifest> m2 = ReadDataManifest(o.out_dir + "/data.json");
  ASSERT_TRUE(m2.ok());
  EXPECT_EQ(m2->train_shards.size(), 1u);
  EXPECT_FALSE(fs::exists(o.out_dir + "/train-00001.bin"));

  // Reusing the trained tokenizer for another output directory.
  PrepareDataOptions o2 = o;
  o2.out_dir = dir + "/out2";
  o2.tokenizer = o.out_dir + "/tokenizer.model";
  o2.val_fraction = 0.0;
  ASSERT_TRUE(PrepareData(o2).ok());
  absl::StatusOr<DataManifest> m3 = ReadDataManifest(o2.out_dir);
  ASSERT_TRUE(m3.ok());
  EXPECT_EQ(m3->val_shards.size(), 0u);
  EXPECT_EQ(Slurp(o2.out_dir + "/tokenizer.model"), Slurp(o.out_dir + "/tokenizer.model"));

  PrepareDataOptions bad = o;
  bad.inputs = {dir + "/missing.txt"};
  absl::Status s = PrepareData(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(s, "missing.txt")) << s;
  bad = o;
  bad.val_fraction = 0.9;
  EXPECT_EQ(PrepareData(bad).code(), absl::StatusCode::kInvalidArgument);
  fs::remove_all(dir);
}

// A Hugging Face tokenizer.json is copied as such (with its tokenizer_config.json), its eos ends
// the documents, and switching back to a SentencePiece model removes the JSON files.
TEST(PrepareData, WithTokenizerJson) {
  const char* env = std::getenv("FAM_SOURCE_DIR");
  const fs::path source = env ? fs::path(env) : fs::path(__FILE__).parent_path().parent_path();
  const fs::path fixture = source / "tests" / "fixtures" / "tokenizers" / "llama3";
  const std::string dir = TempDirFor("prep_json");
  WriteFile(dir + "/a.txt", GeneratedCorpus(100, 4));
  PrepareDataOptions o;
  o.inputs = {dir + "/a.txt"};
  o.out_dir = dir + "/out";
  o.tokenizer = (fixture / "tokenizer.json").string();
  o.val_fraction = 0.1;
  ASSERT_TRUE(PrepareData(o).ok());
  EXPECT_EQ(Slurp(o.out_dir + "/tokenizer.json"), Slurp((fixture / "tokenizer.json").string()));
  EXPECT_EQ(Slurp(o.out_dir + "/tokenizer_config.json"),
            Slurp((fixture / "tokenizer_config.json").string()));
  EXPECT_FALSE(fs::exists(o.out_dir + "/tokenizer.model"));
  EXPECT_EQ(FindTokenizerFile(o.out_dir), o.out_dir + "/tokenizer.json");
  absl::StatusOr<DataManifest> m = ReadDataManifest(o.out_dir);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->tokenizer, o.out_dir + "/tokenizer.json");
  absl::StatusOr<Tokenizer> tok = Tokenizer::Load(m->tokenizer);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(m->vocab_size, tok->vocab_size());
  ASSERT_GE(tok->eos_id(), 0);
  EXPECT_EQ(tok->IdToPiece(tok->eos_id()), "<|end_of_text|>");  // from tokenizer_config.json
  EXPECT_EQ(m->eos_id, tok->eos_id());
  std::vector<int32_t> want;
  const std::string text = Slurp(dir + "/a.txt");
  int doc = 0;
  for (std::string_view d : SplitDocuments(text)) {
    if (doc++ % 10 == 9) continue;  // validation
    std::vector<int32_t> ids = tok->Encode(d);
    want.insert(want.end(), ids.begin(), ids.end());
    want.push_back(tok->eos_id());
  }
  std::vector<int32_t> got;
  for (const std::string& p : m->train_shards) {
    absl::StatusOr<TokenShard> s = TokenShard::Open(p);
    ASSERT_TRUE(s.ok()) << s.status();
    for (int64_t i = 0; i < s->size(); ++i) got.push_back(static_cast<int32_t>(s->at(i)));
  }
  EXPECT_EQ(got, want);
  nlohmann::json j = nlohmann::json::parse(Slurp(o.out_dir + "/data.json"));
  std::vector<std::string> files;
  for (const auto& f : j["files"]) files.push_back(f["file"]);
  EXPECT_EQ(files[0], "tokenizer.json");
  EXPECT_EQ(files[1], "tokenizer_config.json");

  // A SentencePiece model in the same directory replaces the JSON files.
  ASSERT_TRUE(Tokenizer::Train({dir + "/a.txt"}, dir + "/sp", 300).ok());
  o.tokenizer = dir + "/sp.model";
  ASSERT_TRUE(PrepareData(o).ok());
  EXPECT_FALSE(fs::exists(o.out_dir + "/tokenizer.json"));
  EXPECT_FALSE(fs::exists(o.out_dir + "/tokenizer_config.json"));
  EXPECT_EQ(FindTokenizerFile(o.out_dir), o.out_dir + "/tokenizer.model");
  fs::remove_all(dir);
}

TEST(PrepareData, KjvFormatAndTailValidationSplit) {
  const std::string dir = TempDirFor("prep_kjv");
  std::string raw;
  for (int i = 0; i < 40; ++i) raw += kRawKjv;  // 120 chapters of raw `bible` output
  WriteFile(dir + "/kjv_raw.txt", raw);
  PrepareDataOptions o;
  o.inputs = {dir + "/kjv_raw.txt"};
  o.out_dir = dir + "/out";
  o.input_format = "kjv";
  o.documents = "file";  // one document: the validation split falls back to the token tail
  o.vocab_size = 300;
  o.val_fraction = 0.05;
  ASSERT_TRUE(PrepareData(o).ok());
  absl::StatusOr<DataManifest> m = ReadDataManifest(o.out_dir);
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<Tokenizer> tok = Tokenizer::Load(m->tokenizer);
  ASSERT_TRUE(tok.ok());
  std::vector<int32_t> all = tok->Encode(CleanKjvText(raw).substr(0, CleanKjvText(raw).size() - 1));
  all.push_back(2);
  const int64_t val = static_cast<int64_t>(std::ceil(0.05 * all.size()));
  EXPECT_EQ(m->val_tokens, val);
  EXPECT_EQ(m->train_tokens + m->val_tokens, static_cast<int64_t>(all.size()));
  absl::StatusOr<TokenShard> v = TokenShard::Open(m->val_shards[0]);
  ASSERT_TRUE(v.ok());
  for (int64_t i = 0; i < v->size(); ++i) EXPECT_EQ(v->at(i), all[all.size() - val + i]);
  // The decoded train text starts with the cleaned first verse (no verse numbers, no headers).
  absl::StatusOr<TokenShard> t = TokenShard::Open(m->train_shards[0]);
  ASSERT_TRUE(t.ok());
  std::vector<int32_t> head;
  for (int64_t i = 0; i < 40; ++i) head.push_back(static_cast<int32_t>(t->at(i)));
  EXPECT_EQ(tok->Decode(head).rfind("In the beginning God created", 0), 0u) << tok->Decode(head);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fam::data
