#include "framework/data/prepare_data.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/data/corpus.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace fam::data {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kManifestName[] = "data.json";

void Log(const PrepareDataOptions& o, const std::string& line) {
  if (o.log) o.log(line);
}

// Size of a file, or -1 when it cannot be read.
int64_t FileBytes(const fs::path& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  return ec ? -1 : static_cast<int64_t>(size);
}

std::string AbsolutePath(const std::string& path) {
  std::error_code ec;
  fs::path abs = fs::absolute(path, ec);
  return (ec ? fs::path(path) : abs).lexically_normal().string();
}

absl::Status ValidateOptions(const PrepareDataOptions& o) {
  if (o.inputs.empty()) return absl::InvalidArgumentError("prepare-data: no input files");
  if (o.out_dir.empty()) return absl::InvalidArgumentError("prepare-data: out_dir is empty");
  if (o.input_format != "text" && o.input_format != "kjv") {
    return absl::InvalidArgumentError(
        absl::StrCat("prepare-data: input_format '", o.input_format, "' (expected text or kjv)"));
  }
  if (o.documents != "paragraph" && o.documents != "line" && o.documents != "file") {
    return absl::InvalidArgumentError(absl::StrCat("prepare-data: documents '", o.documents,
                                                   "' (expected paragraph, line or file)"));
  }
  if (!(o.val_fraction >= 0.0 && o.val_fraction <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prepare-data: val_fraction ", o.val_fraction, " not in [0, 0.5]"));
  }
  if (o.shard_tokens <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prepare-data: shard_tokens ", o.shard_tokens, " must be > 0"));
  }
  return absl::OkStatus();
}

// The inputs of the computation; equal requests give equal outputs.
absl::StatusOr<json> MakeRequest(const PrepareDataOptions& o) {
  json request;
  json inputs = json::array();
  for (const std::string& path : o.inputs) {
    const int64_t bytes = FileBytes(path);
    if (bytes < 0)
      return absl::NotFoundError(absl::StrCat("prepare-data: input not found: ", path));
    inputs.push_back({{"path", AbsolutePath(path)}, {"bytes", bytes}});
  }
  request["inputs"] = inputs;
  request["input_format"] = o.input_format;
  request["documents"] = o.documents;
  request["val_fraction"] = o.val_fraction;
  request["shard_tokens"] = o.shard_tokens;
  if (o.tokenizer.empty()) {
    request["tokenizer"] = {{"train", true},
                            {"vocab_size", o.vocab_size},
                            {"model_type", o.model_type},
                            {"seed", o.seed}};
  } else {
    const int64_t bytes = FileBytes(o.tokenizer);
    if (bytes < 0) {
      return absl::NotFoundError(absl::StrCat("prepare-data: tokenizer not found: ", o.tokenizer));
    }
    request["tokenizer"] = {
        {"train", false}, {"path", AbsolutePath(o.tokenizer)}, {"bytes", bytes}};
    if (IsTokenizerJson(o.tokenizer)) {  // special ids come from the config beside it
      const int64_t config =
          FileBytes(fs::path(o.tokenizer).parent_path() / "tokenizer_config.json");
      if (config >= 0) request["tokenizer"]["config_bytes"] = config;
    }
  }
  return request;
}

bool UpToDate(const fs::path& dir, const json& request) {
  std::ifstream in(dir / kManifestName);
  if (!in) return false;
  json manifest = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.contains("request") || !manifest.contains("files") ||
      manifest["request"] != request) {
    return false;
  }
  for (const json& f : manifest["files"]) {
    if (!f.contains("file") || !f.contains("bytes") || !f["file"].is_string()) return false;
    if (FileBytes(dir / f["file"].get<std::string>()) != f["bytes"]) return false;
  }
  return true;
}

// Accumulates one stream (train or val) and writes it as shards of at most shard_tokens tokens.
class ShardStream {
 public:
  ShardStream(fs::path dir, std::string prefix, int64_t shard_tokens, int64_t vocab_size)
      : dir_(std::move(dir)),
        prefix_(std::move(prefix)),
        shard_tokens_(shard_tokens),
        vocab_size_(vocab_size) {}

  absl::Status AddDocument(const std::vector<int32_t>& tokens, int32_t eos) {
    buffer_.insert(buffer_.end(), tokens.begin(), tokens.end());
    if (eos >= 0) buffer_.push_back(eos);
    ++documents_;
    // Strictly more than a shard: the buffer keeps a tail for Finish and for TakeTail.
    while (static_cast<int64_t>(buffer_.size()) > shard_tokens_) {
      std::vector<int32_t> rest(buffer_.begin() + shard_tokens_, buffer_.end());
      buffer_.resize(static_cast<size_t>(shard_tokens_));
      absl::Status status = WriteShard();
      if (!status.ok()) return status;
      buffer_ = std::move(rest);
    }
    return absl::OkStatus();
  }

  // Removes up to `count` tokens from the end of the unwritten buffer.
  std::vector<int32_t> TakeTail(int64_t count) {
    count = std::min<int64_t>(count, static_cast<int64_t>(buffer_.size()));
    std::vector<int32_t> tail(buffer_.end() - count, buffer_.end());
    buffer_.resize(buffer_.size() - static_cast<size_t>(count));
    return tail;
  }

  // Writes the remaining buffer (always at least one shard, possibly empty).
  absl::Status Finish() {
    if (!buffer_.empty() || shards_.empty()) return WriteShard();
    return absl::OkStatus();
  }

  int64_t tokens() const { return tokens_ + static_cast<int64_t>(buffer_.size()); }
  int64_t documents() const { return documents_; }
  const json& shards() const { return shards_; }
  std::set<std::string> files() const {
    std::set<std::string> names;
    for (const json& s : shards_) names.insert(s["file"].get<std::string>());
    return names;
  }

 private:
  absl::Status WriteShard() {
    const std::string name = absl::StrFormat("%s-%05d.bin", prefix_, shards_.size());
    const fs::path path = dir_ / name;
    absl::Status status = WriteTokenShard(path.string(), buffer_, vocab_size_);
    if (!status.ok()) return status;
    shards_.push_back({{"file", name},
                       {"tokens", static_cast<int64_t>(buffer_.size())},
                       {"bytes", FileBytes(path)}});
    tokens_ += static_cast<int64_t>(buffer_.size());
    buffer_.clear();
    return absl::OkStatus();
  }

  fs::path dir_;
  std::string prefix_;
  int64_t shard_tokens_;
  int64_t vocab_size_;
  std::vector<int32_t> buffer_;
  json shards_ = json::array();
  int64_t tokens_ = 0;  // written to shards
  int64_t documents_ = 0;
};

std::vector<std::string_view> CutDocuments(std::string_view text, const std::string& mode) {
  if (mode == "paragraph") return SplitDocuments(text);
  std::vector<std::string_view> docs;
  if (mode == "file") {
    // The whole file minus leading and trailing blank lines.
    std::vector<std::string_view> paragraphs = SplitDocuments(text);
    if (!paragraphs.empty()) {
      const char* begin = paragraphs.front().data();
      const char* end = paragraphs.back().data() + paragraphs.back().size();
      docs.emplace_back(begin, static_cast<size_t>(end - begin));
    }
    return docs;
  }
  size_t pos = 0;  // "line"
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") != std::string_view::npos) docs.push_back(line);
    pos = nl + 1;
  }
  return docs;
}

absl::Status WriteManifest(const fs::path& dir, const json& manifest) {
  const fs::path tmp = dir / (std::string(kManifestName) + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << manifest.dump(2) << "\n";
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp.string()));
  }
  std::error_code ec;
  fs::rename(tmp, dir / kManifestName, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp.string(), " into place: ", ec.message()));
  }
  return absl::OkStatus();
}

// Deletes train-NNNNN.bin / val-NNNNN.bin files that the new manifest does not list.
void RemoveStaleShards(const fs::path& dir, const std::set<std::string>& keep) {
  static const std::regex kShardName(R"((train|val)-\d{5}\.bin)");
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, kShardName) && keep.count(name) == 0) fs::remove(entry.path(), ec);
  }
}

absl::Status SetUpTokenizer(const PrepareDataOptions& o, const fs::path& dir) {
  if (o.tokenizer.empty()) {
    Log(o, absl::StrCat("prepare-data: training a ", o.model_type, " tokenizer, vocab ",
                        o.vocab_size));
    std::error_code ec;
    for (const char* stale : {"tokenizer.json", "tokenizer_config.json"}) {
      fs::remove(dir / stale, ec);
    }
    TokenizerTrainOptions train;
    train.model_type = o.model_type;
    train.seed = o.seed;
    if (o.input_format == "kjv") train.transform = [](std::string t) { return CleanKjvText(t); };
    return Tokenizer::Train(o.inputs, (dir / "tokenizer").string(), o.vocab_size, train);
  }
  absl::StatusOr<std::string> copied = CopyTokenizer(o.tokenizer, dir.string());
  if (!copied.ok()) {
    return absl::Status(copied.status().code(),
                        absl::StrCat("prepare-data: ", copied.status().message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PrepareData(const PrepareDataOptions& o) {
  absl::Status status = ValidateOptions(o);
  if (!status.ok()) return status;
  absl::StatusOr<json> request = MakeRequest(o);
  if (!request.ok()) return request.status();
  const fs::path dir(o.out_dir);
  if (!o.force && UpToDate(dir, *request)) {
    Log(o, absl::StrCat("prepare-data: ", (dir / kManifestName).string(), " is up to date"));
    return absl::OkStatus();
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("prepare-data: cannot create ", dir.string(), ": ", ec.message()));
  }
  fs::remove(dir / kManifestName, ec);  // the outputs are about to change

  status = SetUpTokenizer(o, dir);
  if (!status.ok()) return status;
  const std::string tokenizer_path = FindTokenizerFile(dir.string());
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::Load(tokenizer_path);
  if (!tokenizer.ok()) return tokenizer.status();
  const int64_t vocab_size = tokenizer->vocab_size();
  const int32_t eos = tokenizer->eos_id();

  ShardStream train(dir, "train", o.shard_tokens, vocab_size);
  ShardStream val(dir, "val", o.shard_tokens, vocab_size);
  json sources = json::array();
  int64_t doc_index = 0;
  for (const std::string& path : o.inputs) {
    absl::StatusOr<std::string> raw = ReadTextFile(path);
    if (!raw.ok()) return raw.status();
    sources.push_back({{"path", path}, {"bytes", static_cast<int64_t>(raw->size())}});
    absl::StatusOr<std::string> text = ApplyInputFormat(o.input_format, *std::move(raw));
    if (!text.ok()) return text.status();
    const std::vector<std::string_view> docs = CutDocuments(*text, o.documents);
    Log(o, absl::StrCat("prepare-data: ", path, ": ", docs.size(), " documents"));
    for (std::string_view doc : docs) {
      const double f = o.val_fraction;
      const bool to_val = std::floor((doc_index + 1) * f) > std::floor(doc_index * f);
      ++doc_index;
      status = (to_val ? val : train).AddDocument(tokenizer->Encode(doc), eos);
      if (!status.ok()) return status;
    }
  }
  if (train.tokens() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prepare-data: the inputs hold no text (first: ", o.inputs.front(), ")"));
  }
  if (o.val_fraction > 0 && val.tokens() == 0) {
    const int64_t want = static_cast<int64_t>(std::ceil(o.val_fraction * train.tokens()));
    status = val.AddDocument(train.TakeTail(want), /*eos=*/-1);
    if (!status.ok()) return status;
  }
  status = train.Finish();
  if (status.ok() && o.val_fraction > 0) status = val.Finish();
  if (!status.ok()) return status;

  std::set<std::string> keep = train.files();
  for (const std::string& name : val.files()) keep.insert(name);
  RemoveStaleShards(dir, keep);

  json files = json::array();
  for (const std::string& name : TokenizerFilesIn(dir.string())) {
    files.push_back({{"file", name}, {"bytes", FileBytes(dir / name)}});
  }
  for (const json* shards : {&train.shards(), &val.shards()}) {
    for (const json& s : *shards) files.push_back({{"file", s["file"]}, {"bytes", s["bytes"]}});
  }
  json manifest = {
      {"format", "famtrain-data"},
      {"version", 1},
      {"vocab_size", vocab_size},
      {"bos_id", tokenizer->bos_id()},
      {"eos_id", eos},
      {"pad_id", tokenizer->pad_id()},
      {"newline_id", tokenizer->newline_id()},
      {"tokenizer", fs::path(tokenizer_path).filename().string()},
      {"train",
       {{"tokens", train.tokens()}, {"documents", train.documents()}, {"shards", train.shards()}}},
      {"val", {{"tokens", val.tokens()}, {"documents", val.documents()}, {"shards", val.shards()}}},
      {"sources", sources},
      {"request", *request},
      {"files", files},
  };
  status = WriteManifest(dir, manifest);
  if (!status.ok()) return status;
  Log(o, absl::StrCat("prepare-data: vocab ", vocab_size, ", train ", train.tokens(), " tokens in ",
                      train.shards().size(), " shard(s), val ", val.tokens(), " tokens → ",
                      dir.string()));
  return absl::OkStatus();
}

absl::StatusOr<DataManifest> ReadDataManifest(const std::string& dir_or_file) {
  fs::path path(dir_or_file);
  std::error_code ec;
  if (fs::is_directory(path, ec)) path /= kManifestName;
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("data manifest not found: ", path.string()));
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not valid JSON"));
  }
  const fs::path dir = path.parent_path();
  DataManifest m;
  try {
    m.vocab_size = j.at("vocab_size").get<int64_t>();
    m.bos_id = j.value("bos_id", -1);
    m.eos_id = j.value("eos_id", -1);
    m.pad_id = j.value("pad_id", -1);
    m.tokenizer = (dir / j.at("tokenizer").get<std::string>()).string();
    m.train_tokens = j.at("train").at("tokens").get<int64_t>();
    m.val_tokens = j.at("val").at("tokens").get<int64_t>();
    for (const json& s : j.at("train").at("shards")) {
      m.train_shards.push_back((dir / s.at("file").get<std::string>()).string());
    }
    for (const json& s : j.at("val").at("shards")) {
      m.val_shards.push_back((dir / s.at("file").get<std::string>()).string());
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", e.what()));
  }
  return m;
}

}  // namespace fam::data
